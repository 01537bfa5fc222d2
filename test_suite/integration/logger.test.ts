// The transaction logger on real files: read-your-writes, durability of FLUSH/FUA in the
// logfile, writeback to the disk, MINPOS, memory backpressure, rotation and refusal of writes.
import t, { type Test } from 'tap';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DataDisk } from '../../common/disk/data-disk.js';
import { LogWriter } from '../../daemon/logger/log-writer.js';
import { TransactionLogger } from '../../daemon/logger/transaction-logger.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { readLogBatches } from '../../common/log/scanner.js';
import { BackendError } from '../../kernel-shim/backend.js';
import { applyLog } from '../../daemon/replay/apply-log.js';
import { tempDir } from '../helpers/tmp.js';

async function rejectsWith(t: Test, p: Promise<unknown>, errno: string): Promise<void> {
  try {
    await p;
    t.fail(`expected ${errno}, the request succeeded`);
  } catch (err) {
    t.ok(err instanceof BackendError && err.errno === errno, `${errno}: ${(err as Error).message}`);
  }
}

const SIZE = 8 << 20;

async function setup(t: Test, memLimitBytes = 64 << 20) {
  const dir = tempDir(t);
  const diskPath = join(dir, 'disk.img');
  writeFileSync(diskPath, Buffer.alloc(SIZE));
  const disk = await DataDisk.open(diskPath);
  const writer = await LogWriter.openFresh(join(dir, 'log-000000001-alpha'), 1);
  const fatal: Error[] = [];
  const logger = new TransactionLogger({ disk, sizeBytes: SIZE, clock: new LamportClock(), memLimitBytes, writer, onFatal: (e) => fatal.push(e) });
  t.teardown(async () => { await logger.stop().catch(() => undefined); await disk.close().catch(() => undefined); });
  return { dir, diskPath, disk, logger, fatal };
}

async function records(path: string) {
  let n = 0;
  let stop;
  for await (const item of readLogBatches(path, 0)) {
    if (item.type === 'batch') n += item.records.length; else stop = item.stop;
  }
  return { n, stop };
}


t.test('reads return the newest acknowledged data before and after writeback', async (t) => {
  const { logger, diskPath } = await setup(t);
  const a = randomBytes(16384);
  const b = randomBytes(512);
  await logger.write(4096, a, false);
  await logger.write(8192, b, false);
  const expect = Buffer.from(a);
  b.copy(expect, 4096);
  t.same(await logger.read(4096, 16384), expect, 'served from the pending index');
  await logger.drain();
  t.same(await logger.read(4096, 16384), expect, 'served from the disk');
  t.same(readFileSync(diskPath).subarray(4096, 4096 + 16384), expect, 'written back to the data disk');
  t.same(logger.replayPosition().minPos, statSync(join(diskPath, '..', 'log-000000001-alpha')).size, 'MINPOS at the end of the log once all is applied');
  t.equal(logger.writebackRestBytes(), 0);
});

t.test('FLUSH and FUA: the records are in the logfile before the reply', async (t) => {
  const { logger, dir } = await setup(t);
  const log = join(dir, 'log-000000001-alpha');
  await logger.write(0, randomBytes(8192), true); // FUA
  t.equal((await records(log)).n, 2, 'an 8 KiB FUA write is two complete records on disk');
  t.ok(logger.durablePos >= 2 * (4096 + 84));
  const many = Array.from({ length: 50 }, (_, i) => logger.write(i * 4096, randomBytes(4096), false));
  await Promise.all(many);
  await logger.flush();
  const r = await records(log);
  t.equal(r.n, 52);
  t.equal(r.stop?.kind, 'clean-end');
  t.equal(logger.durablePos, statSync(log).size, 'durable end = file size after a flush');
});

t.test('a write of several pages is logged as records marked RECORD_FLAG_MORE up to its last one', async (t) => {
  const { logger, dir } = await setup(t);
  const log = join(dir, 'log-000000001-alpha');
  await logger.write(0, randomBytes(3 * 4096 + 512), true);
  await logger.write(65536, randomBytes(4096), true);
  await logger.writeZeroes(1 << 20, 3 << 20, true);
  const more: boolean[] = [];
  for await (const item of readLogBatches(log, 0)) if (item.type === 'batch') more.push(...item.records.map((r) => r.more));
  t.same(more, [true, true, true, false, false, false, false, false],
    'the 4-record write: MORE on its first three; the one-page write: none; zeroing: each 1 MiB record on its own');
});

