// What `marsadm view` and the view-MACRO commands show, computed by pure functions from a
// snapshot of the tree (so each state can be unit-tested). Names follow MARS's marsadm
// (the MARS user manual: view macros): DISKSTATE, REPLSTATE, FLAGS, ROLE.
import { retentionJson, type RetentionPlan } from './log-retention.js';
import { logName } from '../../common/tree/log-names.js';

export interface ViewSnapshot {
  res: string;
  host: string;
  sizeBytes: number;
  designatedPrimary: string | undefined;
  members: string[];
  clusterHosts: string[];
  member: boolean;
  dataPath: string | undefined;
  todo: { attach: boolean; connect: boolean; sync: boolean; replay: boolean };
  daemonRunning: boolean;
  /** age of this host's heartbeat (actual-HOST/time), seconds */
  heartbeatAgeS: number | undefined;
  windowS: number;
  actual: {
    isAttached: boolean;
    isPrimary: boolean;
    openCount: number;
    replayCode: number | undefined;
    errorMessage: string | undefined;
    writebackRestBytes: number;
    isRecovering: boolean;
    recoveryRestBytes: number;
    socket: string | undefined;
    /** /dev/mars/NAME while marsd keeps the block device (marsd --device-mode), and what happens to it */
    device?: string | undefined;
    deviceState?: string | undefined;
    isCopying: boolean;
    isSyncing: boolean;
    isReplaying: boolean;
    fetchRestBytes: number;
    replayRestBytes: number;
    syncRateBytesPerS: number;
  };
  syncstatusBytes: number;
  replayLink: string | undefined;
  /** actual-HOST/peer-PRIMARY: the state of the link to the designated primary (another host) */
  primaryLink: string | undefined;
  /** diverged histories among the members (split-brain.ts), undefined when there are none */
  splitBrain: SplitBrainInfo | undefined;
  /** replay must pass this (syncpos-HOST) before a synced copy is consistent */
  syncPassed: boolean;
  /** which logfiles here may be deleted and who holds the others back (log-retention.ts) */
  retention?: RetentionPlan;
  /** /mars space and emergency mode (absent: all clear) */
  emergency?: EmergencyView;
}

export interface SplitBrainInfo {
  common: { seq: number; origin: string; pos: number };
  /** each history: the hosts holding it, and what its longest copy logged after the common point */
  sides: { hosts: string[]; bytes: number; records: string }[];
}

export function splitBrainText(sb: SplitBrainInfo): string {
  const at = `${logName(sb.common.seq, sb.common.origin)} at ${sb.common.pos} bytes`;
  const sides = sb.sides.map((s) => `${s.hosts.join(', ')} wrote ${s.bytes} bytes in ${s.records} records`).join('; ');
  return `SPLIT BRAIN: the histories diverge after ${at}; since then ${sides}`;
}

/** Space level of this host's /mars and emergency mode of the resource (the MARS user manual: space levels and emergency mode). */
export interface EmergencyView {
  /** actual-HOST/emergency: 0..4 */
  spaceLevel: number;
  restSpaceBytes: number;
  totalSpaceBytes: number;
  /** this host decided emergency mode for the resource (has-emergency) */
  hasEmergency: boolean;
  /** this host's logging for the resource actually stopped (is-emergency) */
  isEmergency: boolean;
  /** msg-err-emergency, when not OK */
  message: string | undefined;
  /** the designated primary (another host) reports is-emergency */
  primaryIsEmergency: boolean;
}

/** replay-code of a replica stopped at a hole in the logfile numbering (emergency mode). */
export const REPLAY_CODE_HOLE = -61;

const NO_EMERGENCY: EmergencyView = {
  spaceLevel: 0, restSpaceBytes: 0, totalSpaceBytes: 0, hasEmergency: false, isEmergency: false, message: undefined, primaryIsEmergency: false,
};

function emergencyOf(v: ViewSnapshot): EmergencyView {
  return v.emergency ?? NO_EMERGENCY;
}

