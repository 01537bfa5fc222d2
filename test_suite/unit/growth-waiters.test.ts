// GrowthWaiters (daemon/logger/growth-waiters.ts) and LogWriter.durableBeyond on a real logfile:
// a wait ends when the durable end passes its mark, when the writer ends, or when it is
// cancelled, and a cancelled wait leaves nothing behind.
import t from 'tap';
import { join } from 'node:path';
import { GrowthWaiters } from '../../daemon/logger/growth-waiters.js';
import { LogWriter } from '../../daemon/logger/log-writer.js';
import { tempDir } from '../helpers/tmp.js';
import { withDeadline } from '../helpers/wait.js';

/** Whether p has settled after the microtasks queued now have run. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => { done = true; });
  for (let i = 0; i < 5; i++) await Promise.resolve();
  return done;
}

t.test('a wait ends only when the position passes its mark', async (t) => {
  const g = new GrowthWaiters();
  const w = g.wait(100, new AbortController().signal);
  g.moved(50);
  g.moved(100);
  t.notOk(await settled(w), 'not at or below the mark');
  g.moved(101);
  t.ok(await settled(w), 'beyond the mark');
});

t.test('end wakes every wait, and later waits return at once', async (t) => {
  const g = new GrowthWaiters();
  const a = g.wait(10, new AbortController().signal);
  const b = g.wait(20, new AbortController().signal);
  g.end();
  t.ok(await settled(a));
  t.ok(await settled(b));
  t.ok(g.isEnded);
  t.ok(await settled(g.wait(30, new AbortController().signal)));
});

t.test('a cancelled wait ends and is forgotten', async (t) => {
  const g = new GrowthWaiters();
  const ac = new AbortController();
  const w = g.wait(10, ac.signal);
  ac.abort();
  t.ok(await settled(w), 'the cancel ends it');
  t.equal((g as unknown as { waiting: Set<unknown> }).waiting.size, 0, 'nothing kept for it');
  t.ok(await settled(g.wait(10, ac.signal)), 'an already cancelled wait returns at once');
  t.equal((g as unknown as { waiting: Set<unknown> }).waiting.size, 0);
});

t.test('LogWriter.durableBeyond: woken by the fdatasync that makes an append durable, false once closed', async (t) => {
  const dir = tempDir(t);
  const writer = await LogWriter.openFresh(join(dir, 'log-000000001-alpha'), 1);
  const ac = new AbortController();
  const wait = writer.durableBeyond(writer.durablePos, ac.signal);
  t.notOk(await settled(wait), 'nothing durable beyond the mark yet');
  await writer.appendWrite(0, Buffer.alloc(4096, 7), 1, true);
  t.equal(await withDeadline(wait, 5_000, 'the wait to end after a durable append'), true);
  t.ok(writer.durablePos > 0);
  // Already beyond the mark: returns at once.
  t.equal(await writer.durableBeyond(0, ac.signal), true);
  const pending = writer.durableBeyond(writer.durablePos, ac.signal);
  await writer.close();
  t.equal(await withDeadline(pending, 5_000, 'close to end the wait'), true, 'close ends a running wait');
  t.equal(await writer.durableBeyond(writer.durablePos, ac.signal), false, 'nothing to wait for on a closed writer');
});
