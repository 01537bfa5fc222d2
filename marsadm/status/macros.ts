// view-MACRO values (the MARS user manual: view macros, complex and primitive), computed from a
// ViewSnapshot by pure functions. MARS's names are the primary names; the names this tool used
// before stay as aliases (is-attached, is-syncing, is-fetching, is-replaying). Every macro is
// also in `view --json` (key `macros`) and in `view-MACRO all`. docs/monitoring.md lists them.
import {
  diskState, flags, isConsistent, isEmergency, primaryUnreachable, replState, rests, role, syncPos, syncRest,
  REPLAY_CODE_HOLE, type ViewSnapshot,
} from './view-model.js';
import { percent, remainS, type Progress } from '../../common/resource/replication-progress.js';
import { retentionJson } from './log-retention.js';

type Macro = (v: ViewSnapshot) => string;

const ZERO_PROGRESS: Progress = {
  fetchRest: 0, replayRest: 0, workRest: 0, syncRest: 0, totalSize: 0, fetchPos: 0, replayPos: 0,
  fetchLagS: 0, replayLagS: 0, syncLagS: 0, workLagS: 0, fetchAgeS: undefined, replayAgeS: undefined, syncAgeS: undefined,
  primaryAgeS: undefined, stale: false,
};

const bit = (b: boolean): string => (b ? '1' : '0');
const prog = (v: ViewSnapshot): Progress => v.progress ?? ZERO_PROGRESS;
/** Seconds with one decimal: lags and ages are measured, not counted. */
const secs = (s: number | undefined): string => (s === undefined ? '' : (Math.round(s * 10) / 10).toFixed(1));
const e = (v: ViewSnapshot) => v.emergency;

function syncRate(v: ViewSnapshot): number {
  return syncRest(v) > 0 ? v.actual.syncRateBytesPerS : 0;
}

/** A rate is only current while its work made progress within the rate window (10 s). */
function fresh(rate: number, ageS: number | undefined): number {
  return ageS !== undefined && ageS <= 10 ? rate : 0;
}

function fetchRate(v: ViewSnapshot): number {
  return fresh(v.rates?.fetch ?? 0, prog(v).fetchAgeS);
}

function replayRate(v: ViewSnapshot): number {
  return fresh(v.rates?.replay ?? 0, prog(v).replayAgeS);
}

function messages(v: ViewSnapshot, kind: 'err' | 'wrn' | 'inf'): string {
  return Object.entries(v.messages ?? {}).filter(([k]) => k.startsWith(`msg-${kind}-`)).map(([k, text]) => `${k.slice(4)}: ${text}`).join('; ');
}

/** COMMSTATE: empty while the primary's state known here is current. */
function commstate(v: ViewSnapshot): string {
  if (!primaryUnreachable(v)) return '';
  const age = prog(v).primaryAgeS;
  return `PrimaryUnreachable[${age === undefined ? 'never seen' : `${Math.round(age)}s`}]`;
}

function comminfo(v: ViewSnapshot): string {
  const link = v.primaryLink ? `link to ${v.designatedPrimary}: ${v.primaryLink}` : '';
  const c = commstate(v);
  return [c && `the primary's state known here is ${c}`, link].filter(Boolean).join('; ');
}

