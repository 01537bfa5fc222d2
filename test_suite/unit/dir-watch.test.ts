// The listing cache told by inotify (common/disk/dir-watch.ts, native/mars_inotify.c): an
// unchanged directory costs no stat, and every change another process makes is seen at the next
// read, in the same turn of the event loop, including the ones a directory's mtime cannot show.
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { closeSync, lutimesSync, mkdirSync, openSync, renameSync, rmdirSync, rmSync, symlinkSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { DirWatch } from '../../common/disk/dir-watch.js';
import { logfileSizes, logSizeStats } from '../../common/tree/log-sizes.js';
import { RACY_WINDOW_MS } from '../../common/tree/dir-cache.js';
import { tempDir } from '../helpers/tmp.js';
import { age, replaceLink } from '../helpers/tree-behind.js';

function watchedTree(t: Test): { root: string; tree: TreeStore } {
  const root = tempDir(t);
  const watch = DirWatch.open();
  t.not(watch, undefined, 'the native helper gives an inotify watch (npm install builds it)');
  const tree = new TreeStore(root, undefined, watch ? { watch } : {});
  t.teardown(() => tree.close());
  return { root, tree };
}

t.test('an unchanged directory is answered without a stat; another process\'s rename is seen in the same turn', async (t) => {
  const { root, tree } = watchedTree(t);
  mkdirSync(join(root, 'resource-r0'));
  tree.write('resource-r0/primary', 'h1');
  t.equal(tree.value('resource-r0/primary'), 'h1');
  const stats = tree.listingChecks;
  for (let i = 0; i < 100; i++) tree.value('resource-r0/primary');
  t.equal(tree.listingChecks - stats, 0, '100 reads of an unchanged directory: no stat');
  t.ok(tree.listingsWatched >= 100);

  // Another process, and no turn of the event loop in between: the event is read on demand.
  execFileSync('sh', ['-c', 'ln -s h2 "$1/.tmp.x" && mv -T "$1/.tmp.x" "$1/primary"', 'sh', join(root, 'resource-r0')]);
  t.equal(tree.value('resource-r0/primary'), 'h2', 'seen at the next read');
  execFileSync('rm', [join(root, 'resource-r0/primary')]);
  t.equal(tree.value('resource-r0/primary'), undefined, 'an unlink by another process is seen at the next read');
});

t.test('a link\'s stamp set in place (no directory mtime change) is seen, where the stat-based check cannot', async (t) => {
  const { root, tree } = watchedTree(t);
  tree.write('uuid', 'u1', { stampUs: 1_000_000_000 });
  age(root);
  t.equal(tree.read('uuid')?.stampUs, 1_000_000_000);
  lutimesSync(join(root, 'uuid'), 2_000, 2_000);
  t.equal(tree.read('uuid')?.stampUs, 2_000_000_000, 'read again: the watch reported the attribute change');

  // The same change without a watch, for contrast: the aged directory's listing is trusted.
  const plain = new TreeStore(root);
  age(root);
  t.equal(plain.read('uuid')?.stampUs, 2_000_000_000);
  lutimesSync(join(root, 'uuid'), 3_000, 3_000);
  t.equal(plain.read('uuid')?.stampUs, 2_000_000_000, 'the mtime check alone misses it (why the watch is worth having)');
  t.equal(tree.read('uuid')?.stampUs, 3_000_000_000);
});

t.test('a directory deleted and made again, and one whose parent was moved away, are read afresh', async (t) => {
  const { root, tree } = watchedTree(t);
  mkdirSync(join(root, 'resource-r0', 'todo-h1'), { recursive: true });
  tree.write('resource-r0/todo-h1/primary', 'h1');
  t.equal(tree.value('resource-r0/todo-h1/primary'), 'h1');

  rmSync(join(root, 'resource-r0', 'todo-h1'), { recursive: true });
  t.equal(tree.value('resource-r0/todo-h1/primary'), undefined, 'deleted');
  mkdirSync(join(root, 'resource-r0', 'todo-h1'));
  symlinkSync('h3', join(root, 'resource-r0', 'todo-h1', 'primary'));
  t.equal(tree.value('resource-r0/todo-h1/primary'), 'h3', 'made again with other content');

  // The subdirectory keeps its watch when its parent moves, but no longer has its path. The
  // new directory at the old path gets the old one's mtime: only its inode tells them apart.
  const sameTime = (Date.now() - 10 * RACY_WINDOW_MS) / 1000;
  utimesSync(join(root, 'resource-r0', 'todo-h1'), sameTime, sameTime);
  t.equal(tree.value('resource-r0/todo-h1/primary'), 'h3');
  renameSync(join(root, 'resource-r0'), join(root, 'resource-old'));
  mkdirSync(join(root, 'resource-r0', 'todo-h1'), { recursive: true });
  symlinkSync('h4', join(root, 'resource-r0', 'todo-h1', 'primary'));
  utimesSync(join(root, 'resource-r0', 'todo-h1'), sameTime, sameTime);
  t.equal(tree.value('resource-r0/todo-h1/primary'), 'h4', 'the new directory at the old path');
  t.equal(tree.value('resource-old/todo-h1/primary'), 'h3');
  replaceLink(join(root, 'resource-r0', 'todo-h1'), 'primary', 'h5');
  t.equal(tree.value('resource-r0/todo-h1/primary'), 'h5', 'the new directory is watched, not the moved one');
});

t.test('when events are lost (queue overflow), every token is void and reads go back to the stat', async (t) => {
  const root = tempDir(t);
  const watch = DirWatch.open();
  if (watch === undefined) {
    t.fail('the native helper gives an inotify watch (npm install builds it)');
    return;
  }
  t.teardown(() => watch.close());
  mkdirSync(join(root, 'quiet'));
  mkdirSync(join(root, 'busy'));
  const token = watch.take(join(root, 'quiet'));
  t.not(token, undefined);
  watch.sync();
  t.equal(watch.since(join(root, 'quiet'), token!), 'unchanged', 'nothing happened yet');
  watch.take(join(root, 'busy'));
  // More events than the kernel queues by default (16,384) and than one drain takes: lost.
  // Two files in turn: the kernel merges an event only with an identical one just before it.
  const files = ['a', 'b'].map((name) => join(root, 'busy', name));
  for (const f of files) writeFileSync(f, '');
  for (let i = 0; i < 17_000; i++) utimesSync(files[i % 2]!, i, i);
  watch.sync();
  t.equal(watch.since(join(root, 'quiet'), token!), 'unknown', 'events were lost: the quiet directory is no longer vouched for');
  t.equal(watch.epochs, 1);
  const again = watch.take(join(root, 'quiet'));
  watch.sync();
  t.equal(watch.since(join(root, 'quiet'), again!), 'unchanged', 'taken again: vouched for from now on');
  writeFileSync(join(root, 'quiet', 'new'), '');
  t.equal(watch.since(join(root, 'quiet'), again!), 'unchanged', 'not read yet');
  watch.sync();
  t.equal(watch.since(join(root, 'quiet'), again!), 'changed');
  t.equal(watch.take(join(root, 'absent')), undefined, 'an absent directory cannot be watched');
  t.equal(watch.unwatchable, 0, 'absence is not counted as a failure to watch');
});

t.test('without the watch option the store keeps to the stat (marsadm, tests)', async (t) => {
  const root = tempDir(t);
  const tree = new TreeStore(root);
  t.equal(tree.watchedDirs, undefined);
  tree.write('uuid', 'u1');
  const stats = tree.listingChecks;
  await new Promise((resolve) => setImmediate(resolve));
  tree.value('uuid');
  t.equal(tree.listingChecks - stats, 1, 'one stat per check');
});

/** A tree with both watches and resource-r0 holding logfiles 1..count of count x 10 bytes. */
function sizesTree(t: Test, count: number): { tree: TreeStore; dir: string } {
  const root = tempDir(t);
  const watch = DirWatch.open('entries');
  const contents = DirWatch.open('contents');
  t.ok(watch !== undefined && contents !== undefined, 'the native helper gives inotify watches');
  const tree = new TreeStore(root, undefined, { ...(watch ? { watch } : {}), ...(contents ? { contents } : {}) });
  t.teardown(() => tree.close());
  const dir = join(root, 'resource-r0');
  mkdirSync(dir);
  for (let seq = 1; seq <= count; seq++) writeFileSync(join(dir, `log-00000000${seq}-h1`), Buffer.alloc(seq * 10));
  return { tree, dir };
}

t.test('with a contents watch, logfile sizes are stat\'ed again only after a file of the directory was written', async (t) => {
  const { tree, dir } = sizesTree(t, 3);
  const sizes = () => Object.fromEntries(logfileSizes(tree, 'resource-r0').map((l) => [l.seq, l.sizeBytes]));
  t.same(sizes(), { 1: 10, 2: 20, 3: 30 });
  const before = logSizeStats.lstats;
  for (let i = 0; i < 10; i++) t.same(sizes(), { 1: 10, 2: 20, 3: 30 });
  t.equal(logSizeStats.lstats - before, 0, 'nothing written: no lstat (without the watch: 2 per call)');

  // Another process appends (the events are read at the next call, no turn in between).
  execFileSync('sh', ['-c', 'printf 1234567 >> "$1"', 'sh', join(dir, 'log-000000003-h1')]);
  t.same(sizes(), { 1: 10, 2: 20, 3: 37 }, 'an append is seen at the next call');
  truncateSync(join(dir, 'log-000000002-h1'), 5);
  t.same(sizes(), { 1: 10, 2: 5, 3: 37 }, 'a truncation is seen at the next call');
  const quiet = logSizeStats.lstats;
  t.same(sizes(), { 1: 10, 2: 5, 3: 37 });
  t.equal(logSizeStats.lstats - quiet, 0, 'quiet again');
});

t.test('with a contents watch, a caller asking for sizes from a lower number gets them stat\'ed after a write (a re-fetch truncates in place)', async (t) => {
  const { tree, dir } = sizesTree(t, 5);
  const sizes = (fromSeq?: number) => Object.fromEntries(logfileSizes(tree, 'resource-r0', Date.now(), fromSeq).map((l) => [l.seq, l.sizeBytes]));
  t.same(sizes(), { 1: 10, 2: 20, 3: 30, 4: 40, 5: 50 });
  truncateSync(join(dir, 'log-000000002-h1'), 0); // the re-fetch of a copy at the replay link
  t.same(sizes(), { 1: 10, 2: 20, 3: 30, 4: 40, 5: 50 }, 'a caller asking for the newest only: logfile 2 not stat\'ed yet');
  t.same(sizes(2), { 1: 10, 2: 0, 3: 30, 4: 40, 5: 50 }, 'a caller asking from 2 on: stat\'ed, though the token was taken after the write');
});

t.test('after a batch, a read outside any batch reads the event queue again', async (t) => {
  const { root, tree } = watchedTree(t);
  tree.write('primary', 'h1');
  t.equal(tree.readBatch(() => tree.value('primary')), 'h1');
  t.equal(tree.readBatch(() => tree.value('primary')), 'h1', 'vouched for by the watch in a batch');
  replaceLink(root, 'primary', 'h2');
  t.equal(tree.value('primary'), 'h2', 'another process\'s change is seen by the next read outside a batch');
});

t.test('a directory removed while held open and made anew: its parent\'s event has it read and watched afresh', async (t) => {
  const { root, tree } = watchedTree(t);
  mkdirSync(join(root, 'resource-r0', 'todo-h1'), { recursive: true });
  t.same(tree.list('resource-r0/todo-h1'), []);
  t.same(tree.list('resource-r0/todo-h1'), [], 'vouched for');
  // Held open, the removed directory's own deletion event waits until it is closed.
  const held = openSync(join(root, 'resource-r0', 'todo-h1'), 'r');
  t.teardown(() => closeSync(held));
  rmdirSync(join(root, 'resource-r0', 'todo-h1'));
  mkdirSync(join(root, 'resource-r0', 'todo-h1'));
  t.same(tree.list('resource-r0/todo-h1'), [], 'made anew, empty');
  replaceLink(join(root, 'resource-r0', 'todo-h1'), 'attach', '1');
  t.same(tree.list('resource-r0/todo-h1'), ['attach'], 'a link in the new directory is seen: it is watched, not the removed one');
});

t.test('after lost events, a directory replaced meanwhile gets a watch of its own', async (t) => {
  const { root, tree } = watchedTree(t);
  mkdirSync(join(root, 'busy'));
  mkdirSync(join(root, 'resource-r0', 'todo-h1'), { recursive: true });
  t.same(tree.list('resource-r0/todo-h1'), []);
  t.same(tree.list('busy'), []);
  const held = openSync(join(root, 'resource-r0', 'todo-h1'), 'r');
  t.teardown(() => closeSync(held));
  rmdirSync(join(root, 'resource-r0', 'todo-h1'));
  mkdirSync(join(root, 'resource-r0', 'todo-h1'));
  const files = ['a', 'b'].map((name) => join(root, 'busy', name));
  for (const f of files) writeFileSync(f, '');
  for (let i = 0; i < 17_000; i++) utimesSync(files[i % 2]!, i, i); // the queue overflows
  t.same(tree.list('resource-r0/todo-h1'), [], 'read again after the overflow');
  replaceLink(join(root, 'resource-r0', 'todo-h1'), 'attach', '1');
  t.same(tree.list('resource-r0/todo-h1'), ['attach'], 'the new directory is watched');
});

t.test('a root reached through a symlink is not watched: its reads stat, and see a changed link', async (t) => {
  const base = tempDir(t);
  mkdirSync(join(base, 'one'));
  mkdirSync(join(base, 'two'));
  symlinkSync('h1', join(base, 'one', 'primary'));
  symlinkSync('h2', join(base, 'two', 'primary'));
  symlinkSync('one', join(base, 'mars'));
  const watch = DirWatch.open();
  t.not(watch, undefined);
  const tree = new TreeStore(join(base, 'mars'), undefined, watch ? { watch } : {});
  t.teardown(() => tree.close());
  t.equal(tree.value('primary'), 'h1');
  t.equal(tree.watchedDirs, 0, 'nothing watched');
  execFileSync('ln', ['-sfn', 'two', join(base, 'mars')]);
  t.equal(tree.value('primary'), 'h2', 'the other target is read');
});
