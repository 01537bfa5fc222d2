// The simulated clock the shell tests run on (test_suite/helpers/sim-clock.ts): time moves only
// when the test moves it, timers run in due order (ties in creation order), intervals repeat,
// cancel works, sleep aborts, and until() gives up with a message instead of hanging.
import t from 'tap';
import { SimClock } from '../helpers/sim-clock.js';

t.test('timers run in order of due time, then of creation, as time is advanced', async (t) => {
  const c = new SimClock(1000);
  const seen: string[] = [];
  c.setTimeout(() => seen.push(`b@${c.nowMs()}`), 20);
  c.setTimeout(() => seen.push(`a@${c.nowMs()}`), 10);
  c.setTimeout(() => seen.push(`c@${c.nowMs()}`), 20);
  const gone = c.setTimeout(() => seen.push('cancelled'), 15);
  gone.cancel();
  t.equal(c.nowMs(), 1000);
  await c.advance(15);
  t.same(seen, ['a@1010']);
  t.equal(c.nowMs(), 1015);
  await c.advance(100);
  t.same(seen, ['a@1010', 'b@1020', 'c@1020']);
  t.equal(c.pendingTimers, 0);
});

t.test('intervals repeat until cancelled; a timer set by a timer runs in the same advance', async (t) => {
  const c = new SimClock(0);
  const ticks: number[] = [];
  const iv = c.setInterval(() => ticks.push(c.nowMs()), 100);
  c.setTimeout(() => c.setTimeout(() => ticks.push(-c.nowMs()), 5), 250);
  await c.advance(350);
  t.same(ticks, [100, 200, 300, -255].sort((a, b) => Math.abs(a) - Math.abs(b)));
  iv.cancel();
  await c.advance(1000);
  t.equal(ticks.length, 4);
});

t.test('sleep resolves at its time, or rejects when aborted', async (t) => {
  const c = new SimClock(0);
  let woke = false;
  const p = c.sleep(50).then(() => { woke = true; });
  await c.advance(49);
  t.notOk(woke);
  await c.advance(1);
  await p;
  t.ok(woke);
  const abort = new AbortController();
  const q = c.sleep(1000, abort.signal);
  abort.abort(new Error('stop'));
  await t.rejects(q, /stop/);
  t.equal(c.pendingTimers, 0, 'the aborted sleep left no timer');
});

t.test('real I/O completes between steps; until() names what never happened', async (t) => {
  const c = new SimClock(0);
  let done = false;
  void import('node:fs/promises').then((fs) => fs.stat('.')).then(() => { done = true; });
  await c.until('a stat of the current directory', () => done);
  t.ok(done);
  await t.rejects(c.until('nothing', () => false, { maxMs: 100 }), /nothing did not happen within 100 ms/);
});