const STATE_MACROS: Record<string, Macro> = {
  diskstate: diskState,
  replstate: replState,
  flags,
  role,
  commstate,
  comminfo,
  'get-primary': (v) => v.designatedPrimary ?? '(none)',
  'is-primary': (v) => bit(v.actual.isPrimary),
  'is-attach': (v) => bit(v.actual.isAttached),
  'is-sync': (v) => bit(v.actual.isSyncing),
  'is-fetch': (v) => bit(v.actual.isCopying),
  'is-replay': (v) => bit(v.actual.isReplaying),
  'is-consistent': (v) => bit(isConsistent(v)),
  'is-split-brain': (v) => bit(v.splitBrain !== undefined),
  'is-emergency': (v) => bit(isEmergency(v)),
  'has-emergency': (v) => bit(e(v)?.hasEmergency ?? false),
  'is-orphan': (v) => bit(v.actual.replayCode === REPLAY_CODE_HOLE),
  // MARS: the designated primary's heartbeat (this host's own on the primary) is within --window.
  'is-alive': (v) => bit(v.daemonRunning && (v.designatedPrimary === undefined || v.designatedPrimary === v.host
    ? (v.heartbeatAgeS ?? Infinity) <= v.windowS
    : !prog(v).stale)),
  'is-local-alive': (v) => bit(v.daemonRunning && (v.heartbeatAgeS ?? Infinity) <= v.windowS),
  'alive-age': (v) => secs(v.designatedPrimary === v.host ? v.heartbeatAgeS : prog(v).primaryAgeS),
  device: (v) => v.actual.device ?? '(none)',
  'device-opened': (v) => bit(v.actual.openCount > 0),
  'open-count': (v) => String(v.actual.openCount),
  'emergency-level': (v) => String(e(v)?.spaceLevel ?? 0),
  'rest-space': (v) => String(Math.floor((e(v)?.restSpaceBytes ?? 0) / 1024 ** 3)),
  'total-space': (v) => String(Math.floor((e(v)?.totalSpaceBytes ?? 0) / 1024 ** 3)),
  'rest-space-bytes': (v) => String(e(v)?.restSpaceBytes ?? 0),
  'total-space-bytes': (v) => String(e(v)?.totalSpaceBytes ?? 0),
  'replay-code': (v) => (v.actual.replayCode === undefined ? '' : String(v.actual.replayCode)),
  'the-err-msg': (v) => v.actual.errorMessage ?? '',
  'msg-err': (v) => messages(v, 'err'),
  'msg-wrn': (v) => messages(v, 'wrn'),
  'msg-inf': (v) => messages(v, 'inf'),
  'err-count': (v) => String(Object.keys(v.messages ?? {}).filter((k) => k.startsWith('msg-err-')).length),
  'resource-size': (v) => String(v.sizeBytes),
  'disk-size': (v) => String(v.sizeBytes),
  'log-held-bytes': (v) => String(v.retention?.heldBack?.bytes ?? 0),
  'log-held-by': (v) => v.retention?.heldBack?.hosts.join(',') ?? '',
  'log-deletable-bytes': (v) => String(v.retention?.deletable.reduce((s, l) => s + l.sizeBytes, 0) ?? 0),
  'deletable-size': (v) => String(v.retention?.deletable.reduce((s, l) => s + l.sizeBytes, 0) ?? 0),
  'todo-attach': (v) => bit(v.todo.attach),
  'todo-fetch': (v) => bit(v.todo.connect),
  'todo-replay': (v) => bit(v.todo.replay),
  'todo-sync': (v) => bit(v.todo.sync),
  'todo-primary': (v) => bit(v.designatedPrimary === v.host),
};

