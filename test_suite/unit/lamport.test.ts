import t from 'tap';
import { LamportClock, MAX_LAMPORT_FUTURE_US, formatStamp } from '../../common/tree/lamport.js';

t.test('tick is strictly increasing even when real time stands still', async (t) => {
  const clock = new LamportClock(() => 1000);
  const a = clock.tick();
  const b = clock.tick();
  t.equal(a, 1000);
  t.equal(b, 1001);
});

t.test('observe advances; absurd future stamps are ignored', async (t) => {
  let now = 1_000_000;
  const clock = new LamportClock(() => now);
  clock.observe(5_000_000);
  t.equal(clock.tick(), 5_000_001);
  clock.observe(now + MAX_LAMPORT_FUTURE_US + 10);
  t.equal(clock.now(), 5_000_001);
  now = 9_000_000;
  t.equal(clock.tick(), 9_000_000, 'real time wins once it passes the highest stamp');
});

t.test('formatStamp prints sec.nsec', async (t) => {
  t.equal(formatStamp(1_700_000_000_000_001), '1700000000.000001000');
});