/** The resource is in emergency mode: here (primary), or on its designated primary. */
export function isEmergency(v: ViewSnapshot): boolean {
  const e = emergencyOf(v);
  return e.isEmergency || e.hasEmergency || (v.designatedPrimary !== v.host && e.primaryIsEmergency);
}

const SPACE_MEANING = [
  '',
  'space is getting low',
  'secondaries delete the logfile copies they have replayed',
  'secondaries stop fetching',
  'primaries stop logging (emergency mode)',
];

export type Role = 'None' | 'Primary' | 'RemainsPrimary' | 'NotYetPrimary' | 'Secondary';

export function role(v: ViewSnapshot): Role {
  if (!v.member) return 'None';
  const designated = v.designatedPrimary === v.host;
  // The device still open after a step-down counts as primary too (writes get EPERM there).
  if (v.actual.isPrimary || v.actual.openCount > 0) return designated ? 'Primary' : 'RemainsPrimary';
  return designated ? 'NotYetPrimary' : 'Secondary';
}

export function diskState(v: ViewSnapshot): string {
  if (!v.member) return 'NotJoined';
  if (v.dataPath === undefined) return 'NotPresent';
  if (!v.todo.attach) return v.actual.isAttached ? 'Detaching' : 'Detached';
  // Stopped at the emergency hole: consistent, outdated, needs a re-sync (MARS: Orphan).
  if (v.actual.replayCode === REPLAY_CODE_HOLE) return 'Orphan';
  if (v.actual.replayCode !== undefined && v.actual.replayCode < 0) {
    return `DefectiveLog[code=${v.actual.replayCode}]`;
  }
  if (v.actual.isRecovering) return `Recovery[${v.actual.recoveryRestBytes}]`;
  const designated = v.designatedPrimary === v.host;
  if (designated && (emergencyOf(v).isEmergency || emergencyOf(v).hasEmergency)) return 'EmergencyMode';
  if (designated && v.actual.writebackRestBytes > 0) return `WriteBack[${v.actual.writebackRestBytes}]`;
  if (v.syncstatusBytes < v.sizeBytes) return v.actual.isSyncing ? `Syncing[${Math.floor((100 * v.syncstatusBytes) / Math.max(1, v.sizeBytes))}%]` : 'InConsistent';
  if (!v.syncPassed) return 'InConsistent';
  if (!designated && v.actual.replayRestBytes > 0) return 'Outdated';
  return 'UpToDate';
}

export function replState(v: ViewSnapshot): string {
  if (!v.daemonRunning) return 'DaemonNotRunning';
  if (v.heartbeatAgeS !== undefined && v.heartbeatAgeS > v.windowS) return 'UnResponsive';
  if (!v.member) return 'NotJoined';
  if (!v.todo.attach) return 'NotStarted';
  if (v.designatedPrimary === v.host) {
    if (emergencyOf(v).isEmergency || emergencyOf(v).hasEmergency) return 'EmergencyMode';
    return v.actual.isPrimary ? 'Replicating' : 'NotYetPrimary';
  }
  if (v.designatedPrimary === undefined) return 'NoPrimaryDesignated';
  if (!v.todo.sync) return 'PausedSync';
  if (!v.todo.connect || emergencyOf(v).spaceLevel >= 3) return 'PausedFetch';
  if (!v.todo.replay) return 'PausedReplay';
  if (v.actual.replayCode === REPLAY_CODE_HOLE) return 'Orphan';
  if (v.syncstatusBytes < v.sizeBytes) return 'Syncing';
  return 'Replaying';
}

export function isConsistent(v: ViewSnapshot): boolean {
  if (v.designatedPrimary === v.host) return v.actual.writebackRestBytes === 0 && !v.actual.isRecovering;
  return v.syncstatusBytes >= v.sizeBytes && v.syncPassed;
}