const AMOUNT_MACROS: Record<string, Macro> = {
  'writeback-rest': (v) => String(v.actual.writebackRestBytes),
  'recovery-rest': (v) => String(v.actual.recoveryRestBytes),
  'fetch-rest': (v) => String(rests(v).fetch),
  'replay-rest': (v) => String(rests(v).replay),
  'work-rest': (v) => String(v.progress ? v.progress.workRest : Math.max(0, rests(v).replay - rests(v).fetch)),
  'sync-rest': (v) => String(syncRest(v)),
  'fetch-pos': (v) => String(prog(v).fetchPos),
  'replay-pos': (v) => String(prog(v).replayPos),
  'work-pos': (v) => String(prog(v).replayPos),
  'sync-pos': (v) => String(syncPos(v)),
  'fetch-size': (v) => String(prog(v).totalSize),
  'replay-size': (v) => String(prog(v).totalSize),
  'work-size': (v) => String(prog(v).fetchPos),
  'sync-size': (v) => String(v.sizeBytes),
  'fetch-percent': (v) => String(percent(prog(v).fetchPos, prog(v).totalSize)),
  'replay-percent': (v) => String(percent(prog(v).replayPos, prog(v).totalSize)),
  'work-percent': (v) => String(percent(prog(v).replayPos, prog(v).fetchPos)),
  'sync-percent': (v) => String(percent(syncPos(v), v.sizeBytes)),
  'fetch-rate': (v) => String(fetchRate(v)),
  'replay-rate': (v) => String(replayRate(v)),
  'work-rate': (v) => String(replayRate(v)),
  'sync-rate': (v) => String(syncRate(v)),
  'fetch-remain': (v) => String(remainS(rests(v).fetch, fetchRate(v))),
  'replay-remain': (v) => String(remainS(rests(v).replay, replayRate(v))),
  'work-remain': (v) => String(remainS(prog(v).workRest, replayRate(v))),
  'sync-remain': (v) => String(remainS(syncRest(v), syncRate(v))),
  'fetch-lag': (v) => secs(prog(v).fetchLagS),
  'replay-lag': (v) => secs(prog(v).replayLagS),
  'work-lag': (v) => secs(prog(v).workLagS),
  'sync-lag': (v) => secs(prog(v).syncLagS),
  'fetch-age': (v) => secs(prog(v).fetchAgeS),
  'replay-age': (v) => secs(prog(v).replayAgeS),
  'work-age': (v) => secs(prog(v).replayAgeS),
  'sync-age': (v) => secs(prog(v).syncAgeS),
  'primary-age': (v) => secs(prog(v).primaryAgeS),
  'fetch-reached': (v) => bit(rests(v).fetch === 0),
  'replay-reached': (v) => bit(rests(v).replay === 0),
  'sync-reached': (v) => bit(syncRest(v) === 0),
};

/** Names this tool used before MARS's names were adopted (kept so scripts keep working). */
const ALIASES: Record<string, string> = {
  'is-attached': 'is-attach',
  'is-syncing': 'is-sync',
  'is-fetching': 'is-fetch',
  'is-replaying': 'is-replay',
};

export const MACROS: Record<string, Macro> = {
  ...STATE_MACROS,
  ...AMOUNT_MACROS,
  ...Object.fromEntries(Object.entries(ALIASES).map(([alias, name]) => [alias, (STATE_MACROS[name] ?? AMOUNT_MACROS[name])!])),
};

/** Every macro's value, for `view --json` and the metrics. */
export function allMacros(v: ViewSnapshot): Record<string, string> {
  return Object.fromEntries(Object.entries(MACROS).map(([name, fn]) => [name, fn(v)]));
}

export function viewJson(v: ViewSnapshot): Record<string, unknown> {
  const r = rests(v);
  return {
    resource: v.res,
    host: v.host,
    members: v.members,
    cluster: v.clusterHosts,
    diskstate: diskState(v),
    replstate: replState(v),
    flags: flags(v),
    role: role(v),
    primary: v.designatedPrimary ?? null,
    size: v.sizeBytes,
    isPrimary: v.actual.isPrimary,
    isConsistent: isConsistent(v),
    openCount: v.actual.openCount,
    writebackRest: v.actual.writebackRestBytes,
    recoveryRest: v.actual.recoveryRestBytes,
    replayCode: v.actual.replayCode ?? null,
    error: v.actual.errorMessage ?? null,
    socket: v.actual.isPrimary ? v.actual.socket ?? null : null,
    device: v.actual.device ?? null,
    deviceState: v.actual.deviceState ?? null,
    replayLink: v.replayLink ?? null,
    syncstatus: v.syncstatusBytes,
    syncRate: v.actual.syncRateBytesPerS,
    fetchRest: r.fetch,
    replayRest: r.replay,
    daemonRunning: v.daemonRunning,
    splitBrain: v.splitBrain ?? null,
    primaryLink: v.primaryLink ?? null,
    logfiles: v.retention ? retentionJson(v.retention) : null,
    isEmergency: isEmergency(v),
    emergencyLevel: e(v)?.spaceLevel ?? 0,
    restSpaceBytes: e(v)?.restSpaceBytes ?? 0,
    totalSpaceBytes: e(v)?.totalSpaceBytes ?? 0,
    emergencyMessage: e(v)?.message ?? null,
    progress: v.progress ?? null,
    macros: allMacros(v),
  };
}
