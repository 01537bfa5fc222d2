// A real ext4 on a MARS resource, and a SIGKILL of marsd under a filesystem workload.
//
// Part one: a host with a 256 MiB resource; the export becomes a block device through
// attachDevice (nbdfuse + losetup here, nbd-client where nbd.ko exists); mkfs.ext4, mount, write
// files with a checksum list, sync, umount, `e2fsck -fn` clean, detach.
// Part two: attach and mount again (the files of part one read back), run a workload that
// writes files with dd conv=fsync + syncfs and records each finished file outside the
// filesystem, SIGKILL marsd while it runs, tear the broken stack down (the kernel sees I/O
// errors), restart marsd, wait until it is primary, attach again. `e2fsck -fn` runs first; if
// the journal needs recovery (needs_recovery), one mount + umount replays it, and then
// `e2fsck -fn` must be clean. The files of part one and every file finished before the kill
// read back with their checksums.
//
// Needs root (FUSE, loop devices, mount): skipped with a message otherwise.
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { attachDevice, detachDevice, type AttachedDevice } from '../../kernel-shim/attach.js';
import { ensureTools, TOOL_PATH } from '../helpers/prereqs.js';
import { mulberry32 } from '../helpers/prng.js';
import { startHost, type MarsHost } from '../helpers/cluster.js';

const RES = 'r0';
const SIZE_BYTES = 256 * 1024 * 1024;
const MiB = 1024 * 1024;

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a tool (asynchronously: marsd is a separate process, but nothing here may block). */
function run(cmd: string, args: string[], timeoutMs = 120_000): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...process.env, PATH: TOOL_PATH }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => {
      stderr += `\n[test] ${cmd} killed after ${timeoutMs} ms`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, stdout, stderr: `${stderr}${err.message}` });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

