// The replayer's handling of a content-mismatch stop before it keeps it (daemon/replay/mismatch-guard.ts)
// and the value of content-mismatch-HOST (daemon/replay/content-check.ts).
import t from 'tap';
import { ContentMismatchGuard } from '../../daemon/replay/mismatch-guard.js';
import { formatContentMismatch, keptMismatchHolds, parseContentMismatch } from '../../daemon/replay/content-check.js';
import type { ContentMismatch, ReplayStep } from '../../daemon/replay/switchover.js';

const m: ContentMismatch = { seq: 2, origin: 'alpha', pos: 1000 };
const mismatch: ReplayStep = { kind: 'stop', code: -74, refetch: false, reason: 'content mismatch', contentMismatch: m };
const apply: ReplayStep = { kind: 'apply', seq: 2, origin: 'alpha', fromPos: 1000, toPos: 3000, repair: false, final: false };
const at = (seq: number, minPos: number) => ({ seq, origin: 'alpha', minPos, len: 0 });

t.test('the own link is computed again once; then the stop is to be kept', async (t) => {
  const g = new ContentMismatchGuard();
  const rewritten: ContentMismatch[] = [];
  const rewrite = (x: ContentMismatch) => { rewritten.push(x); };
  t.equal(g.filter(mismatch, undefined, rewrite), 'again', 'first: rewrite the own link from the bytes on disk');
  t.same(rewritten, [m]);
  t.same(g.filter(mismatch, undefined, rewrite), { step: mismatch, keep: m }, 'still different: believed, keep it');
  t.equal(rewritten.length, 1, 'not rewritten again');
  t.same(g.filter(mismatch, m, rewrite), { step: mismatch, keep: undefined }, 'already kept: nothing to write');
  t.same(g.filter(apply, undefined, rewrite), { step: apply, keep: undefined }, 'other steps pass');
});

t.test('a kept mismatch needs no second rehash (after a restart)', async (t) => {
  const g = new ContentMismatchGuard();
  const rewritten: ContentMismatch[] = [];
  t.same(g.filter(mismatch, m, (x) => rewritten.push(x)), { step: mismatch, keep: undefined });
  t.same(rewritten, [], 'it was rehashed before it was kept');
  t.equal(g.filter(mismatch, { ...m, pos: 2000 }, (x) => rewritten.push(x)), 'again', 'a mismatch elsewhere is checked first');
});

t.test('a rewritten own link that equals the origin\'s ends it', async (t) => {
  const g = new ContentMismatchGuard();
  t.equal(g.filter(mismatch, undefined, () => undefined), 'again');
  const wait: ReplayStep = { kind: 'wait', reason: 'caught up', caughtUp: true };
  t.same(g.filter(wait, undefined, () => undefined), { step: wait, keep: undefined }, 'nothing kept: an own link from an older version was only stale');
});

t.test('content-mismatch-HOST: value and scope', async (t) => {
  t.equal(formatContentMismatch(m), 'log-000000002-alpha,1000');
  t.same(parseContentMismatch('log-000000002-alpha,1000'), m);
  for (const bad of ['', 'log-000000002-alpha', 'log-2-alpha,1000', 'log-000000002-alpha,-1', 'log-000000002-alpha,01', 'log-000000002-alpha,1000,0', 'x,1', 'log-000000002-al/pha,1']) {
    t.equal(parseContentMismatch(bad), undefined, `malformed: ${JSON.stringify(bad)}`);
  }
  t.ok(keptMismatchHolds(at(2, 1000), m), 'at the position');
  t.ok(keptMismatchHolds(at(2, 1500), m), 'beyond it');
  t.notOk(keptMismatchHolds(at(2, 999), m), 'moved back by invalidate');
  t.notOk(keptMismatchHolds(at(3, 1000), m), 'another logfile');
  t.notOk(keptMismatchHolds(undefined, m), 'no replay link');
});
