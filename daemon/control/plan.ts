// The control loop's plan for one resource and one round, as ONE pure function (as raft's Ready):
// from the tree snapshot, what the resource's runners report about themselves, the host's /mars
// space level, the time and the config, planResource says everything this round does for the
// resource. The shell (ResourceRunner.round, called by daemon.ts) only gathers the input and
// executes the plan; nothing here touches the filesystem, a timer or the clock.
//
// The parts, and the pure deciders they come from:
//   primary          start / stop / rotate / create-next-logfile / none       decide.ts
//   primaryWait      what the takeover of the primary role waits for          decide.ts, decide-handover.ts,
//                    and the start-up gate (no primary role before a peer's tree)  decide-startup.ts
//   invalidate       carry out a pending `marsadm invalidate` now
//   secondary        fetch, sync, replay (space limits applied)               decide-secondary.ts, decide-emergency.ts
//   deleteReplayedCopies   free /mars at space level 2 and above              decide-emergency.ts
//   emergency, retryHoleLinks   enter or leave emergency mode                 decide-emergency.ts
//   wantPrimary      stop the application for another member's handover request
//   checkSplitBrain  time for the next split-brain check
//   publishStatus    write actual-HOST/* this round
//   device           make or remove /dev/mars/NAME (holds a stop back until it is gone)  decide-device.ts
//   forget           the resource is gone and nothing of it runs any more
//
// Invariants: at most one operation per resource is in flight on its runner (primary action,
// leaving emergency mode, invalidate); while one is, no new primary action and no leaving is
// planned (the next is decided from the state the previous one left: the rotation race of issue
// 10). Entering emergency mode is never held back: clients never wait on /mars.
import type { ResourceSnapshot } from '../../common/resource/snapshot.js';
import type { LoggingMode } from '../logger/emergency-backend.js';
import { decide, type Action, type DecideConfig, type Decision, type RuntimeState } from './decide.js';
import { decideSecondary, NOTHING, type SecondaryPlan } from './decide-secondary.js';
import { decidePrimaryEmergency, emergencyLimitReached, limitSecondaryPlan, MAX_SPACE_LEVEL, secondarySpaceLimits, type EmergencyAction } from './decide-emergency.js';
import { NO_DEVICE, planDevice, type DeviceAction, type DeviceRuntime } from './decide-device.js';

/** A split-brain check of a resource runs at most this often (it reads every versionlink). */
export const SPLIT_BRAIN_CHECK_INTERVAL_MS = 1_000;

/** What the runners of a resource report about themselves (ResourceRunner.runtime()). */
export interface RunnerState extends RuntimeState {
  actionInFlight: boolean;
  /** the primary's write path while the primary role runs (emergency-backend.ts); else undefined */
  loggingMode: LoggingMode | undefined;
  /** emergency mode began, but the links of its hole are not all written yet */
  holeUnwritten: boolean;
  /** an invalidate request is being carried out (no secondary work meanwhile) */
  invalidating: boolean;
  /** NBD connections open on the export */
  openCount: number;
  /** Lamport stamp (µs) of the last start of the primary role here; undefined: never */
  primarySinceUs: number | undefined;
  /** the want-primary request (`STAMP HOST`) handled last */
  wantHandled: string | undefined;
  /** an application stop hook is configured here (userspace/app-stop-RES) */
  stopHookConfigured: boolean;
  splitBrainChecking: boolean;
  /** when the last split-brain check began (ms, the clock's time) */
  splitBrainCheckedMs: number;
  /** the kernel block device marsd makes (device-runner.ts); absent: none */
  device?: DeviceRuntime;
}

export interface PlanInput {
  snapshot: ResourceSnapshot;
  runtime: RunnerState;
  /** false: the resource directory is gone (delete-resource --force under a running runner) */
  present: boolean;
  /** this host's /mars space level 0..4 (space-monitor.ts) */
  spaceLevel: number;
  /** size of the /mars filesystem (space-monitor.ts), for the resource's emergency limit; 0 = unknown */
  spaceTotalBytes?: number;
  nowMs: number;
  config: DecideConfig;
  /**
   * the start-up gate is closed (decide-startup.ts): why the primary role may not start yet.
   * undefined: open. It holds back only the start of the role, nothing else.
   */
  startupHold?: string | undefined;
}

/** Another member asked for the primary role (its want-primary link): mark it handled, maybe stop the application. */
export interface WantPrimaryPlan {
  request: string;
  requester: string;
  stopApp: boolean;
}

export interface ResourcePlan {
  primary: Action;
  /** why the primary role is not taken although wanted (actual-HOST/primary-wait); undefined = OK */
  primaryWait: string | undefined;
  invalidate: { request: string; sizeBytes: number } | undefined;
  secondary: SecondaryPlan;
  deleteReplayedCopies: boolean;
  emergency: EmergencyAction;
  /** what 'enter' gives as the reason (the space level, or the resource's emergency limit) */
  emergencyReason: string;
  /** write the hole links again (a /mars too full even for a link failed before) */
  retryHoleLinks: boolean;
  wantPrimary: WantPrimaryPlan | undefined;
  checkSplitBrain: boolean;
  /** write the status links (actual-HOST/*) this round; never for a deleted resource */
  publishStatus: boolean;
  /** nothing of the deleted resource runs: drop its runner */
  forget: boolean;
  /** make or remove the kernel block device (decide-device.ts) */
  device: DeviceAction;
}

