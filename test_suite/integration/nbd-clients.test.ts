// The NBD export against real clients (libnbd's nbdinfo, nbdcopy, nbdsh): negotiation, flags,
// block sizes, data round trips, FLUSH/FUA reaching the backend, TRIM, WRITE_ZEROES, error
// values, EPERM on a not-writable backend, unknown exports, multi-conn.
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BackendError, type BlockBackend } from '../../kernel-shim/backend.js';
import { FileBackend } from '../../kernel-shim/file-backend.js';
import { NbdServer } from '../../kernel-shim/nbd-server.js';
import { ensureTools } from '../helpers/prereqs.js';
import { nbdsh, runTool as run, toolOk } from '../helpers/nbd-tools.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

const DISK_SIZE = 64 * 1024 * 1024;

/** Counts the durability calls that reach the backend. */
class CountingBackend implements BlockBackend {
  flushes = 0;
  fuaWrites = 0;
  trims = 0;
  zeroes = 0;
  constructor(private readonly inner: BlockBackend) {}
  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }
  isWritable(): boolean {
    return this.inner.isWritable();
  }
  read(offset: number, length: number): Promise<Buffer> {
    return this.inner.read(offset, length);
  }
  write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    if (fua) this.fuaWrites++;
    return this.inner.write(offset, data, fua);
  }
  writeZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    this.zeroes++;
    return this.inner.writeZeroes(offset, length, fua);
  }
  trim(offset: number, length: number, fua: boolean): Promise<void> {
    this.trims++;
    return this.inner.trim(offset, length, fua);
  }
  flush(): Promise<void> {
    this.flushes++;
    return this.inner.flush();
  }
}

/** A tiny in-memory backend whose writability can be flipped (a host that is not primary). */
class FlipBackend implements BlockBackend {
  writable = true;
  readonly mem: Buffer;
  constructor(readonly sizeBytes: number) {
    this.mem = Buffer.alloc(sizeBytes);
  }
  isWritable(): boolean {
    return this.writable;
  }
  async read(offset: number, length: number): Promise<Buffer> {
    return Buffer.from(this.mem.subarray(offset, offset + length));
  }
  async write(offset: number, data: Buffer): Promise<void> {
    if (!this.writable) throw new BackendError('EPERM', 'not primary');
    data.copy(this.mem, offset);
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    if (!this.writable) throw new BackendError('EPERM', 'not primary');
    this.mem.fill(0, offset, offset + length);
  }
  async trim(): Promise<void> {
    if (!this.writable) throw new BackendError('EPERM', 'not primary');
  }
  async flush(): Promise<void> {}
}

