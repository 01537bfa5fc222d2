// The control loop's plan for one resource and round (daemon/control/plan.ts), driven round by
// round: every decision the shells used to make themselves (the secondary plan, the reclaim
// choice, emergency mode, the want-primary request, invalidate, a deleted resource) and the rule
// that nothing new is planned while an operation is in flight.
import t from 'tap';
import { planResource, SPLIT_BRAIN_CHECK_INTERVAL_MS, type PlanInput, type RunnerState } from '../../daemon/control/plan.js';
import type { ResourceSnapshot } from '../../common/resource/snapshot.js';
import { nextVersionLink } from '../../common/log/links.js';
import { contentDigestOf } from '../../common/log/content-digest.js';

// One content for every logfile: these tests are about positions and chains, not bytes.
const CONTENT = contentDigestOf(Buffer.from('logfile bytes'));

const SIZE = 1 << 20;
const NOW_MS = 1_700_000_000_000;

function snap(over: Partial<ResourceSnapshot> = {}): ResourceSnapshot {
  return {
    name: 'r0', sizeBytes: SIZE, designatedPrimary: 'alpha', dataPath: '/dev/x',
    todo: { attach: true, connect: true, sync: true, 'allow-replay': true },
    replayLink: 'log-000000001-alpha,0,0', syncstatusBytes: SIZE, logfiles: [{ seq: 1, origin: 'alpha', sizeBytes: 0 }], signature: 's1', emergencyLimitPercent: 0,
    primaryMode: 'planned', activePrimaries: [], versionLinks: [], maxnr: 1, invalidateRequest: undefined, wantPrimaryRequest: undefined,
    ...over,
  };
}

function state(over: Partial<RunnerState> = {}): RunnerState {
  return {
    phase: 'down', actionInFlight: false, loggingMode: undefined, holeUnwritten: false, invalidating: false, openCount: 0,
    primarySinceUs: undefined, wantHandled: undefined, stopHookConfigured: false, splitBrainChecking: false, splitBrainCheckedMs: NOW_MS,
    ...over,
  };
}

function plan(over: { snapshot?: Partial<ResourceSnapshot>; runtime?: Partial<RunnerState> } & Partial<Omit<PlanInput, 'snapshot' | 'runtime'>> = {}) {
  return planResource({
    present: true, spaceLevel: 0, nowMs: NOW_MS, config: { host: 'alpha', logRotateBytes: 1000 },
    ...over, snapshot: snap(over.snapshot), runtime: state(over.runtime),
  });
}

const primaryHere: Partial<RunnerState> = { phase: 'primary', loggingMode: 'logging', currentSeq: 2, currentLogBytes: 10, primarySinceUs: 1_000_000_000_000_000 };

t.test('a designated primary that is down starts, and runs no secondary work', async (t) => {
  const p = plan();
  t.same(p.primary, { kind: 'start-primary' });
  t.equal(p.primaryWait, undefined);
  t.notOk(p.secondary.disk);
  t.notOk(p.deleteReplayedCopies);
  t.equal(p.emergency, 'none');
  t.ok(p.publishStatus);
  t.notOk(p.forget);
});

t.test('one operation in flight: no new primary action until its effect shows (the rotation race)', async (t) => {
  const files = { logfiles: [{ seq: 2, origin: 'alpha', sizeBytes: 10 }, { seq: 3, origin: 'alpha', sizeBytes: 0 }] };
  // Round 1: log-rotate made an empty log-3; rotate to it.
  t.same(plan({ snapshot: files, runtime: primaryHere }).primary, { kind: 'rotate', toSeq: 3 });
  // Round 2: the rotation is queued, the logger still writes log-2: the same snapshot must not
  // rotate again (it did: "rotation must go to the next logfile number (3 -> 3)").
  t.same(plan({ snapshot: files, runtime: { ...primaryHere, actionInFlight: true } }).primary, { kind: 'none' });
  // Round 3: the rotation is done; log-3 is current and nothing more to do.
  t.same(plan({ snapshot: files, runtime: { ...primaryHere, currentSeq: 3, currentLogBytes: 0 } }).primary, { kind: 'none' });
  // The same holds for a start: no second start while the first is queued.
  t.same(plan({ runtime: { actionInFlight: true } }).primary, { kind: 'none' });
  t.same(plan({ snapshot: { designatedPrimary: 'beta' }, runtime: { ...primaryHere, actionInFlight: true } }).primary, { kind: 'none' }, 'a stop waits too');
  t.same(plan({ snapshot: { designatedPrimary: 'beta' }, runtime: primaryHere }).primary, { kind: 'stop-primary', reason: 'designated primary is now beta' });
});

