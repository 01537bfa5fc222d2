// Reads of the tree kept while nothing they read changed (issue 11): TreeStore.readTracked
// notes the directory listings a read saw, TrackedRead (common/tree/tracked-read.ts) hands the
// last value out again while each is the same object, and the control round's snapshot
// (snapshotReader, common/resource/snapshot.ts) also while logfileSizes gives the same array.
// Every kind of change a snapshot depends on must give a new value: this process's writes,
// another process's writes (marsadm), a directory made, a logfile grown or truncated. On real
// files in a temp dir, with the stat-checked cache and with the inotify watch marsd uses.
import t, { type Test } from 'tap';
import { appendFileSync, mkdirSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { RACY_WINDOW_MS, type DirChanges } from '../../common/tree/dir-cache.js';
import { TrackedRead } from '../../common/tree/tracked-read.js';
import { DirWatch } from '../../common/disk/dir-watch.js';
import { logName } from '../../common/tree/log-names.js';
import { formatReplayLink, nextVersionLink } from '../../common/log/links.js';
import { snapshotReader } from '../../common/resource/snapshot.js';
import { resPaths } from '../../common/tree/paths.js';
import { tombstoneScanIntervalMs } from '../../daemon/propagate/tombstones.js';
import { tempDir } from '../helpers/tmp.js';

const DIGEST = 'b'.repeat(64);

/** Age every directory given beyond the racy window, as if unchanged for a while. */
function age(...dirs: string[]): void {
  const seconds = (Date.now() - 10 * RACY_WINDOW_MS) / 1000;
  for (const d of dirs) utimesSync(d, seconds, seconds);
}

/** Resource r0: primary h1 (this host), member h2, logfiles 1..count of h1, replay links at count. */
function setup(t: Test, watched: boolean, count = 20, wrapContents = (c: DirChanges): DirChanges => c) {
  const root = tempDir(t);
  const opts = watched ? { watch: DirWatch.open('entries')!, contents: wrapContents(DirWatch.open('contents')!) } : {};
  if (watched) t.ok(opts.watch && opts.contents, 'inotify watches open (native helper)');
  const tree = new TreeStore(root, undefined, opts);
  t.teardown(() => tree.close());
  const dir = join(root, 'resource-r0');
  mkdirSync(dir);
  tree.write(resPaths.size('r0'), '1048576');
  tree.write(resPaths.primary('r0'), 'h1');
  tree.write(resPaths.data('r0', 'h1'), '/dev/null');
  tree.write(resPaths.data('r0', 'h2'), '/dev/null');
  tree.ensureDir(resPaths.todoDir('r0', 'h1'));
  tree.write(resPaths.todo('r0', 'h1', 'attach'), '1');
  let prev = '';
  for (let seq = 1; seq <= count; seq++) {
    writeFileSync(join(dir, logName(seq, 'h1')), Buffer.alloc(seq * 10));
    prev = nextVersionLink(prev, seq, 'h1', seq * 10, DIGEST);
    tree.write(resPaths.version('r0', seq, 'h1'), prev);
  }
  tree.write(resPaths.replay('r0', 'h1'), formatReplayLink({ seq: count, origin: 'h1', minPos: count * 10, len: 0 }));
  age(dir, join(root, resPaths.todoDir('r0', 'h1')), root);
  tree.changed('resource-r0');
  tree.changed(resPaths.todoDir('r0', 'h1'));
  tree.changed('');
  return { root, tree, dir, reader: snapshotReader(tree, 'r0', 'h1') };
}

for (const watched of [false, true]) {
  const how = watched ? 'inotify watch' : 'stat checks';

  t.test(`snapshot (${how}): the same object while nothing changed, frozen`, async (t) => {
    const { reader } = setup(t, watched);
    const a = reader.get().snapshot;
    const b = reader.get().snapshot;
    t.equal(b, a, 'the same snapshot object');
    t.equal(reader.reused, 1);
    t.ok(Object.isFrozen(a) && Object.isFrozen(a.todo) && Object.isFrozen(a.versionLinks), 'frozen');
    t.equal(a.logfiles.length, 20);
    t.equal(a.todo.attach, true);
  });

  t.test(`snapshot (${how}): this process's writes give a new snapshot`, async (t) => {
    const { tree, reader } = setup(t, watched);
    const a = reader.get().snapshot;
    tree.write(resPaths.todo('r0', 'h1', 'attach'), '0');
    const b = reader.get().snapshot;
    t.not(b, a);
    t.equal(b.todo.attach, false, 'a todo switch');
    tree.ensureDir(resPaths.actualDir('r0', 'h2'));
    tree.write(resPaths.actual('r0', 'h2', 'is-primary'), '1');
    t.same(reader.get().snapshot.activePrimaries, ['h2'], 'a directory made and a link in it');
    tree.write(resPaths.primary('r0'), 'h2');
    t.equal(reader.get().snapshot.designatedPrimary, 'h2', 'a link of the resource directory');
  });

  t.test(`snapshot (${how}): another process's writes give a new snapshot`, async (t) => {
    const { root, reader } = setup(t, watched);
    const a = reader.get().snapshot;
    // marsadm writes by rename over the link, like TreeStore.write, from another store.
    const other = new TreeStore(root);
    other.write(resPaths.todo('r0', 'h1', 'sync'), '1');
    t.equal(reader.get().snapshot.todo.sync, true, 'a todo switch written by another store');
    other.write(resPaths.maxnr('r0'), '77');
    const c = reader.get().snapshot;
    t.not(c, a);
    t.equal(c.maxnr, 77);
  });

  t.test(`snapshot (${how}): a logfile grown or truncated in place gives a new snapshot`, async (t) => {
    const { dir, reader } = setup(t, watched);
    const a = reader.get().snapshot;
    appendFileSync(join(dir, logName(20, 'h1')), Buffer.alloc(5));
    const b = reader.get().snapshot;
    t.not(b, a, 'the newest logfile grew');
    t.equal(b.logfiles.at(-1)?.sizeBytes, 205);
    t.equal(reader.get().snapshot, b, 'then unchanged again');
    truncateSync(join(dir, logName(20, 'h1')), 0);
    t.equal(reader.get().snapshot.logfiles.at(-1)?.sizeBytes, 0, 'truncated');
  });
}

t.test('the contents watch (logfile sizes) is read once per read batch, and again in the next one', async (t) => {
  let syncs = 0;
  const counting = (c: DirChanges): DirChanges => ({
    take: (d) => c.take(d), since: (d, token) => c.since(d, token), close: () => c.close(),
    sync: () => { syncs++; c.sync(); },
    get watchedDirs() { return c.watchedDirs; },
  });
  const { tree, dir, reader } = setup(t, true, 20, counting);
  const other = snapshotReader(tree, 'r0', 'h1'); // a second resource's reader would do the same
  const a = reader.get().snapshot;
  syncs = 0;
  tree.readBatch(() => {
    t.equal(reader.get().snapshot, a);
    t.equal(other.get().snapshot.logfiles.length, 20);
    t.equal(reader.get().snapshot, a);
  });
  t.equal(syncs, 1, 'one read of the queue for the whole batch (a round of every resource)');
  appendFileSync(join(dir, logName(20, 'h1')), Buffer.alloc(5));
  const b = tree.readBatch(() => reader.get().snapshot);
  t.not(b, a, 'the next batch reads the queue again and sees the write');
  t.equal(b.logfiles.at(-1)?.sizeBytes, 205);
  t.equal(syncs, 2);
  reader.get();
  reader.get();
  t.equal(syncs, 4, 'outside a batch every check reads the queue');
});

t.test('TrackedRead: a directory absent at the read counts when it appears; value kept otherwise', async (t) => {
  const root = tempDir(t);
  const tree = new TreeStore(root);
  let reads = 0;
  const tracked = new TrackedRead(tree, () => { reads++; return tree.list('resource-x'); });
  t.same(tracked.get(), []);
  t.same(tracked.get(), []);
  t.equal(reads, 1, 'read once while the directory stays absent');
  tree.ensureDir('resource-x');
  tree.write('resource-x/size', '1');
  t.same(tracked.get(), ['size']);
  t.equal(reads, 2);
});

t.test('TrackedRead: stillValid decides too; a trace inside a trace adds to the outer one', async (t) => {
  const root = tempDir(t);
  const tree = new TreeStore(root);
  tree.ensureDir('a');
  tree.ensureDir('b');
  tree.write('a/x', '1');
  tree.write('b/y', '2');
  let valid = true;
  const inner = new TrackedRead(tree, () => tree.value('b/y'));
  const outer = new TrackedRead(tree, () => `${tree.value('a/x')}${inner.get()}`, () => valid);
  t.equal(outer.get(), '12');
  t.equal(outer.get(), '12');
  t.equal(outer.reused, 1);
  valid = false;
  t.equal(outer.get(), '12');
  t.equal(outer.reused, 1, 'stillValid false: read again');
  valid = true;
  tree.write('b/y', '3');
  t.equal(outer.get(), '13', 'a change in the inner read\'s directory is a change of the outer read');
});

t.test('tombstone scans: a sixth of the minimum age, between 1 and 10 s', async (t) => {
  t.equal(tombstoneScanIntervalMs(60_000), 10_000);
  t.equal(tombstoneScanIntervalMs(600_000), 10_000);
  t.equal(tombstoneScanIntervalMs(30_000), 5_000);
  t.equal(tombstoneScanIntervalMs(0), 1_000);
});
