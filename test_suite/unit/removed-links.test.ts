// A removed host's links that reached a survivor before the removal marker did are deleted
// there once the marker arrives (daemon/propagate/removed-links.ts; found by the control-plane
// simulation, seed 1 and seed 1334: docs/reliability.md). Before, the survivor kept them for
// good: the remover's tombstones are older, and nothing newer is accepted after the marker.
import t from 'tap';
import { planMerge, TOMBSTONE_VALUE, type LocalState, type TreeEntry } from '../../daemon/propagate/merge.js';
import { NO_PRIMARY } from '../../daemon/propagate/link-rules.js';

const NOW_US = 10_000_000;
type Links = Record<string, { value: string; stampUs: number }>;

function localOf(links: Links): (p: string) => LocalState {
  return (p) => (links[p] ? { kind: 'link', ...links[p]! } : { kind: 'absent' });
}

function linksOfFrom(links: Links) {
  return (_host: string, resDir: string | undefined): TreeEntry[] => Object.entries(links)
    .filter(([p, l]) => l.value !== TOMBSTONE_VALUE && (resDir === undefined || p.startsWith(`${resDir}/`)))
    .map(([p, l]) => ({ p, v: l.value, s: l.stampUs }));
}

// alpha's tree: it took the zombie bravo's status link and a forced failover to bravo before it
// learned that charlie removed bravo.
const alpha: Links = {
  'ips/ip-alpha': { value: '127.0.0.1', stampUs: 1_000 },
  'ips/ip-charlie': { value: '127.0.0.3', stampUs: 1_000 },
  'resource-r0/data-alpha': { value: '/dev/a', stampUs: 1_000 },
  'resource-r0/actual-bravo/is-primary': { value: '0', stampUs: 6_000_000 },
  'resource-r0/replay-bravo': { value: 'log-000000003-bravo,100,0', stampUs: 5_500_000 },
  'resource-r0/version-000000003-bravo': { value: `${'a'.repeat(32)},log-000000003-bravo,100:`, stampUs: 5_400_000 },
  'resource-r0/primary': { value: 'bravo', stampUs: 5_800_000 },
  'actual-bravo/time': { value: '1', stampUs: 5_900_000 },
};
// charlie's listing: the marker (stamped before the zombie's later links) and its tombstones.
const marker: TreeEntry[] = [
  { p: 'ips/removed-bravo', v: 'by charlie', s: 5_000_000 },
  { p: 'ips/ip-bravo', v: TOMBSTONE_VALUE, s: 5_000_001 },
  { p: 'resource-r0/replay-bravo', v: TOMBSTONE_VALUE, s: 5_000_002 },
];

t.test('the marker deletes the removed host\'s links taken before it, deterministically', async (t) => {
  const plan = planMerge(marker, localOf(alpha), { sender: 'charlie', receiver: 'alpha', nowUs: NOW_US, linksOf: linksOfFrom(alpha) });
  const by = new Map(plan.writes.map((w) => [w.p, w]));
  t.same(by.get('ips/removed-bravo')?.v, 'by charlie', 'the marker is written');
  t.same(by.get('resource-r0/actual-bravo/is-primary'), { p: 'resource-r0/actual-bravo/is-primary', v: TOMBSTONE_VALUE, s: 6_000_001, replaceFile: false },
    'a zombie\'s link newer than the remover\'s tombstones: deleted one microsecond after it');
  t.same(by.get('resource-r0/replay-bravo'), { p: 'resource-r0/replay-bravo', v: TOMBSTONE_VALUE, s: 5_500_001, replaceFile: false });
  t.same(by.get('actual-bravo/time')?.v, TOMBSTONE_VALUE, 'global links of a host removed from the cluster too');
  t.same(by.get('resource-r0/primary'), { p: 'resource-r0/primary', v: NO_PRIMARY, s: 5_800_001, replaceFile: false }, 'primary naming it: no designated primary');
  t.notOk(by.has('resource-r0/version-000000003-bravo'), 'versionlinks stay (other members may replay its logfiles)');
  t.notOk(by.has('resource-r0/data-alpha'), 'other hosts\' links stay');
});

t.test('the removed host keeps its own links; a rejoin (membership newer than the marker) keeps them too', async (t) => {
  const own = planMerge(marker, localOf(alpha), { sender: 'charlie', receiver: 'bravo', nowUs: NOW_US, linksOf: linksOfFrom(alpha) });
  t.notOk(own.writes.some((w) => w.p === 'resource-r0/actual-bravo/is-primary'), 'a zombie does not delete its own links');
  const rejoined: Links = { ...alpha, 'ips/ip-bravo': { value: '127.0.0.2', stampUs: 7_000_000 } };
  const plan = planMerge([marker[0]!], localOf(rejoined), { sender: 'charlie', receiver: 'alpha', nowUs: NOW_US, linksOf: linksOfFrom(rejoined) });
  t.same(plan.writes.map((w) => w.p), ['ips/removed-bravo'], 'marker not in force: nothing else changes');
});

t.test('a resource marker deletes links in that resource only', async (t) => {
  const links: Links = { ...alpha, 'resource-r1/replay-bravo': { value: 'log-000000001-bravo,0,0', stampUs: 6_000_000 } };
  const plan = planMerge([{ p: 'resource-r0/removed-bravo', v: 'by charlie', s: 5_000_000 }], localOf(links), { sender: 'charlie', receiver: 'alpha', nowUs: NOW_US, linksOf: linksOfFrom(links) });
  const paths = plan.writes.map((w) => w.p).sort();
  t.ok(paths.includes('resource-r0/replay-bravo'));
  t.notOk(paths.includes('resource-r1/replay-bravo'));
  t.notOk(paths.includes('actual-bravo/time'));
});