t.test('a plain secondary fetches and replays; space levels limit it; level 2 reclaims replayed copies', async (t) => {
  const s = { designatedPrimary: 'beta' };
  let p = plan({ snapshot: s });
  t.same(p.primary, { kind: 'none' });
  t.same(p.secondary, { disk: true, fetch: true, sync: false, replay: true, repairOnly: false, why: '' });
  t.notOk(p.deleteReplayedCopies);
  p = plan({ snapshot: s, spaceLevel: 2 });
  t.ok(p.secondary.fetch);
  t.ok(p.deleteReplayedCopies, 'level 2: delete the copies already replayed');
  p = plan({ snapshot: s, spaceLevel: 3 });
  t.notOk(p.secondary.fetch, 'level 3: fetching pauses');
  t.ok(p.secondary.replay, 'replay goes on with what is here');
  t.match(p.secondary.why, /fetch paused: \/mars space level 3/);
  t.notOk(plan({ snapshot: { ...s, todo: { attach: false, connect: true, sync: true, 'allow-replay': true } }, spaceLevel: 2 }).deleteReplayedCopies,
    'a detached replica reclaims nothing (it has no disk open)');
  t.notOk(plan({ snapshot: s, runtime: primaryHere }).secondary.disk, 'no secondary work beside the primary role');
});

t.test('handover: the designated primary completes the old primary\'s history first', async (t) => {
  const v1 = nextVersionLink('', 1, 'alpha', 300, CONTENT);
  const s = {
    designatedPrimary: 'beta', replayLink: 'log-000000001-alpha,100,0', activePrimaries: ['alpha'],
    logfiles: [{ seq: 1, origin: 'alpha', sizeBytes: 300 }], versionLinks: [{ seq: 1, host: 'alpha', value: v1 }],
  };
  const cfg = { config: { host: 'beta', logRotateBytes: 0 } };
  let p = plan({ ...cfg, snapshot: s });
  t.same(p.primary, { kind: 'none' });
  t.match(p.primaryWait, /waiting for alpha to leave the primary role/);
  t.match(p.secondary, { disk: true, fetch: true, replay: true, sync: false });
  t.match(p.secondary.why, /becoming primary: waiting for alpha/);
  t.notOk(p.deleteReplayedCopies, 'the designated primary keeps every copy (it may need them)');
  p = plan({ ...cfg, snapshot: { ...s, activePrimaries: [], logfiles: [{ seq: 1, origin: 'alpha', sizeBytes: 200 }] } });
  t.match(p.primaryWait, /fetching log-000000001-alpha: 200 of 300 bytes/);
  t.ok(p.secondary.fetch);
  p = plan({ ...cfg, snapshot: { ...s, activePrimaries: [] } });
  t.same(p.primary, { kind: 'start-primary' }, 'alpha left and everything is here: start');
  t.notOk(p.secondary.disk, 'the secondary side stops for the start');
});

t.test('invalidate: once, only while idle; no secondary work meanwhile', async (t) => {
  const s = { designatedPrimary: 'beta', invalidateRequest: '1700000000.000000001' };
  let p = plan({ snapshot: s });
  t.same(p.invalidate, { request: '1700000000.000000001', sizeBytes: SIZE });
  t.notOk(p.secondary.disk, 'the round that starts it runs no secondary work');
  p = plan({ snapshot: s, runtime: { invalidating: true } });
  t.equal(p.invalidate, undefined, 'not twice');
  t.notOk(p.secondary.disk);
  t.equal(plan({ snapshot: s, runtime: primaryHere }).invalidate, undefined, 'never on a running primary');
  t.equal(plan({ snapshot: { ...s, sizeBytes: undefined } }).invalidate, undefined);
  t.equal(plan({ snapshot: { ...s, dataPath: undefined } }).invalidate, undefined, 'never for a host that is no member (left the resource)');
  t.ok(plan({ snapshot: { designatedPrimary: 'beta' } }).secondary.disk, 'answered: secondary work again');
});

t.test('emergency mode: enter at level 4 at once, leave at level 0 through the queue, retry the hole links', async (t) => {
  t.equal(plan({ runtime: primaryHere, spaceLevel: 4 }).emergency, 'enter');
  t.equal(plan({ runtime: { ...primaryHere, actionInFlight: true }, spaceLevel: 4 }).emergency, 'enter', 'entering never waits');
  t.equal(plan({ runtime: primaryHere, spaceLevel: 3 }).emergency, 'none');
  const direct = { ...primaryHere, loggingMode: 'direct' as const };
  t.equal(plan({ runtime: direct, spaceLevel: 1 }).emergency, 'none', 'only when the space is back completely');
  t.equal(plan({ runtime: direct, spaceLevel: 0 }).emergency, 'leave');
  t.equal(plan({ runtime: { ...direct, actionInFlight: true }, spaceLevel: 0 }).emergency, 'none', 'not beside a queued operation (or itself)');
  t.equal(plan({ runtime: { ...primaryHere, loggingMode: 'entering' }, spaceLevel: 0 }).emergency, 'none');
  t.notOk(plan({ runtime: direct }).retryHoleLinks);
  t.ok(plan({ runtime: { ...direct, holeUnwritten: true }, spaceLevel: 4 }).retryHoleLinks);
  t.equal(plan({ spaceLevel: 4 }).emergency, 'none', 'not primary: nothing to enter');
});

