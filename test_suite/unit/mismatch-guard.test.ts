// The replayer's handling of a content-mismatch stop (daemon/replay/mismatch-guard.ts).
import t from 'tap';
import { ContentMismatchGuard } from '../../daemon/replay/mismatch-guard.js';
import type { ContentMismatch, ReplayStep } from '../../daemon/replay/switchover.js';

const mismatch: ReplayStep = { kind: 'stop', code: -74, refetch: false, reason: 'content mismatch', contentMismatch: { seq: 2, origin: 'alpha', pos: 1000 } };
const apply: ReplayStep = { kind: 'apply', seq: 2, origin: 'alpha', fromPos: 1000, toPos: 3000, repair: false };
const at = (seq: number, minPos: number) => ({ seq, origin: 'alpha', minPos, len: 0 });

t.test('the own link is computed again once; then the stop holds while the origin writes on', async (t) => {
  const g = new ContentMismatchGuard();
  const rewritten: ContentMismatch[] = [];
  const rewrite = (m: ContentMismatch) => { rewritten.push(m); };
  t.equal(g.filter(mismatch, at(2, 1000), rewrite), 'again', 'first: rewrite the own link from the bytes on disk');
  t.same(rewritten, [{ seq: 2, origin: 'alpha', pos: 1000 }]);
  t.equal(g.filter(mismatch, at(2, 1000), rewrite), mismatch, 'still different: believed');
  t.equal(rewritten.length, 1, 'not rewritten again');
  t.equal(g.filter(apply, at(2, 1000), rewrite), mismatch, 'the origin moved on: the stop holds');
  t.equal(g.filter(apply, at(2, 0), rewrite), apply, 'invalidate moved the replay link back: released');
  t.equal(g.filter(apply, at(2, 1000), rewrite), apply, 'and stays released');
});

t.test('a rewritten own link that equals the origin\'s ends it', async (t) => {
  const g = new ContentMismatchGuard();
  t.equal(g.filter(mismatch, at(2, 1000), () => undefined), 'again');
  const wait: ReplayStep = { kind: 'wait', reason: 'caught up', caughtUp: true };
  t.equal(g.filter(wait, at(2, 1000), () => undefined), wait, 'no stop held: an own link from an older version was only stale');
});
