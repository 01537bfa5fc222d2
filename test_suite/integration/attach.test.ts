// attachDevice on this machine (nbdfuse + loop where there is no nbd.ko): a real ext4 on the
// export, written, unmounted, fsck'ed clean, remounted and read back, then detached. Also:
// detach refuses while mounted, and a half-failed attach leaves nothing behind.
// Needs root (FUSE mount, losetup, mount).
import t from 'tap';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { attachDevice, attachStatePath, detachDevice, type AttachedDevice } from '../../kernel-shim/attach.js';
import { FileBackend } from '../../kernel-shim/file-backend.js';
import { NbdServer } from '../../kernel-shim/nbd-server.js';
import { ensureTools, TOOL_PATH } from '../helpers/prereqs.js';
import { waitFor } from '../helpers/wait.js';

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Asynchronous on purpose: the NBD server in this process must keep serving the kernel. */
function run(cmd: string, args: string[], timeoutMs = 120_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { ...process.env, PATH: TOOL_PATH }, timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

function mounted(dir: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === dir);
}

const missing = ensureTools(['nbdfuse', 'fusermount3', 'losetup', 'mkfs.ext4', 'e2fsck']);
if (missing) {
  t.fail(missing);
} else if (process.getuid?.() !== 0) {
  t.test('attachDevice with a real filesystem', { skip: 'attach needs root (FUSE mount, losetup, mount); run the tests as root' }, async () => {});
} else {
  t.test('ext4 on the export through attachDevice', async (t) => {
    // One teardown, in order: unmount, detach, stop the server, remove files.
    const dir = mkdtempSync(join(tmpdir(), 'mars-attach-'));
    const runDir = join(dir, 'run');
    const mnt = join(dir, 'mnt');
    mkdirSync(runDir);
    mkdirSync(mnt);
    const name = `attachtest${process.pid}`;
    const logs: string[] = [];
    const log = (level: string, msg: string) => logs.push(`${level} ${msg}`);
    const server = new NbdServer({ log });
    const file = await FileBackend.open(join(dir, 'disk.img'), { create: true, sizeBytes: 128 * 1024 * 1024 });
    let attached: AttachedDevice | null = null;
    t.teardown(async () => {
      if (mounted(mnt)) {
        const u = await run('umount', [mnt]);
        if (u.code !== 0) await run('umount', ['-l', mnt]);
      }
      try {
        await detachDevice({ name, runDir, log });
      } catch (err) {
        console.error(`teardown: ${(err as Error).message}`);
      }
      await server.close();
      await file.close();
      if (!mounted(join(runDir, 'attach', `${name}.fuse`))) rmSync(dir, { recursive: true, force: true });
    });

    const socketPath = join(runDir, `${name}.sock`);
    await server.addExport(name, file, { socketPath });

    t.test('a half-failed attach leaves nothing behind', async (t) => {
      await t.rejects(
        attachDevice({ name: 'nosuchexport', socketPath: join(runDir, 'nosuchexport.sock'), runDir, log }),
        /does not exist/,
        'missing socket: a clear error',
      );
      // The socket exists but serves another export: nbdfuse fails after it was started.
      await t.rejects(
        attachDevice({ name: 'wrongname', socketPath, runDir, method: 'nbdfuse', log, timeoutMs: 10_000 }),
        /attach wrongname \(nbdfuse\) failed/,
        'nbdfuse failure is reported',
      );
      t.notOk(existsSync(attachStatePath(runDir, 'wrongname')), 'no attach state left');
      t.notOk(mounted(join(runDir, 'attach', 'wrongname.fuse')), 'no FUSE mount left');
      t.notOk(existsSync(join('/dev/mars', 'wrongname')), 'no link left');
    });

    t.test('attach, mkfs.ext4, mount, write, umount, fsck, read back, detach', async (t) => {
      attached = await attachDevice({ name, socketPath, runDir, log });
      const dev = attached.devicePath;
      t.match(dev, /^\/dev\/(loop|nbd)\d+$/, `block device ${dev}`);
      t.ok(statSync(dev).isBlockDevice(), 'it is a block device');
      t.ok(lstatSync(attached.linkPath).isSymbolicLink(), `link ${attached.linkPath}`);
      t.equal(readlinkSync(attached.linkPath), dev, 'the link points at the device');
      t.ok(server.connectionCount(name) >= 1, 'the export is open');

      const mkfs = await run('mkfs.ext4', ['-q', '-F', dev]);
      t.equal(mkfs.code, 0, `mkfs.ext4 ${mkfs.stderr}`);
      const m = await run('mount', [dev, mnt]);
      t.equal(m.code, 0, `mount ${m.stderr}`);
      // Never touch the mounted filesystem from this process with synchronous calls: its I/O is
      // served by the NBD server on this very event loop (that would deadlock). Child processes.
      const content = randomBytes(3 * 1024 * 1024 + 123);
      const sha = createHash('sha256').update(content).digest('hex');
      const src = join(dir, 'hello.src');
      writeFileSync(src, content);
      t.equal((await run('cp', [src, join(mnt, 'hello.bin')])).code, 0, 'cp a file onto the filesystem');
      t.equal((await run('sync', ['-f', join(mnt, 'hello.bin')])).code, 0, 'sync');

      await t.rejects(detachDevice({ name, runDir, log }), /is mounted on/, 'detach refuses while mounted');
      t.ok(existsSync(attached.linkPath), 'and leaves everything in place');

      const u = await run('umount', [mnt]);
      t.equal(u.code, 0, `umount ${u.stderr}`);
      const fsck = await run('e2fsck', ['-fn', dev]);
      t.equal(fsck.code, 0, `e2fsck -fn is clean: ${fsck.stdout} ${fsck.stderr}`);

      const m2 = await run('mount', ['-o', 'ro', dev, mnt]);
      t.equal(m2.code, 0, `mount again ${m2.stderr}`);
      const sum = await run('sha256sum', [join(mnt, 'hello.bin')]);
      t.equal(sum.stdout.split(' ')[0], sha, 'the file reads back');
      t.equal((await run('umount', [mnt])).code, 0, 'umount again');

      await attached.detach();
      t.notOk(existsSync(attached.linkPath), 'link removed');
      t.notOk(existsSync(attachStatePath(runDir, name)), 'attach state removed');
      t.notOk(mounted(join(runDir, 'attach', `${name}.fuse`)), 'FUSE unmounted');
      if (dev.startsWith('/dev/loop')) {
        t.notOk(existsSync(`/sys/block/${dev.slice(5)}/loop/backing_file`), 'loop device released');
      }
      await waitFor('the NBD connections to close', () => server.connectionCount(name) === 0, 20_000);
      await detachDevice({ name, runDir, log }); // detaching twice is harmless
    });

    t.test('no errors logged', async (t) => {
      t.same(logs.filter((l) => l.startsWith('error')), []);
    });
  });
}
