// The per-round and per-tick local reads of an idle resource cost O(1), not O(logfiles)
// (issue 11): logfileSizes (common/tree/log-sizes.ts) returns the same array while nothing
// changed and stats only the newest logfiles, the replayer's tree view (daemon/replay/
// tree-view.ts) stats only the logfiles from its replay link on, and the control round's
// snapshot (common/resource/snapshot.ts) derives nothing anew from an unchanged listing. On
// real files in a temp dir; time is controlled through the nowMs parameter.
import t, { type Test } from 'tap';
import { appendFileSync, lstatSync, mkdirSync, readdirSync, truncateSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { RACY_WINDOW_MS } from '../../common/tree/dir-cache.js';
import { logfileSizes, logSizeStats, RESTAT_MS } from '../../common/tree/log-sizes.js';
import { listingIndexStats } from '../../common/tree/listing-index.js';
import { LOG_NAME, VERSION_NAME, logName } from '../../common/tree/log-names.js';
import { formatReplayLink, nextVersionLink, PARSED_VERSIONS_MAX, tryParseVersionLink } from '../../common/log/links.js';
import { readResourceSnapshot } from '../../common/resource/snapshot.js';
import { readReplayLink } from '../../common/resource/links.js';
import { readReplayTreeView, treeViewStats, type ReplayTreeView } from '../../daemon/replay/tree-view.js';
import { decideReplayStep, replayRestBytes } from '../../daemon/replay/switchover.js';
import { resPaths, resourceDir } from '../../common/tree/paths.js';
import { parseContentMismatch } from '../../daemon/replay/content-check.js';
import { deleteReplayedCopies } from '../../daemon/control/space-reclaim.js';
import { tempDir } from '../helpers/tmp.js';

const DIGEST = 'a'.repeat(64);
const REL = 'resource-r0';

/** Age a directory's mtime beyond the racy window, as if it had not changed for a while. */
function age(dir: string, extraMs = 0): void {
  const seconds = (Date.now() - 10 * RACY_WINDOW_MS - extraMs) / 1000;
  utimesSync(dir, seconds, seconds);
}

/** A resource r0 with logfiles 1..count of h1 (logfile n has n*10 bytes), versionlinks of h1 and h2, replay-h2 at `replaySeq`. */
function setup(t: Test, count: number, replaySeq = count) {
  const root = tempDir(t);
  const tree = new TreeStore(root);
  const dir = join(root, REL);
  mkdirSync(dir);
  tree.write(resPaths.size('r0'), '1048576');
  tree.write(resPaths.primary('r0'), 'h1');
  tree.write(resPaths.data('r0', 'h1'), '/dev/null');
  tree.write(resPaths.data('r0', 'h2'), '/dev/null');
  let prev = '';
  for (let seq = 1; seq <= count; seq++) {
    writeFileSync(join(dir, logName(seq, 'h1')), Buffer.alloc(seq * 10));
    prev = nextVersionLink(prev, seq, 'h1', seq * 10, DIGEST);
    tree.write(resPaths.version('r0', seq, 'h1'), prev);
    if (seq < replaySeq) tree.write(resPaths.version('r0', seq, 'h2'), prev);
  }
  tree.write(resPaths.replay('r0', 'h2'), formatReplayLink({ seq: replaySeq, origin: 'h1', minPos: replaySeq * 10, len: 0 }));
  tree.write(resPaths.replay('r0', 'h1'), formatReplayLink({ seq: count, origin: 'h1', minPos: count * 10, len: 0 }));
  age(dir);
  tree.changed(REL);
  return { root, tree, dir };
}

/** After a change of the directory: make its new listing trusted (mtime older than the racy window). */
function settle(tree: TreeStore, dir: string, extraMs = 0): void {
  age(dir, extraMs);
  tree.changed(REL);
}

t.test('logfileSizes: an unchanged directory gives the same array with two lstats per call', async (t) => {
  const { tree } = setup(t, 200);
  const now = Date.now();
  const first = logfileSizes(tree, REL, now);
  t.equal(first.length, 200);
  t.same(first.slice(0, 3).map((l) => l.sizeBytes), [10, 20, 30]);
  t.same(first.map((l) => l.seq), [...Array(200).keys()].map((i) => i + 1), 'ascending by number');
  const lstats = logSizeStats.lstats;
  const built = listingIndexStats.built;
  for (let i = 1; i <= 10; i++) t.equal(logfileSizes(tree, REL, now + i * 100), first, `call ${i}: the same array`);
  // the rotation over the 198 older ones re-stats 198 x 1000 ms / RESTAT_MS of them in 1 s
  const rotation = Math.ceil((198 * 1000) / RESTAT_MS);
  t.ok(logSizeStats.lstats - lstats <= 20 + rotation, `two lstats per call (logfiles 199 and 200) and the rotation's ${rotation}: ${logSizeStats.lstats - lstats}`);
  t.equal(listingIndexStats.built - built, 0, 'the names were parsed once');
});

t.test('logfileSizes: an append to the newest logfile is seen at the next call, in a new array', async (t) => {
  const { tree, dir } = setup(t, 50);
  const now = Date.now();
  const first = logfileSizes(tree, REL, now);
  appendFileSync(join(dir, logName(50, 'h1')), Buffer.alloc(7));
  const second = logfileSizes(tree, REL, now + 10);
  t.not(second, first, 'a new array');
  t.equal(second.at(-1)?.sizeBytes, 507);
  t.equal(logfileSizes(tree, REL, now + 20), second, 'then the same one again');
});

t.test('logfileSizes: a new and a deleted logfile are seen at the next call', async (t) => {
  const { tree, dir } = setup(t, 50);
  const now = Date.now();
  const first = logfileSizes(tree, REL, now);
  writeFileSync(join(dir, logName(51, 'h1')), Buffer.alloc(3));
  unlinkSync(join(dir, logName(1, 'h1')));
  settle(tree, dir, 1000); // an mtime other than the first listing's
  const second = logfileSizes(tree, REL, now + 10);
  t.not(second, first);
  t.equal(second.length, 50);
  t.equal(second[0]?.seq, 2, 'logfile 1 is gone');
  t.same(second.at(-1), { name: logName(51, 'h1'), seq: 51, origin: 'h1', sizeBytes: 3 });
});

t.test('logfileSizes: an older logfile changed behind our back is seen within RESTAT_MS, a bounded number of lstats per call', async (t) => {
  const count = 120;
  const { tree, dir } = setup(t, count);
  const start = Date.now();
  logfileSizes(tree, REL, start);
  appendFileSync(join(dir, logName(10, 'h1')), Buffer.alloc(5));
  const stepMs = 1000;
  const older = count - 2;
  const maxPerCall = 2 + Math.ceil((older * stepMs) / RESTAT_MS);
  let seenAtMs: number | undefined;
  for (let nowMs = start + stepMs; nowMs <= start + RESTAT_MS + stepMs; nowMs += stepMs) {
    const before = logSizeStats.lstats;
    const got = logfileSizes(tree, REL, nowMs);
    t.ok(logSizeStats.lstats - before <= maxPerCall, `at most ${maxPerCall} lstats per call (${logSizeStats.lstats - before})`);
    if (seenAtMs === undefined && got.find((l) => l.seq === 10)?.sizeBytes === 105) seenAtMs = nowMs;
  }
  t.ok(seenAtMs !== undefined && seenAtMs - start <= RESTAT_MS + stepMs, `seen after ${seenAtMs === undefined ? 'never' : seenAtMs - start} ms`);
});

t.test('logfileSizes: a logfile from statFromSeq on rewritten in place (a re-fetch) is seen at the next call', async (t) => {
  // The fetcher truncates a damaged copy in place and fetches it again: the directory does not
  // change, and the logfile need not be one of the two newest (replay at 5, fetched up to 8).
  const { tree, dir } = setup(t, 8, 5);
  const now = Date.now();
  logfileSizes(tree, REL, now, 5);
  truncateSync(join(dir, logName(5, 'h1')), 0);
  t.equal(logfileSizes(tree, REL, now + 10, 5).find((l) => l.seq === 5)?.sizeBytes, 0);
});

t.test('snapshot: a re-fetch truncating the replayed logfile below the two newest is seen at the next round', async (t) => {
  // Failed before: the snapshot took logfile 5's size from the cache for up to 30 s.
  const { tree, dir } = setup(t, 8, 5);
  t.equal(readResourceSnapshot(tree, 'r0', 'h2').logfiles.find((l) => l.seq === 5)?.sizeBytes, 50);
  truncateSync(join(dir, logName(5, 'h1')), 0);
  t.equal(readResourceSnapshot(tree, 'r0', 'h2').logfiles.find((l) => l.seq === 5)?.sizeBytes, 0);
});

t.test('snapshot: an unchanged resource derives nothing anew; a change is seen', async (t) => {
  const { tree, dir } = setup(t, 200);
  const a = readResourceSnapshot(tree, 'r0', 'h1');
  const built = listingIndexStats.built;
  const arrays = logSizeStats.arrays;
  const b = readResourceSnapshot(tree, 'r0', 'h1');
  t.equal(b.logfiles, a.logfiles, 'the same logfile list');
  t.equal(b.signature, a.signature);
  t.equal(listingIndexStats.built - built, 0, 'no index built');
  t.equal(logSizeStats.arrays - arrays, 0, 'no sizes array built');
  t.equal(a.logfiles.length, 200);
  // designated here: the versionlinks from the replay link's number - 1 on, the other member
  t.same(a.versionLinks.map((v) => `${v.seq}-${v.host}`).sort(), ['199-h1', '199-h2', '200-h1']);
  t.same(a.activePrimaries, []);
  tree.ensureDir(resPaths.actualDir('r0', 'h2'));
  tree.write(resPaths.actual('r0', 'h2', 'is-primary'), '1');
  t.same(readResourceSnapshot(tree, 'r0', 'h1').activePrimaries, ['h2']);
  appendFileSync(join(dir, logName(200, 'h1')), Buffer.alloc(1));
  const c = readResourceSnapshot(tree, 'r0', 'h1');
  t.not(c.logfiles, a.logfiles);
  t.equal(c.logfiles.at(-1)?.sizeBytes, 2001);
  t.not(c.signature, a.signature, 'a grown logfile changes the signature');
});

/** The tree view as it was before issue 11: every logfile lstat'ed, every versionlink from SEQ-1 on. */
function referenceView(tree: TreeStore, res: string, host: string): ReplayTreeView {
  const replay = readReplayLink(tree, res, host);
  const dir = resourceDir(res);
  const logfiles = [];
  const versionLinks = [];
  for (const name of readdirSync(tree.abs(dir))) {
    const log = LOG_NAME.exec(name);
    if (log) {
      const st = lstatSync(tree.abs(`${dir}/${name}`));
      if (st.isFile()) logfiles.push({ seq: Number(log[1]), origin: log[2]!, sizeBytes: st.size });
      continue;
    }
    const version = VERSION_NAME.exec(name);
    if (version && Number(version[1]) >= (replay ? replay.seq - 1 : 0)) {
      const value = tree.value(`${dir}/${name}`);
      if (value !== undefined) versionLinks.push({ seq: Number(version[1]), host: version[2]!, value });
    }
  }
  const primary = tree.value(resPaths.primary(res));
  const keptValue = tree.value(resPaths.contentMismatch(res, host));
  return {
    host, replay, logfiles, versionLinks,
    keptMismatch: keptValue === undefined ? undefined : parseContentMismatch(keptValue) ?? 'malformed',
    designatedPrimary: primary,
    isDesignatedPrimary: primary === host && tree.value(resPaths.todo(res, host, 'attach')) === '1',
  };
}

t.test('tree view: idle, it stats one logfile whatever the number of logfiles', async (t) => {
  const { tree } = setup(t, 300);
  readReplayTreeView(tree, 'r0', 'h2');
  const before = treeViewStats.lstats;
  const view = readReplayTreeView(tree, 'r0', 'h2');
  t.equal(treeViewStats.lstats - before, 1, 'only the replayed logfile (the newest)');
  t.same(view.logfiles, [{ seq: 300, origin: 'h1', sizeBytes: 3000 }]);
  t.same(view.versionLinks.map((v) => `${v.seq}-${v.host}`).sort(), ['299-h1', '299-h2', '300-h1']);
});

t.test('tree view: the same decision and rest bytes as a view of every logfile, as logfiles arrive, grow and are rewritten', async (t) => {
  const { tree, dir } = setup(t, 12, 4);
  const check = (what: string) => {
    const ours = readReplayTreeView(tree, 'r0', 'h2');
    const ref = referenceView(tree, 'r0', 'h2');
    t.same(decideReplayStep({ ...ours, scan: undefined }), decideReplayStep({ ...ref, scan: undefined }), `${what}: the same step`);
    t.equal(replayRestBytes({ ...ours, scan: undefined }), replayRestBytes({ ...ref, scan: undefined }), `${what}: the same rest`);
    t.ok(ours.logfiles.every((l) => l.seq >= 4), `${what}: nothing below the replay link`);
  };
  check('behind');
  truncateSync(join(dir, logName(4, 'h1')), 0); // a re-fetch, directory unchanged
  check('replayed logfile truncated in place');
  appendFileSync(join(dir, logName(4, 'h1')), Buffer.alloc(40));
  check('fetched again');
  tree.write(resPaths.replay('r0', 'h2'), formatReplayLink({ seq: 12, origin: 'h1', minPos: 100, len: 0 }));
  check('replay in the newest logfile, behind its end');
  writeFileSync(join(dir, logName(13, 'h2')), Buffer.alloc(1)); // a foreign next logfile, no versionlink yet
  check('a next logfile of another origin');
  writeFileSync(join(dir, logName(13, 'h1')), Buffer.alloc(1));
  check('two logfiles numbered 13 (split brain)');
  tree.write(resPaths.replay('r0', 'h2'), 'garbage');
  check('a malformed replay link');
});

t.test('deleting replayed copies drops the cached listing: a read later in the same batch (the control round) does not list them', async (t) => {
  // Failed before: deleteReplayedCopies unlinked behind the store without telling it.
  const { tree } = setup(t, 6, 4);
  const logsListed = () => tree.list(REL).filter((n) => n.startsWith('log-')).length;
  const listed = tree.readBatch(() => {
    const before = logsListed();
    const deleted = deleteReplayedCopies(tree, 'r0', 'h2', () => {});
    return { before, deleted, after: logsListed() };
  });
  t.same(listed.deleted, [logName(1, 'h1'), logName(2, 'h1'), logName(3, 'h1')]);
  t.equal(listed.before, 6);
  t.equal(listed.after, 3, 'the deleted copies are gone from the listing at once');
});

t.test('versionlink parses are remembered by value: the same frozen result, bounded', async (t) => {
  const value = nextVersionLink('', 7, 'h1', 70, DIGEST);
  const a = tryParseVersionLink(value);
  const b = tryParseVersionLink(value);
  t.equal(b, a, 'the same result object');
  t.ok(a.ok && a.value.seq === 7 && a.value.logPos === 70);
  t.ok(Object.isFrozen(a) && a.ok && Object.isFrozen(a.value), 'frozen: no caller can change what the others get');
  const bad = tryParseVersionLink('no-colon');
  t.equal(bad.ok, false);
  t.equal(tryParseVersionLink('no-colon'), bad, 'a failure is remembered too');
  // More distinct values than the bound: still parsed right, and the map was emptied on the way.
  for (let i = 0; i <= PARSED_VERSIONS_MAX; i++) {
    const r = tryParseVersionLink(nextVersionLink('', 1, 'h1', i, DIGEST));
    if (!r.ok || r.value.logPos !== i) { t.fail(`value ${i} parsed wrong`); break; }
  }
  const again = tryParseVersionLink(value);
  t.not(again, a, 'parsed again after the map was emptied');
  t.same(again, a);
});
