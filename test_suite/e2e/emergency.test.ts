// Emergency mode end to end (the MARS user manual: space levels and emergency mode, docs/manual.md "Emergency mode"): the
// primary's /mars is a small ext4 (a loop-mounted image) that a workload fills while the
// secondary is cut off. The primary keeps accepting every write and enters emergency mode; the
// secondary, reconnected, replays up to the hole and stops there consistently; the documented
// recovery (leave-resource + log-delete-all + join-resource) brings back equal checksums.
//
// Needs root (mkfs.ext4 on an image, losetup, mount): skipped with a message otherwise. The
// mount and the loop device are removed in teardown even when the test fails
// (test_suite/helpers/small-mars.ts).
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { readdirSync, rmSync, statfsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileDigest, startCluster, waitWritebackDone } from '../helpers/multi-host.js';
import type { MarsHost } from '../helpers/cluster.js';
import { WriteOrderOracle, readImage } from '../helpers/oracle.js';
import { runWorkload, type WorkloadResult } from '../helpers/workload.js';
import { ensureTools } from '../helpers/prereqs.js';
import { tempDir } from '../helpers/tmp.js';
import { smallMars } from '../helpers/small-mars.js';

const RES = 'r0';
const SIZE = 32 << 20;
const BLOCK = 4096;
/** /mars of the primary: small enough that about 80 MiB of writes fill it. */
const MARS_FS_BYTES = 80 << 20;
const isRoot = process.getuid?.() === 0;
const PATH_ENV = { ...process.env, PATH: `/usr/sbin:/sbin:${process.env.PATH ?? ''}` };

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { env: PATH_ENV, stdio: ['ignore', 'pipe', 'pipe'] }).toString().trim();
}

/**
 * One host whose /mars is a small ext4 of its own (root, mkfs.ext4, losetup), with a write-order
 * oracle and a workload on its export; undefined (a tap skip) when the tools are missing.
 */
async function oneHostOnSmallMars(t: Test, extraArgs: string[]) {
  const missing = ensureTools(['mkfs.ext4', 'losetup']);
  if (missing) {
    t.pass('the tools this test needs', { skip: missing });
    return undefined;
  }
  const imageDir = tempDir(t, 'mars-emergency-img-');
  const c = await startCluster(t, {
    hosts: ['alpha'], sizeBytes: SIZE, res: RES,
    initData: (h) => {
      smallMars(t, h, imageDir, MARS_FS_BYTES);
      h.extraArgs.push(...extraArgs);
    },
  });
  const alpha = c.host('alpha');
  const oracle = new WriteOrderOracle({ deviceBytes: SIZE, blockBytes: BLOCK });
  const workload = (writes: number, seed: number, signal?: AbortSignal) => runWorkload({
    socketPath: alpha.socketPath(RES), exportName: RES, oracle, writes, durationMs: 120_000, queueDepth: 8, flushEvery: 32, seed,
    ...(signal ? { signal } : {}),
  });
  return { alpha, oracle, workload };
}

function expectAllWritten(t: Test, r: WorkloadResult, what: string): void {
  t.equal(r.failed, 0, `${what}: no write failed (${r.acknowledged} acknowledged${r.error ? `; ${r.error}` : ''})`);
  t.equal(r.flushesFailed, 0, `${what}: no FLUSH failed, the final one included`);
  t.ok(r.stopReason === 'count' || r.stopReason === 'aborted', `${what}: stopped by the test, not by an error (${r.stopReason})`);
}

