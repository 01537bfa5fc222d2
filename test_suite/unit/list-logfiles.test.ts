// listLogfiles and logfileCount (common/resource/links.ts) read a resource directory's listing
// once per call. Before, listLogfiles looked each name up twice outside a read batch, each a
// stat of the directory: a metrics scrape at 100 resources x 1000 logfiles made 300,000 stats.
import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { listLogfiles, logfileCount } from '../../common/resource/links.js';
import { tempDir } from '../helpers/tmp.js';

t.test('logfiles are the regular files with a logfile name, sorted; one directory check per call', async (t) => {
  const dir = tempDir(t);
  const tree = new TreeStore(dir);
  mkdirSync(join(dir, 'resource-r0'));
  for (const seq of [3, 1, 2, 10]) writeFileSync(join(dir, 'resource-r0', `log-${String(seq).padStart(9, '0')}-alpha`), 'x');
  writeFileSync(join(dir, 'resource-r0', 'log-000000002-beta'), 'x');
  tree.write('resource-r0/log-000000004-alpha', '.deleted'); // a deleted logfile's tombstone
  tree.write('resource-r0/version-000000001-alpha', 'd,log-000000001-alpha,1:');
  tree.write('resource-r0/size', '4096');
  const before = tree.listingChecks;
  const logs = listLogfiles(tree, 'r0');
  t.same(logs.map((l) => l.name), ['log-000000001-alpha', 'log-000000002-alpha', 'log-000000002-beta', 'log-000000003-alpha', 'log-000000010-alpha']);
  t.same(logs[2], { seq: 2, origin: 'beta', name: 'log-000000002-beta' });
  t.ok(tree.listingChecks - before <= 1, `${tree.listingChecks - before} directory check(s) for ${logs.length} logfiles`);
  t.equal(logfileCount(tree, 'r0'), logs.length, 'the count agrees');
  t.same(listLogfiles(tree, 'nosuch'), [], 'no directory: no logfiles');
  t.equal(logfileCount(tree, 'nosuch'), 0);
});
