// The tree's read cache (common/tree/dir-cache.ts): a directory whose mtime holds is not read
// again, any change through a rename or unlink is seen at the next read, and a directory that
// changed within the racy window is read at every access.
import t from 'tap';
import { lutimesSync, mkdirSync, renameSync, rmdirSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { RACY_WINDOW_MS } from '../../common/tree/dir-cache.js';
import { tempDir } from '../helpers/tmp.js';
import { age, replaceLink } from '../helpers/tree-behind.js';

t.test('an unchanged directory is read from disk once; a rename or an unlink in it is seen at the next read', async (t) => {
  const root = tempDir(t);
  const tree = new TreeStore(root);
  mkdirSync(join(root, 'resource-r0'));
  tree.write('resource-r0/size', '100');
  tree.write('resource-r0/primary', 'h1');
  writeFileSync(join(root, 'resource-r0/log-000000001-h1'), 'x');
  age(join(root, 'resource-r0'));
  const before = tree.listingsRead;
  t.equal(tree.value('resource-r0/size'), '100');
  for (let i = 0; i < 50; i++) tree.value('resource-r0/primary');
  t.same(tree.list('resource-r0').sort(), ['log-000000001-h1', 'primary', 'size']);
  t.same(tree.entry('resource-r0/log-000000001-h1'), { kind: 'file' });
  t.equal(tree.listingsRead - before, 1, '52 reads of an unchanged directory: one listing read from disk');

  replaceLink(join(root, 'resource-r0'), 'primary', 'h2');
  t.equal(tree.value('resource-r0/primary'), 'h2', 'a link renamed over by another process is seen');
  age(join(root, 'resource-r0'));
  t.equal(tree.value('resource-r0/primary'), 'h2');
  unlinkSync(join(root, 'resource-r0/log-000000001-h1'));
  t.equal(tree.entry('resource-r0/log-000000001-h1'), undefined, 'an unlinked logfile is gone at the next read');
  t.equal(tree.exists('resource-r0/log-000000001-h1'), false);
});

t.test('a directory changed within the racy window is read again in every turn of the event loop', async (t) => {
  const root = tempDir(t);
  const tree = new TreeStore(root);
  tree.write('uuid', 'u1', { stampUs: 1_000_000_000 });
  t.equal(tree.read('uuid')?.stampUs, 1_000_000_000);
  // A change the directory's mtime cannot show (a link's own times set in place): only
  // visible because the root changed just now and is not trusted yet.
  lutimesSync(join(root, 'uuid'), 2_000, 2_000);
  await new Promise((resolve) => setImmediate(resolve)); // the next turn: the listing is not reused
  t.equal(tree.read('uuid')?.stampUs, 2_000_000_000, 'read again, not served from the cache');
});

t.test('a directory that disappears or is replaced by a file reads as empty', async (t) => {
  const root = tempDir(t);
  const tree = new TreeStore(root);
  tree.ensureDir('resource-r9');
  tree.write('resource-r9/size', '1');
  age(join(root, 'resource-r9'));
  t.equal(tree.value('resource-r9/size'), '1');
  unlinkSync(join(root, 'resource-r9/size'));
  t.equal(tree.value('resource-r9/size'), undefined, 'unlinked: gone');
  rmdirSync(join(root, 'resource-r9'));
  t.same(tree.list('resource-r9'), [], 'removed directory: empty');
  writeFileSync(join(root, 'resource-r9'), 'not a directory');
  t.same(tree.list('resource-r9'), [], 'a file in its place: empty');
  t.equal(tree.entry('resource-r9/size'), undefined);
  t.same(tree.entry('resource-r9'), { kind: 'file' });
  t.same(tree.list('resource-nothing'), []);
  t.equal(tree.entry('resource-nothing/size'), undefined);
});

t.test('within one turn of the event loop a changed directory is read once, and the store\'s own writes are seen at once', async (t) => {
  const root = tempDir(t);
  const tree = new TreeStore(`${root}/`); // a trailing slash: the root's listing must still be one cache entry
  tree.write('uuid', 'u1');
  const before = tree.listingsRead;
  for (let i = 0; i < 20; i++) { tree.value('uuid'); tree.list(''); }
  t.equal(tree.listingsRead - before, 1, 'a directory that just changed: one listing for 40 reads in one turn');
  // Own changes, in the same turn and very likely within the same mtime tick.
  tree.write('uuid', 'u2');
  t.equal(tree.value('uuid'), 'u2', 'own write seen');
  tree.remove('uuid');
  t.equal(tree.value('uuid'), undefined, 'own deletion seen');
  t.equal(tree.readRaw('uuid')?.deleted, true);
  tree.purge('uuid');
  t.equal(tree.exists('uuid'), false, 'own purge seen');
  tree.ensureDir('resource-r1/actual-h1');
  t.ok(tree.list('').includes('resource-r1'), 'own new directory seen in the root');
  t.same(tree.entry('resource-r1/actual-h1'), { kind: 'dir' });
  // Another process's change in the same turn may be seen a turn later; then it is.
  replaceLink(root, 'primary', 'h9');
  await new Promise((r) => setImmediate(r));
  t.equal(tree.value('primary'), 'h9', 'another process\'s new link seen in the next turn');
});
