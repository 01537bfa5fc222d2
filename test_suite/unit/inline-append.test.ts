// The log append policy: inline (event loop) while appends are fast and small, the pool for a
// while after a slow one, always the pool for large batches.
import t from 'tap';
import { InlineAppendPolicy, INLINE_MAX_BYTES, POOL_AFTER_SLOW_MS, SLOW_INLINE_MS } from '../../daemon/logger/inline-append.js';

t.test('small appends run inline until one is slow, then the pool for POOL_AFTER_SLOW_MS', async (t) => {
  const p = new InlineAppendPolicy();
  t.ok(p.inline(4096, 0), 'a small append at start runs inline');
  p.took(0, SLOW_INLINE_MS); // exactly the bound: still fast
  t.ok(p.inline(4096, 10), 'still inline after a fast append');
  t.equal(p.slowAppends, 0);
  p.took(10, 10 + SLOW_INLINE_MS + 0.5);
  t.equal(p.slowAppends, 1);
  const end = 10 + SLOW_INLINE_MS + 0.5;
  t.notOk(p.inline(4096, end), 'the next append goes to the pool');
  t.notOk(p.inline(4096, end + POOL_AFTER_SLOW_MS - 1), 'and so do appends until the back-off ends');
  t.ok(p.inline(4096, end + POOL_AFTER_SLOW_MS), 'inline again afterwards');
});

t.test('batches above INLINE_MAX_BYTES always go to the pool', async (t) => {
  const p = new InlineAppendPolicy();
  t.ok(p.inline(INLINE_MAX_BYTES, 0));
  t.notOk(p.inline(INLINE_MAX_BYTES + 1, 0));
});

t.test('a second slow append extends the back-off from its own end', async (t) => {
  const p = new InlineAppendPolicy();
  p.took(0, 50);
  t.notOk(p.inline(1, 50 + POOL_AFTER_SLOW_MS - 1));
  p.took(60, 100); // a pool write is never reported, but an inline one that started earlier may be
  t.notOk(p.inline(1, 100 + POOL_AFTER_SLOW_MS - 1));
  t.ok(p.inline(1, 100 + POOL_AFTER_SLOW_MS));
  t.equal(p.slowAppends, 2);
});
