// What the control loop knows about one resource: read from the /mars tree in one pass, then
// handed to the pure decision function. Only this file does I/O for the decision.
import type { TreeStore } from '../tree/store.js';
import { TrackedRead } from '../tree/tracked-read.js';
import { globalPaths, resPaths, resourceDir, type TodoKey } from '../tree/paths.js';
import { clusterMarkerPath, markerInForce, removedBy, resourceMarkerPath } from '../tree/removal.js';
import { logfileSizes, type LogfileSize } from '../tree/log-sizes.js';
import { firstAtOrAbove, listingIndex } from '../tree/listing-index.js';
import { isValidIdentifier } from '../tree/names.js';
import { PRIMARY_MODES, type PrimaryMode } from './links.js';

export interface LogfileInfo {
  seq: number;
  origin: string;
  sizeBytes: number;
}

export interface ResourceSnapshot {
  name: string;
  sizeBytes: number | undefined;
  designatedPrimary: string | undefined;
  dataPath: string | undefined;
  todo: Record<TodoKey, boolean>;
  replayLink: string | undefined;
  /** bytes of the disk already synced (syncstatus-HOST) */
  syncstatusBytes: number | undefined;
  /** regular logfiles present here, ascending by number */
  logfiles: readonly LogfileInfo[];
  /** todo-HOST/emergency-limit: percent of /mars this resource's logfiles may take; 0 = off (also for a bad value) */
  emergencyLimitPercent: number;
  /** how `marsadm primary` asked for the role (todo-HOST/primary-mode; default planned) */
  primaryMode: PrimaryMode;
  /** other members whose actual-HOST/is-primary is 1 here */
  activePrimaries: readonly string[];
  /** version-SEQ-HOST links from the replay link's number - 1 on (read only when designated here) */
  versionLinks: readonly { seq: number; host: string; value: string }[];
  /** `maxnr`: the highest logfile number ever used (0 when unknown) */
  maxnr: number;
  /** `STAMP HOST`: the newest `todo-HOST/want-primary` of another member (read only when designated here) */
  wantPrimaryRequest: string | undefined;
  /** an invalidate request (todo-HOST/invalidate) not yet answered in actual-HOST/invalidate */
  invalidateRequest: string | undefined;
  /** this host was removed from the cluster or the resource (common/tree/removal.ts): why, and how to rejoin */
  removed?: string | undefined;
  /** a change in any of these means a failed start may succeed now */
  signature: string;
}

interface DerivedLogs {
  /** shared by every snapshot taken while the sizes array is the same: not to be mutated */
  logfiles: readonly LogfileInfo[];
  /** the logfiles' part of the signature */
  signature: string;
}

const derivedBySizes = new WeakMap<readonly LogfileSize[], DerivedLogs>();

/** What the snapshot derives from a logfileSizes array, once per array object. */
function logfilesOf(sizes: readonly LogfileSize[]): DerivedLogs {
  let d = derivedBySizes.get(sizes);
  if (d === undefined) {
    // logfileSizes gives them ascending by number, then origin, as LogfileInfo wants them.
    const logfiles = sizes.map((l) => ({ seq: l.seq, origin: l.origin, sizeBytes: l.sizeBytes }));
    d = { logfiles, signature: JSON.stringify(logfiles.map((l) => [l.seq, l.origin, l.sizeBytes])) };
    derivedBySizes.set(sizes, d);
  }
  return d;
}

