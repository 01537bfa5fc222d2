// Gather a ViewSnapshot from the tree (the only I/O behind `marsadm view`).
import type { Adm } from '../context.js';
import { globalPaths, resPaths } from '../../common/tree/paths.js';
import { clusterHosts, resourceMembers } from '../../common/cluster/members.js';
import type { SplitBrainInfo, ViewSnapshot } from './view-model.js';
import { divergedHere, readSplitBrainView } from '../../common/resource/split-brain-view.js';
import { bytesSince, findDivergence, sideOf } from '../../common/resource/split-brain.js';
import { compareReplayLinks, parseReplayLink } from '../../common/log/links.js';
import { planLogRetention } from './log-retention.js';
import { readHeldBack, readRetentionInput } from './read-retention.js';
import { isValidIdentifier } from '../../common/tree/names.js';
import { readProgressFacts } from '../../common/resource/read-progress.js';
import { progress } from '../../common/resource/replication-progress.js';

/** The msg-{err,wrn,inf}-KEY links of this host that are not OK. */
function readMessages(adm: Adm, res: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of adm.tree.list(resPaths.actualDir(res, adm.host))) {
    if (!/^msg-(err|wrn|inf)-[a-z0-9-]+$/.test(key)) continue;
    const text = adm.actual(res, key);
    if (text !== undefined && text !== 'OK' && text !== '') out[key] = text;
  }
  return out;
}

/** Members other than this host that report is-primary 1. */
function otherActualPrimaries(adm: Adm, res: string, members: string[]): string[] {
  return members.filter((m) => m !== adm.host && adm.tree.value(resPaths.actual(res, m, 'is-primary')) === '1');
}

function num(text: string | undefined): number | undefined {
  if (text === undefined || !/^-?\d+$/.test(text)) return undefined;
  return Number(text);
}

function syncPassed(syncpos: string | undefined, replay: string | undefined): boolean {
  if (syncpos === undefined) return true;
  const a = replay === undefined ? undefined : parseReplayLink(replay);
  const b = parseReplayLink(syncpos);
  return a !== undefined && b !== undefined && compareReplayLinks(a, b) >= 0;
}

/**
 * opts.retention false: leave out the retention plan, which stats every logfile below the
 * lowest need (the text view shows only who holds logfiles back: logHeldBack).
 */