/** Six characters, DRBD-like: device, consistency, attach, sync, fetch, replay. */
export function flags(v: ViewSnapshot): string {
  const device = v.actual.isPrimary ? 'D' : v.actual.isAttached ? 'd' : '-';
  const consistent = !v.member ? '-' : isConsistent(v) ? 'C' : 'c';
  const attach = v.todo.attach ? (v.actual.isAttached ? 'A' : 'a') : v.actual.isAttached ? 'a' : '-';
  const sync = v.todo.sync ? (v.syncstatusBytes >= v.sizeBytes ? 'S' : 's') : '-';
  const fetch = v.todo.connect ? 'F' : '-';
  const replay = v.todo.replay ? 'R' : '-';
  return `${device}${consistent}${attach}${sync}${fetch}${replay}`;
}

/** The MARS-style one-line status plus detail lines when something is unusual. */
export function viewLines(v: ViewSnapshot): string[] {
  const primary = v.designatedPrimary ?? '(none)';
  const lines = [`${v.res} [${v.members.length}/${v.clusterHosts.length}] ${diskState(v)} ${replState(v)} ${flags(v)} ${role(v)} ${primary}`];
  if (v.actual.isPrimary && v.actual.socket) {
    lines.push(`    LocalDevice nbd+unix:///${v.res}?socket=${v.actual.socket} [${v.actual.openCount > 0 ? `Opened by ${v.actual.openCount}` : 'not opened'}]`);
  }
  if (v.actual.device) lines.push(`    BlockDevice ${v.actual.device} (${v.actual.deviceState ?? '?'})`);
  else if (v.actual.deviceState && /^(attach|detach|waiting)/.test(v.actual.deviceState)) lines.push(`    BlockDevice: ${v.actual.deviceState}`);
  if (v.actual.isRecovering) lines.push(`    recovery: ${v.actual.recoveryRestBytes} bytes of logfiles left to replay`);
  if (v.actual.writebackRestBytes > 0) lines.push(`    writeback: ${v.actual.writebackRestBytes} bytes logged but not yet on the disk`);
  if (v.syncstatusBytes < v.sizeBytes && v.member && v.designatedPrimary !== v.host) {
    lines.push(`    sync: ${v.syncstatusBytes} of ${v.sizeBytes} bytes${v.actual.syncRateBytesPerS > 0 ? `, ${v.actual.syncRateBytesPerS} bytes/s, ETA ${Math.round((v.sizeBytes - v.syncstatusBytes) / v.actual.syncRateBytesPerS)} s` : ''}`);
  }
  if (v.actual.fetchRestBytes > 0 || v.actual.replayRestBytes > 0) {
    lines.push(`    fetch-rest ${v.actual.fetchRestBytes} bytes, replay-rest ${v.actual.replayRestBytes} bytes`);
  }
  if (v.primaryLink?.startsWith('down') && v.designatedPrimary !== undefined) {
    lines.push(`    link to the primary ${v.designatedPrimary}: ${v.primaryLink}`);
  }
  if (v.splitBrain) {
    lines.push(`    ${splitBrainText(v.splitBrain)}`);
    lines.push(`    repair: "marsadm invalidate ${v.res}" on each host whose writes are given up (the primary's side wins)`);
  }
  if (v.retention?.heldBack) lines.push(`    ${v.retention.heldBack.text}`);
  if (v.actual.errorMessage) lines.push(`    ERROR: ${v.actual.errorMessage}`);
  const e = emergencyOf(v);
  if (v.designatedPrimary === v.host && (e.isEmergency || e.hasEmergency)) {
    lines.push(`    EMERGENCY: ${e.message ?? 'emergency mode: writes are not logged'}`);
  } else if (v.designatedPrimary !== undefined && v.designatedPrimary !== v.host && e.primaryIsEmergency && v.member) {
    lines.push(`    the primary ${v.designatedPrimary} is in emergency mode: its writes are not logged; this replica stops at the hole and needs a re-sync afterwards`);
  }
  if (e.spaceLevel > 0) {
    lines.push(`    /mars space level ${e.spaceLevel}: ${e.restSpaceBytes} of ${e.totalSpaceBytes} bytes free; ${SPACE_MEANING[e.spaceLevel] ?? ''}`);
  }
  if (!v.daemonRunning) lines.push('    marsd is not running on this host: start it (marsd --mars-dir ...)');
  return lines;
}