const missing = ensureTools(['nbdinfo', 'nbdcopy', 'nbdsh']);
if (missing) {
  t.fail(missing);
} else {
  t.test('real NBD clients against NbdServer', async (t) => {
    const dir = tempDir(t, 'mars-nbd-clients-');
    const diskPath = join(dir, 'disk.img');
    const file = await FileBackend.open(diskPath, { create: true, sizeBytes: DISK_SIZE });
    const disk = new CountingBackend(file);
    const flip = new FlipBackend(1024 * 1024);
    const logs: string[] = [];
    const openCounts: Array<[string, number]> = [];
    const server = new NbdServer({
      log: (level, msg) => logs.push(`${level} ${msg}`),
      onOpenCountChange: (name, count) => openCounts.push([name, count]),
    });
    t.teardown(async () => {
      await server.close();
      await file.close();
    });
    const diskSock = join(dir, 'disk.sock');
    const flipSock = join(dir, 'flip.sock');
    await server.addExport('disk', disk, { socketPath: diskSock, description: 'MARS test disk' });
    await server.addExport('flip', flip, { socketPath: flipSock });
    const diskUri = `nbd+unix:///disk?socket=${diskSock}`;
    const flipUri = `nbd+unix:///flip?socket=${flipSock}`;

    const ok = toolOk;

    t.test('nbdinfo: size, flags, block sizes', async (t) => {
      const r = await run('nbdinfo', ['--json', diskUri]);
      ok(t, r, 'nbdinfo --json');
      const info = JSON.parse(r.stdout) as { protocol: string; exports: Array<Record<string, unknown>> };
      t.equal(info.protocol, 'newstyle-fixed');
      const e = info.exports[0]!;
      t.equal(e['export-name'], 'disk');
      t.equal(e['export-size'], DISK_SIZE);
      for (const flag of ['can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_multi_conn', 'can_fast_zero']) {
        t.equal(e[flag], true, flag);
      }
      t.equal(e['is_read_only'], false);
      t.equal(e['can_df'], false, 'no structured replies, so no DF');
      t.equal(e['can_cache'], false);
      t.equal(e['block_size_minimum'], 512);
      t.equal(e['block_size_preferred'], 4096);
      t.equal(e['block_size_maximum'], 32 * 1024 * 1024);
    });

    t.test('nbdinfo --list shows the export and its description; the default export is the socket\'s', async (t) => {
      const r = await run('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${diskSock}`]);
      ok(t, r, 'nbdinfo --list');
      const info = JSON.parse(r.stdout) as { exports: Array<Record<string, unknown>> };
      t.equal(info.exports.length, 1, 'one export per socket');
      t.equal(info.exports[0]!['export-name'], 'disk');
      t.equal(info.exports[0]!['description'], 'MARS test disk');
      const d = await run('nbdinfo', ['--size', `nbd+unix:///?socket=${diskSock}`]);
      ok(t, d, 'empty export name');
      t.equal(d.stdout.trim(), String(DISK_SIZE));
    });

    t.test('unknown export names are refused', async (t) => {
      const r = await run('nbdinfo', [`nbd+unix:///nope?socket=${diskSock}`]);
      t.not(r.code, 0, 'nbdinfo fails');
      t.match(r.stderr, /nope/, 'the error names the export');
      const other = await run('nbdinfo', [`nbd+unix:///flip?socket=${diskSock}`]);
      t.not(other.code, 0, 'an export is only served on its own socket');
      const py = await nbdsh(diskUri, [
        'h2 = nbd.NBD()',
        `expect_err("ENOENT", h2.connect_uri, "nbd+unix:///missing?socket=${diskSock}")`,
      ].join('\n'));
      ok(t, py, 'nbdsh connect to a missing export raises');
    });

    t.test('nbdcopy: 64 MiB of random data in and out, byte exact', async (t) => {
      const src = join(dir, 'src.bin');
      const out = join(dir, 'out.bin');
      const data = randomBytes(DISK_SIZE);
      writeFileSync(src, data);
      const sha = (buf: Buffer) => createHash('sha256').update(buf).digest('hex');
      ok(t, await run('nbdcopy', ['--flush', src, diskUri]), 'nbdcopy --flush in');
      ok(t, await run('nbdcopy', [diskUri, out]), 'nbdcopy out');
      t.equal(sha(readFileSync(out)), sha(data), 'read back equals what was written');
      t.equal(sha(readFileSync(diskPath)), sha(data), 'the backing file holds the data');
      t.ok(disk.flushes > 0, 'nbdcopy --flush reached the backend');
    });

    t.test('nbdsh: pwrite + flush, FUA, trim, zero', async (t) => {
      const flushesBefore = disk.flushes;
      const fuaBefore = disk.fuaWrites;
      const r = await nbdsh(diskUri, [
        'buf = bytes(range(256)) * 16',
        'h.pwrite(buf, 1048576)',
        'h.flush()',
        'assert h.pread(4096, 1048576) == buf',
        'h.pwrite(b"\\xab" * 8192, 2097152, nbd.CMD_FLAG_FUA)',
        'assert h.pread(8192, 2097152) == b"\\xab" * 8192',
        'h.trim(65536, 4194304)',
        'h.trim(65536, 4194304, nbd.CMD_FLAG_FUA)',
        'h.pwrite(b"\\x5a" * 131072, 8388608)',
        'h.zero(65536, 8388608 + 4096)',
        'h.zero(4096, 8388608 + 69632, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)',
        'got = h.pread(131072, 8388608)',
        'assert got[:4096] == b"\\x5a" * 4096, "before the zeroed range"',
        'assert got[4096:73728] == bytes(69632), "zeroed range reads as zeroes"',
        'assert got[73728:] == b"\\x5a" * (131072 - 73728), "after the zeroed range"',
        'expect_err("ENOTSUP", h.zero, 4096, 0, nbd.CMD_FLAG_FAST_ZERO)',
        'h.flush()',
      ].join('\n'));
      ok(t, r, 'nbdsh script');
      t.ok(disk.flushes >= flushesBefore + 2, 'both FLUSHes reached the backend');
      t.ok(disk.fuaWrites >= fuaBefore + 1, 'the FUA write reached the backend with fua=true');
      t.ok(disk.trims >= 2, 'TRIM accepted');
      const onDisk = readFileSync(diskPath);
      t.same(onDisk.subarray(1048576, 1048576 + 4096), Buffer.from(Array.from({ length: 4096 }, (_, i) => i % 256)), 'flushed data is in the file');
      t.ok(onDisk.subarray(8388608 + 4096, 8388608 + 73728).every((b) => b === 0), 'zeroes are in the file');
    });

    t.test('nbdsh: out of range, misaligned, oversized and flag errors', async (t) => {
      const r = await nbdsh(diskUri, [
        'h.set_strict_mode(0)  # let libnbd send what it would normally refuse',
        'size = h.get_size()',
        'expect_err("EINVAL", h.pread, 512, size)',
        'expect_err("EINVAL", h.pread, 1024, size - 512)',
        'expect_err("ENOSPC", h.pwrite, bytes(512), size)',
        'expect_err("ENOSPC", h.zero, 1024, size - 512)',
        'expect_err("EINVAL", h.trim, 1024, size - 512)',
        'expect_err("EINVAL", h.pread, 100, 0)',
        'expect_err("EINVAL", h.pread, 512, 100)',
        'expect_err("EINVAL", h.pwrite, b"x" * 100, 0)',
        'expect_err("EINVAL", h.pwrite, bytes(512), 7)',
        'expect_err("EINVAL", h.zero, 100, 0)',
        'expect_err("EINVAL", h.pread, 48 * 1024 * 1024, 0)  # over the 32 MiB maximum',
        'expect_err("EINVAL", h.pread, 512, 0, nbd.CMD_FLAG_DF)  # DF was not advertised',
        'assert h.pread(512, 0) is not None, "the connection still works"',
        'h.pwrite(bytes(512), size - 512)',
      ].join('\n'));
      ok(t, r, 'nbdsh error script');
    });

    t.test('writes to a not-writable backend get EPERM, never a silent discard', async (t) => {
      flip.writable = true;
      ok(t, await nbdsh(flipUri, 'h.pwrite(b"\\x11" * 4096, 0)\nh.flush()'), 'writable: write succeeds');
      flip.writable = false;
      const r = await nbdsh(flipUri, [
        'expect_err("EPERM", h.pwrite, b"\\x22" * 4096, 0)',
        'expect_err("EPERM", h.pwrite, b"\\x22" * 4096, 0, nbd.CMD_FLAG_FUA)',
        'expect_err("EPERM", h.zero, 4096, 0)',
        'expect_err("EPERM", h.trim, 4096, 0)',
        'assert h.pread(4096, 0) == b"\\x11" * 4096, "reads still work and see the old data"',
        'h.flush()',
      ].join('\n'));
      ok(t, r, 'not writable: EPERM');
      t.ok(flip.mem.subarray(0, 4096).every((b) => b === 0x11), 'the backend data is unchanged');
      flip.writable = true;
      ok(t, await nbdsh(flipUri, 'h.pwrite(b"\\x33" * 4096, 0)'), 'writable again: write succeeds');
      t.equal(flip.mem[0], 0x33);
    });

    t.test('multi-conn: two connections see each other\'s flushed writes', async (t) => {
      openCounts.length = 0;
      const r = await nbdsh(diskUri, [
        'h2 = nbd.NBD()',
        `h2.connect_uri("${diskUri}")`,
        'assert h.can_multi_conn() and h2.can_multi_conn()',
        'h.pwrite(b"A" * 65536, 16 * 1048576)',
        'h.flush()',
        'assert h2.pread(65536, 16 * 1048576) == b"A" * 65536',
        'h2.pwrite(b"B" * 65536, 17 * 1048576, nbd.CMD_FLAG_FUA)',
        'assert h.pread(65536, 17 * 1048576) == b"B" * 65536',
        'h2.shutdown()',
      ].join('\n'));
      ok(t, r, 'two handles');
      t.ok(openCounts.some(([name, n]) => name === 'disk' && n === 2), 'the open count reached 2');
      await waitFor('all connections to close', () => server.connectionCount('disk') === 0, 10_000);
      t.same(openCounts.at(-1), ['disk', 0], 'and went back to 0');
    });

    t.test('TCP: all exports by name', async (t) => {
      const port = await server.listenTcp(0);
      const list = await run('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${port}`]);
      ok(t, list, 'nbdinfo --list over TCP');
      const names = (JSON.parse(list.stdout) as { exports: Array<Record<string, unknown>> }).exports.map((e) => e['export-name']).sort();
      t.same(names, ['disk', 'flip']);
      const r = await nbdsh(`nbd://127.0.0.1:${port}/disk`, 'assert h.pread(65536, 16 * 1048576) == b"A" * 65536');
      ok(t, r, 'read over TCP');
      const none = await run('nbdinfo', [`nbd://127.0.0.1:${port}`]);
      t.not(none.code, 0, 'no default export over TCP');
    });

    t.test('no errors were logged by well-behaved clients', async (t) => {
      t.same(logs.filter((l) => l.startsWith('error')), []);
    });
  });
}
