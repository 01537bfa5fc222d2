// Emergency mode of the primary's write path (EmergencyBackend over TransactionLogger) on real
// files: a logfile that runs out of space (a tiny tmpfs) never costs a client a write; the
// logfile ends at a clean, durable record boundary that is a consistent prefix of the history;
// the disk gets every write; logging resumes in a new logfile afterwards.
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DataDisk } from '../../common/disk/data-disk.js';
import { LogWriter } from '../../daemon/logger/log-writer.js';
import { TransactionLogger } from '../../daemon/logger/transaction-logger.js';
import { EmergencyBackend, type LogEnded } from '../../daemon/logger/emergency-backend.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { readLogBatches } from '../../common/log/scanner.js';
import { applyLog } from '../../daemon/replay/apply-log.js';
import { WriteOrderOracle, readImage } from '../helpers/oracle.js';
import { Prng } from '../helpers/workload.js';
import { tempDir } from '../helpers/tmp.js';

const SIZE = 16 << 20;
const BLOCK = 4096;


/** A tmpfs of `bytes` at dir/mars (root only); unmounted in teardown. */
function smallMars(t: Test, dir: string, bytes: number): string | undefined {
  const mnt = join(dir, 'mars');
  mkdirSync(mnt);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', mnt], { stdio: 'pipe' });
  } catch (err) {
    t.pass('a small tmpfs for /mars', { skip: `cannot mount one: ${(err as Error).message.split('\n')[0]}` });
    return undefined;
  }
  let mounted = true;
  const unmount = () => {
    if (!mounted) return;
    mounted = false;
    try { execFileSync('umount', [mnt], { stdio: 'pipe' }); } catch { execFileSync('umount', ['-l', mnt], { stdio: 'pipe' }); }
  };
  t.teardown(unmount);
  process.once('exit', unmount); // a test that never finishes skips its teardown

  return mnt;
}

async function setup(t: Test, marsDir: string, dir: string) {
  const diskPath = join(dir, 'disk.img');
  writeFileSync(diskPath, Buffer.alloc(SIZE));
  const disk = await DataDisk.open(diskPath);
  const ended: LogEnded[] = [];
  const outOfSpace: number[] = [];
  const make = (writer: LogWriter) => new TransactionLogger({
    disk, sizeBytes: SIZE, clock: new LamportClock(), memLimitBytes: 1 << 20, writer,
    onFatal: (e) => t.fail(`fatal: ${e.message}`),
    onOutOfSpace: () => outOfSpace.push(Date.now()),
  });
  const logger = make(await LogWriter.openFresh(join(marsDir, 'log-000000001-alpha'), 1));
  const backend = new EmergencyBackend({
    disk, logger, log: () => undefined,
    onEnter: async (e) => { ended.push(e); },
  });
  t.teardown(async () => { await backend.stop().catch(() => undefined); await disk.close().catch(() => undefined); });
  return { diskPath, disk, backend, ended, outOfSpace, make };
}

/** Pipelined oracle writes (no two in flight overlap), some FUA, a FLUSH every 64; all must succeed. */
async function workload(t: Test, backend: EmergencyBackend, oracle: WriteOrderOracle, writes: number, seed: number): Promise<void> {
  const rand = new Prng(seed);
  const inFlight = new Set<Promise<void>>();
  let errors = 0;
  for (let i = 0; i < writes; i++) {
    let w;
    for (;;) {
      const count = rand.between(1, 8);
      const start = rand.below(SIZE / BLOCK - count);
      if (!oracle.overlapsPending(start, count)) { w = oracle.nextWrite({ start, count }, { pending: true }); break; }
      await Promise.race(inFlight);
    }
    const p: Promise<void> = backend.write(w.pos, w.data, i % 17 === 0).then(
      () => oracle.markAcked(w.seq),
      (err) => { errors++; oracle.markFailed(w.seq); t.fail(`write ${w.seq} failed: ${(err as Error).message}`); },
    ).finally(() => inFlight.delete(p));
    inFlight.add(p);
    if (inFlight.size >= 16) await Promise.race(inFlight);
    if (i % 64 === 63) {
      await Promise.all(inFlight);
      await backend.flush();
      oracle.markDurable(oracle.lastSeq);
    }
  }
  await Promise.all(inFlight);
  await backend.flush();
  t.equal(errors, 0, `${writes} writes, none failed`);
}

/** The ended logfile applied to a zeroed disk: a consistent prefix of the history, clean to its end. */
async function checkLogPrefix(t: Test, dir: string, logPath: string, endPos: number, oracle: WriteOrderOracle): Promise<number> {
  t.equal(statSync(logPath).size, endPos, 'the logfile ends exactly at the LOGPOS reported');
  let stopKind: string | undefined;
  for await (const item of readLogBatches(logPath, 0)) if (item.type === 'end') stopKind = item.stop.kind;
  t.equal(stopKind, 'clean-end', 'no torn or partial record at the end of the ended logfile');
  const replica = join(dir, 'replica.img');
  writeFileSync(replica, Buffer.alloc(SIZE));
  const rdisk = await DataDisk.open(replica);
  try {
    await applyLog({ path: logPath, seq: 1, fromPos: 0, disk: rdisk, sizeBytes: SIZE });
  } finally {
    await rdisk.close();
  }
  const r = await oracle.checkImage(readImage(replica));
  t.ok(r.ok, `a replica replaying the ended logfile is consistent${r.ok ? ` (through write ${r.prefixMin} of ${r.lastSeq})` : `: ${r.reason}`}`);
  return r.ok ? r.prefixMin : -1;
}

