// The value rules for links from peers (daemon/propagate/link-rules.ts), through planMerge as
// the daemon calls it: each hostile value of issue 17 is refused, sane ones pass, and property
// tests (fast-check) show that no sequence of pushes moves maxnr, size or a stamp past its bound.
import t from 'tap';
import fc from 'fast-check';
import { planMerge, TOMBSTONE_VALUE, type LocalState, type TreeEntry } from '../../daemon/propagate/merge.js';
import { DEFAULT_STAMP_WINDOW_US, MAXNR_MAX_STEP } from '../../daemon/propagate/link-rules.js';
import { ANY_UUID } from '../../common/cluster/secret.js';
import { RefusalLog } from '../../daemon/propagate/refusal-log.js';

const NOW_US = 1_800_000_000_000_000;
const DAY_US = 24 * 3600 * 1_000_000;

/** A receiver 'b' of resource r0 whose designated primary is 'a', at logfile 5. */
function receiver(extra: Record<string, LocalState> = {}) {
  const map = new Map<string, LocalState>(Object.entries({
    'resource-r0/primary': { kind: 'link', value: 'a', stampUs: 1000 },
    'resource-r0/size': { kind: 'link', value: '1048576', stampUs: 1000 },
    'resource-r0/maxnr': { kind: 'link', value: '5', stampUs: 1000 },
    'resource-r0/data-a': { kind: 'link', value: '/dev/a', stampUs: 1000 },
    'resource-r0/data-b': { kind: 'link', value: '/dev/b', stampUs: 1000 },
    'resource-r0/replay-a': { kind: 'link', value: 'log-000000005-a,0,0', stampUs: 1000 },
    'resource-r0/log-000000005-a': { kind: 'file' },
    'resource-r0/log-000000004-a': { kind: 'file' },
    uuid: { kind: 'link', value: 'u-1', stampUs: 1000 },
    ...extra,
  }));
  return map;
}

function merge(map: Map<string, LocalState>, sender: string, entries: TreeEntry[], extra: { maxResources?: number; resources?: string[] } = {}) {
  const resources = extra.resources ?? ['r0'];
  return planMerge(entries, (p) => map.get(p) ?? { kind: 'absent' }, {
    sender, receiver: 'b', nowUs: NOW_US,
    ...(extra.maxResources !== undefined ? { maxResources: extra.maxResources } : {}),
    facts: {
      knownSeqs: () => [{ seq: 4, host: 'a' }, { seq: 5, host: 'a' }],
      resources: { exists: (r) => resources.includes(r), count: resources.length },
    },
  });
}

/** Apply a plan to the map, as applyMergePlan does to a tree. */
function apply(map: Map<string, LocalState>, plan: ReturnType<typeof planMerge>): void {
  for (const w of plan.writes) map.set(w.p, { kind: 'link', value: w.v, stampUs: w.s });
}

const S = NOW_US - 1000;

