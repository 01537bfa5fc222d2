// The regular pull of a peer's tree stretches while pulls bring no news and starts over at
// the interval with the first one that does (daemon/propagate/pull-pacing.ts, issue 11).
import t from 'tap';
import { MAX_QUIET_FACTOR, pullDelayMs, QUIET_PULLS_PER_STEP } from '../../daemon/propagate/pull-pacing.js';

t.test('the interval while pulls bring news, then longer step by step, never beyond the cap', async (t) => {
  t.equal(pullDelayMs(1000, 0), 1000, 'news: the interval');
  t.equal(pullDelayMs(1000, QUIET_PULLS_PER_STEP - 1), 1000);
  t.equal(pullDelayMs(1000, QUIET_PULLS_PER_STEP), 2000);
  t.equal(pullDelayMs(1000, 2 * QUIET_PULLS_PER_STEP), 3000);
  t.equal(pullDelayMs(1000, 1_000_000), MAX_QUIET_FACTOR * 1000, 'capped');
  t.equal(pullDelayMs(250, 1_000_000), MAX_QUIET_FACTOR * 250, 'in pull intervals');
  let previous = 0;
  for (let quiet = 0; quiet < 100; quiet++) {
    const d = pullDelayMs(1000, quiet);
    t.ok(d >= previous && d <= MAX_QUIET_FACTOR * 1000, `quiet ${quiet}: ${d} ms`);
    previous = d;
  }
});
