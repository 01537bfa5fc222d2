// What `marsadm invalidate` does to this host's replica, as a pure function of the
// versionlink chains and the local logfiles (the MARS user manual: split brain, and beyond MARS).
//
// MARS answers a split brain by a full sync of the losing side. Both sides' logfiles say which
// blocks changed since the histories parted, so less is enough:
//   - our disk = common state C + our writes W_ours (our logfiles after the common point);
//   - the primary's disk = C + W_primary (its logfiles after the common point).
// Copying from the primary only the blocks W_ours touched, and then replaying the primary's
// logfiles from the common point, brings our disk to the primary's state once the replay
// passes the primary's position at the end of the copy (syncpos, as for a full sync): blocks
// only we touched hold the primary's (= C's) content, blocks it touched get its writes in order.
//
// That needs: the common point, our logfiles after it (to find what we touched; all present
// and without a hole: a hole means writes that went straight to the disk, see emergency
// mode), and the primary's logfiles after it not deleted. Otherwise: a full (fast) sync from
// the primary's current writeback logfile, like join-resource.
import { commonPoint, partsAfter, type Chain, type HistoryPoint, type LogPart } from './split-brain.js';
import { logName } from '../tree/log-names.js';

export interface InvalidateInput {
  host: string;
  primary: string;
  /** version chains by host, as in our tree */
  chains: ReadonlyMap<string, Chain>;
  /** local logfile sizes by name (`log-SEQ-ORIGIN`) */
  localLogBytes: ReadonlyMap<string, number>;
  /** logfile names deleted (tombstoned) in our tree */
  deletedLogs: ReadonlySet<string>;
  /** the primary's replay link: where a full sync's replay starts */
  primaryReplay: { seq: number; origin: string } | undefined;
}

export interface TreeEdits {
  /** new replay-HOST value (replay link fields) */
  replay: { seq: number; origin: string; minPos: number; len: number };
  /** our versionlinks to write (number → full value) */
  writeVersions: Map<number, string>;
  /** our versionlink to compute after the truncation, over our copy of log-SEQ-ORIGIN up to logPos, chained to prev */
  extendVersion: { seq: number; origin: string; logPos: number; prev: string } | undefined;
  /** our versionlink numbers to delete */
  deleteVersions: number[];
  /** our own logfiles to delete everywhere (tombstones) */
  deleteOwnLogs: string[];
  /** copies of other hosts' logfiles to remove here only */
  unlinkLocalLogs: string[];
  /** our own logfile to cut back to the common point */
  truncate: { name: string; toBytes: number } | undefined;
}

export type InvalidatePlan =
  | ({ kind: 'incremental'; common: HistoryPoint; ourParts: LogPart[]; primaryBytesSince: number } & TreeEdits)
  | ({ kind: 'full'; reason: string } & TreeEdits);

function contiguous(parts: readonly LogPart[]): boolean {
  return parts.every((p, i) => i === 0 || p.seq === parts[i - 1]!.seq + 1);
}

/** The whole disk from the primary: no common point, or the incremental way is not possible. */
function fullPlan(v: InvalidateInput, mine: Chain, theirs: Chain, reason: string): InvalidatePlan | { kind: 'refused'; reason: string } {
  if (!v.primaryReplay) return { kind: 'refused', reason: `the replay link of the primary ${v.primary} has not arrived here yet` };
  const seq = v.primaryReplay.seq;
  const writeVersions = new Map<number, string>();
  for (const n of [seq - 1, seq]) {
    const link = theirs.get(n);
    if (link) writeVersions.set(n, link.raw);
  }
  const inTheirs = new Set([...theirs.values()].map((l) => logName(l.seq, l.origin)));
  const deleteOwn = [...v.localLogBytes.keys()].filter((n) => n.endsWith(`-${v.host}`) && !inTheirs.has(n)
    && Number(n.slice(4, 13)) >= Math.min(...[...theirs.keys()])).sort();
  return {
    kind: 'full', reason,
    replay: { seq, origin: v.primaryReplay.origin, minPos: 0, len: 0 },
    writeVersions,
    deleteVersions: [...mine.keys()].filter((n) => !writeVersions.has(n)).sort((a, b) => a - b),
    // Our own logfiles that are not part of the primary's history are the discarded writes.
    deleteOwnLogs: deleteOwn,
    // Replay starts over in the primary's logfile `seq`: local copies of other hosts'
    // logfiles from there on may hold other bytes (a damaged or forged copy that made the
    // split brain): fetched again from the primary instead.
    unlinkLocalLogs: [...v.localLogBytes.keys()].filter((n) => !n.endsWith(`-${v.host}`) && Number(n.slice(4, 13)) >= seq).sort(),
    truncate: undefined,
    extendVersion: undefined,
  };
}