t.test('ENOSPC on the logfile: emergency mode, no client error, a clean consistent log end', {
  skip: process.getuid?.() === 0 ? false : 'needs root to mount a small tmpfs for /mars: run the tests as root',
}, async (t) => {
  const dir = tempDir(t);
  const mars = smallMars(t, dir, 2 << 20);
  if (!mars) return;
  const { diskPath, backend, ended, outOfSpace, make } = await setup(t, mars, dir);
  const oracle = new WriteOrderOracle({ deviceBytes: SIZE, blockBytes: BLOCK });
  await workload(t, backend, oracle, 1500, 1); // about 6.7 MiB into a 2 MiB /mars
  t.equal(backend.mode, 'direct', 'emergency mode: writes go to the disk');
  t.ok(outOfSpace.length > 0, 'the logger reported ENOSPC');
  t.equal(ended.length, 1, 'entered once');
  t.match(ended[0]!.reason, /full/);
  const all = await oracle.checkImage(readImage(diskPath));
  t.ok(all.ok && all.prefixMin === oracle.lastSeq, 'the primary\'s disk holds every acknowledged write');
  const through = await checkLogPrefix(t, dir, join(mars, 'log-000000001-alpha'), ended[0]!.endPos, oracle);
  t.ok(through > 0 && through < oracle.lastSeq, 'the log holds an older state: the replicas stop there');

  // Reads see the newest data in emergency mode too.
  const w = oracle.nextWrite({ start: 10, count: 2 });
  await backend.write(w.pos, w.data, false);
  t.same(await backend.read(w.pos, w.data.length), w.data, 'read-your-writes in emergency mode');
  await backend.writeZeroes(20 * BLOCK, 3 * BLOCK, true);
  t.same(await backend.read(20 * BLOCK, 3 * BLOCK), Buffer.alloc(3 * BLOCK), 'WRITE_ZEROES in emergency mode');

  // Space is back: log again into a new logfile.
  rmSync(join(mars, 'log-000000001-alpha'));
  const writer = await LogWriter.openFresh(join(mars, 'log-000000012-alpha'), 12);
  await backend.resume(async () => make(writer));
  t.equal(backend.mode, 'logging', 'logging resumed');
  const v = oracle.nextWrite({ start: 100, count: 4 });
  await backend.write(v.pos, v.data, true);
  t.ok(statSync(join(mars, 'log-000000012-alpha')).size > 4 * BLOCK, 'the write is logged in the new logfile');
  await backend.logger.drain();
  t.same(readImage(diskPath)(v.pos, v.data.length), v.data, 'and written back');
  t.same(readImage(diskPath)(20 * BLOCK, 3 * BLOCK), Buffer.alloc(3 * BLOCK), 'the unlogged zeroes survived the switch back');
});

t.test('emergency mode by space level: logging stops mid-workload, nothing lost, log stays clean', async (t) => {
  const dir = tempDir(t);
  const mars = join(dir, 'mars');
  mkdirSync(mars);
  const { diskPath, backend, ended } = await setup(t, mars, dir);
  const oracle = new WriteOrderOracle({ deviceBytes: SIZE, blockBytes: BLOCK });
  const first = workload(t, backend, oracle, 600, 2);
  while (oracle.lastSeq < 200) await new Promise((r) => setTimeout(r, 1));
  const entering = backend.enter('space level 4 (test)');
  t.equal(backend.mode, 'entering');
  await Promise.all([first, entering]);
  t.equal(backend.mode, 'direct');
  await workload(t, backend, oracle, 300, 3);
  const all = await oracle.checkImage(readImage(diskPath));
  t.ok(all.ok && all.prefixMin === oracle.lastSeq, 'the disk holds every write, logged or not');
  const through = await checkLogPrefix(t, dir, join(mars, 'log-000000001-alpha'), ended[0]!.endPos, oracle);
  t.ok(through >= 150, `the log holds what was logged before the switch (through write ${through})`);
  await backend.enter('again');
  t.equal(ended.length, 1, 'entering twice does nothing');
});

t.test('stopping in emergency mode makes the unlogged writes durable and refuses further writes', async (t) => {
  const dir = tempDir(t);
  const mars = join(dir, 'mars');
  mkdirSync(mars);
  const { backend } = await setup(t, mars, dir);
  await backend.enter('test');
  await backend.write(0, Buffer.alloc(BLOCK, 7), false);
  await backend.stop();
  await backend.write(0, Buffer.alloc(BLOCK, 8), false).then(
    () => t.fail('a write after stop succeeded'),
    (err) => t.equal((err as { errno?: string }).errno, 'EPERM', 'EPERM after stop, never a silent discard'));
  t.equal(backend.isWritable(), false);
});