export function planResource(i: PlanInput): ResourcePlan {
  if (!i.present) return planDeleted(i.runtime);
  const s = i.snapshot;
  const rt = i.runtime;
  const d = holdAtStartup(decide(s, rt, i.config), i.startupHold);
  const idle = rt.phase === 'down' || rt.phase === 'failed';
  // Only for a member: a request left behind by a leave is no request (marsadm removes both).
  const invalidate = idle && !rt.invalidating && s.invalidateRequest !== undefined && s.sizeBytes !== undefined && s.dataPath !== undefined
    ? { request: s.invalidateRequest, sizeBytes: s.sizeBytes } : undefined;
  const wanted = secondaryFor(s, i.config.host, d, idle && !rt.invalidating && invalidate === undefined);
  const device = planDevice(rt.device ?? NO_DEVICE, rt.phase, d.action, i.nowMs);
  return {
    primary: device.holdPrimary ? { kind: 'none' } : d.action,
    primaryWait: d.blockedBy,
    invalidate,
    secondary: limitSecondaryPlan(wanted, i.spaceLevel),
    deleteReplayedCopies: idle && !d.wantPrimary && wanted.disk && secondarySpaceLimits(i.spaceLevel).deleteReplayedCopies,
    ...planEmergency(rt, i.spaceLevel, d.action, limitHit(s, i.spaceTotalBytes ?? 0)),
    wantPrimary: planWantPrimary(s.wantPrimaryRequest, rt),
    checkSplitBrain: !rt.splitBrainChecking && i.nowMs - rt.splitBrainCheckedMs >= SPLIT_BRAIN_CHECK_INTERVAL_MS,
    publishStatus: true,
    forget: false,
    device: device.action,
  };
}

/** A closed start-up gate turns a start of the primary role into a wait that says why. */
function holdAtStartup(d: Decision, hold: string | undefined): Decision {
  if (hold === undefined || d.action.kind !== 'start-primary') return d;
  return { ...d, action: { kind: 'none' }, blockedBy: hold };
}

/**
 * The secondary side runs while the primary side is idle and no invalidate is carried out: as a
 * plain secondary, or, on the designated primary, to complete the previous primary's history
 * (handover). A designated primary about to start runs none.
 */
function secondaryFor(s: ResourceSnapshot, host: string, d: Decision, mayRun: boolean): SecondaryPlan {
  if (!mayRun) return NOTHING;
  if (d.handover) return decideSecondary(s, host, { handover: d.blockedBy ?? 'waiting' });
  if (!d.wantPrimary) return decideSecondary(s, host);
  return NOTHING;
}

/**
 * Emergency mode of a running primary: enter at the last space level at once; leave at level 0
 * through the runner's queue, so never beside a rotation or a stop (one operation at a time).
 */
function planEmergency(rt: RunnerState, level: number, primary: Action, limit: string | undefined): { emergency: EmergencyAction; emergencyReason: string; retryHoleLinks: boolean } {
  const reason = limit ?? `/mars space level ${MAX_SPACE_LEVEL}: free space below the last threshold`;
  if (rt.phase !== 'primary' || rt.loggingMode === undefined) return { emergency: 'none', emergencyReason: reason, retryHoleLinks: false };
  // Over its own limit, the resource acts as if /mars were at the last level.
  const action = decidePrimaryEmergency(limit === undefined ? level : MAX_SPACE_LEVEL, rt.loggingMode);
  const busy = rt.actionInFlight || primary.kind !== 'none';
  return { emergency: action === 'leave' && busy ? 'none' : action, emergencyReason: reason, retryHoleLinks: rt.holeUnwritten };
}

/** Why the resource's emergency limit holds it in emergency mode, or undefined. */
function limitHit(s: ResourceSnapshot, totalBytes: number): string | undefined {
  const logBytes = s.logfiles.reduce((sum, l) => sum + l.sizeBytes, 0);
  if (!emergencyLimitReached(s.emergencyLimitPercent, logBytes, totalBytes)) return undefined;
  return `emergency limit of ${s.name}: its logfiles take ${logBytes} bytes, at least ${s.emergencyLimitPercent} % of /mars (${totalBytes} bytes)`;
}

/**
 * A want-primary request (`STAMP HOST`) is handled once. While our device is open and a stop
 * hook is configured, the application is stopped so that the planned handover can go on; a
 * request older than our own start of the primary role belongs to an earlier handover.
 */
export function planWantPrimary(request: string | undefined, rt: RunnerState): WantPrimaryPlan | undefined {
  if (request === undefined || request === rt.wantHandled) return undefined;
  const [stamp, requester = '?'] = request.split(' ');
  const stampUs = Number(stamp) * 1_000_000;
  const current = stampUs >= (rt.primarySinceUs ?? Number.MAX_SAFE_INTEGER);
  const stopApp = current && rt.phase === 'primary' && rt.openCount > 0 && rt.stopHookConfigured;
  return { request, requester, stopApp };
}

/** The resource was deleted underneath its runner: a primary steps down, then the runner goes. */
function planDeleted(rt: RunnerState): ResourcePlan {
  const stop = rt.phase === 'primary' && !rt.actionInFlight;
  const stopAction: Action = stop ? { kind: 'stop-primary', reason: 'resource deleted' } : { kind: 'none' };
  const device = planDevice(rt.device ?? NO_DEVICE, rt.phase, stopAction, 0);
  return {
    primary: device.holdPrimary ? { kind: 'none' } : stopAction,
    primaryWait: undefined,
    invalidate: undefined,
    secondary: { ...NOTHING, why: 'resource deleted' },
    deleteReplayedCopies: false,
    emergency: 'none',
    emergencyReason: '',
    retryHoleLinks: false,
    wantPrimary: undefined,
    checkSplitBrain: false,
    publishStatus: false,
    forget: (rt.phase === 'down' || rt.phase === 'failed') && !rt.actionInFlight && !rt.device?.attached && !rt.device?.busy,
    device: device.action,
  };
}
