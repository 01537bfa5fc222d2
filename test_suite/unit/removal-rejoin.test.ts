// A removed host's old membership link is not a rejoin (found by the control-plane simulation,
// seed 9: docs/reliability.md). After the survivors purged the tombstone of `ips/ip-X`, a zombie X
// still lists its old `ips/ip-X`, stamped before the removal marker. Taking that for a rejoin
// brought the link back: X counted as a member again (tombstones waited for it forever) and the
// trees of the survivors differed. Only a membership link newer than the marker rejoins.
import t from 'tap';
import { planMerge, type LocalState } from '../../daemon/propagate/merge.js';

const NOW_US = 10_000_000;

function localOf(links: Record<string, { value: string; stampUs: number }>): (p: string) => LocalState {
  return (p) => (links[p] ? { kind: 'link', ...links[p]! } : { kind: 'absent' });
}

// charlie's tree: the marker written by bravo; the tombstone of ips/ip-alpha already purged.
const charlie = localOf({ 'ips/removed-alpha': { value: 'by bravo', stampUs: 5_000_000 }, 'ips/ip-bravo': { value: '127.0.0.2', stampUs: 1_000 } });

t.test('a zombie\'s membership link older than the marker is refused', async (t) => {
  const plan = planMerge([{ p: 'ips/ip-alpha', v: '127.0.0.1', s: 2 }], charlie, { sender: 'alpha', receiver: 'charlie', nowUs: NOW_US });
  t.same(plan.writes, [], 'the old ips/ip-alpha is not written back');
  t.equal(plan.ignored + plan.rejected.length, 1, 'it is refused');
});

t.test('a fresh membership link (join-cluster) newer than the marker rejoins', async (t) => {
  const plan = planMerge([{ p: 'ips/ip-alpha', v: '127.0.0.1', s: 6_000_000 }, { p: 'resource-r0/data-alpha', v: '/dev/x', s: 6_000_001 }], charlie, { sender: 'alpha', receiver: 'charlie', nowUs: NOW_US });
  t.same(plan.writes.map((w) => w.p).sort(), ['ips/ip-alpha', 'resource-r0/data-alpha']);
});