t.test('a want-primary request stops the application once, and only a current one', async (t) => {
  const request = '1700000000.5 beta';
  const open = { ...primaryHere, openCount: 1, stopHookConfigured: true, primarySinceUs: 1_600_000_000_000_000 };
  const s = { wantPrimaryRequest: request };
  t.same(plan({ snapshot: s, runtime: open }).wantPrimary, { request, requester: 'beta', stopApp: true });
  t.equal(plan({ snapshot: s, runtime: { ...open, wantHandled: request } }).wantPrimary, undefined, 'handled once');
  t.same(plan({ snapshot: s, runtime: { ...open, primarySinceUs: 1_800_000_000_000_000 } }).wantPrimary, { request, requester: 'beta', stopApp: false },
    'a request from before our own start belongs to an earlier handover');
  t.same(plan({ snapshot: s, runtime: { ...open, openCount: 0 } }).wantPrimary?.stopApp, false, 'nothing open: nothing to stop');
  t.same(plan({ snapshot: s, runtime: { ...open, stopHookConfigured: false } }).wantPrimary?.stopApp, false, 'no stop hook');
  t.same(plan({ snapshot: s, runtime: { ...open, phase: 'down' } }).wantPrimary?.stopApp, false, 'not primary');
  t.equal(plan({ runtime: open }).wantPrimary, undefined, 'no request');
});

t.test('the split-brain check runs at most once a second, never two at a time', async (t) => {
  const checked = NOW_MS - SPLIT_BRAIN_CHECK_INTERVAL_MS;
  t.notOk(plan({ runtime: { splitBrainCheckedMs: checked + 1 } }).checkSplitBrain);
  t.ok(plan({ runtime: { splitBrainCheckedMs: checked } }).checkSplitBrain);
  t.notOk(plan({ runtime: { splitBrainCheckedMs: checked, splitBrainChecking: true } }).checkSplitBrain);
  t.ok(plan({ runtime: { splitBrainCheckedMs: Number.NEGATIVE_INFINITY } }).checkSplitBrain, 'the first round checks');
});

t.test('a deleted resource: the primary steps down, then the runner is forgotten (round by round)', async (t) => {
  let p = plan({ present: false, runtime: primaryHere });
  t.same(p.primary, { kind: 'stop-primary', reason: 'resource deleted' });
  t.notOk(p.forget);
  t.notOk(p.publishStatus, 'no status links into a deleted directory');
  t.notOk(p.secondary.disk);
  p = plan({ present: false, runtime: { ...primaryHere, actionInFlight: true } });
  t.same(p.primary, { kind: 'none' }, 'the stop is queued: not again');
  t.notOk(p.forget);
  p = plan({ present: false, runtime: { phase: 'stopping', actionInFlight: true } });
  t.notOk(p.forget);
  p = plan({ present: false, runtime: { phase: 'down' } });
  t.same(p.primary, { kind: 'none' });
  t.ok(p.forget);
  t.notOk(plan({ present: false, runtime: { phase: 'failed', actionInFlight: true } }).forget, 'not while something of it runs');
});

t.test('the emergency limit of a resource: emergency mode once its logfiles take that share of /mars', async (t) => {
  const logs = [{ seq: 1, origin: 'alpha', sizeBytes: 600 }, { seq: 2, origin: 'alpha', sizeBytes: 400 }]; // 1000 bytes
  const over = (percent: number, totalBytes: number, runtime: Partial<RunnerState> = primaryHere) =>
    plan({ runtime, snapshot: { logfiles: logs, emergencyLimitPercent: percent }, spaceTotalBytes: totalBytes });
  const hit = over(10, 10_000);
  t.equal(hit.emergency, 'enter', '1000 of 10000 bytes reach a 10 % limit at space level 0');
  t.match(hit.emergencyReason, /emergency limit of r0: its logfiles take 1000 bytes, at least 10 % of \/mars/);
  t.equal(over(11, 10_000).emergency, 'none', 'below the limit');
  t.equal(over(0, 10_000).emergency, 'none', '0 = off');
  t.equal(over(10, 0).emergency, 'none', '/mars size not known yet: no decision from it');
  t.equal(over(10, 10_000, { ...primaryHere, loggingMode: 'direct' }).emergency, 'none', 'stays in emergency mode while over the limit');
  t.equal(over(50, 10_000, { ...primaryHere, loggingMode: 'direct' }).emergency, 'leave', 'leaves once below it at space level 0');
  t.equal(over(10, 10_000, state()).emergency, 'none', 'not primary: nothing to enter');
  t.match(plan({ runtime: primaryHere, spaceLevel: 4 }).emergencyReason, /space level 4/, 'the space level says why otherwise');
});
