import t from 'tap';
import { nextVersionLink } from '../../common/log/links.js';
import { contentDigestOf } from '../../common/log/content-digest.js';
import { bytesSince, chainsFrom, commonPoint, findDivergence, sideOf } from '../../common/resource/split-brain.js';

// One content for every logfile: these tests are about positions and chains, not bytes.
const CONTENT = contentDigestOf(Buffer.from('logfile bytes'));

/** A chain of versionlinks for `host` through the given logfiles [origin, logPos]. */
function chain(host: string, files: [string, number][], from = 1): { seq: number; host: string; value: string }[] {
  const out: { seq: number; host: string; value: string }[] = [];
  let prev = '';
  files.forEach(([origin, pos], i) => {
    prev = nextVersionLink(prev, from + i, origin, pos, CONTENT);
    out.push({ seq: from + i, host, value: prev });
  });
  return out;
}

t.test('equal histories and a secondary behind are compatible', async (t) => {
  const c = chainsFrom([
    ...chain('alpha', [['alpha', 100], ['alpha', 200], ['alpha', 50]]),
    ...chain('beta', [['alpha', 100], ['alpha', 120]]),
    ...chain('gamma', [['alpha', 100], ['alpha', 200], ['alpha', 50]]),
  ]);
  t.equal(commonPoint(c.get('alpha')!, c.get('beta')!), undefined, 'beta is behind inside logfile 2');
  t.equal(findDivergence(c, ['alpha', 'beta', 'gamma']), undefined);
});

t.test('a planned handover continues one history', async (t) => {
  const c = chainsFrom([
    ...chain('alpha', [['alpha', 100], ['alpha', 200]]),
    ...chain('beta', [['alpha', 100], ['alpha', 200], ['beta', 70]]),
  ]);
  t.equal(findDivergence(c, ['alpha', 'beta']), undefined);
});

t.test('a forced failover inside a logfile, both sides writing: split at the failover point', async (t) => {
  const c = chainsFrom([
    ...chain('alpha', [['alpha', 100], ['alpha', 500], ['alpha', 30]]),
    ...chain('beta', [['alpha', 100], ['alpha', 200], ['beta', 70]]),
  ]);
  const d = findDivergence(c, ['alpha', 'beta']);
  t.same(d?.common, { seq: 2, origin: 'alpha', pos: 200 });
  t.equal(d?.a.bytesSince, 300 + 30, 'alpha wrote the rest of logfile 2 and logfile 3');
  t.equal(d?.b.bytesSince, 70, 'beta wrote its logfile 3');
  t.equal(bytesSince(c.get('beta')!, d!.common), 70);
});

t.test('the old primary wrote nothing after the failover point: no split brain', async (t) => {
  const c = chainsFrom([
    ...chain('alpha', [['alpha', 100], ['alpha', 200]]),
    ...chain('beta', [['alpha', 100], ['alpha', 200], ['beta', 70]]),
  ]);
  t.equal(findDivergence(c, ['alpha', 'beta']), undefined);
});

t.test('two logfiles with one number: split at the end of the previous one', async (t) => {
  const c = chainsFrom([
    ...chain('alpha', [['alpha', 100], ['alpha', 40]]),
    ...chain('beta', [['alpha', 100], ['beta', 70]]),
  ]);
  const d = findDivergence(c, ['alpha', 'beta']);
  t.same(d?.common, { seq: 1, origin: 'alpha', pos: 100 });
  t.equal(d?.a.bytesSince, 40);
  t.equal(d?.b.bytesSince, 70);
});

t.test('sides: a third host that replayed the old primary\'s extra writes is on its side', async (t) => {
  const c = chainsFrom([
    ...chain('alpha', [['alpha', 100], ['alpha', 500]]),
    ...chain('beta', [['alpha', 100], ['alpha', 200], ['beta', 70]]),
    ...chain('gamma', [['alpha', 100], ['alpha', 450]]),
    ...chain('delta', [['alpha', 100], ['alpha', 150]]),
  ]);
  const hosts = ['alpha', 'beta', 'gamma', 'delta'];
  t.same(sideOf(c, hosts, 'alpha'), ['alpha', 'delta', 'gamma']);
  t.same(sideOf(c, hosts, 'beta'), ['beta', 'delta'], 'delta, behind the split, fits both');
  t.ok(findDivergence(c, hosts));
  t.equal(findDivergence(c, ['alpha', 'gamma', 'delta']), undefined, 'non-members are not compared');
});
