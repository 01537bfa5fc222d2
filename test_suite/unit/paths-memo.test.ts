// Resource paths are built once per argument list (common/tree/paths.ts): the same string comes
// back, an invalid name is refused at every call (never kept), and past the bound the builders
// start over without changing any answer.
import t from 'tap';
import { resPaths, resourceDir } from '../../common/tree/paths.js';

t.test('the same arguments give the same string object; invalid names throw every time', async (t) => {
  const a = resPaths.actual('r0', 'h1', 'replay-rest');
  t.equal(a, 'resource-r0/actual-h1/replay-rest');
  t.ok(Object.is(a, resPaths.actual('r0', 'h1', 'replay-rest')), 'remembered');
  t.equal(resPaths.log('r0', 7, 'h2'), 'resource-r0/log-000000007-h2');
  t.equal(resPaths.version('r0', 7, 'h2'), 'resource-r0/version-000000007-h2');
  for (let i = 0; i < 2; i++) {
    t.throws(() => resourceDir('../x'), 'an invalid resource name is refused');
    t.throws(() => resPaths.data('r0', 'h/1'), 'an invalid host name is refused');
    t.throws(() => resPaths.todo('../r', 'h1', 'attach'), 'refused again: nothing was kept');
  }
});

t.test('past the bound, answers stay the same', async (t) => {
  const wrong: string[] = [];
  for (let i = 0; i < 25_000; i++) if (resPaths.replay(`r${i}`, 'h1') !== `resource-r${i}/replay-h1`) wrong.push(`r${i}`);
  t.same(wrong, [], '25,000 resources, more than a builder keeps');
  t.equal(resPaths.replay('r0', 'h1'), 'resource-r0/replay-h1');
  t.equal(resPaths.replay('r24999', 'h1'), 'resource-r24999/replay-h1');
});