t.test('the attacks of issue 17 item 3 are refused with a reason', async (t) => {
  const m = receiver();
  const cases: [string, TreeEntry, RegExp][] = [
    ['maxnr=999999999 from the primary', { p: 'resource-r0/maxnr', v: '999999999', s: S }, /jumps more than/],
    ['maxnr+1 from a non-primary', { p: 'resource-r0/maxnr', v: '6', s: S }, /designated primary/],
    ['size=1 TiB from a non-primary', { p: 'resource-r0/size', v: String(2 ** 40), s: S }, /designated primary/],
    ['a shrinking size', { p: 'resource-r0/size', v: '4096', s: S }, /never shrinks/],
    ['primary stamped 59 days ahead', { p: 'resource-r0/primary', v: 'c', s: NOW_US + 59 * DAY_US }, /ahead of this host's clock/],
    ['a stamp 11 minutes ahead', { p: 'ips/ip-c', v: '127.0.0.3', s: NOW_US + 11 * 60_000_000 }, /ahead/],
    ['primary naming a non-member', { p: 'resource-r0/primary', v: 'mallory', s: S }, /not a member/],
    ['a tombstone of the primary\'s current logfile from c', { p: 'resource-r0/log-000000005-a', v: TOMBSTONE_VALUE, s: S }, /only a deletes/],
    ['a new uuid', { p: 'uuid', v: 'u-2', s: S }, /never replaced/],
    ['maxnr backed by a forged versionlink of the primary', { p: 'resource-r0/maxnr', v: '999999999', s: S }, /designated primary/],
    ['a non-numeric maxnr', { p: 'resource-r0/maxnr', v: '1e9', s: S }, /not a logfile number/],
  ];
  for (const [what, e, reason] of cases) {
    const sender = what === 'maxnr=999999999 from the primary' ? 'a' : 'c';
    const forged = what.startsWith('maxnr backed') ? [{ p: 'resource-r0/version-999999999-a', v: 'x', s: S }] : [];
    const plan = merge(m, sender, [...forged, e]);
    t.same(plan.writes, [], `${what}: nothing written`);
    t.match(plan.rejected[0]?.reason ?? '', reason, `${what}: ${plan.rejected[0]?.reason}`);
  }
});

t.test('what MARS does keeps working', async (t) => {
  const m = receiver();
  t.equal(merge(m, 'a', [{ p: 'resource-r0/maxnr', v: '6', s: S }]).writes.length, 1, 'the primary rotates: maxnr+1');
  t.equal(merge(m, 'a', [{ p: 'resource-r0/maxnr', v: '16', s: S }]).writes.length, 1, 'the emergency hole: +11');
  t.equal(merge(m, 'c', [{ p: 'resource-r0/maxnr', v: '5', s: S }]).writes.length, 1, 'a relayed, unchanged maxnr with a newer stamp');
  t.equal(merge(m, 'a', [{ p: 'resource-r0/size', v: String(2 * 1048576), s: S }]).writes.length, 1, 'the primary grows the size (resize)');
  t.equal(merge(m, 'c', [{ p: 'resource-r0/primary', v: 'b', s: S }]).writes.length, 1, 'any member hands the role to a member');
  t.equal(merge(m, 'c', [{ p: 'resource-r0/primary', v: '(none)', s: S }]).writes.length, 1, 'marsadm secondary');
  t.equal(merge(m, 'a', [{ p: 'resource-r0/log-000000005-a', v: TOMBSTONE_VALUE, s: S }]).writes.length, 1, 'the origin deletes its logfile');
  t.equal(merge(m, 'c', [{ p: 'resource-r0/log-000000004-a', v: TOMBSTONE_VALUE, s: S }]).writes.length, 1, 'log-delete of a logfile the origin moved past');
  const handover = merge(m, 'c', [{ p: 'resource-r0/primary', v: 'c', s: S }, { p: 'resource-r0/data-c', v: '/dev/c', s: S }, { p: 'resource-r0/maxnr', v: '6', s: S }]);
  t.same(handover.writes.map((w) => w.p), ['resource-r0/primary', 'resource-r0/data-c', 'resource-r0/maxnr'], 'a new primary joining in the same batch raises maxnr');
  t.equal(merge(receiver({ uuid: { kind: 'link', value: ANY_UUID, stampUs: 1_000_000 } }), 'c', [{ p: 'uuid', v: 'u-1', s: S }]).writes.length, 1, 'join-cluster: the real uuid replaces the placeholder');
  t.equal(merge(receiver({ 'resource-r0/maxnr': { kind: 'absent' } }), 'c', [{ p: 'resource-r0/maxnr', v: '57', s: S }]).writes.length, 1, 'a joining host learns maxnr');
});

t.test('resource cap: a clear error once the cluster holds maxResources resources', async (t) => {
  const m = receiver();
  const pushed: TreeEntry[] = [];
  for (let i = 0; i < 271; i++) pushed.push({ p: `resource-x${i}/size`, v: '4096', s: S });
  const plan = merge(m, 'c', pushed, { maxResources: 8 });
  t.equal(new Set(plan.writes.map((w) => w.p.split('/')[0])).size, 7, 'up to the cap (r0 + 7 new)');
  t.equal(plan.rejected.length, 271 - 7);
  t.match(plan.rejected[0]!.reason, /already holds 8 resources \(limit 8, marsd --max-resources\)/);
  t.equal(merge(m, 'c', [{ p: 'resource-r0/data-c', v: '/dev/c', s: S }], { maxResources: 1 }).writes.length, 1, 'an existing resource is not capped');
});

t.test('property: no sequence of pushes moves maxnr past the primary\'s step or size backwards', async () => {
  const entry = fc.record({
    sender: fc.constantFrom('a', 'c', 'mallory'),
    path: fc.constantFrom('resource-r0/maxnr', 'resource-r0/size', 'resource-r0/primary'),
    value: fc.oneof(fc.nat({ max: 2 ** 45 }).map(String), fc.constantFrom('a', 'c', 'mallory', '(none)', TOMBSTONE_VALUE, '-1', 'x')),
    aheadUs: fc.integer({ min: -DAY_US, max: 60 * DAY_US }),
  });
  fc.assert(fc.property(fc.array(entry, { maxLength: 40 }), (pushes) => {
    const m = receiver();
    let stamp = S;
    for (const x of pushes) {
      const before = { maxnr: Number((m.get('resource-r0/maxnr') as { value: string }).value), size: Number((m.get('resource-r0/size') as { value: string }).value) };
      const s = x.aheadUs > 0 ? NOW_US + x.aheadUs : ++stamp;
      const plan = merge(m, x.sender, [{ p: x.path, v: x.value, s }]);
      for (const w of plan.writes) {
        if (w.s > NOW_US + DEFAULT_STAMP_WINDOW_US) return false;
        if (w.p === 'resource-r0/maxnr' && !(Number(w.v) >= before.maxnr && Number(w.v) <= before.maxnr + MAXNR_MAX_STEP)) return false;
        // After a deletion of size (NaN here) the resource is new: any size may start it again.
        if (w.p === 'resource-r0/size' && w.v !== TOMBSTONE_VALUE && !Number.isNaN(before.size) && !(Number(w.v) >= before.size)) return false;
        if (w.p === 'resource-r0/primary' && !['a', 'b', '(none)', TOMBSTONE_VALUE].includes(w.v)) return false;
      }
      apply(m, plan);
      if ((m.get('resource-r0/maxnr') as { value: string }).value === TOMBSTONE_VALUE) return false;
    }
    return true;
  }), { numRuns: 300 });
});

t.test('property: a non-primary never changes maxnr or size, whatever it sends', async () => {
  fc.assert(fc.property(fc.array(fc.tuple(fc.constantFrom('resource-r0/maxnr', 'resource-r0/size'), fc.nat({ max: 2 ** 45 })), { maxLength: 30 }), (pushes) => {
    const m = receiver();
    let s = S;
    for (const [p, v] of pushes) {
      const plan = merge(m, 'mallory', [{ p, v: String(v), s: ++s }]);
      if (plan.writes.some((w) => Number(w.v) !== Number((m.get(p) as { value: string }).value))) return false;
      apply(m, plan);
    }
    return true;
  }), { numRuns: 300 });
});

t.test('RefusalLog: one line per refusal per interval, a bounded number of lines', async (t) => {
  const lines: string[] = [];
  let now = 0;
  const r = new RefusalLog({ log: (_l, msg) => lines.push(msg), nowMs: () => now, intervalMs: 1000, maxLinesPerInterval: 5 });
  for (let i = 0; i < 100; i++) r.note('mallory', 'pushed', 'resource-r0/maxnr', 'too big');
  t.equal(lines.length, 1, 'the same refusal is logged once');
  for (let i = 0; i < 300; i++) r.note('mallory', 'pushed', `resource-x${i}/size`, 'cap');
  t.equal(lines.length, 5, 'at most 5 lines per interval');
  now = 1000;
  r.note('mallory', 'pushed', 'resource-y/size', 'cap');
  t.match(lines[5]!, /296 more refusals not logged/);
});