async function mustRun(cmd: string, args: string[], timeoutMs?: number): Promise<string> {
  const r = await run(cmd, args, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code ?? r.signal}: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map((l) => l.split(' ')[4]?.replace(/\\040/g, ' '))
    .filter((m): m is string => m !== undefined && (m === dir || m.startsWith(`${dir}/`)));
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Poll with a deadline and a bounded number of polls. */
async function until(what: string, probe: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 25): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let polls = 0; polls < Math.ceil(timeoutMs / intervalMs) + 10; polls++) {
    if (await probe()) return;
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** The block-device stack on top of the export: attachment, mount. Teardown undoes both. */
class Stack {
  dev: AttachedDevice | undefined;
  readonly logs: string[] = [];

  constructor(private readonly host: MarsHost, readonly mnt: string, readonly linkDir: string) {}

  private readonly log = (level: string, msg: string) => this.logs.push(`${level} ${msg}`);

  async attach(): Promise<string> {
    this.dev = await attachDevice({
      name: RES, socketPath: this.host.socketPath(RES), runDir: this.host.runDir, linkDir: this.linkDir, log: this.log,
    });
    return this.dev.devicePath;
  }

  get device(): string {
    if (!this.dev) throw new Error('not attached');
    return this.dev.devicePath;
  }

  async mount(): Promise<void> {
    await mustRun('mount', [this.device, this.mnt], 60_000);
  }

  async umount(): Promise<void> {
    await mustRun('umount', [this.mnt], 60_000);
  }

  get mounted(): boolean {
    return mountsUnder(this.mnt).includes(this.mnt);
  }

  async detach(): Promise<void> {
    await detachDevice({ name: RES, runDir: this.host.runDir, linkDir: this.linkDir, log: this.log });
    this.dev = undefined;
  }

  /**
   * Whatever state things are in (also after I/O errors): unmount (lazily if need be), then
   * detach (loop device, FUSE mount, nbdfuse). Returns the problems it met.
   */
  async teardown(): Promise<string[]> {
    const problems: string[] = [];
    if (this.mounted) {
      const u = await run('umount', [this.mnt], 30_000);
      if (u.code !== 0) {
        problems.push(`umount: ${u.stderr.trim()}`);
        const l = await run('umount', ['-l', this.mnt], 30_000);
        if (l.code !== 0) problems.push(`umount -l: ${l.stderr.trim()}`);
      }
    }
    try {
      await detachDevice({ name: RES, runDir: this.host.runDir, linkDir: this.linkDir, log: this.log, timeoutMs: 20_000 });
    } catch (err) {
      problems.push(`detach: ${(err as Error).message}`);
    }
    this.dev = undefined;
    return problems;
  }
}

/** The FS check protocol after a crash: see the header comment. */
async function fsckAfterCrash(t: Test, device: string, stack: Stack): Promise<void> {
  const first = await run('e2fsck', ['-fn', device], 300_000);
  const header = await mustRun('dumpe2fs', ['-h', device]);
  const needsRecovery = /^Filesystem features:.*\bneeds_recovery\b/m.test(header);
  t.comment(`e2fsck -fn after the crash: exit ${first.code}; needs_recovery ${needsRecovery}`);
  if (!needsRecovery) {
    t.equal(first.code, 0, 'e2fsck -fn is clean after the crash (no journal to replay)', { output: `${first.stdout}\n${first.stderr}` });
    return;
  }
  t.comment(`first check (journal not replayed; counts may be off):\n${(first.stdout + first.stderr).trim().split('\n').map((l) => `  ${l}`).join('\n')}`);
  await stack.mount(); // replays the journal
  await stack.umount();
  const second = await run('e2fsck', ['-fn', device], 300_000);
  t.equal(second.code, 0, 'after the journal replay, e2fsck -fn is clean', { output: `${second.stdout}\n${second.stderr}` });
}

const WORKLOAD = `
set -u
src="$1"; dir="$2"; progress="$3"; count="$4"; nsrc="$5"
mkdir -p "$dir" || exit 10
sync -f "$dir" || exit 11
i=1
while [ "$i" -le "$count" ]; do
  s=$(( i % nsrc ))
  dd if="$src/src$s.bin" of="$dir/f$i" bs=256k conv=fsync status=none || exit 12
  sync -f "$dir" || exit 13
  echo "$i $s" >> "$progress"
  i=$(( i + 1 ))
done
`;

const isRoot = process.getuid?.() === 0;

t.test('ext4 on a MARS resource: clean use, then a SIGKILL of marsd under a workload', {
  skip: isRoot ? false : 'needs root (FUSE mount, loop devices, mount): run the tests as root',
}, async (t) => {
  const missing = ensureTools(['nbdfuse', 'losetup', 'mkfs.ext4', 'e2fsck', 'fusermount3']);
  if (missing) {
    t.fail(missing);
    return;
  }
  const started = Date.now();
  const host = await startHost(t, { host: 'alpha', sizeBytes: SIZE_BYTES });

  // Our own scratch directory: removed last, and never while something is mounted below it.
  const work = mkdtempSync(join(tmpdir(), 'mars-ext4-'));
  const mnt = join(work, 'mnt');
  mkdirSync(mnt);
  const stack = new Stack(host, mnt, join(work, 'dev'));
  let workload: ChildProcess | undefined;
  t.teardown(async () => {
    if (workload && workload.exitCode === null && workload.signalCode === null && workload.pid) {
      try { process.kill(-workload.pid, 'SIGKILL'); } catch { /* gone */ }
    }
    const problems = await stack.teardown();
    if (problems.length) console.error(`ext4 test teardown: ${problems.join('; ')}\n${stack.logs.slice(-10).join('\n')}`);
    const left = mountsUnder(work);
    if (left.length === 0) rmSync(work, { recursive: true, force: true });
    else console.error(`ext4 test teardown: not removing ${work}: still mounted: ${left.join(', ')}`);
  });

  await host.createResource(RES);
  await host.waitPrimary(RES);

  // ---- part one: mkfs, write, fsck --------------------------------------------------------
  const device = await stack.attach();
  t.comment(`attached ${host.nbdUri(RES)} as ${device} (${stack.dev!.method})`);
  await mustRun('mkfs.ext4', ['-q', '-F', device], 300_000);
  await stack.mount();
  const sums = new Map<string, string>();
  mkdirSync(join(mnt, 'p1'));
  for (let i = 0; i < 8; i++) {
    const data = randomBytes((i === 0 ? 3 : 1) * MiB + i * 4096 + 123);
    const name = `p1/file${i}`;
    writeFileSync(join(mnt, name), data);
    sums.set(name, sha256(data));
  }
  writeFileSync(join(mnt, 'p1', 'SHA256SUMS'), [...sums].map(([n, s]) => `${s}  ${n}`).join('\n') + '\n');
  await mustRun('sync', ['-f', join(mnt, 'p1')]);
  await stack.umount();
  const fsck1 = await run('e2fsck', ['-fn', device], 300_000);
  t.equal(fsck1.code, 0, 'e2fsck -fn is clean after a normal umount', { output: `${fsck1.stdout}\n${fsck1.stderr}` });
  await stack.detach();
  t.comment(`part one done in ${Date.now() - started} ms`);

  // ---- part two: a workload, SIGKILL of marsd ------------------------------------------------
  await stack.attach();
  await stack.mount();
  let readBack = 0;
  for (const [name, sum] of sums) if (sha256(readFileSync(join(mnt, name))) === sum) readBack++;
  t.equal(readBack, sums.size, 'the files of part one read back after a detach and a new attach');

  const srcDir = join(work, 'src');
  mkdirSync(srcDir);
  const nsrc = 4;
  const srcSums: string[] = [];
  for (let s = 0; s < nsrc; s++) {
    const data = randomBytes(MiB);
    writeFileSync(join(srcDir, `src${s}.bin`), data);
    srcSums.push(sha256(data));
  }
  const progress = join(work, 'progress');
  writeFileSync(progress, '');
  const wlLog = join(work, 'workload.log');
  const wlFd = openSync(wlLog, 'w');
  const maxFiles = 150;
  try {
    workload = spawn('bash', ['-c', WORKLOAD, 'workload', srcDir, join(mnt, 'w'), progress, String(maxFiles), String(nsrc)], {
      detached: true, stdio: ['ignore', wlFd, wlFd], env: { ...process.env, PATH: TOOL_PATH },
    });
  } finally {
    closeSync(wlFd);
  }
  const wl = workload;
  const wlExit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => wl.once('exit', (code, signal) => r({ code, signal })));
  const doneLines = () => readFileSync(progress, 'utf8').split('\n').filter((l) => /^\d+ \d+$/.test(l));
  const seed = Number(process.env.MARS_EXT4_SEED ?? 7);
  const rnd = mulberry32(seed);
  const killAfter = 2 + Math.floor(rnd() * 5);
  t.comment(`kill schedule seed ${seed} (MARS_EXT4_SEED=${seed} repeats it)`);
  await until(`the workload to finish ${killAfter} files`, () => {
    if (wl.exitCode !== null) throw new Error(`the workload exited early (${wl.exitCode}): ${readFileSync(wlLog, 'utf8')}`);
    return doneLines().length >= killAfter;
  }, 120_000);
  // A random moment inside the next file's write.
  await new Promise((r) => setTimeout(r, Math.floor(rnd() * 150)));
  const finished = doneLines(); // completed (fsync + syncfs returned) before the kill
  host.kill('SIGKILL');
  await host.waitExit();
  t.comment(`marsd SIGKILLed after ${finished.length} finished files`);

  // The stack now fails with I/O errors; the workload stops on them.
  let wlResult: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  try {
    wlResult = await Promise.race([wlExit, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('timeout')), 60_000).unref())]);
  } catch {
    t.comment('the workload did not stop within 60 s of the kill: SIGKILL');
    try { process.kill(-wl.pid!, 'SIGKILL'); } catch { /* gone */ }
    wlResult = await wlExit;
  }
  t.comment(`workload ended with ${wlResult.code ?? wlResult.signal}: ${readFileSync(wlLog, 'utf8').trim() || '(no output)'}`);
  const problems = await stack.teardown();
  t.same(mountsUnder(work), [], 'the broken stack is torn down (no mount left)');
  if (problems.length) t.comment(`teardown of the broken stack: ${problems.join('; ')}`);

  // ---- restart and check ---------------------------------------------------------------------
  await host.start();
  await host.waitPrimary(RES, 60_000);
  const diskState = await host.view('diskstate', RES);
  t.notMatch(diskState, /DefectiveLog/, `marsd restarted cleanly (diskstate ${diskState})`);
  const device2 = await stack.attach();
  await fsckAfterCrash(t, device2, stack);

  await stack.mount();
  let okP1 = 0;
  for (const [name, sum] of sums) {
    const path = join(mnt, name);
    if (existsSync(path) && sha256(readFileSync(path)) === sum) okP1++;
    else t.fail(`${name} (written in part one) is missing or changed`);
  }
  t.equal(okP1, sums.size, `all ${sums.size} files of part one read back with their checksums`);
  let okW = 0;
  for (const line of finished) {
    const [i, s] = line.split(' ').map(Number) as [number, number];
    const path = join(mnt, 'w', `f${i}`);
    if (existsSync(path) && sha256(readFileSync(path)) === srcSums[s]) okW++;
    else t.fail(`w/f${i} was fsync'ed before the kill but is ${existsSync(path) ? 'changed' : 'missing'}`);
  }
  t.equal(okW, finished.length, `all ${finished.length} files finished before the kill read back with their checksums`);
  await stack.umount();
  const fsck3 = await run('e2fsck', ['-fn', device2], 300_000);
  t.equal(fsck3.code, 0, 'e2fsck -fn is still clean after reading', { output: `${fsck3.stdout}\n${fsck3.stderr}` });
  await stack.detach();
  t.same(mountsUnder(work), [], 'nothing left mounted');

  const stop = await host.stop();
  t.same(stop, { code: 0, signal: null }, 'marsd stops cleanly on SIGTERM');
  t.comment(`ext4 test done in ${Math.round((Date.now() - started) / 1000)} s`);
});
