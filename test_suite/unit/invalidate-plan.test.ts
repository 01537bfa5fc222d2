import t from 'tap';
import { nextVersionLink } from '../../common/log/links.js';
import { contentDigestOf } from '../../common/log/content-digest.js';
import { chainsFrom } from '../../common/resource/split-brain.js';
import { planInvalidate, type InvalidateInput } from '../../common/resource/invalidate-plan.js';
import { mergeRanges } from '../../common/resource/resync.js';

// One content for every logfile: these tests are about positions and chains, not bytes.
const CONTENT = contentDigestOf(Buffer.from('logfile bytes'));

function chain(host: string, files: [string, number][], content = CONTENT): { seq: number; host: string; value: string }[] {
  let prev = '';
  return files.map(([origin, pos], i) => {
    prev = nextVersionLink(prev, i + 1, origin, pos, content);
    return { seq: i + 1, host, value: prev };
  });
}

// alpha was primary; beta took over by force at 200 bytes of logfile 2; alpha went on writing
// (to 500, then logfile 3); beta wrote logfile 3 of its own.
function input(over: Partial<InvalidateInput> = {}): InvalidateInput {
  return {
    host: 'alpha', primary: 'beta',
    chains: chainsFrom([
      ...chain('alpha', [['alpha', 100], ['alpha', 500], ['alpha', 30]]),
      ...chain('beta', [['alpha', 100], ['alpha', 200], ['beta', 70]]),
    ]),
    localLogBytes: new Map([['log-000000001-alpha', 100], ['log-000000002-alpha', 500], ['log-000000003-alpha', 30], ['log-000000003-beta', 70]]),
    deletedLogs: new Set(),
    primaryReplay: { seq: 3, origin: 'beta' },
    ...over,
  };
}

t.test('after a split brain: incremental, from the common point, discarding our own writes', async (t) => {
  const p = planInvalidate(input());
  if (p.kind !== 'incremental') throw new Error(`expected incremental, got ${JSON.stringify(p)}`);
  t.same(p.common, { seq: 2, origin: 'alpha', pos: 200 });
  t.same(p.ourParts, [{ seq: 2, origin: 'alpha', fromPos: 200, toPos: 500 }, { seq: 3, origin: 'alpha', fromPos: 0, toPos: 30 }]);
  t.equal(p.primaryBytesSince, 70);
  t.same(p.replay, { seq: 2, origin: 'alpha', minPos: 200, len: 0 });
  t.same(p.truncate, { name: 'log-000000002-alpha', toBytes: 200 });
  t.same(p.deleteOwnLogs, ['log-000000003-alpha']);
  t.same(p.deleteVersions, [3]);
  t.equal(p.writeVersions.size, 0);
  t.same(p.extendVersion, { seq: 2, origin: 'alpha', logPos: 200, prev: chain('alpha', [['alpha', 100]])[0]!.value },
    'our versionlink at the common point is computed over our copy once cut back there');
});

t.test('a copy of the primary\'s logfile with other bytes: unlinked, our chain goes back before it', async (t) => {
  // beta replayed alpha's logfile 2 to its end, but its copy's bytes differ (damaged or forged).
  const p = planInvalidate({
    host: 'beta', primary: 'alpha',
    chains: chainsFrom([
      ...chain('alpha', [['alpha', 100], ['alpha', 500]]),
      ...chain('beta', [['alpha', 100]]),
      { seq: 2, host: 'beta', value: nextVersionLink(chain('beta', [['alpha', 100]])[0]!.value, 2, 'alpha', 500, contentDigestOf(Buffer.from('other bytes'))) },
    ]),
    localLogBytes: new Map([['log-000000001-alpha', 100], ['log-000000002-alpha', 500]]),
    deletedLogs: new Set(),
    primaryReplay: { seq: 2, origin: 'alpha' },
  });
  if (p.kind !== 'incremental') throw new Error(`expected incremental, got ${JSON.stringify(p)}`);
  t.same(p.common, { seq: 1, origin: 'alpha', pos: 100 });
  t.same(p.unlinkLocalLogs, ['log-000000002-alpha'], 'the differing copy is fetched again');
  t.same(p.ourParts, [{ seq: 2, origin: 'alpha', fromPos: 0, toPos: 500 }], 'the blocks it wrote are copied from the primary');
  t.equal(p.writeVersions.get(1), chain('beta', [['alpha', 100]])[0]!.value, 'our own link at the common point stays');
  t.equal(p.extendVersion, undefined);
  t.same(p.replay, { seq: 1, origin: 'alpha', minPos: 100, len: 0 });
});

t.test('falls back to a full sync when the incremental one cannot be proven right', async (t) => {
  let p = planInvalidate(input({ localLogBytes: new Map([['log-000000002-alpha', 300]]) }));
  t.equal(p.kind, 'full');
  t.match((p as { reason: string }).reason, /not here completely/);
  p = planInvalidate(input({ deletedLogs: new Set(['log-000000003-beta']) }));
  t.match((p as { reason: string }).reason, /was deleted/);
  const noSplit = chainsFrom([...chain('alpha', [['alpha', 100], ['alpha', 200]]), ...chain('beta', [['alpha', 100], ['alpha', 200], ['beta', 70]])]);
  p = planInvalidate(input({ chains: noSplit }));
  t.equal(p.kind, 'full');
  t.match((p as { reason: string }).reason, /no split brain/);
  if (p.kind === 'full') t.same(p.replay, { seq: 3, origin: 'beta', minPos: 0, len: 0 });
  if (p.kind === 'full') t.same(p.unlinkLocalLogs, ['log-000000003-beta'], 'local copies from the restart point on are fetched again: they may hold other bytes');
});

t.test('refused on the primary and without the primary\'s links', async (t) => {
  t.equal(planInvalidate(input({ primary: 'alpha' })).kind, 'refused');
  t.equal(planInvalidate(input({ chains: chainsFrom(chain('alpha', [['alpha', 1]])) })).kind, 'refused');
});

t.test('ranges are aligned to 4 KiB blocks and merged', async (t) => {
  t.same(mergeRanges([{ pos: 8192, lengthBytes: 512 }, { pos: 0, lengthBytes: 4096 }, { pos: 4096, lengthBytes: 10 }, { pos: 20480, lengthBytes: 4096 }], 1 << 20),
    [{ pos: 0, lengthBytes: 12288 }, { pos: 20480, lengthBytes: 4096 }]);
  t.same(mergeRanges([{ pos: (1 << 20) - 512, lengthBytes: 512 }], 1 << 20), [{ pos: (1 << 20) - 4096, lengthBytes: 4096 }]);
});
