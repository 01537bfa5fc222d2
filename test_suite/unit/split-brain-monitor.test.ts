// The split-brain monitor's publishing (daemon/control/split-brain-monitor.ts) on a real tree.
import t from 'tap';
import { mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { writeVersionLink } from '../../common/resource/links.js';
import { TreeStore } from '../../common/tree/store.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { resPaths, resourceDir } from '../../common/tree/paths.js';
import { SplitBrainMonitor } from '../../daemon/control/split-brain-monitor.js';
import { systemClock } from '../../common/util/clock.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

t.test('regression: a check before the status publisher made actual-HOST/ publishes instead of failing with ENOENT', async (t) => {
  // Issue 11: with 30 resources h2 logged "split-brain check failed: ENOENT ... symlink '0' ->
  // .tmp...": the monitor ran in a resource's first round, before the status publisher had
  // created the resource's actual-h2/ directory, and the temp link could not be made there.
  const dir = tempDir(t);
  const tree = new TreeStore(dir, new LamportClock(() => Date.now() * 1000));
  mkdirSync(tree.abs(resourceDir('r1')), { recursive: true });
  const warnings: string[] = [];
  const monitor = new SplitBrainMonitor(tree, 'r1', 'h2', (level, msg) => { if (level !== 'info') warnings.push(msg); }, systemClock);
  monitor.check();
  await waitFor('the check to end', () => !monitor.checking, 5_000);
  t.same(warnings, [], 'no warning');
  t.equal(tree.value(resPaths.actual('r1', 'h2', 'split-brain')), '0', 'no split brain published');
});

t.test('idle: the versionlinks are read again only when a link in the resource directory changed', async (t) => {
  const dir = tempDir(t);
  const tree = new TreeStore(dir, new LamportClock(() => Date.now() * 1000));
  tree.ensureDir(resPaths.actualDir('r1', 'h2'));
  tree.write(`${resourceDir('r1')}/data-h2`, '/dev/null');
  writeFileSync(tree.abs(resPaths.log('r1', 1, 'h1')), Buffer.alloc(100)); // the bytes the versionlink below covers
  const old = new Date(Date.now() - 3_600_000);
  utimesSync(tree.abs(resourceDir('r1')), old, old); // an mtime of a clock tick long past
  const monitor = new SplitBrainMonitor(tree, 'r1', 'h2', () => undefined, systemClock);
  const checkOnce = async () => { monitor.check(); await waitFor('the check to end', () => !monitor.checking, 5_000); };
  await checkOnce();
  await checkOnce();
  t.equal(monitor.fullChecks, 2, 'a new mtime is read twice (writes of its clock tick may follow the first read)');
  for (let i = 0; i < 5; i++) await checkOnce();
  t.equal(monitor.fullChecks, 2, 'then no more reads while nothing changes');
  writeVersionLink(tree, 'r1', 'h2', 1, 'h1', 100, false);
  await checkOnce();
  t.equal(monitor.fullChecks, 3, 'a new versionlink makes the next check read them');
});
