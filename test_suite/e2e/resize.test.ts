// marsadm resize under replication (issue 12 item 5), with real marsd processes, a real ext4 and
// real NBD clients. Two hosts, alpha primary, an ext4 with files on alpha's export (nbdfuse +
// losetup, or nbd-client). First the refusals, each leaving the tree as it was: a smaller
// size, a size beyond a member's disk (before and after only alpha's disk grew), resize on the
// secondary, a SIZE that is no size; --dry-run changes nothing. Then both data disks grow
// (truncate), each marsd publishes the new actsize-HOST, `marsadm resize r0 --json` grows to
// the smallest disk; a new NBD connection sees the new size, the device still open from before
// keeps the old one; beta copies only the new area (partial sync), and is not consistent until
// then. The device is made again, resize2fs grows the ext4 (offline), more files go
// into the new space; beta copies the new area by a partial sync and replays; a planned
// handover to beta; on beta's export (now primary) e2fsck -fn is clean and every file reads
// back, and both disks are byte-equal over the new size.
//
// Needs root (FUSE, loop devices, mount).
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { attachDevice, detachDevice, type AttachedDevice } from '../../kernel-shim/attach.js';
import { NbdClient } from '../../kernel-shim/nbd-client.js';
import { ensureTools } from '../helpers/prereqs.js';
import { runTool } from '../helpers/nbd-tools.js';
import { caughtUpWith, fileDigest, startCluster, waitWritebackDone } from '../helpers/multi-host.js';
import type { MarsHost } from '../helpers/cluster.js';

const RES = 'r0';
const MiB = 1 << 20;
const OLD_SIZE = 64 * MiB;
const NEW_SIZE = 96 * MiB;
const isRoot = process.getuid?.() === 0;

