import t from 'tap';
import { mayWrite, ownerOf } from '../../common/tree/ownership.js';
import { planMerge, TOMBSTONE_VALUE, type LocalState } from '../../daemon/propagate/merge.js';

const NOW_US = 1_800_000_000_000_000;

t.test('ownerOf: owned, shared and local names', async (t) => {
  t.same(ownerOf('uuid'), { kind: 'shared' });
  t.same(ownerOf('ips/ip-b'), { kind: 'shared' });
  t.same(ownerOf('actual-b/time'), { kind: 'host', host: 'b' });
  t.same(ownerOf('defaults-b/sync-limit'), { kind: 'host', host: 'b' });
  t.same(ownerOf('resource-r0/primary'), { kind: 'shared' });
  t.same(ownerOf('resource-r0/size'), { kind: 'shared' });
  t.same(ownerOf('resource-r0/replay-b'), { kind: 'host', host: 'b' });
  t.same(ownerOf('resource-r0/data-host-1'), { kind: 'host', host: 'host-1' });
  t.same(ownerOf('resource-r0/version-000000003-b'), { kind: 'host', host: 'b' });
  t.same(ownerOf('resource-r0/todo-b/attach'), { kind: 'host', host: 'b' });
  t.same(ownerOf('resource-r0/actual-b/is-primary'), { kind: 'host', host: 'b' });
  t.same(ownerOf('resource-r0/log-000000003-a'), { kind: 'log-deletion' });
  t.same(ownerOf('userspace/trigger-b'), { kind: 'local' });
  t.same(ownerOf('cluster-secret'), { kind: 'local' });
  t.same(ownerOf('resource-r0/whatever'), { kind: 'local' });
  t.same(ownerOf('resource-r0/content-mismatch-b'), { kind: 'local' }, 'a kept content mismatch never leaves its host');
  t.same(ownerOf('resource-r0/todo-b'), { kind: 'local' }, 'a directory name is not a link');
});

t.test('mayWrite: the owner suffix rule', async (t) => {
  t.ok(mayWrite('resource-r0/replay-b', 'x', 'b', 'a', TOMBSTONE_VALUE).ok, 'owner writes its own link');
  const foreign = mayWrite('resource-r0/replay-c', 'x', 'b', 'a', TOMBSTONE_VALUE);
  t.notOk(foreign.ok, 'b may not write c\'s link');
  t.match(foreign.ok ? '' : foreign.reason, /belongs to c/);
  const mine = mayWrite('resource-r0/todo-a/attach', '0', 'b', 'a', TOMBSTONE_VALUE);
  t.notOk(mine.ok, 'nobody writes the receiver\'s own switches');
  t.match(mine.ok ? '' : mine.reason, /belongs to this host/);
  t.ok(mayWrite('resource-r0/primary', 'b', 'b', 'a', TOMBSTONE_VALUE).ok, 'shared link');
  t.ok(mayWrite('resource-r0/log-000000001-a', TOMBSTONE_VALUE, 'b', 'a', TOMBSTONE_VALUE).ok, 'log deletion by anybody');
  t.notOk(mayWrite('resource-r0/log-000000001-a', '/etc/passwd', 'b', 'a', TOMBSTONE_VALUE).ok, 'a log path never becomes a link value');
  t.notOk(mayWrite('userspace/trigger-a', '1', 'b', 'a', TOMBSTONE_VALUE).ok, 'local links never propagate');
});

function lookup(map: Record<string, LocalState>) {
  return (p: string): LocalState => map[p] ?? { kind: 'absent' };
}

t.test('planMerge: newer stamp wins, tombstones, files, rejections', async (t) => {
  const local = lookup({
    'resource-r0/primary': { kind: 'link', value: 'a', stampUs: 2000 },
    'resource-r0/size': { kind: 'link', value: '100', stampUs: 5000 },
    'resource-r0/log-000000001-a': { kind: 'file' },
    'resource-r0/todo-b': { kind: 'other' },
    'resource-r0/data-b': { kind: 'link', value: '/dev/x', stampUs: 1000 },
    'resource-r0/replay-a': { kind: 'link', value: 'log-000000002-a,0,0', stampUs: 1000 },
  });
  const plan = planMerge([
    { p: 'resource-r0/primary', v: 'b', s: 3000 },
    { p: 'resource-r0/size', v: '50', s: 4000 },
    { p: 'resource-r0/replay-b', v: 'log-000000001-a,0,0', s: 10 },
    { p: 'resource-r0/replay-c', v: 'log-000000001-a,0,0', s: 10 },
    { p: 'resource-r0/syncstatus-b', v: TOMBSTONE_VALUE, s: 10 },
    { p: 'resource-r0/log-000000001-a', v: TOMBSTONE_VALUE, s: 10 },
    { p: 'actual-b/time', v: '1.0', s: NOW_US + 40 * 24 * 3600 * 1_000_000 },
  ], local, { sender: 'b', receiver: 'a', nowUs: NOW_US });
  t.same(plan.writes.map((w) => [w.p, w.v, w.replaceFile]), [
    ['resource-r0/primary', 'b', false],
    ['resource-r0/replay-b', 'log-000000001-a,0,0', false],
    ['resource-r0/log-000000001-a', TOMBSTONE_VALUE, true],
  ]);
  t.same(plan.rejected.map((r) => r.path), ['actual-b/time'], 'a stamp far in the future is refused with a warning');
  t.equal(plan.ignored, 1, 'a third host\'s link (replay-c) is refused quietly: it travels from its owner');
});

t.test('planMerge: equal stamps never overwrite (no ping-pong between peers)', async (t) => {
  const plan = planMerge([{ p: 'uuid', v: 'x', s: 7 }], lookup({ uuid: { kind: 'link', value: 'y', stampUs: 7 } }), { sender: 'b', receiver: 'a', nowUs: NOW_US });
  t.same(plan.writes, []);
});

t.test('planMerge: what the receiver already holds is not judged (one local lookup per entry, nothing refused)', async (t) => {
  // A steady-state listing: every entry the receiver holds with the same stamp, among them the
  // receiver's own links and a third host's, which the rules would refuse if they changed anything.
  const held = new Map<string, { v: string; s: number }>();
  for (let i = 0; i < 50; i++) {
    held.set(`resource-r${i}/actual-a/is-primary`, { v: '1', s: 100 + i });
    held.set(`resource-r${i}/replay-c`, { v: 'log-000000001-c,0,0', s: 200 + i });
    held.set(`resource-r${i}/primary`, { v: 'a', s: 300 + i });
  }
  const remote = [...held].map(([p, x]) => ({ p, v: x.v, s: x.s }));
  let lookups = 0;
  const local = (p: string): LocalState => {
    lookups++;
    const x = held.get(p);
    return x ? { kind: 'link', value: x.v, stampUs: x.s } : { kind: 'absent' };
  };
  const plan = planMerge(remote, local, { sender: 'b', receiver: 'a', nowUs: NOW_US });
  t.same(plan.writes, []);
  t.same(plan.rejected, []);
  t.equal(plan.ignored, 0, 'the receiver\'s own and the third host\'s links are not even refused');
  t.equal(lookups, remote.length, 'one lookup per entry: no marker or membership link read');
  // One of them newer at the sender: judged as before (b may not write a's link).
  const changed = planMerge([{ p: 'resource-r0/actual-a/is-primary', v: '0', s: 999 }], local, { sender: 'b', receiver: 'a', nowUs: NOW_US });
  t.equal(changed.ignored, 1, 'a change of the receiver\'s own link is refused');
  t.same(changed.writes, []);
});