/** view-MACRO values (the MARS user manual: view macros). */
export const MACROS: Record<string, (v: ViewSnapshot) => string> = {
  diskstate: diskState,
  replstate: replState,
  flags,
  role,
  'get-primary': (v) => v.designatedPrimary ?? '(none)',
  'is-primary': (v) => (v.actual.isPrimary ? '1' : '0'),
  'is-attached': (v) => (v.actual.isAttached ? '1' : '0'),
  'is-consistent': (v) => (isConsistent(v) ? '1' : '0'),
  'is-split-brain': (v) => (v.splitBrain ? '1' : '0'),
  'is-emergency': (v) => (isEmergency(v) ? '1' : '0'),
  'has-emergency': (v) => (emergencyOf(v).hasEmergency ? '1' : '0'),
  'emergency-level': (v) => String(emergencyOf(v).spaceLevel),
  'rest-space': (v) => String(Math.floor(emergencyOf(v).restSpaceBytes / 1024 ** 3)),
  'total-space': (v) => String(Math.floor(emergencyOf(v).totalSpaceBytes / 1024 ** 3)),
  'rest-space-bytes': (v) => String(emergencyOf(v).restSpaceBytes),
  'total-space-bytes': (v) => String(emergencyOf(v).totalSpaceBytes),
  'is-orphan': (v) => (v.actual.replayCode === REPLAY_CODE_HOLE ? '1' : '0'),
  'is-alive': (v) => (v.daemonRunning && (v.heartbeatAgeS ?? Infinity) <= v.windowS ? '1' : '0'),
  device: (v) => v.actual.device ?? '(none)',
  'device-opened': (v) => (v.actual.openCount > 0 ? '1' : '0'),
  'open-count': (v) => String(v.actual.openCount),
  'writeback-rest': (v) => String(v.actual.writebackRestBytes),
  'recovery-rest': (v) => String(v.actual.recoveryRestBytes),
  'fetch-rest': (v) => String(v.actual.fetchRestBytes),
  'replay-rest': (v) => String(v.actual.replayRestBytes),
  'is-syncing': (v) => (v.actual.isSyncing ? '1' : '0'),
  'is-fetching': (v) => (v.actual.isCopying ? '1' : '0'),
  'is-replaying': (v) => (v.actual.isReplaying ? '1' : '0'),
  'sync-rest': (v) => String(Math.max(0, v.sizeBytes - v.syncstatusBytes)),
  'replay-lag': () => '0',
  'replay-code': (v) => (v.actual.replayCode === undefined ? '' : String(v.actual.replayCode)),
  'the-err-msg': (v) => v.actual.errorMessage ?? '',
  'resource-size': (v) => String(v.sizeBytes),
  'log-held-bytes': (v) => String(v.retention?.heldBack?.bytes ?? 0),
  'log-held-by': (v) => v.retention?.heldBack?.hosts.join(',') ?? '',
  'log-deletable-bytes': (v) => String(v.retention?.deletable.reduce((s, l) => s + l.sizeBytes, 0) ?? 0),
  'todo-attach': (v) => (v.todo.attach ? '1' : '0'),
  'todo-fetch': (v) => (v.todo.connect ? '1' : '0'),
  'todo-replay': (v) => (v.todo.replay ? '1' : '0'),
  'todo-sync': (v) => (v.todo.sync ? '1' : '0'),
};

export function viewJson(v: ViewSnapshot): Record<string, unknown> {
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
    fetchRest: v.actual.fetchRestBytes,
    replayRest: v.actual.replayRestBytes,
    daemonRunning: v.daemonRunning,
    splitBrain: v.splitBrain ?? null,
    primaryLink: v.primaryLink ?? null,
    logfiles: v.retention ? retentionJson(v.retention) : null,
    isEmergency: isEmergency(v),
    emergencyLevel: emergencyOf(v).spaceLevel,
    restSpaceBytes: emergencyOf(v).restSpaceBytes,
    totalSpaceBytes: emergencyOf(v).totalSpaceBytes,
    emergencyMessage: emergencyOf(v).message ?? null,
  };
}
