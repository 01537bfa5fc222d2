// When marsd makes and removes /dev/mars/NAME (daemon/control/decide-device.ts, part of the
// round's plan), driven round by round through planResource: made once the role runs, removed
// before the role is given up (the stop waits for it), a failed attach retried after a pause.
import t from 'tap';
import { planResource, type RunnerState } from '../../daemon/control/plan.js';
import { DEVICE_RETRY_MS, planDevice, type DeviceRuntime } from '../../daemon/control/decide-device.js';
import type { ResourceSnapshot } from '../../common/resource/snapshot.js';

const SIZE = 1 << 20;
const NOW_MS = 1_700_000_000_000;
const off: DeviceRuntime = { enabled: true, attached: false, busy: false, failedAtMs: undefined };
const on: DeviceRuntime = { ...off, attached: true };

function snap(over: Partial<ResourceSnapshot> = {}): ResourceSnapshot {
  return {
    name: 'r0', sizeBytes: SIZE, designatedPrimary: 'alpha', dataPath: '/dev/x',
    todo: { attach: true, connect: true, sync: true, 'allow-replay': true },
    replayLink: 'log-000000002-alpha,0,0', syncstatusBytes: SIZE, logfiles: [{ seq: 2, origin: 'alpha', sizeBytes: 10 }], signature: 's1', emergencyLimitPercent: 0,
    primaryMode: 'planned', activePrimaries: [], versionLinks: [], maxnr: 2, invalidateRequest: undefined, wantPrimaryRequest: undefined,
    ...over,
  };
}

function rt(over: Partial<RunnerState> = {}): RunnerState {
  return {
    phase: 'primary', actionInFlight: false, loggingMode: 'logging', holeUnwritten: false, invalidating: false, openCount: 0,
    primarySinceUs: 1, wantHandled: undefined, stopHookConfigured: false, splitBrainChecking: false, splitBrainCheckedMs: NOW_MS,
    currentSeq: 2, currentLogBytes: 10, ...over,
  };
}

const plan = (s: Partial<ResourceSnapshot>, r: Partial<RunnerState>, nowMs = NOW_MS, present = true) => planResource({
  snapshot: snap(s), runtime: rt(r), present, spaceLevel: 0, nowMs, config: { host: 'alpha', logRotateBytes: 0 },
});

t.test('no device mode: nothing is made and nothing held back', async (t) => {
  t.equal(plan({}, {}).device, 'none');
  const p = plan({ designatedPrimary: 'beta' }, { device: { ...on, enabled: false } });
  t.equal(p.device, 'none');
  t.equal(p.primary.kind, 'stop-primary');
});

t.test('the device is made once the primary role runs, not while it starts, not twice', async (t) => {
  t.equal(plan({}, { phase: 'starting', device: off }).device, 'none');
  t.equal(plan({}, { device: off }).device, 'attach');
  t.equal(plan({}, { device: { ...off, busy: true } }).device, 'none', 'an attach in progress is not repeated');
  t.equal(plan({}, { device: on }).device, 'none');
});

t.test('giving the role up: the device goes first, the stop waits for it', async (t) => {
  // Round 1: another host is designated: detach, and no stop-primary yet.
  let p = plan({ designatedPrimary: 'beta' }, { device: on });
  t.equal(p.device, 'detach');
  t.same(p.primary, { kind: 'none' }, 'the stop is held back while the device exists');
  // Round 2: the detach runs (or waits for openers and reports attached again): still held.
  p = plan({ designatedPrimary: 'beta' }, { device: { ...on, busy: true } });
  t.equal(p.device, 'none');
  t.same(p.primary, { kind: 'none' });
  p = plan({ designatedPrimary: 'beta' }, { device: on });
  t.equal(p.device, 'detach', 'asked again next round while an opener keeps it');
  // Round 3: gone: now the role is given up.
  p = plan({ designatedPrimary: 'beta' }, { device: off });
  t.equal(p.device, 'none');
  t.equal(p.primary.kind, 'stop-primary');
});

t.test('detach requested, or the resource deleted: the same order', async (t) => {
  const p = plan({ todo: { attach: false, connect: true, sync: true, 'allow-replay': true } }, { device: on });
  t.equal(p.device, 'detach');
  t.same(p.primary, { kind: 'none' });
  const d = plan({}, { device: on }, NOW_MS, false);
  t.equal(d.device, 'detach');
  t.same(d.primary, { kind: 'none' });
  t.notOk(d.forget, 'the runner stays until its device is gone');
  const gone = plan({}, { phase: 'down', device: off }, NOW_MS, false);
  t.ok(gone.forget);
});

t.test('a failed role (I/O error) loses its device; a failed attach is retried after a pause', async (t) => {
  t.equal(plan({}, { phase: 'failed', device: on }).device, 'detach');
  const failed: DeviceRuntime = { ...off, failedAtMs: NOW_MS };
  t.equal(plan({}, { device: failed }, NOW_MS + DEVICE_RETRY_MS - 1).device, 'none');
  t.equal(plan({}, { device: failed }, NOW_MS + DEVICE_RETRY_MS).device, 'attach');
  t.same(planDevice(failed, 'primary', { kind: 'none' }, NOW_MS + DEVICE_RETRY_MS), { action: 'attach', holdPrimary: false });
});