export function planInvalidate(v: InvalidateInput): InvalidatePlan | { kind: 'refused'; reason: string } {
  if (v.primary === v.host) return { kind: 'refused', reason: `${v.host} is the designated primary: invalidate the other side instead, or hand the role over first` };
  const mine = v.chains.get(v.host) ?? new Map();
  const theirs = v.chains.get(v.primary);
  if (!theirs || theirs.size === 0) return { kind: 'refused', reason: `no versionlinks of the primary ${v.primary} here yet: check "marsadm wait-cluster" and try again` };
  const full = (reason: string) => fullPlan(v, mine, theirs, reason);

  const common = commonPoint(mine, theirs);
  if (!common) return full('no split brain between this host and the primary: the whole disk is compared with the primary\'s');
  const ourParts = partsAfter(mine, common);
  const theirParts = partsAfter(theirs, common);
  if (!contiguous(ourParts) || !contiguous(theirParts)) return full('a hole in the logfile numbers after the split (emergency mode wrote straight to a disk)');
  for (const p of ourParts) {
    const have = v.localLogBytes.get(logName(p.seq, p.origin));
    if (have === undefined || have < p.toPos) return full(`${logName(p.seq, p.origin)}, which holds this host's writes since the split, is not here completely`);
  }
  for (const p of theirParts) {
    if (v.deletedLogs.has(logName(p.seq, p.origin))) return full(`the primary's ${logName(p.seq, p.origin)} since the split was deleted`);
  }
  // Our versionlink at the common point: our own link when it names that point, else it is
  // computed over our copy once cut back there (the executor hashes it: extendVersion).
  const ours = mine.get(common.seq);
  const writeVersions = new Map<number, string>();
  let extendVersion: TreeEdits['extendVersion'];
  if (ours && ours.origin === common.origin && ours.logPos === common.pos) writeVersions.set(common.seq, ours.raw);
  else extendVersion = { seq: common.seq, origin: common.origin, logPos: common.pos, prev: mine.get(common.seq - 1)?.raw ?? theirs.get(common.seq - 1)?.raw ?? '' };
  const deleteOwnLogs: string[] = [];
  const unlinkLocalLogs: string[] = [];
  let truncate: TreeEdits['truncate'];
  for (const p of ourParts) {
    const name = logName(p.seq, p.origin);
    if (p.seq === common.seq && p.origin === common.origin) {
      // The shared logfile: ours keeps the common part; a copy of the origin's is cut too,
      // or replay would read the discarded records again.
      truncate = { name, toBytes: common.pos };
    } else if (p.origin === v.host) {
      deleteOwnLogs.push(name);
    } else {
      // A copy of another host's logfile after the common point: not in the primary's history,
      // or in it with other bytes (the versionlinks cover the content): fetched again if needed.
      unlinkLocalLogs.push(name);
    }
  }
  return {
    kind: 'incremental', common, ourParts,
    primaryBytesSince: theirParts.reduce((n, p) => n + p.toPos - p.fromPos, 0),
    replay: { seq: common.seq, origin: common.origin, minPos: common.pos, len: 0 },
    writeVersions, extendVersion,
    deleteVersions: [...mine.keys()].filter((n) => n > common.seq).sort((a, b) => a - b),
    deleteOwnLogs, unlinkLocalLogs, truncate,
  };
}
