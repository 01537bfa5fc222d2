// Notifications to peers are paced, never dropped (daemon/propagate/notify-pacer.ts). Before,
// a change within 100 ms of the last notification was not told at all, and the peers learned
// it at their next regular pull (seen in a handover among 30 resources: two of three changes
// of one step dropped).
import t from 'tap';
import { NotifyPacer, NOTIFY_MIN_INTERVAL_MS } from '../../daemon/propagate/notify-pacer.js';
import { SimClock } from '../helpers/sim-clock.js';

function pacer() {
  const clock = new SimClock();
  const at: number[] = [];
  const start = clock.monotonicMs();
  const p = new NotifyPacer(clock, () => at.push(clock.monotonicMs() - start));
  return { clock, at, p };
}

t.test('the first change is told at once; changes inside the interval once, at its end', async (t) => {
  const { clock, at, p } = pacer();
  p.changed();
  t.same(at, [0], 'at once');
  await clock.advance(10);
  p.changed();
  await clock.advance(30);
  p.changed();
  t.same(at, [0], 'not yet: inside the interval');
  await clock.advance(NOTIFY_MIN_INTERVAL_MS);
  t.same(at, [0, NOTIFY_MIN_INTERVAL_MS], 'both later changes told by one notification at the interval\'s end');
  await clock.advance(1000);
  t.same(at, [0, NOTIFY_MIN_INTERVAL_MS], 'nothing more without a change');
  p.changed();
  t.same(at, [0, NOTIFY_MIN_INTERVAL_MS, NOTIFY_MIN_INTERVAL_MS + 1040], 'after a quiet interval: at once again');
});

t.test('a steady stream of changes gives one notification per interval', async (t) => {
  const { clock, at, p } = pacer();
  for (let i = 0; i < 100; i++) {
    p.changed();
    await clock.advance(10);
  }
  await clock.advance(NOTIFY_MIN_INTERVAL_MS);
  t.equal(at.length, 11, '1000 ms of changes: 10 intervals and the trailing one');
  for (let i = 1; i < at.length; i++) t.ok(at[i]! - at[i - 1]! >= NOTIFY_MIN_INTERVAL_MS, `notification ${i} at least an interval after the one before`);
});

t.test('stop cancels a pending notification', async (t) => {
  const { clock, at, p } = pacer();
  p.changed();
  p.changed();
  p.stop();
  await clock.advance(1000);
  t.same(at, [0]);
});