t.test('/mars fills up while the secondary is cut off: emergency mode, a consistent hole, documented recovery', {
  skip: isRoot ? false : 'needs root (mkfs.ext4 on an image, losetup, mount): run the tests as root',
}, async (t) => {
  const missing = ensureTools(['mkfs.ext4', 'losetup']);
  if (missing) {
    t.pass('the tools this test needs', { skip: missing });
    return;
  }
  const imageDir = tempDir(t, 'mars-emergency-img-');
  const c = await startCluster(t, {
    hosts: ['alpha', 'beta'], sizeBytes: SIZE, res: RES, proxied: true,
    initData: (h) => {
      if (h.name !== 'alpha') return;
      smallMars(t, h, imageDir, MARS_FS_BYTES);
      // Level 4 at 4 MiB free starts emergency mode. (With no level-4 threshold only a real
      // ENOSPC does; that run was flaky in CI: after log-delete-all the primary stayed in
      // emergency mode for over 60 s while its peer link reconnected ~10 times a second on
      // "pull failed: ENOSPC". Open in the torture issue, not covered here yet.)
      h.extraArgs.push('--space-levels', '16M,12M,8M,4M', '--log-rotate-size', '8M');
    },
  });
  const alpha = c.host('alpha');
  const beta = c.host('beta');
  const oracle = new WriteOrderOracle({ deviceBytes: SIZE, blockBytes: BLOCK });
  const workload = (writes: number, seed: number, signal?: AbortSignal) => runWorkload({
    socketPath: alpha.socketPath(RES), exportName: RES, oracle, writes, durationMs: 240_000,
    queueDepth: 16, flushEvery: 64, fuaEvery: 50, seed, ...(signal ? { signal } : {}),
  });

  // Replicating normally first.
  expectAllWritten(t, await workload(300, 1), 'before the cut');
  await c.waitCaughtUp(beta);
  t.equal(await alpha.view('emergency-level', RES), '0');

  // The secondary is cut off; the workload fills the primary's /mars.
  c.proxy('alpha').cut();
  c.proxy('beta').cut();
  const ac = new AbortController();
  const filling = workload(1_000_000, 2, ac.signal);
  await alpha.until('alpha in emergency mode', () => alpha.actual(RES, 'is-emergency') === '1', 240_000, 50);
  ac.abort();
  expectAllWritten(t, await filling, 'filling /mars');
  t.comment(`emergency mode after write ${oracle.lastSeq}: ${alpha.actual(RES, 'msg-err-emergency')}`);
  // Writes go on in emergency mode.
  expectAllWritten(t, await workload(500, 3), 'in emergency mode');
  t.equal(await alpha.view('is-emergency', RES), '1', 'view-is-emergency on the primary');
  t.equal(await alpha.view('diskstate', RES), 'EmergencyMode');
  t.equal(alpha.link(`actual-alpha/emergency`), '4', 'space level 4 published');
  t.match(await alpha.marsadmOk(['view', RES]), /EMERGENCY: emergency mode since/);
  const primaryImage = await oracle.checkImage(readImage(alpha.dataPath));
  t.ok(primaryImage.ok && primaryImage.prefixMin === oracle.lastSeq, 'the primary\'s disk holds every acknowledged write');

  // A crash in emergency mode: recovery must not replay the ended logfile over the unlogged
  // writes (the replay link is past the hole), and the flushed writes are all there.
  alpha.kill('SIGKILL');
  await alpha.waitExit();
  await alpha.start();
  await alpha.waitPrimary(RES, 60_000);
  const afterCrash = await oracle.checkImage(readImage(alpha.dataPath));
  t.ok(afterCrash.ok && afterCrash.prefixMin === oracle.lastSeq, `after SIGKILL and recovery the primary's disk still holds every flushed write${afterCrash.ok ? '' : `: ${afterCrash.reason}`}`);
  await alpha.until('alpha back in emergency mode (/mars is still full)', () => alpha.actual(RES, 'is-emergency') === '1', 30_000, 50);
  expectAllWritten(t, await workload(100, 5), 'after the restart');

  // The secondary comes back, replays up to the hole and stops there, consistent.
  c.proxy('alpha').reset();
  c.proxy('beta').reset();
  await beta.until('beta stopped at the hole', () => beta.actual(RES, 'replay-code') === '-61', 180_000, 100);
  t.match(beta.actual(RES, 'msg-err-replay-stop') ?? '', /hole in the logfile sequence/);
  t.equal(await beta.view('diskstate', RES), 'Orphan');
  t.equal(await beta.view('is-consistent', RES), '1');
  t.equal(await beta.view('is-emergency', RES), '1', 'the secondary sees the primary in emergency mode');
  const replay = beta.link(`resource-${RES}/replay-beta`)!;
  const seq = replay.slice(4, 13);
  t.equal(beta.link(`resource-${RES}/version-${seq}-beta`), alpha.link(`resource-${RES}/version-${seq}-alpha`),
    `beta replayed log ${seq} to the end alpha gave it: equal versionlinks, equal history`);
  const atHole = await oracle.checkImage(readImage(beta.dataPath));
  t.ok(atHole.ok, `the secondary's disk is a consistent state of the primary's history${atHole.ok ? ` (through write ${atHole.prefixMin} of ${atHole.lastSeq})` : `: ${atHole.reason}`}`);
  t.ok(atHole.ok && atHole.prefixMax < oracle.lastSeq, 'and an older one: the unlogged writes are not there');

  // The documented recovery (docs/manual.md, "Emergency mode").
  await beta.marsadmOk(['down', RES]);
  await beta.marsadmOk(['leave-resource', RES]);
  t.match(await alpha.marsadmOk(['log-delete-all', RES, '--force']), /deleted/);
  await alpha.until('alpha logging again', () => alpha.actual(RES, 'is-emergency') === '0' && alpha.actual(RES, 'has-emergency') === '0', 60_000, 100);
  t.equal(await alpha.view('diskstate', RES), 'UpToDate');
  await beta.until('beta saw alpha logging again', () => beta.link(`resource-${RES}/actual-alpha/is-emergency`) === '0', 30_000);
  await beta.marsadmOk(['join-resource', RES, beta.dataPath]);
  await beta.until('beta synced again', () => beta.link(`resource-${RES}/syncstatus-beta`) === String(SIZE), 120_000, 100);
  expectAllWritten(t, await workload(300, 4), 'after the recovery');
  await c.waitCaughtUp(beta, 120_000);
  await waitWritebackDone(alpha, RES);
  t.equal(fileDigest(beta.dataPath, SIZE), fileDigest(alpha.dataPath, SIZE), 'equal checksums after the recovery');
  const final = await oracle.checkImage(readImage(beta.dataPath));
  t.ok(final.ok && final.prefixMin === oracle.lastSeq, 'the secondary holds every write, the unlogged ones included');
  t.equal(await beta.view('diskstate', RES), 'UpToDate');
});