function intValue(text: string | undefined): number | undefined {
  if (text === undefined || !/^\d{1,16}$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** Each directory's cached listing is checked once per snapshot (TreeStore.readBatch), not once per link read. */
export function readResourceSnapshot(tree: TreeStore, res: string, host: string): ResourceSnapshot {
  return tree.readBatch(() => readSnapshot(tree, res, host).snapshot);
}

/**
 * One resource's snapshot, read again only when something it was read from changed (issue 11:
 * an idle resource's round read about twenty links, each a path lookup, every second). The last
 * snapshot stays valid while every directory listing its read saw is still the same object
 * (tracked-read.ts) and logfileSizes gives the same array (its identity guarantee,
 * log-sizes.ts); the same, frozen, snapshot is then handed out again.
 */
export function snapshotReader(tree: TreeStore, res: string, host: string): TrackedRead<ReadSnapshot> {
  return new TrackedRead(tree, () => readSnapshot(tree, res, host),
    (last) => logfileSizes(tree, resourceDir(res), Date.now(), last.statFromSeq) === last.sizes);
}

export interface ReadSnapshot {
  snapshot: ResourceSnapshot;
  /** the logfileSizes array the snapshot's logfiles come from, and the number it stat'ed from */
  sizes: readonly LogfileSize[];
  statFromSeq: number;
}

function readSnapshot(tree: TreeStore, res: string, host: string): ReadSnapshot {
  const dir = resourceDir(res);
  const flag = (key: TodoKey) => tree.value(resPaths.todo(res, host, key)) === '1';
  const sizeValue = tree.value(resPaths.size(res));
  const size = sizeValue !== undefined && /^\d+$/.test(sizeValue) ? Number(sizeValue) : undefined;
  const primary = tree.value(resPaths.primary(res));
  const attach = tree.read(resPaths.todo(res, host, 'attach'));
  const replay = tree.read(resPaths.replay(res, host));
  const replaySeq = Number(/^log-(\d{9})-/.exec(replay?.value ?? '')?.[1] ?? NaN);
  // Finished logfiles' sizes come from a cache; the growing ones (and those from the replay
  // link's number on, which a re-fetch may rewrite) are stat'ed (log-sizes.ts). What is derived
  // from them is kept with the array, which stays the same object while nothing changed.
  const statFromSeq = Number.isFinite(replaySeq) ? replaySeq : Infinity;
  const sizes = logfileSizes(tree, dir, Date.now(), statFromSeq);
  const logs = logfilesOf(sizes);
  const logfiles = logs.logfiles;
  const designatedHere = primary === host;
  const mode = tree.value(resPaths.primaryMode(res, host));
  const activePrimaries: string[] = [];
  const versionLinks: { seq: number; host: string; value: string }[] = [];
  let wantPrimaryRequest: string | undefined;
  const listing = designatedHere ? tree.listing(dir) : undefined;
  if (listing !== undefined) {
    // The names come from an index built once per listing object, not a regex per name per round.
    const index = listingIndex(listing);
    for (const member of index.members) {
      if (member === host || !isValidIdentifier(member)) continue;
      if (tree.value(resPaths.actual(res, member, 'is-primary')) === '1') activePrimaries.push(member);
      const want = tree.value(resPaths.wantPrimary(res, member));
      if (want !== undefined && /^\d+\.\d+$/.test(want) && (wantPrimaryRequest === undefined || Number(want) > Number(wantPrimaryRequest.split(' ')[0]))) {
        wantPrimaryRequest = `${want} ${member}`;
      }
    }
    const firstVersionSeq = (Number.isFinite(replaySeq) ? replaySeq : 1) - 1;
    for (let i = firstAtOrAbove(index.versions, firstVersionSeq); i < index.versions.length; i++) {
      const v = index.versions[i]!;
      tree.clock.observe(v.stampUs); // as tree.value would: a stamp read is a stamp seen
      versionLinks.push({ seq: v.seq, host: v.host, value: v.value });
    }
  }
  const snapshot: ResourceSnapshot = {
    name: res,
    sizeBytes: size !== undefined && Number.isSafeInteger(size) ? size : undefined,
    designatedPrimary: primary !== undefined && isValidIdentifier(primary) ? primary : undefined,
    dataPath: tree.value(resPaths.data(res, host)),
    todo: { attach: flag('attach'), connect: flag('connect'), sync: flag('sync'), 'allow-replay': flag('allow-replay') },
    replayLink: replay?.value,
    syncstatusBytes: intValue(tree.value(resPaths.syncstatus(res, host))),
    logfiles,
    emergencyLimitPercent: ((v) => (v !== undefined && v >= 0 && v <= 100 ? v : 0))(intValue(tree.value(resPaths.emergencyLimit(res, host)))),
    primaryMode: PRIMARY_MODES.includes(mode as PrimaryMode) ? mode as PrimaryMode : 'planned',
    activePrimaries: activePrimaries.sort(),
    versionLinks,
    maxnr: intValue(tree.value(resPaths.maxnr(res))) ?? 0,
    wantPrimaryRequest,
    removed: removalOf(tree, res, host),
    invalidateRequest: pendingInvalidate(tree.value(resPaths.invalidate(res, host)), tree.value(resPaths.actual(res, host, 'invalidate'))),
    signature: '',
  };
  snapshot.signature = `${JSON.stringify([primary, attach?.stampUs, replay?.value, snapshot.syncstatusBytes])}${logs.signature}${JSON.stringify([mode, activePrimaries])}`;
  // Handed out again while nothing changed (snapshotReader): nobody may change it.
  Object.freeze(snapshot.todo);
  Object.freeze(snapshot.activePrimaries);
  Object.freeze(snapshot.versionLinks);
  return { snapshot: Object.freeze(snapshot), sizes, statFromSeq };
}

/** Why this host takes no part in res any more, when a survivor removed it (a zombie's old tree). */
export function removalOf(tree: TreeStore, res: string, host: string): string | undefined {
  const lookup = (p: string) => tree.readRaw(p);
  const cluster = markerInForce(lookup, clusterMarkerPath(host), globalPaths.ip(host));
  if (cluster) {
    return `${host} was removed from the cluster by ${removedBy(cluster)}: it takes no role and serves nothing. `
      + 'To rejoin: stop marsd, move this /mars away, "marsadm join-cluster" through a member, then "marsadm join-resource"';
  }
  const marker = markerInForce(lookup, resourceMarkerPath(resourceDir(res), host), resPaths.data(res, host));
  if (marker) {
    return `${host} was removed from ${res} by ${removedBy(marker)}: it takes no role there. To rejoin: "marsadm join-resource ${res} DEVICE" (a full sync)`;
  }
  return undefined;
}

function pendingInvalidate(request: string | undefined, answer: string | undefined): string | undefined {
  if (request === undefined || !/^\d{1,20}\.\d{1,9}$/.test(request)) return undefined;
  return answer?.split(' ')[0] === request ? undefined : request;
}

/** Resource names present in the tree (directories `resource-NAME` with a valid NAME). */
export function listResources(tree: TreeStore): string[] {
  return tree
    .list('')
    .filter((n) => n.startsWith('resource-'))
    .map((n) => n.slice('resource-'.length))
    .filter((n) => isValidIdentifier(n) && tree.value(resPaths.size(n)) !== undefined)
    .sort();
}
