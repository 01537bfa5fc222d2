// The removal rule (common/tree/removal.ts, docs/tree.md): a survivor's tombstones of a removed
// host's links are accepted everywhere; nothing of the removed host is, until it rejoins.
import t from 'tap';
import { ownerOf, mayWrite } from '../../common/tree/ownership.js';
import { planMerge, TOMBSTONE_VALUE, type LocalState, type TreeEntry } from '../../daemon/propagate/merge.js';

const NOW_US = 1_800_000_000_000_000;
const MARKER_US = NOW_US - 10_000_000;

/** The receiver a's tree: stamps and values. */
function tree(links: Record<string, [string, number]>): (p: string) => LocalState {
  return (p) => {
    const l = links[p];
    return l ? { kind: 'link', value: l[0], stampUs: l[1] } : { kind: 'absent' };
  };
}

function merge(entries: TreeEntry[], sender: string, local: (p: string) => LocalState) {
  return planMerge(entries, local, { sender, receiver: 'a', nowUs: NOW_US, replayFloor: () => 1 });
}

const removedFromR0 = tree({
  'resource-r0/removed-d': ['by b', MARKER_US],
  'resource-r0/data-d': [TOMBSTONE_VALUE, MARKER_US + 1],
  'resource-r0/replay-d': ['log-000000001-d,0,0', NOW_US - 60_000_000],
  'resource-r0/todo-d/attach': ['1', NOW_US - 60_000_000],
  'resource-r0/version-000000005-d': ['x', NOW_US - 60_000_000],
});

t.test('markers are shared links, but the removed host may not write its own', async (t) => {
  t.same(ownerOf('ips/removed-d'), { kind: 'removal', host: 'd' });
  t.same(ownerOf('resource-r0/removed-d'), { kind: 'removal', host: 'd' });
  t.ok(mayWrite('resource-r0/removed-d', 'by b', 'b', 'a', TOMBSTONE_VALUE).ok);
  t.notOk(mayWrite('resource-r0/removed-d', TOMBSTONE_VALUE, 'd', 'a', TOMBSTONE_VALUE).ok, 'd cannot undo its removal');
  t.notOk(mayWrite('ips/removed-d', TOMBSTONE_VALUE, 'd', 'a', TOMBSTONE_VALUE).ok);
});

t.test('without a marker, a survivor cannot delete another host\'s links', async (t) => {
  const plan = merge([{ p: 'resource-r0/replay-d', v: TOMBSTONE_VALUE, s: NOW_US }], 'b', tree({ 'resource-r0/replay-d': ['log-000000001-d,0,0', NOW_US - 60_000_000] }));
  t.equal(plan.writes.length, 0);
});

t.test('with the resource marker in force: tombstones from any member, nothing else', async (t) => {
  const plan = merge([
    { p: 'resource-r0/replay-d', v: TOMBSTONE_VALUE, s: NOW_US },
    { p: 'resource-r0/todo-d/attach', v: TOMBSTONE_VALUE, s: NOW_US },
    { p: 'resource-r0/todo-d/connect', v: '1', s: NOW_US },
  ], 'b', removedFromR0);
  t.same(plan.writes.map((w) => w.p), ['resource-r0/replay-d', 'resource-r0/todo-d/attach']);
  const other = merge([{ p: 'resource-r1/replay-d', v: TOMBSTONE_VALUE, s: NOW_US }], 'b', removedFromR0);
  t.equal(other.writes.length, 0, 'the marker of r0 says nothing about r1');
  const version = merge([{ p: 'resource-r0/version-000000005-d', v: TOMBSTONE_VALUE, s: NOW_US }], 'b', removedFromR0);
  t.equal(version.writes.length, 0, 'versionlinks a member may still need keep the log-delete rule');
});

t.test('a zombie on its old tree changes nothing', async (t) => {
  const plan = merge([
    { p: 'resource-r0/replay-d', v: 'log-000000009-d,100,0', s: NOW_US },
    { p: 'resource-r0/data-d', v: '/dev/x', s: NOW_US - 3_600_000_000 },
    { p: 'resource-r0/todo-d/attach', v: '1', s: NOW_US },
    { p: 'resource-r0/primary', v: 'd', s: NOW_US - 3_600_000_000 },
  ], 'd', removedFromR0);
  t.same(plan.writes, [], 'not its status, not its old membership');
});

t.test('a rejoin (a fresh data link) ends the marker\'s force, in the same batch', async (t) => {
  const plan = merge([
    { p: 'resource-r0/replay-d', v: 'log-000000009-d,0,0', s: NOW_US },
    { p: 'resource-r0/data-d', v: '/dev/y', s: NOW_US },
  ], 'd', removedFromR0);
  t.same(plan.writes.map((w) => w.p).sort(), ['resource-r0/data-d', 'resource-r0/replay-d']);
});

t.test('a host removed from the cluster is not listened to at all, until join-cluster', async (t) => {
  const local = tree({ 'ips/removed-d': ['by b', MARKER_US], 'ips/ip-d': [TOMBSTONE_VALUE, MARKER_US + 1], 'actual-d/time': ['1', MARKER_US - 5] });
  const zombie = merge([
    { p: 'uuid', v: 'x', s: NOW_US },
    { p: 'ips/ip-d', v: '127.0.0.1:1', s: MARKER_US - 1 },
    { p: 'ips/ip-e', v: '127.0.0.1:2', s: NOW_US },
    { p: 'actual-d/time', v: '1', s: NOW_US },
    { p: 'ips/removed-d', v: TOMBSTONE_VALUE, s: NOW_US },
  ], 'd', local);
  t.same(zombie.writes, []);
  const byB = merge([{ p: 'actual-d/time', v: TOMBSTONE_VALUE, s: NOW_US }], 'b', local);
  t.equal(byB.writes.length, 1, 'a survivor\'s tombstone of its global status is accepted');
  const rejoin = merge([{ p: 'ips/ip-d', v: '127.0.0.1:1', s: NOW_US }], 'd', local);
  t.same(rejoin.writes.map((w) => w.p), ['ips/ip-d'], 'join-cluster pushes a fresh ip link');
});
