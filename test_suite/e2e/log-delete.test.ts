// Log deletion across the cluster (docs/manual.md "Log deletion across the cluster"), with
// real marsd processes: log-delete and cron delete a logfile everywhere only when every
// replica has replayed past it; a paused secondary holds space back and view says so; after
// it caught up, the logfiles go on every host, the tombstones are purged once every member
// has seen them, and the disks are still equal.
import t from 'tap';
import { lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { NbdClient } from '../../kernel-shim/nbd-client.js';
import { fileDigest, startCluster, type TestCluster, waitWritebackDone } from '../helpers/multi-host.js';
import type { MarsHost } from '../helpers/cluster.js';
import { TreeStore } from '../../common/tree/store.js';

const RES = 'r0';
const SIZE = 16 << 20;
const DEADLINE_MS = 60_000;

async function writeSome(c: TestCluster, round: number): Promise<void> {
  const client = await NbdClient.connect(c.primary.socketPath(RES), RES);
  try {
    for (let i = 0; i < 8; i++) {
      const pos = (((round * 8 + i) * 2654435761) >>> 0) % (SIZE / 65536 - 1) * 65536;
      await client.write(pos, randomBytes(64 << 10));
    }
    await client.flush();
  } finally {
    await client.disconnect();
  }
}

function seqOf(name: string): number {
  return Number(name.slice(4, 13));
}

/** name → 'file' | 'tombstone' for every log-* entry of the resource on a host. */
function logEntries(h: MarsHost): Map<string, 'file' | 'tombstone'> {
  const dir = join(h.marsDir, `resource-${RES}`);
  const out = new Map<string, 'file' | 'tombstone'>();
  for (const n of readdirSync(dir)) {
    if (!/^log-\d{9}-/.test(n)) continue;
    // An entry may vanish between readdir and lstat: a tombstone purged, or a file replaced.
    const st = lstatSync(join(dir, n), { throwIfNoEntry: false });
    if (st) out.set(n, st.isFile() ? 'file' : 'tombstone');
  }
  return out;
}

function files(h: MarsHost): string[] {
  return [...logEntries(h)].filter(([, k]) => k === 'file').map(([n]) => n).sort();
}

function replaySeq(h: MarsHost, of: string): number {
  return seqOf(h.link(`resource-${RES}/replay-${of}`) ?? 'log-000000000-x');
}

async function rotate(c: TestCluster, round: number): Promise<void> {
  await writeSome(c, round);
  await c.primary.marsadmOk(['log-rotate', RES]);
}

t.test('log-delete never removes a logfile a replica still needs (checked with a paused secondary)', async (t) => {
  const c = await startCluster(t, {
    hosts: ['alpha', 'beta', 'gamma'], sizeBytes: SIZE, res: RES,
    extraArgs: ['--tombstone-min-age-ms', '500'],
  });
  const [alpha, beta, gamma] = [c.host('alpha'), c.host('beta'), c.host('gamma')];

  // A little history everybody has replayed, so that something is deletable later.
  for (let round = 0; round < 2; round++) await rotate(c, round);
  await writeSome(c, 2);
  for (const s of c.secondaries) await c.waitCaughtUp(s);

  await beta.marsadmOk(['pause-replay', RES]);
  await beta.until('beta replay paused', () => beta.actual(RES, 'is-replaying') === '0', 20_000);
  const held = replaySeq(beta, 'beta');
  t.ok(held >= 3, `beta stays on logfile ${held}`);

  // The primary goes on: four more logfiles. beta keeps fetching them, gamma replays them.
  for (let round = 3; round < 7; round++) await rotate(c, round);
  await writeSome(c, 7);
  await c.waitCaughtUp(gamma);
  const all = files(alpha);
  const newest = all[all.length - 1]!;
  t.ok(seqOf(newest) >= held + 4, `the primary is at ${newest}`);
  await beta.until('beta fetched every logfile (replay paused)', () => files(beta).includes(newest)
    && lstatSync(join(beta.marsDir, `resource-${RES}`, newest)).size === lstatSync(join(alpha.marsDir, `resource-${RES}`, newest)).size, DEADLINE_MS);
  await alpha.until('alpha sees beta\'s replay link', () => replaySeq(alpha, 'beta') === held, DEADLINE_MS);
  const needed = all.filter((n) => seqOf(n) >= held);
  const expendable = all.filter((n) => seqOf(n) < held);
  t.ok(expendable.length >= 1, `logfiles everybody replayed: ${expendable.join(', ')}`);

  // view names the host that holds space back, and how much.
  const viewText = await alpha.marsadmOk(['view', RES]);
  t.match(viewText, new RegExp(`logfiles ${held}-\\d+ \\([0-9.]+ [KMG]iB\\) kept for beta \\(replay at log ${held}\\)`), viewText);
  const viewJson = JSON.parse(await alpha.marsadmOk(['view', RES, '--json']));
  t.same(viewJson.logfiles.heldBack.hosts, ['beta']);
  t.equal(viewJson.logfiles.heldBack.fromSeq, held);
  t.ok(viewJson.logfiles.heldBack.bytes > 0, `${viewJson.logfiles.heldBack.bytes} bytes held back`);
  t.equal(await alpha.view('log-held-by', RES), 'beta');

  // log-delete-all and cron on the primary: only what every replica has replayed.
  const out = await alpha.marsadmOk(['log-delete-all', RES, '--force']);
  t.match(out, /deleted log-/);
  t.match(out, new RegExp(`kept for beta \\(replay at log ${held}\\)`), out);
  const cronOut = JSON.parse(await alpha.marsadmOk(['cron', '--window', '1', '--json']));
  t.same(cronOut.heldBack.map((h: { hosts: string[] }) => h.hosts), [['beta']], 'cron reports who holds space back');

  // The deletion reaches every host; nothing beta needs goes anywhere.
  for (const h of c.hosts) {
    await h.until(`${h.name} deleted ${expendable.join(', ')}`, () => expendable.every((n) => !files(h).includes(n)), DEADLINE_MS);
  }
  for (const n of needed) t.equal(logEntries(alpha).get(n), 'file', `no tombstone for ${n} on the primary`);
  // Give the tree another round to every host (each pulled every other one afresh), then check.
  for (const h of c.hosts) {
    const others = c.hosts.filter((o) => o !== h);
    const before = others.map((o) => h.link(`actual-${o.name}/time`));
    await h.until(`${h.name} pulled every peer again`, () => others.every((o, i) => h.link(`actual-${o.name}/time`) !== before[i]), DEADLINE_MS);
  }
  for (const h of c.hosts) {
    const have = files(h);
    for (const n of needed) t.ok(have.includes(n), `${h.name} still holds ${n} (beta replays from ${held})`);
    t.ok(h.link(`resource-${RES}/version-${String(held - 1).padStart(9, '0')}-beta`)?.includes(','), `${h.name}: beta's version-${held - 1} link (chain check) remains`);
    t.ok(h.link(`resource-${RES}/version-${String(held).padStart(9, '0')}-beta`)?.includes(','), `${h.name}: beta's version-${held} link remains`);
  }
  t.equal(replaySeq(beta, 'beta'), held, 'beta did not move while paused');
  t.equal(beta.actual(RES, 'replay-code')?.startsWith('-'), false, `beta's replay has no error (${beta.actual(RES, 'replay-code')})`);

  // Resume: beta catches up; then log-delete removes the rest everywhere.
  await beta.marsadmOk(['resume-replay', RES]);
  await writeSome(c, 8);
  for (const s of c.secondaries) await c.waitCaughtUp(s, 90_000);
  await waitWritebackDone(alpha, RES, DEADLINE_MS);
  const current = files(alpha);
  const last = current[current.length - 1]!;
  await alpha.until('alpha sees every replay link on the newest logfile', () => ['alpha', 'beta', 'gamma'].every((h) => replaySeq(alpha, h) === seqOf(last)), DEADLINE_MS);
  t.notMatch(await alpha.marsadmOk(['view', RES]), /kept for/, 'nobody holds space back any more');

  // A member whose replay link has not arrived (a join in progress) blocks every deletion.
  const aTree = new TreeStore(alpha.marsDir);
  aTree.write(`resource-${RES}/data-delta`, '/dev/delta');
  const blocked = await alpha.marsadmOk(['log-delete', RES, '--force']);
  t.match(blocked, /no logfile can be deleted yet: .*kept for delta \(no replay link here/, blocked);
  t.same(files(alpha), current, 'nothing deleted');
  aTree.remove(`resource-${RES}/data-delta`);
  const out2 = await alpha.marsadmOk(['log-delete', RES, '--force']);
  t.match(out2, /deleted log-/);
  const gone = current.filter((n) => n !== last);
  for (const h of c.hosts) {
    await h.until(`${h.name} deleted everything but ${last}`, () => files(h).length === 1 && files(h)[0] === last, DEADLINE_MS);
  }
  t.pass(`${gone.length} logfiles deleted on every host, ${last} kept`);

  // Versionlinks below the lowest replay logfile minus one went everywhere (from anybody).
  const floor = seqOf(last) - 1;
  for (const h of c.hosts) {
    await h.until(`${h.name} dropped old versionlinks`, () => readdirSync(join(h.marsDir, `resource-${RES}`))
      .filter((n) => /^version-\d{9}-/.test(n) && Number(n.slice(8, 17)) < floor)
      .every((n) => h.link(`resource-${RES}/${n}`) === '.deleted' || h.link(`resource-${RES}/${n}`) === undefined), DEADLINE_MS);
  }

  // Tombstones are purged once every member has seen them (marsd, min age 500 ms here).
  for (const h of c.hosts) {
    await h.until(`${h.name} purged the logfile tombstones`, () => [...logEntries(h).values()].every((k) => k === 'file'), DEADLINE_MS);
  }

  // Deleting logfiles changed no data.
  await waitWritebackDone(alpha, RES, DEADLINE_MS);
  const want = fileDigest(alpha.dataPath, SIZE);
  for (const s of c.secondaries) t.equal(fileDigest(s.dataPath, SIZE), want, `${s.name}'s disk equals the primary's`);
  t.equal(beta.actual(RES, 'replay-code')?.startsWith('-'), false, 'beta replays without error');
});