t.test('a secondary short of space deletes its replayed copies (level 2) and stops fetching (level 3)', async (t) => {
  // Thresholds in percent of the filesystem the test runs on: 99 % puts any real disk at the
  // level wanted, without filling anything.
  const c = await startCluster(t, {
    hosts: ['alpha', 'beta'], sizeBytes: SIZE, res: RES,
    initData: (h) => { if (h.name === 'beta') h.extraArgs.push('--space-levels', '99%,99%,0,0'); },
  });
  const alpha = c.host('alpha');
  const beta = c.host('beta');
  const oracle = new WriteOrderOracle({ deviceBytes: SIZE, blockBytes: BLOCK });
  const workload = (writes: number, seed: number) => runWorkload({
    socketPath: alpha.socketPath(RES), exportName: RES, oracle, writes, durationMs: 60_000, queueDepth: 8, seed,
  });
  const logsOf = (h: MarsHost) => readdirSync(join(h.marsDir, `resource-${RES}`)).filter((n) => /^log-\d{9}-alpha$/.test(n)).sort();
  for (let i = 0; i < 3; i++) {
    expectAllWritten(t, await workload(100, 10 + i), `round ${i}`);
    await alpha.marsadmOk(['log-rotate', RES]);
  }
  await c.waitCaughtUp(beta);
  t.equal(await beta.view('emergency-level', RES), '2');
  const replaySeq = beta.link(`resource-${RES}/replay-beta`)!.slice(4, 13);
  await beta.until('beta deleted its replayed copies', () => logsOf(beta).every((n) => n.slice(4, 13) >= replaySeq), 20_000);
  t.ok(logsOf(alpha).some((n) => n.slice(4, 13) < replaySeq), 'the primary keeps its logfiles (a local deletion, no tombstone)');
  t.equal(await beta.view('replstate', RES), 'Replaying', 'level 2 does not stop replication');

  // Level 3: fetching stops, replay stays consistent; back to normal, it catches up.
  await beta.stop();
  beta.extraArgs.splice(beta.extraArgs.indexOf('--space-levels'), 2, '--space-levels', '99%,99%,99%,0');
  await beta.start();
  await beta.until('beta at level 3', () => beta.link('actual-beta/emergency') === '3', 20_000);
  await beta.until('beta says why it does not fetch', () => /fetch paused: \/mars space level 3/.test(beta.actual(RES, 'secondary-why') ?? ''), 20_000);
  const before = logsOf(beta).map((n) => `${n}:${statSync(join(beta.marsDir, `resource-${RES}`, n)).size}`);
  expectAllWritten(t, await workload(200, 20), 'while beta does not fetch');
  await alpha.marsadmOk(['log-rotate', RES]);
  // Evidence that beta could have fetched: alpha's versionlink of the logfile holding those
  // writes reached beta's tree (a running fetcher starts on that same pull), and beta still says
  // why it does not fetch.
  const written = logsOf(alpha).at(-2)!.slice(4, 13);
  const version = `resource-${RES}/version-${written}-alpha`;
  await beta.until('beta learned of the logfile it may not fetch', () => alpha.link(version) !== undefined && beta.link(version) === alpha.link(version), 20_000);
  t.match(beta.actual(RES, 'secondary-why') ?? '', /fetch paused: \/mars space level 3/, 'still paused after learning of it');
  t.same(logsOf(beta).map((n) => `${n}:${statSync(join(beta.marsDir, `resource-${RES}`, n)).size}`), before, 'nothing fetched at level 3');
  t.equal(await beta.view('replstate', RES), 'PausedFetch');
  const paused = await oracle.checkImage(readImage(beta.dataPath));
  t.ok(paused.ok && paused.prefixMin < oracle.lastSeq, 'the paused replica is a consistent, older state');
  await beta.stop();
  beta.extraArgs.splice(beta.extraArgs.indexOf('--space-levels'), 2);
  await beta.start();
  await c.waitCaughtUp(beta, 60_000);
  await waitWritebackDone(alpha, RES);
  t.equal(fileDigest(beta.dataPath, SIZE), fileDigest(alpha.dataPath, SIZE), 'equal checksums once space is back');
});

