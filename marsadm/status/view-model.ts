// What `marsadm view` and the view-MACRO commands show, computed by pure functions from a
// snapshot of the tree (so each state can be unit-tested). Names follow MARS's marsadm
// (the MARS user manual: view macros): DISKSTATE, REPLSTATE, FLAGS, ROLE.
import { retentionJson, type HeldBack, type RetentionPlan } from './log-retention.js';
import { logName } from '../../common/tree/log-names.js';
import type { Progress } from '../../common/resource/replication-progress.js';

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
    /** actual-HOST/sync-pos: where the running sync is (syncstatus, the durable mark, moves every 64 MiB) */
    syncPosBytes?: number;
  };
  syncstatusBytes: number;
  replayLink: string | undefined;
  /** actual-HOST/peer-PRIMARY: the state of the link to the designated primary (another host) */
  primaryLink: string | undefined;
  /** diverged histories among the members (split-brain.ts), undefined when there are none */
  splitBrain: SplitBrainInfo | undefined;
  /** replay must pass this (syncpos-HOST) before a synced copy is consistent */
  syncPassed: boolean;
  /** which logfiles here may be deleted and who holds the others back (log-retention.ts); read only when asked for (readView) */
  retention?: RetentionPlan;
  /** who holds logfiles back here, when retention was left out (else retention.heldBack says it) */
  logHeldBack?: HeldBack | undefined;
  /** /mars space and emergency mode (absent: all clear) */
  emergency?: EmergencyView;
  /** rests, lags and positions measured against the primary's newest logfile (replication-progress.ts) */
  progress?: Progress;
  /** rates the daemon measured (bytes/s) */
  rates?: { fetch: number; replay: number };
  /** other members that report is-primary 1 */
  otherActualPrimaries?: string[];
  /** how `marsadm primary` asked this host to take over (planned, ignore-sync, force) */
  primaryMode?: string;
  /** the msg-{err,wrn,inf}-KEY links of this host that are not OK: key → text */
  messages?: Record<string, string>;
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
/** replay-code of a replay that ended in a tolerated torn tail (MARS TL_REPLAY_INCOMPLETE). */
export const REPLAY_CODE_INCOMPLETE = 2;

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

export type Role = 'None' | 'Primary' | 'ForcedPrimary' | 'RemainsPrimary' | 'NotYetPrimary' | 'Secondary';

/** Rests as measured against the primary (progress), else as the local daemon reported them. */
export function rests(v: ViewSnapshot): { fetch: number; replay: number } {
  if (v.progress) return { fetch: v.progress.fetchRest, replay: v.progress.replayRest };
  return { fetch: v.actual.fetchRestBytes, replay: v.actual.replayRestBytes };
}

/** How far sync got here: the running sync's position, at least the durable syncstatus. */
export function syncPos(v: ViewSnapshot): number {
  return Math.min(v.sizeBytes, Math.max(v.syncstatusBytes, v.actual.syncPosBytes ?? 0));
}

/** Bytes of the resource not yet synced here (0 once sync has reached the end). */
export function syncRest(v: ViewSnapshot): number {
  return Math.max(0, v.sizeBytes - syncPos(v));
}

/** The primary's state known here is older than --window (secondaries only). */
export function primaryUnreachable(v: ViewSnapshot): boolean {
  return v.designatedPrimary !== undefined && v.designatedPrimary !== v.host && v.member && v.progress !== undefined && v.progress.stale;
}

export function role(v: ViewSnapshot): Role {
  if (!v.member) return 'None';
  const designated = v.designatedPrimary === v.host;
  // MARS: more than one actual primary, or a primary forced over a split (primary --force).
  if (v.actual.isPrimary && ((v.otherActualPrimaries?.length ?? 0) > 0 || (designated && v.primaryMode === 'force'))) return 'ForcedPrimary';
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
  // replay code 2: the logfile ended in a torn (tolerated) tail: the log is incomplete.
  if (v.actual.replayCode === REPLAY_CODE_INCOMPLETE) return 'IncompleteLog';
  if (v.actual.replayCode !== undefined && v.actual.replayCode < 0) {
    return `DefectiveLog[code=${v.actual.replayCode}]`;
  }
  if (v.actual.isRecovering) return `Recovery[${v.actual.recoveryRestBytes}]`;
  const designated = v.designatedPrimary === v.host;
  if (designated && (emergencyOf(v).isEmergency || emergencyOf(v).hasEmergency)) return 'EmergencyMode';
  if (designated && v.actual.writebackRestBytes > 0) return `WriteBack[${v.actual.writebackRestBytes}]`;
  if (v.syncstatusBytes < v.sizeBytes) return v.actual.isSyncing ? `Syncing[${Math.floor((100 * syncPos(v)) / Math.max(1, v.sizeBytes))}%]` : 'InConsistent';
  if (!v.syncPassed) return 'InConsistent';
  const r = rests(v);
  if (!designated && (r.fetch > 0 || r.replay > 0)) return `Outdated[${r.fetch > 0 ? 'F' : ''}${r.replay > 0 ? 'R' : ''}]`;
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
  // Sync switched off only matters while something is left to sync.
  if (!v.todo.sync && syncRest(v) > 0) return 'PausedSync';
  if (!v.todo.connect || emergencyOf(v).spaceLevel >= 3) return 'PausedFetch';
  if (!v.todo.replay) return 'PausedReplay';
  if (v.actual.replayCode === REPLAY_CODE_HOLE) return 'Orphan';
  if (primaryUnreachable(v)) return 'PrimaryUnreachable';
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
    lines.push(`    sync: ${syncPos(v)} of ${v.sizeBytes} bytes${v.actual.syncRateBytesPerS > 0 ? `, ${v.actual.syncRateBytesPerS} bytes/s, ETA ${Math.round(syncRest(v) / v.actual.syncRateBytesPerS)} s` : ''}`);
  }
  const r = rests(v);
  if (r.fetch > 0 || r.replay > 0) {
    const lag = v.progress ? `, fetch-lag ${v.progress.fetchLagS.toFixed(1)} s, replay-lag ${v.progress.replayLagS.toFixed(1)} s` : '';
    lines.push(`    fetch-rest ${r.fetch} bytes, replay-rest ${r.replay} bytes${lag}`);
  }
  if (primaryUnreachable(v)) {
    const age = v.progress?.primaryAgeS;
    lines.push(`    the primary's state known here is ${age === undefined ? 'unknown' : `${Math.round(age)} s old`} (> --window ${v.windowS} s): rests and lags are lower bounds`);
  }
  if (v.primaryLink?.startsWith('down') && v.designatedPrimary !== undefined) {
    lines.push(`    link to the primary ${v.designatedPrimary}: ${v.primaryLink}`);
  }
  if (v.splitBrain) {
    lines.push(`    ${splitBrainText(v.splitBrain)}`);
    lines.push(`    repair: "marsadm invalidate ${v.res}" on each host whose writes are given up (the primary's side wins)`);
  }
  const heldBack = v.retention ? v.retention.heldBack : v.logHeldBack;
  if (heldBack) lines.push(`    ${heldBack.text}`);
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
