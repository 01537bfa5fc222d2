// Real NBD clients against marsd's own export (the transaction logger behind the NBD server):
// nbdinfo, nbdcopy byte-exact in and out, nbdsh for FLUSH, FUA, TRIM, WRITE_ZEROES and the
// error cases, EPERM after stepping down, and garbage bytes that must not take marsd down.
import t from 'tap';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startHost } from '../helpers/cluster.js';
import { waitWritebackDone } from '../helpers/multi-host.js';
import { ensureTools } from '../helpers/prereqs.js';
import { nbdsh, runTool, toolOk } from '../helpers/nbd-tools.js';

const SIZE = 64 << 20;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const missing = ensureTools(['nbdinfo', 'nbdcopy', 'nbdsh']);
if (missing) {
  t.fail(missing);
} else {
  t.test('real NBD clients against marsd', async (t) => {
    const h = await startHost(t, { host: 'alpha', sizeBytes: SIZE });
    await h.createResource('r0');
    await h.waitPrimary('r0');
    const uri = h.nbdUri('r0');

    t.test('nbdinfo: size, flags, block sizes, list', async (t) => {
      const r = await runTool('nbdinfo', ['--json', uri]);
      toolOk(t, r, 'nbdinfo');
      const info = JSON.parse(r.stdout).exports[0];
      t.equal(info['export-size'], SIZE);
      t.match(info, { is_read_only: false, can_flush: true, can_fua: true, can_trim: true, can_zero: true, can_multi_conn: true });
      t.equal(info.block_size_minimum, 512);
      t.equal(info.block_size_preferred, 4096);
      const list = await runTool('nbdinfo', ['--list', uri]);
      toolOk(t, list, 'nbdinfo --list');
      t.match(list.stdout, /export="r0"/);
      t.match(list.stdout, /MARS resource r0/);
    });

    t.test('nbdcopy: 64 MiB in and out, byte exact, and on the data disk after writeback', async (t) => {
      const src = join(h.dir, 'src.bin');
      const out = join(h.dir, 'out.bin');
      const data = randomBytes(SIZE);
      writeFileSync(src, data);
      toolOk(t, await runTool('nbdcopy', ['--flush', src, uri]), 'nbdcopy in');
      toolOk(t, await runTool('nbdcopy', [uri, out]), 'nbdcopy out');
      t.equal(sha(readFileSync(out)), sha(data), 'read back equals what was written');
      await waitWritebackDone(h, 'r0', 30_000); // the file itself: the writeback-rest link may still read 0 from before
      t.equal(sha(readFileSync(h.dataPath)), sha(data), 'the data disk holds the data');
    });

    t.test('nbdsh: FLUSH, FUA, TRIM, WRITE_ZEROES', async (t) => {
      toolOk(t, await nbdsh(uri, [
        'buf = bytes(range(256)) * 16',
        'h.pwrite(buf, 1048576)',
        'h.flush()',
        'assert h.pread(4096, 1048576) == buf',
        'h.pwrite(b"\\xab" * 8192, 2097152, nbd.CMD_FLAG_FUA)',
        'assert h.pread(8192, 2097152) == b"\\xab" * 8192',
        'before = h.pread(65536, 4194304)',
        'h.trim(65536, 4194304)',
        'h.trim(65536, 4194304, nbd.CMD_FLAG_FUA)',
        'assert h.pread(65536, 4194304) == before, "TRIM changes nothing"',
        'h.pwrite(b"\\x5a" * 131072, 8388608)',
        'h.zero(4096, 8388608 + 4096)',
        'h.zero(65536, 8388608 + 65536, nbd.CMD_FLAG_FUA | nbd.CMD_FLAG_NO_HOLE)',
        'got = h.pread(131072, 8388608)',
        'assert got[:4096] == b"\\x5a" * 4096',
        'assert got[4096:8192] == bytes(4096)',
        'assert got[8192:65536] == b"\\x5a" * (65536 - 8192)',
        'assert got[65536:] == bytes(65536)',
        'h.flush()',
      ]), 'nbdsh script');
      await waitWritebackDone(h, 'r0', 30_000); // the file itself: the writeback-rest link may still read 0 from before
      const disk = readFileSync(h.dataPath);
      t.ok(disk.subarray(8388608 + 4096, 8388608 + 8192).every((b) => b === 0), 'zeroes reached the data disk');
      t.equal(disk[2097152], 0xab, 'the FUA write reached the data disk');
    });

    t.test('nbdsh: error cases', async (t) => {
      toolOk(t, await nbdsh(uri, [
        'h.set_strict_mode(0)',
        'size = h.get_size()',
        'expect_err("EINVAL", h.pread, 512, size)',
        'expect_err("ENOSPC", h.pwrite, bytes(512), size)',
        'expect_err("ENOSPC", h.zero, 1024, size - 512)',
        'expect_err("EINVAL", h.pwrite, b"x" * 100, 0)',
        'expect_err("EINVAL", h.pwrite, bytes(512), 7)',
        'expect_err("EINVAL", h.pread, 48 * 1024 * 1024, 0)',
        'assert h.pread(512, 0) is not None',
      ]), 'nbdsh error script');
    });

    t.test('garbage bytes against the socket do not take marsd down', async (t) => {
      for (let i = 0; i < 20; i++) {
        await new Promise<void>((resolve) => {
          const s = net.createConnection({ path: h.socketPath('r0') });
          s.on('error', () => resolve());
          s.on('close', () => resolve());
          s.resume(); // consume the greeting, or the server's close is never seen
      s.on('connect', () => s.end(randomBytes(1 + (i * 997) % 5000)));
          s.setTimeout(15_000, () => s.destroy());
        });
      }
      t.ok(h.running, 'marsd is still running');
      toolOk(t, await runTool('nbdinfo', [uri]), 'and still serves a well-behaved client');
    });

    t.test('after stepping down (secondary --force), writes get EPERM on open connections', async (t) => {
      const script = nbdsh(uri, [
        'h.pwrite(b"\\x11" * 4096, 0)',
        'h.flush()',
        'import time',
        'deadline = time.time() + 30',
        'while True:',
        '    try:',
        '        h.pwrite(b"\\x22" * 4096, 0)',
        '    except nbd.Error as e:',
        '        assert en(e) in ("EPERM", "ESHUTDOWN"), en(e)',
        '        print(en(e))',
        '        break',
        '    assert time.time() < deadline, "writes kept succeeding after the role change"',
        '    time.sleep(0.01)',
      ]);
      await h.until('the nbdsh connection is open', () => h.actual('r0', 'open-count') === '1', 20_000);
      await h.marsadmOk(['secondary', 'r0', '--force']);
      const r = await script;
      toolOk(t, r, 'a write after the role change failed with an error');
      t.match(r.stdout, /EPERM|ESHUTDOWN/);
    });
  });
}
