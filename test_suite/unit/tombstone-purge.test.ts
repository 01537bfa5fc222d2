// Tombstones: which deletions a receiver accepts (mayWrite / planMerge with the receiver's
// replay position), and when a tombstone may be purged (decideTombstonePurge): only once every
// cluster member's listing, requested after we first saw the tombstone, shows it has no copy.
import t from 'tap';
import { mkdtempSync, readlinkSync, rmSync, symlinkSync, lutimesSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mayWrite } from '../../common/tree/ownership.js';
import { planMerge, TOMBSTONE_VALUE, type LocalState } from '../../daemon/propagate/merge.js';
import { decideTombstonePurge, listingOf, peerHasSeen, purgeIfUnchanged, type LocalTombstone } from '../../daemon/propagate/tombstones.js';
import { TreeStore } from '../../common/tree/store.js';

const NOW_US = 1_800_000_000_000_000;
const D = TOMBSTONE_VALUE;

t.test('logfile deletions: refused for a logfile the receiver still replays', async (t) => {
  const floor = (n: number) => () => n;
  t.ok(mayWrite('resource-r0/log-000000002-a', D, 'b', 'c', D, floor(3)).ok, 'below the receiver\'s replay logfile');
  const mine = mayWrite('resource-r0/log-000000003-a', D, 'b', 'c', D, floor(3));
  t.notOk(mine.ok, 'the receiver replays logfile 3');
  t.match(mine.ok ? '' : mine.reason, /c still needs resource-r0\/log-000000003-a/);
  t.notOk(mayWrite('resource-r0/log-000000001-a', D, 'b', 'c', D, floor(-Infinity)).ok, 'an unparsable own replay link keeps everything');
  t.ok(mayWrite('resource-r0/log-000000009-a', D, 'b', 'c', D, floor(Infinity)).ok, 'a host without a replay link reads no logfile');
  t.ok(mayWrite('resource-r0/log-000000009-a', D, 'b', 'c', D).ok, 'without the floor: as before');
});

t.test('versionlink deletions: from anybody, below the receiver\'s replay logfile minus one', async (t) => {
  const floor = () => 5;
  t.ok(mayWrite('resource-r0/version-000000003-c', D, 'a', 'c', D, floor).ok, 'the receiver\'s own old versionlink');
  t.ok(mayWrite('resource-r0/version-000000003-b', D, 'a', 'c', D, floor).ok, 'a third host\'s old versionlink');
  t.notOk(mayWrite('resource-r0/version-000000004-c', D, 'a', 'c', D, floor).ok, 'version-(N-1) stays for the chain check');
  t.notOk(mayWrite('resource-r0/version-000000003-b', 'x', 'a', 'c', D, floor).ok, 'only a deletion, never a value');
  t.notOk(mayWrite('resource-r0/version-000000003-b', D, 'a', 'c', D).ok, 'not without the floor');
  t.notOk(mayWrite('resource-r0/replay-c', D, 'a', 'c', D, floor).ok, 'no other owned link');
});

t.test('planMerge: the receiver\'s own links in a peer listing are ignored quietly', async (t) => {
  const local = (m: Record<string, LocalState>) => (p: string): LocalState => m[p] ?? { kind: 'absent' };
  const plan = planMerge([
    { p: 'resource-r0/replay-a', v: 'log-000000001-a,0,0', s: 10 },
    { p: 'actual-a/time', v: '1.0', s: 10 },
    { p: 'resource-r0/replay-c', v: 'log-000000001-a,0,0', s: 10 },
    { p: 'resource-r0/version-000000001-a', v: D, s: 20 },
    { p: 'resource-r0/log-000000004-b', v: D, s: 20 },
    { p: 'resource-r0/log-000000002-b', v: D, s: 20 },
  ], local({
    'resource-r0/version-000000001-a': { kind: 'link', value: 'x', stampUs: 5 },
    'resource-r0/log-000000004-b': { kind: 'file' },
    'resource-r0/log-000000002-b': { kind: 'file' },
  }), { sender: 'b', receiver: 'a', nowUs: NOW_US, replayFloor: () => 4 });
  t.equal(plan.ignored, 3, 'replay-a and actual-a/time (ours), replay-c (a third host\'s)');
  t.same(plan.rejected.map((r) => r.path), ['resource-r0/log-000000004-b']);
  t.same(plan.writes.map((w) => [w.p, w.replaceFile]), [['resource-r0/version-000000001-a', false], ['resource-r0/log-000000002-b', true]]);
});

const T = (over: Partial<LocalTombstone> = {}): LocalTombstone => ({ path: 'resource-r0/log-000000002-a', stampUs: 1000, firstSeenMs: 100, ...over });

