// The log sync for peers: a plain write is made durable in the log LOG_SYNC_FOR_PEERS_MS after
// it arrived, long before writeback's delay, so a secondary can fetch it (replication lag).
import t from 'tap';
import type { DataDisk } from '../../common/disk/data-disk.js';
import { PendingIndex } from '../../daemon/logger/pending-index.js';
import { Writeback } from '../../daemon/logger/writeback.js';
import { SimClock } from '../helpers/sim-clock.js';

function setup(logSyncDelayMs: number | undefined) {
  const clock = new SimClock();
  const index = new PendingIndex();
  let logSyncs = 0;
  const disk = { writeMany: async () => undefined, datasync: async () => undefined } as unknown as DataDisk;
  const wb = new Writeback({
    index, disk, syncLog: async () => { logSyncs++; }, onApplied: () => undefined, onWritten: () => undefined,
    logEnd: () => ({ seq: 1, pos: 4096 }), appliedAtStart: { seq: 1, pos: 0 }, syncIntervalMs: 5_000,
    onError: () => undefined, maxBatchBytes: 1 << 20, delayMs: 200, startBytes: 1 << 30, clock, logSyncDelayMs,
  });
  return { clock, index, wb, syncs: () => logSyncs };
}

t.test('a write is synced to the log after logSyncDelayMs, before writeback starts', async (t) => {
  const { clock, index, wb, syncs } = setup(50);
  t.teardown(() => wb.stop());
  index.put(0, 4096, Buffer.alloc(4096, 1), { seq: 1, pos: 0 });
  wb.kick();
  await clock.advance(49);
  t.equal(syncs(), 0, 'not before the delay');
  await clock.advance(1);
  t.equal(syncs(), 1, 'one log sync at 50 ms (writeback waits until 200 ms)');
  wb.kick();
  wb.kick();
  await clock.advance(50);
  t.equal(syncs(), 2, 'kicks within one delay share one sync');
});

t.test('without logSyncDelayMs only writeback syncs the log; stop cancels a pending sync', async (t) => {
  const off = setup(undefined);
  t.teardown(() => off.wb.stop());
  off.index.put(0, 4096, Buffer.alloc(4096, 1), { seq: 1, pos: 0 });
  off.wb.kick();
  await off.clock.advance(100);
  t.equal(off.syncs(), 0, 'no early sync when not asked for');

  const on = setup(50);
  on.index.put(0, 4096, Buffer.alloc(4096, 1), { seq: 1, pos: 0 });
  on.wb.kick();
  on.wb.stop();
  await on.clock.advance(100);
  t.equal(on.syncs(), 0, 'a stopped writeback does not sync');
});