t.test('the space level alone (no ENOSPC) starts emergency mode, and freed space ends it', {
  skip: isRoot ? false : 'needs root (mkfs.ext4 on an image, losetup, mount): run the tests as root',
}, async (t) => {
  const host = await oneHostOnSmallMars(t, ['--space-levels', '16M,12M,8M,4M']);
  if (!host) return;
  const { alpha, oracle, workload } = host;
  expectAllWritten(t, await workload(200, 1), 'logging');
  const seqBefore = Number(alpha.link(`resource-${RES}/replay-alpha`)!.slice(4, 13));
  // Leave about 3 MiB free: below the level-4 threshold (4 MiB), far from ENOSPC.
  const st = statfsSync(alpha.marsDir);
  const filler = join(alpha.marsDir, '.filler');
  run('fallocate', ['-l', String(st.bavail * st.bsize - (3 << 20)), filler]);
  await alpha.until('alpha in emergency mode by space level', () => alpha.actual(RES, 'is-emergency') === '1', 30_000, 50);
  t.match(alpha.actual(RES, 'msg-err-emergency') ?? '', /space level 4/);
  t.equal(alpha.link('actual-alpha/emergency'), '4');
  const hole = Number(alpha.link(`resource-${RES}/replay-alpha`)!.slice(4, 13));
  t.ok(hole >= seqBefore + 11, `the replay link moved past the hole (${seqBefore} -> ${hole})`);
  t.match(alpha.link(`resource-${RES}/version-${String(hole - 1).padStart(9, '0')}-alpha`) ?? '', /^0{32},log-\d{9}-alpha,0:$/, 'the zero versionlink marks the hole');
  expectAllWritten(t, await workload(200, 2), 'in emergency mode');
  t.equal(statSync(join(alpha.marsDir, `resource-${RES}`, `log-${String(hole).padStart(9, '0')}-alpha`)).size, 0, 'nothing logged meanwhile');
  rmSync(filler);
  await alpha.until('alpha logging again', () => alpha.actual(RES, 'has-emergency') === '0', 30_000, 50);
  t.equal(alpha.link('actual-alpha/emergency'), '0');
  expectAllWritten(t, await workload(200, 3), 'logging again');
  const resumedLog = join(alpha.marsDir, `resource-${RES}`, `log-${String(hole).padStart(9, '0')}-alpha`);
  t.ok(statSync(resumedLog).size > 0, 'logging resumed in the logfile after the hole');
  await waitWritebackDone(alpha, RES);
  t.match(alpha.link(`resource-${RES}/replay-alpha`), new RegExp(`^log-${String(hole).padStart(9, '0')}-alpha,`));
  const image = await oracle.checkImage(readImage(alpha.dataPath));
  t.ok(image.ok && image.prefixMin === oracle.lastSeq, `every write is on the disk${image.ok ? ` (through ${image.prefixMin} of ${image.lastSeq}; first missing ${JSON.stringify(image.firstMissingAcked)})` : `: ${image.reason}`}`);
  t.equal(await alpha.view('diskstate', RES), 'UpToDate');
});