t.test('write zeroes and trim', async (t) => {
  const { logger } = await setup(t);
  await logger.write(0, Buffer.alloc(65536, 0xee), false);
  await logger.writeZeroes(4096, 8192, false);
  const got = await logger.read(0, 65536);
  t.equal(got[0], 0xee);
  t.ok(got.subarray(4096, 12288).every((x) => x === 0));
  t.equal(got[12288], 0xee);
  await logger.trim(0, 65536, true);
  t.same(await logger.read(0, 65536), got, 'TRIM is accepted and changes nothing');
});

t.test('bad requests: out of range and misaligned get EINVAL; refused writes get EPERM', async (t) => {
  const { logger } = await setup(t);
  await rejectsWith(t, logger.write(SIZE - 512, Buffer.alloc(1024), false), 'EINVAL');
  await rejectsWith(t, logger.read(SIZE, 1), 'EINVAL');
  await rejectsWith(t, logger.write(100, Buffer.alloc(512), false), 'EINVAL');
  logger.refuseWrites();
  await rejectsWith(t, logger.write(0, Buffer.alloc(512), false), 'EPERM');
  await rejectsWith(t, logger.writeZeroes(0, 512, false), 'EPERM');
  t.same((await logger.read(0, 512)).length, 512, 'reads still work');
});

t.test('memory limit: writes wait for writeback instead of growing the index', async (t) => {
  const limit = 1 << 20;
  const { logger, diskPath } = await setup(t, limit);
  let peak = 0;
  const data = randomBytes(SIZE);
  const writes: Promise<void>[] = [];
  const timer = setInterval(() => { peak = Math.max(peak, logger.pendingBytes); }, 1);
  t.teardown(() => clearInterval(timer));
  for (let off = 0; off < SIZE; off += 65536) {
    writes.push(logger.write(off, data.subarray(off, off + 65536), false));
    peak = Math.max(peak, logger.pendingBytes);
  }
  await Promise.all(writes);
  await logger.drain();
  clearInterval(timer);
  t.ok(peak > 0, 'the probe saw pending data');
  t.ok(peak <= limit + 64 * 1024, `pending data stayed near the limit (peak ${peak}, limit ${limit})`);
  t.same(readFileSync(diskPath), data, 'everything reached the disk');
});

t.test('rotation: the old logfile ends complete, writes continue in the new one, replay covers both', async (t) => {
  const { logger, dir, diskPath } = await setup(t);
  const first = randomBytes(65536);
  await logger.write(0, first, false);
  const next = await LogWriter.openFresh(join(dir, 'log-000000002-alpha'), 2);
  const pending = logger.write(65536, randomBytes(4096), false); // concurrent with the rotation
  const { oldSeq, oldEnd } = await logger.rotate(next);
  await pending;
  t.equal(oldSeq, 1);
  t.equal(oldEnd, statSync(join(dir, 'log-000000001-alpha')).size);
  const second = randomBytes(65536);
  await logger.write(0, second, true);
  t.equal(logger.currentSeq, 2);
  t.equal((await records(join(dir, 'log-000000001-alpha'))).stop?.kind, 'clean-end');
  t.equal((await records(join(dir, 'log-000000002-alpha'))).stop?.kind, 'clean-end');
  await logger.drain();
  t.equal(logger.replayPosition().seq, 2, 'the replay link moves to the new logfile once the old one is applied');
  t.same(readFileSync(diskPath).subarray(0, 65536), second);

  // Replaying both logfiles onto a blank disk reproduces the device.
  const copyPath = join(dir, 'copy.img');
  writeFileSync(copyPath, Buffer.alloc(SIZE));
  const copy = await DataDisk.open(copyPath);
  for (const seq of [1, 2]) {
    const r = await applyLog({ path: join(dir, `log-00000000${seq}-alpha`), seq, fromPos: 0, disk: copy, sizeBytes: SIZE });
    t.equal(r.stop.kind, 'clean-end');
  }
  await copy.datasync();
  await copy.close();
  t.same(readFileSync(copyPath), readFileSync(diskPath), 'replay of the logs equals the primary disk');
});