t.test('peerHasSeen: only a listing requested after we first saw the tombstone counts', async (t) => {
  // The peer's newest pull of us reached us at 120 (after the tombstone was first seen at 100).
  const l = (at: number, entries: [string, string, number][], files: string[] = [], pulledAt = 120) => listingOf(at, entries.map(([p, v, s]) => ({ p, v, s })), files.map((f) => ({ res: 'r0', name: f })), pulledAt);
  t.notOk(peerHasSeen(T(), undefined), 'no listing yet');
  t.notOk(peerHasSeen(T(), l(100, [], [], 90)), 'requested at the same moment: may predate it');
  t.notOk(peerHasSeen(T(), l(150, [], ['log-000000002-a'])), 'the peer still holds the logfile');
  t.ok(peerHasSeen(T(), l(150, [['resource-r0/log-000000002-a', D, 1000]])), 'the peer has the tombstone');
  t.ok(peerHasSeen(T(), l(150, [])), 'the peer has nothing there (never had it, or purged it)');
  const link = T({ path: 'resource-r0/data-b' });
  t.notOk(peerHasSeen(link, l(150, [['resource-r0/data-b', '/dev/x', 900]])), 'the peer still has the old link');
  t.ok(peerHasSeen(link, l(150, [['resource-r0/data-b', '/dev/y', 1100]])), 'a newer value supersedes the deletion');
  t.ok(peerHasSeen(link, l(150, [['resource-r0/data-b', D, 900]])), 'an older deletion: deleted all the same');
});

t.test('peerHasSeen: "no link" counts only once the peer is done with our answers built before the tombstone (sim seed 21376)', async (t) => {
  // charlie wrote actual-charlie/open-count, answered a pull of alpha with it (the answer
  // still on its way), deleted it (tombstone first seen at 100) and pulled alpha (requested at
  // 150): alpha had nothing there yet. Then the old answer reached alpha, which took the link;
  // had charlie purged, the link would have stayed on alpha for good.
  const path = 'resource-r0/actual-charlie/open-count';
  const tomb = T({ path });
  const absent = (pulledAt: number | undefined) => listingOf(150, [], [], pulledAt);
  t.notOk(peerHasSeen(tomb, absent(undefined)), 'the peer never pulled us: an answer of ours may be on its way');
  t.notOk(peerHasSeen(tomb, absent(90)), 'its newest pull of us reached us before the tombstone: its answer may still arrive');
  t.notOk(peerHasSeen(tomb, absent(100)), 'a pull at the very moment we first saw it: not after');
  t.ok(peerHasSeen(tomb, absent(120)), 'it pulled us after the tombstone, and we asked after that: it is done with the old answer');
  t.same(decideTombstonePurge({ tombstones: [tomb], members: ['alpha'], listings: new Map([['alpha', absent(90)]]), nowMs: 1000, minAgeMs: 50 }),
    { purge: [], waiting: [{ path, members: ['alpha'] }] }, 'the decider waits for alpha');
  t.same(decideTombstonePurge({ tombstones: [tomb], members: ['alpha'], listings: new Map([['alpha', absent(120)]]), nowMs: 1000, minAgeMs: 50 }).purge, [path]);
});

t.test('decideTombstonePurge: every member, minimum age', async (t) => {
  const seen = listingOf(200, [], [], 150);
  const holds = listingOf(200, [], [{ res: 'r0', name: 'log-000000002-a' }], 150);
  const base = { tombstones: [T()], members: ['b', 'c'], nowMs: 1000, minAgeMs: 500 };
  t.same(decideTombstonePurge({ ...base, listings: new Map([['b', seen], ['c', seen]]) }).purge, [T().path]);
  const wait = decideTombstonePurge({ ...base, listings: new Map([['b', seen], ['c', holds]]) });
  t.same(wait.purge, []);
  t.same(wait.waiting, [{ path: T().path, members: ['c'] }]);
  t.same(decideTombstonePurge({ ...base, listings: new Map([['b', seen]]) }).waiting[0]?.members, ['c'], 'a member never heard from blocks');
  t.same(decideTombstonePurge({ ...base, nowMs: 400, listings: new Map([['b', seen], ['c', seen]]) }).purge, [], 'younger than minAge');
  t.same(decideTombstonePurge({ ...base, members: [], listings: new Map() }).purge, [T().path], 'alone in the cluster');
});

t.test('purgeIfUnchanged: removes only the tombstone that was judged', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'purge-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const tree = new TreeStore(dir);
  tree.ensureDir('resource-r0');
  tree.write('resource-r0/data-b', D, { stampUs: 5_000_000 });
  t.notOk(purgeIfUnchanged(tree, 'resource-r0/data-b', 4_000_000), 'another stamp: kept');
  t.equal(readlinkSync(join(dir, 'resource-r0/data-b')), D);
  tree.write('resource-r0/data-b', '/dev/new', { stampUs: 6_000_000 });
  t.notOk(purgeIfUnchanged(tree, 'resource-r0/data-b', 5_000_000), 'a new value: kept');
  t.equal(readlinkSync(join(dir, 'resource-r0/data-b')), '/dev/new');
  symlinkSync(D, join(dir, 'resource-r0/syncpos-b'));
  lutimesSync(join(dir, 'resource-r0/syncpos-b'), 7, 7);
  t.ok(purgeIfUnchanged(tree, 'resource-r0/syncpos-b', 7_000_000));
  t.notOk(existsSync(join(dir, 'resource-r0/syncpos-b')));
  t.notOk(purgeIfUnchanged(tree, 'resource-r0/nothing-here', 1), 'absent: nothing to do');
});