t.test('the emergency limit of a resource starts emergency mode for it alone, long before /mars is short', {
  skip: isRoot ? false : 'needs root (mkfs.ext4 on an image, losetup, mount): run the tests as root',
}, async (t) => {
  const host = await oneHostOnSmallMars(t, []);
  if (!host) return;
  const { alpha, oracle, workload } = host;
  t.match(await alpha.marsadmOk(['set-emergency-limit', RES, '10']), /emergency limit of r0 on alpha: 10 %/);
  // 10 % of the 80 MiB filesystem: about 8 MiB of logfiles, far from any space level.
  const ac = new AbortController();
  const filling = workload(1_000_000, 1, ac.signal);
  await alpha.until('alpha in emergency mode by its emergency limit', () => alpha.actual(RES, 'is-emergency') === '1', 120_000, 50);
  ac.abort();
  expectAllWritten(t, await filling, 'up to the limit');
  t.match(alpha.actual(RES, 'msg-err-emergency') ?? '', /emergency limit of r0: its logfiles take \d+ bytes, at least 10 % of \/mars/, 'the limit is named as the reason');
  t.equal(alpha.link('actual-alpha/emergency'), '0', '/mars itself is not short: space level 0');
  expectAllWritten(t, await workload(100, 2), 'in emergency mode');
  // Off again: with the space level at 0, it leaves emergency mode and logs again.
  await alpha.marsadmOk(['set-emergency-limit', RES, '0']);
  await alpha.until('alpha logging again', () => alpha.actual(RES, 'has-emergency') === '0', 30_000, 50);
  expectAllWritten(t, await workload(100, 3), 'logging again');
  await waitWritebackDone(alpha, RES);
  const image = await oracle.checkImage(readImage(alpha.dataPath));
  t.ok(image.ok && image.prefixMin === oracle.lastSeq, `every write is on the disk${image.ok ? '' : `: ${image.reason}`}`);
});
