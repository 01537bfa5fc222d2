// The tree watcher (daemon/tree-watcher.ts): one inotify watch per directory, a report for a
// link written there (dangling symlinks included), none for a `.tmp` name alone or for a
// change in a directory below it, and directories that appear later are picked up by retry().
// Real directories and inotify.
import t, { type Test } from 'tap';
import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { TreeWatcher } from '../../daemon/tree-watcher.js';

function setup(t: Test) {
  const dir = tempDir(t);
  let changes = 0;
  const warnings: string[] = [];
  const w = new TreeWatcher(() => { changes++; }, (_level, msg) => warnings.push(msg));
  t.teardown(() => w.close());
  return { dir, w, warnings, changes: () => changes };
}

t.test('a link renamed into a watched directory is reported; a deeper directory is not watched', async (t) => {
  const { dir, w, changes } = setup(t);
  mkdirSync(join(dir, 'resource-r0'));
  w.add(dir);
  t.same(w.watchedDirs, [dir]);
  symlinkSync('1', join(dir, 'resource-r0', 'link')); // below the watched directory
  symlinkSync('alpha', join(dir, '.tmp1')); // a temporary name alone
  // Both writes above happened before this one; inotify delivers in order.
  symlinkSync('beta', join(dir, '.tmp2'));
  renameSync(join(dir, '.tmp2'), join(dir, 'uuid')); // a dangling symlink, as every tree value
  await waitFor('the rename to be reported', () => changes() >= 1, 5_000);
  const seen = changes();
  t.equal(seen, 1, 'only the rename: neither the .tmp name nor the link one directory below');
  writeFileSync(join(dir, 'marker'), 'x');
  await waitFor('the marker to be reported', () => changes() > seen, 5_000);
  t.ok(changes() <= seen + 2, 'one file write gives at most a create and a change event');
});

t.test('a directory that does not exist yet is watched once it does (retry)', async (t) => {
  const { dir, w, changes } = setup(t);
  const todo = join(dir, 'todo-alpha');
  w.add(todo);
  t.same(w.watchedDirs, [], 'nothing to watch yet');
  w.retry();
  t.same(w.watchedDirs, [], 'still missing');
  mkdirSync(todo);
  w.retry();
  t.same(w.watchedDirs, [todo]);
  symlinkSync('1', join(todo, '.tmp'));
  renameSync(join(todo, '.tmp'), join(todo, 'attach'));
  await waitFor('the todo link to be reported', () => changes() >= 1, 5_000);
  w.remove(todo);
  t.same(w.watchedDirs, [], 'removed');
  const before = changes();
  symlinkSync('0', join(todo, '.tmp3'));
  renameSync(join(todo, '.tmp3'), join(todo, 'attach2'));
  // A change in a watched directory after it shows that nothing from the removed one came in between.
  w.add(dir);
  writeFileSync(join(dir, 'marker'), 'x');
  await waitFor('the marker to be reported', () => changes() > before, 5_000);
  t.equal(changes() - before <= 2, true, 'only the marker, not the removed directory');
});

t.test('a watched directory deleted and made again is watched again after retry(); a failing watch warns once', async (t) => {
  const { dir, w, warnings, changes } = setup(t);
  const todo = join(dir, 'todo-alpha');
  mkdirSync(todo);
  w.add(todo);
  rmSync(todo, { recursive: true });
  await waitFor('the lost directory to be dropped', () => w.watchedDirs.length === 0, 5_000);
  mkdirSync(todo);
  w.retry();
  t.same(w.watchedDirs, [todo], 'watched again');
  const before = changes();
  symlinkSync('1', join(todo, '.tmp'));
  renameSync(join(todo, '.tmp'), join(todo, 'attach'));
  await waitFor('a change in the new directory to be reported', () => changes() > before, 5_000);
  const file = join(dir, 'not-a-dir');
  writeFileSync(file, 'x');
  const sub = join(file, 'below'); // ENOTDIR: exists() is false, so it waits quietly
  w.add(sub);
  w.retry();
  t.same(warnings, [], 'a directory that does not exist is no warning');
});
