// The logfile size cache (common/tree/log-sizes.ts): finished logfiles are not stat'ed at every
// read, the two newest numbers always are, a directory change drops every cached size, and an
// old logfile changed behind marsd's back is seen within RESTAT_MS.
import t, { type Test } from 'tap';
import { appendFileSync, mkdirSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { RACY_WINDOW_MS } from '../../common/tree/dir-cache.js';
import { logfileSizes, logSizeStats, RESTAT_MS } from '../../common/tree/log-sizes.js';
import { readResourceSnapshot } from '../../common/resource/snapshot.js';
import { collectEntries } from '../../daemon/propagate/tree-io.js';
import { tempDir } from '../helpers/tmp.js';

/** Age a directory's mtime beyond the racy window, as if it had not changed for a while. */
function age(dir: string): void {
  const seconds = (Date.now() - 10 * RACY_WINDOW_MS) / 1000;
  utimesSync(dir, seconds, seconds);
}

function setup(t: Test) {
  const root = tempDir(t);
  const tree = new TreeStore(root);
  const dir = join(root, 'resource-r0');
  mkdirSync(dir);
  for (let seq = 1; seq <= 5; seq++) writeFileSync(join(dir, `log-00000000${seq}-h1`), Buffer.alloc(seq * 10));
  age(dir);
  return { tree, dir };
}

const sizes = (tree: TreeStore, nowMs?: number) => Object.fromEntries(logfileSizes(tree, 'resource-r0', nowMs).map((l) => [l.seq, l.sizeBytes]));

t.test('finished logfiles are stat\'ed once; the two newest at every read', async (t) => {
  const { tree, dir } = setup(t);
  const now = Date.now();
  t.same(sizes(tree, now), { 1: 10, 2: 20, 3: 30, 4: 40, 5: 50 });
  const before = logSizeStats.lstats;
  t.same(sizes(tree, now + 1000), { 1: 10, 2: 20, 3: 30, 4: 40, 5: 50 });
  t.equal(logSizeStats.lstats - before, 2, 'only logfiles 4 and 5 stat\'ed again');
  appendFileSync(join(dir, 'log-000000005-h1'), Buffer.alloc(7));
  appendFileSync(join(dir, 'log-000000004-h1'), Buffer.alloc(3));
  t.same(sizes(tree, now + 2000), { 1: 10, 2: 20, 3: 30, 4: 43, 5: 57 }, 'the growing ones are seen at once');
});

t.test('a directory change drops the cached sizes; an old logfile changed behind our back is seen within RESTAT_MS', async (t) => {
  const { tree, dir } = setup(t);
  const now = Date.now();
  sizes(tree, now);
  appendFileSync(join(dir, 'log-000000001-h1'), Buffer.alloc(5));
  t.equal(sizes(tree, now + 1000)[1], 10, 'cached while the directory holds');
  t.equal(sizes(tree, now + RESTAT_MS + 1)[1], 15, 'stat\'ed again once the cached size is RESTAT_MS old');
  appendFileSync(join(dir, 'log-000000002-h1'), Buffer.alloc(5));
  unlinkSync(join(dir, 'log-000000003-h1'));
  age(dir);
  tree.changed('resource-r0');
  t.same(sizes(tree, now + RESTAT_MS + 2000), { 1: 15, 2: 25, 4: 40, 5: 50 }, 'a deletion: everything stat\'ed again');
});

t.test('a split brain\'s two logfiles of the newest number are both stat\'ed', async (t) => {
  const { tree, dir } = setup(t);
  writeFileSync(join(dir, 'log-000000005-h2'), Buffer.alloc(1));
  age(dir);
  tree.changed('resource-r0');
  const now = Date.now();
  sizes(tree, now);
  appendFileSync(join(dir, 'log-000000005-h2'), Buffer.alloc(1));
  appendFileSync(join(dir, 'log-000000004-h1'), Buffer.alloc(1));
  const got = logfileSizes(tree, 'resource-r0', now + 1000);
  t.equal(got.find((l) => l.name === 'log-000000005-h2')?.sizeBytes, 2);
  t.equal(got.find((l) => l.name === 'log-000000004-h1')?.sizeBytes, 41, 'the second-newest number too');
});

t.test('the control round\'s snapshot and the peer listing use the cache', async (t) => {
  const { tree, dir } = setup(t);
  tree.write('resource-r0/size', '100');
  tree.write('resource-r0/primary', 'h1');
  age(dir);
  tree.changed('resource-r0');
  readResourceSnapshot(tree, 'r0', 'h1');
  const before = logSizeStats.lstats;
  const snap = readResourceSnapshot(tree, 'r0', 'h1');
  t.same(snap.logfiles.map((l) => l.sizeBytes), [10, 20, 30, 40, 50]);
  const { logs } = collectEntries(tree, (_res, _name, bytes) => bytes);
  t.same(logs.map((l) => l.sizeBytes).sort((a, b) => a - b), [10, 20, 30, 40, 50]);
  t.equal(logSizeStats.lstats - before, 4, 'two lstats per read, not five');
  const checks = tree.listingChecks;
  collectEntries(tree);
  t.ok(tree.listingChecks - checks <= 3, `a listing checks each directory once (${tree.listingChecks - checks} checks for 2 directories)`);
});
