// The start-up gate (daemon/control/decide-startup.ts) and what the round's plan makes of it
// (plan.ts), tick by tick: a marsd restarting on an old /mars takes no primary role before it
// merged a peer's tree; what that tree says then decides (a removal marker: no role at all; a
// newer primary link: secondary). A host that reaches nobody acts on its tree after the grace.
import t from 'tap';
import { decideStartupGate, type StartupGateInput } from '../../daemon/control/decide-startup.js';
import { planResource, type PlanInput, type RunnerState } from '../../daemon/control/plan.js';
import type { ResourceSnapshot } from '../../common/resource/snapshot.js';

const START_MS = 1_700_000_000_000;
const GRACE_MS = 20_000;
const SIZE = 1 << 20;

function gate(over: Partial<StartupGateInput> = {}) {
  return decideStartupGate({ nowMs: START_MS, startedMs: START_MS, graceMs: GRACE_MS, peerCount: 2, pulledFrom: [], ...over });
}

/** alpha's old tree: it is the designated primary, attach wanted, consistent. */
function snap(over: Partial<ResourceSnapshot> = {}): ResourceSnapshot {
  return {
    name: 'r0', sizeBytes: SIZE, designatedPrimary: 'alpha', dataPath: '/dev/x',
    todo: { attach: true, connect: true, sync: true, 'allow-replay': true },
    replayLink: 'log-000000003-alpha,4096,0', syncstatusBytes: SIZE, logfiles: [{ seq: 3, origin: 'alpha', sizeBytes: 4096 }], signature: 's1', emergencyLimitPercent: 0,
    primaryMode: 'planned', activePrimaries: [], versionLinks: [], maxnr: 3, invalidateRequest: undefined, wantPrimaryRequest: undefined,
    ...over,
  };
}

const down: RunnerState = {
  phase: 'down', actionInFlight: false, loggingMode: undefined, holeUnwritten: false, invalidating: false, openCount: 0,
  primarySinceUs: undefined, wantHandled: undefined, stopHookConfigured: false, splitBrainChecking: false, splitBrainCheckedMs: START_MS,
};

function plan(snapshot: ResourceSnapshot, nowMs: number, startupHold: string | undefined): ReturnType<typeof planResource> {
  const i: PlanInput = { snapshot, runtime: down, present: true, spaceLevel: 0, nowMs, config: { host: 'alpha', logRotateBytes: 0 }, startupHold };
  return planResource(i);
}

/** One daemon tick: the gate (latched as the daemon does), then the plan. */
function tick(latch: { open: boolean }, snapshot: ResourceSnapshot, input: Partial<StartupGateInput>) {
  let hold: string | undefined;
  if (!latch.open) {
    const g = gate(input);
    if (g.open) latch.open = true;
    else hold = g.why;
  }
  return plan(snapshot, input.nowMs ?? START_MS, hold);
}

t.test('the gate: open without peers, after a pull, or after the grace; closed before', async (t) => {
  t.same(gate({ peerCount: 0 }).open, true, 'alone in the cluster: nobody to wait for');
  const closed = gate();
  t.equal(closed.open, false);
  t.match(closed.why, /waits up to 20 s more for a peer's tree/);
  t.equal(gate({ nowMs: START_MS + 19_999 }).open, false, 'one ms before the grace ends');
  const late = gate({ nowMs: START_MS + GRACE_MS });
  t.equal(late.open, true, 'no peer answered within the grace');
  t.match(late.why, /acting on the tree as it is here/);
  const pulled = gate({ nowMs: START_MS + 300, pulledFrom: ['gamma', 'beta'] });
  t.equal(pulled.open, true);
  t.match(pulled.why, /beta, gamma is merged/);
  t.throws(() => gate({ graceMs: -1 }), /start-up gate/, 'a negative grace is a broken invariant');
});

t.test('a zombie: held at start, then its removal marker arrives with the first pull: no role ever', async (t) => {
  const latch = { open: false };
  // Tick 1: started on the old tree that names alpha primary; no peer pulled yet.
  const p1 = tick(latch, snap(), { nowMs: START_MS + 5 });
  t.same(p1.primary, { kind: 'none' }, 'no start from the old tree');
  t.match(p1.primaryWait, /start-up: the primary role waits/);
  t.equal(p1.device, 'none', 'no device either');
  // Tick 2: beta's tree is merged; it carries ips/removed-alpha (snapshot.removed).
  const removed = 'alpha was removed from the cluster by beta: it takes no role and serves nothing. To rejoin: ...';
  const p2 = tick(latch, snap({ removed }), { nowMs: START_MS + 200, pulledFrom: ['beta'] });
  t.ok(latch.open, 'the gate opened');
  t.same(p2.primary, { kind: 'none' }, 'the removed host takes no role');
  t.equal(p2.primaryWait, removed, 'primary-wait says that it was removed and how to rejoin');
  t.equal(p2.secondary.disk, false, 'and runs no secondary work');
  t.equal(p2.secondary.why, removed);
  // Tick 3, long after the grace: still nothing.
  t.same(tick(latch, snap({ removed }), { nowMs: START_MS + 10 * GRACE_MS }).primary, { kind: 'none' });
});

t.test('an old primary replaced by a forced failover: held, then the new primary link makes it a secondary', async (t) => {
  const latch = { open: false };
  t.same(tick(latch, snap(), { nowMs: START_MS + 10 }).primary, { kind: 'none' });
  const p = tick(latch, snap({ designatedPrimary: 'beta', signature: 's2' }), { nowMs: START_MS + 150, pulledFrom: ['beta'] });
  t.same(p.primary, { kind: 'none' }, 'no primary role: beta is primary now');
  t.equal(p.primaryWait, undefined);
  t.equal(p.secondary.disk, true, 'it follows beta as a secondary (a split brain stops its replay; split-brain-monitor reports it)');
});

t.test('a primary restarting with its peers alive: starts right after the first pull', async (t) => {
  const latch = { open: false };
  t.same(tick(latch, snap(), { nowMs: START_MS + 1 }).primary, { kind: 'none' });
  t.same(tick(latch, snap(), { nowMs: START_MS + 80, pulledFrom: ['beta'] }).primary, { kind: 'start-primary' });
});

t.test('a host that reaches no peer: held for the grace, then acts on its tree', async (t) => {
  const latch = { open: false };
  for (const ms of [0, 1_000, 10_000, GRACE_MS - 1]) {
    const p = tick(latch, snap(), { nowMs: START_MS + ms });
    t.same(p.primary, { kind: 'none' }, `held at ${ms} ms`);
  }
  t.same(tick(latch, snap(), { nowMs: START_MS + GRACE_MS }).primary, { kind: 'start-primary' }, 'starts once the grace is over');
  t.ok(latch.open);
});

t.test('the gate holds back only a start: a running primary still steps down, others are untouched', async (t) => {
  const p = planResource({
    snapshot: snap({ designatedPrimary: 'beta' }), runtime: { ...down, phase: 'primary', loggingMode: 'logging', currentSeq: 3 },
    present: true, spaceLevel: 0, nowMs: START_MS, config: { host: 'alpha', logRotateBytes: 0 }, startupHold: 'start-up: waiting',
  });
  t.equal(p.primary.kind, 'stop-primary');
  const secondary = plan(snap({ designatedPrimary: 'beta' }), START_MS, 'start-up: waiting');
  t.equal(secondary.secondary.disk, true, 'a plain secondary works while the gate is closed');
  t.equal(secondary.primaryWait, undefined);
});