async function must(cmd: string, args: string[], timeoutMs = 120_000): Promise<string> {
  const r = await runTool(cmd, args, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

function mounted(dir: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === dir);
}

/** A device on one host's export plus a mount point; teardown undoes whatever is left. */
class Stack {
  private dev: AttachedDevice | undefined;
  constructor(private readonly h: MarsHost, readonly mnt: string, private readonly linkDir: string) {}
  private readonly log = (): void => undefined;
  async attach(): Promise<string> {
    this.dev = await attachDevice({ name: RES, socketPath: this.h.socketPath(RES), runDir: this.h.runDir, linkDir: this.linkDir, log: this.log });
    return this.dev.devicePath;
  }

  get device(): string { return this.dev!.devicePath; }
  async teardown(): Promise<void> {
    if (mounted(this.mnt)) await runTool('umount', [this.mnt], 60_000);
    if (mounted(this.mnt)) await runTool('umount', ['-l', this.mnt], 30_000);
    await detachDevice({ name: RES, runDir: this.h.runDir, linkDir: this.linkDir, log: this.log, timeoutMs: 20_000 }).catch(() => undefined);
    this.dev = undefined;
  }
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Files of 1 MiB with random content; returns name -> checksum. */
function writeFiles(dir: string, prefix: string, count: number): Map<string, string> {
  const sums = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const data = randomBytes(MiB);
    writeFileSync(join(dir, `${prefix}${i}`), data);
    sums.set(`${prefix}${i}`, sha(data));
  }
  return sums;
}

/** The links a refused resize must leave as they are: value and stamp (the link's mtime). */
function resizeLinks(h: MarsHost): string {
  return ['size', 'syncstatus-alpha', 'syncstatus-beta']
    .map((n) => `${n}=${h.link(`resource-${RES}/${n}`)}@${lstatSync(join(h.marsDir, `resource-${RES}`, n)).mtimeMs}`).join(' ');
}

async function refused(t: Test, h: MarsHost, args: string[], pattern: RegExp, code = 1): Promise<void> {
  const r = await h.marsadm(['resize', RES, ...args]);
  t.equal(r.code, code, `resize ${args.join(' ')} on ${h.name} is refused (exit ${code})`);
  t.match(r.stderr, pattern, `resize ${args.join(' ')}: clear message`);
}

t.test('resize under replication: refusals change nothing; growth, resize2fs, handover, e2fsck', {
  skip: isRoot ? false : 'needs root (FUSE, loop devices, mount): run the tests as root',
}, async (t) => {
  const missing = ensureTools(['nbdfuse', 'losetup', 'mkfs.ext4', 'e2fsck', 'resize2fs', 'fusermount3', 'blockdev']);
  if (missing) { t.fail(missing); return; }
  const c = await startCluster(t, { hosts: ['alpha', 'beta'], sizeBytes: OLD_SIZE, res: RES });
  const [alpha, beta] = [c.host('alpha'), c.host('beta')];
  const work = mkdtempSync(join(tmpdir(), 'mars-resize-'));
  const stacks = [new Stack(alpha, join(work, 'mnt-a'), join(work, 'dev-a')), new Stack(beta, join(work, 'mnt-b'), join(work, 'dev-b'))];
  for (const s of stacks) mkdirSync(s.mnt);
  t.teardown(async () => {
    for (const s of stacks) await s.teardown();
    if (!stacks.some((s) => mounted(s.mnt))) rmSync(work, { recursive: true, force: true });
  });
  const [sa, sb] = stacks as [Stack, Stack];

  // ext4 with files on alpha's export.
  const devA = await sa.attach();
  await must('mkfs.ext4', ['-q', '-F', devA]);
  await must('mount', [devA, sa.mnt]);
  const files = writeFiles(sa.mnt, 'old', 20);
  await must('sync', ['-f', sa.mnt]);

  const actsizeAt = (h: MarsHost, of: string) => Number(h.link(`resource-${RES}/actsize-${of}`));
  await alpha.until('alpha knows both disk sizes', () => actsizeAt(alpha, 'alpha') === OLD_SIZE && actsizeAt(alpha, 'beta') === OLD_SIZE, 20_000);

  // Refusals: nothing changes.
  const before = resizeLinks(alpha);
  await refused(t, alpha, ['32M'], /never shrinks/);
  await refused(t, alpha, ['96M'], /does not fit every member's disk \(alpha has 67108864 bytes, beta has 67108864 bytes\)/);
  await refused(t, beta, ['96M'], /beta is not the primary of r0: run "marsadm resize r0" on alpha/);
  await refused(t, alpha, ['lots'], /invalid SIZE "lots"/, 2);
  truncateSync(alpha.dataPath, 128 * MiB);
  await alpha.until('alpha publishes its grown disk', () => actsizeAt(alpha, 'alpha') === 128 * MiB, 20_000);
  await refused(t, alpha, ['96M'], /beta has 67108864 bytes/);
  t.match(await alpha.marsadmOk(['resize', RES]), /already has 67108864 bytes: nothing to do/, 'without SIZE: the smallest disk, which is the current size');
  t.equal(resizeLinks(alpha), before, 'the refused resizes changed no link');

  truncateSync(beta.dataPath, NEW_SIZE);
  await alpha.until('beta\'s grown disk is known on alpha', () => actsizeAt(alpha, 'beta') === NEW_SIZE, 20_000);
  const dry = await alpha.marsadmOk(['resize', RES, '--dry-run']);
  t.match(dry, /would write .*size -> 100663296/, '--dry-run says what it would write');
  t.equal(resizeLinks(alpha), before, '--dry-run changed nothing');

  // The resize: to the smallest member disk (beta's). beta's sync is paused first, so that the
  // state before its partial sync can be looked at.
  await beta.marsadmOk(['pause-sync', RES]);
  const out = JSON.parse(await alpha.marsadmOk(['resize', RES, '--json'])) as Record<string, unknown>;
  t.match(out, { resource: RES, fromSizeBytes: OLD_SIZE, toSizeBytes: NEW_SIZE, changed: true, done: true });
  t.equal(alpha.link(`resource-${RES}/size`), String(NEW_SIZE));
  const fresh = await NbdClient.connect(alpha.socketPath(RES), RES);
  t.equal(fresh.sizeBytes, NEW_SIZE, 'a new NBD connection sees the new size');
  await fresh.disconnect();
  t.equal((await must('blockdev', ['--getsize64', devA])).trim(), String(OLD_SIZE), 'the device opened before keeps the size it was told');
  t.comment(`view on alpha right after the resize:\n${await alpha.marsadmOk(['view', RES])}`);
  await beta.until('beta learned the new size', () => beta.link(`resource-${RES}/size`) === String(NEW_SIZE), 20_000);
  t.equal(beta.link(`resource-${RES}/syncstatus-beta`), String(OLD_SIZE), 'beta\'s disk is in sync up to the old size only');
  t.equal(await beta.view('is-consistent', RES), '0', 'beta is not consistent at the new size before its partial sync');
  t.comment(`view on beta, sync paused, after the resize:\n${await beta.marsadmOk(['view', RES])}`);
  await beta.marsadmOk(['resume-sync', RES]);

  // Reconnect the device, grow the mounted ext4, fill the new space.
  await must('umount', [sa.mnt]);
  await sa.teardown();
  const devA2 = await sa.attach();
  t.equal((await must('blockdev', ['--getsize64', devA2])).trim(), String(NEW_SIZE), 'the device made again has the new size');
  // Offline: online growth (resize2fs on the mounted fs) is refused by this machine's kernel
  // for a loop device; resize2fs wants a fresh e2fsck -f before an offline resize.
  await must('e2fsck', ['-f', '-p', devA2], 300_000);
  await must('resize2fs', [devA2]);
  await must('mount', [devA2, sa.mnt]);
  const df = await must('df', ['-B1', '--output=size', sa.mnt]);
  t.ok(Number(df.trim().split('\n')[1]) > OLD_SIZE * 0.95, `ext4 grew beyond the old device size (${df.trim().split('\n')[1]} bytes)`);
  for (const [k, v] of writeFiles(sa.mnt, 'new', 40)) files.set(k, v); // 60 MiB in all: more than the old size holds
  await must('sync', ['-f', sa.mnt]);
  await must('umount', [sa.mnt]);
  await sa.teardown();
  await waitWritebackDone(alpha, RES);

  // beta copies the new area (partial sync), replays, then takes over.
  await beta.until('beta synced the new area', () => beta.link(`resource-${RES}/syncstatus-beta`) === String(NEW_SIZE), 60_000, 50);
  t.comment(`beta's log about the sync:\n${beta.logTail(400).split('\n').filter((l) => /sync/.test(l)).slice(-6).join('\n')}`);
  await beta.until('beta replayed everything alpha logged', () => caughtUpWith(beta, alpha, RES), 60_000, 50);
  t.equal(await beta.view('is-consistent', RES), '1', 'beta is consistent at the new size once its replay passed the sync\'s end');
  t.comment(`view on beta before the handover:\n${await beta.marsadmOk(['view', RES])}`);
  await beta.marsadmOk(['primary', RES, '--timeout', '60']);
  await beta.waitPrimary(RES);
  t.equal(fileDigest(beta.dataPath, NEW_SIZE), fileDigest(alpha.dataPath, NEW_SIZE), 'both disks are equal over the new size');

  const devB = await sb.attach();
  t.equal((await must('blockdev', ['--getsize64', devB])).trim(), String(NEW_SIZE), 'beta exports the new size');
  const fsck = await runTool('e2fsck', ['-fn', devB], 300_000);
  t.equal(fsck.code, 0, 'e2fsck -fn is clean on the replica after the handover', { output: fsck.stdout + fsck.stderr });
  await must('mount', ['-o', 'ro', devB, sb.mnt]);
  let bad = 0;
  for (const [name, sum] of files) if (sha(readFileSync(join(sb.mnt, name))) !== sum) bad++;
  t.equal(bad, 0, `all ${files.size} files read back on beta`);
  await must('umount', [sb.mnt]);
});