export function readView(adm: Adm, res: string, opts: { retention?: boolean } = {}): ViewSnapshot {
  const { tree, host } = adm;
  const retention = opts.retention === false ? undefined : planLogRetention(readRetentionInput(tree, res, host, adm.windowS, adm.force));
  const a = (key: string) => adm.actual(res, key);
  const members = resourceMembers(tree, res);
  const hosts = clusterHosts(tree);
  const time = tree.value(globalPaths.actual(host, 'time'));
  const heartbeatS = time !== undefined ? Number(time) : undefined;
  const err = a('msg-err-replay-stop');
  const todo = (k: 'attach' | 'connect' | 'sync' | 'allow-replay') => tree.value(resPaths.todo(res, host, k)) === '1';
  const sizeBytes = num(tree.value(resPaths.size(res))) ?? 0;
  return {
    res,
    host,
    sizeBytes,
    designatedPrimary: ((p) => (p === undefined || p === '(none)' ? undefined : p))(tree.value(resPaths.primary(res))),
    members,
    clusterHosts: hosts,
    member: members.includes(host),
    dataPath: tree.value(resPaths.data(res, host)),
    todo: { attach: todo('attach'), connect: todo('connect'), sync: todo('sync'), replay: todo('allow-replay') },
    daemonRunning: adm.daemonRunning(),
    heartbeatAgeS: heartbeatS !== undefined && Number.isFinite(heartbeatS) ? Math.max(0, Date.now() / 1000 - heartbeatS) : undefined,
    windowS: adm.windowS,
    actual: {
      isAttached: a('is-attached') === '1',
      isPrimary: a('is-primary') === '1',
      openCount: num(a('open-count')) ?? 0,
      replayCode: num(a('replay-code')?.split(',')[0]),
      errorMessage: err !== undefined && err !== 'OK' ? err : undefined,
      writebackRestBytes: num(a('writeback-rest')) ?? 0,
      isRecovering: a('is-recovering') === '1',
      recoveryRestBytes: num(a('recovery-rest')) ?? 0,
      socket: ((s) => (s === undefined || s === '(none)' ? undefined : s))(a('socket')),
      isCopying: a('is-copying') === '1',
      isSyncing: a('is-syncing') === '1',
      isReplaying: a('is-replaying') === '1',
      fetchRestBytes: num(a('fetch-rest')) ?? 0,
      replayRestBytes: num(a('replay-rest')) ?? 0,
      syncRateBytesPerS: num(a('sync-rate')) ?? 0,
      // Only a running sync's position counts (a stopped daemon leaves its last one behind).
      syncPosBytes: a('is-syncing') === '1' ? num(a('sync-pos')) : undefined,
      device: ((d) => (d === undefined || d === '(none)' ? undefined : d))(a('device')),
      deviceState: a('device-state'),
    },
    emergency: {
      spaceLevel: num(tree.value(globalPaths.actual(host, 'emergency'))) ?? 0,
      restSpaceBytes: num(tree.value(globalPaths.actual(host, 'rest-space-bytes'))) ?? 0,
      totalSpaceBytes: num(tree.value(globalPaths.actual(host, 'total-space-bytes'))) ?? 0,
      hasEmergency: a('has-emergency') === '1',
      isEmergency: a('is-emergency') === '1',
      message: ((m) => (m === undefined || m === 'OK' ? undefined : m))(a('msg-err-emergency')),
      primaryIsEmergency: ((p) => p !== undefined && isValidIdentifier(p) && p !== host && tree.value(resPaths.actual(res, p, 'is-emergency')) === '1')(tree.value(resPaths.primary(res))),
    },
    syncPassed: syncPassed(tree.value(resPaths.syncpos(res, host)), tree.value(resPaths.replay(res, host))),
    syncstatusBytes: num(tree.value(resPaths.syncstatus(res, host))) ?? 0,
    replayLink: tree.value(resPaths.replay(res, host)),
    splitBrain: readSplitBrain(adm, res),
    primaryLink: ((p) => (p === undefined || p === '(none)' || p === host ? undefined : tree.value(globalPaths.actual(host, `peer-${p}`))))(tree.value(resPaths.primary(res))),
    retention,
    logHeldBack: retention ? undefined : readHeldBack(tree, res, host, adm.windowS, adm.force),
    progress: progress(readProgressFacts(tree, res, host, adm.windowS, Date.now() / 1000)),
    rates: { fetch: num(a('fetch-rate')) ?? 0, replay: num(a('replay-rate')) ?? 0 },
    otherActualPrimaries: otherActualPrimaries(adm, res, members),
    primaryMode: tree.value(resPaths.primaryMode(res, host)),
    messages: readMessages(adm, res),
  };
}

/** Diverged histories from the versionlinks, with the record counts the hosts published. */
function readSplitBrain(adm: Adm, res: string): SplitBrainInfo | undefined {
  // The newest links settle the usual case (one history); only a split brain reads them all.
  if (!divergedHere(adm.tree, res)) return undefined;
  const view = readSplitBrainView(adm.tree, res);
  const d = findDivergence(view.chains, view.members);
  if (!d) return undefined;
  const side = (host: string) => {
    const hosts = sideOf(view.chains, view.members, host);
    let bytes = 0;
    let records: number | undefined;
    for (const h of hosts) {
      bytes = Math.max(bytes, bytesSince(view.chains.get(h)!, d.common));
      const published = adm.tree.value(resPaths.actual(res, h, 'split-brain'))?.split(',');
      const n = published && published.length === 5 && Number(published[0]) === d.common.seq && Number(published[2]) === d.common.pos ? num(published[4]) : undefined;
      if (n !== undefined) records = Math.max(records ?? 0, n);
    }
    return { hosts, bytes, records: records === undefined ? '?' : String(records) };
  };
  return { common: d.common, sides: [side(d.a.host), side(d.b.host)] };
}
