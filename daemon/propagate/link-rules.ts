// Value rules for links arriving from peers (docs/tree.md "Values a peer may send"). Ownership
// (common/tree/ownership.ts) says WHO may write a path; these rules say WHICH values are sane
// given what the receiver already knows, so that an authenticated member gone rogue (or
// confused) cannot jam a resource with one link:
//   - stamps: never beyond the receiver's real clock + a window (a link stamped weeks ahead
//     would pin its value and drag every Lamport clock forward);
//   - maxnr: grows only from the designated primary, by a few logfiles at a time (the emergency
//     hole skips 10), or up to a logfile number the primary's own versionlinks already name;
//   - size: only grows (marsadm resize), and only from the designated primary;
//   - primary: `(none)` or a member of the resource (its data-HOST link exists);
//   - uuid: never replaced once set (join-cluster's placeholder excepted);
//   - a logfile's tombstone: from its origin, or from anybody once the origin's own replay
//     link has moved past it (log-delete, cron) — never the logfile the primary writes;
//   - resources: a peer creates at most `maxResources` resource directories here.
// Pure: the caller gathers the facts (tree-io.ts) and logs what is refused (refusal-log.ts).
import { isValidIdentifier } from '../../common/tree/names.js';
import { LOG_NAME, VERSION_NAME } from '../../common/tree/log-names.js';
import type { Acceptance } from '../../common/tree/ownership.js';
import type { LinkLookup } from '../../common/tree/removal.js';
import { ANY_UUID } from '../../common/cluster/secret.js';

/** How far ahead of the receiver's real clock a peer's stamp may lie. */
export const DEFAULT_STAMP_WINDOW_US = 10 * 60 * 1_000_000;
/** Resource directories a cluster may hold (marsd --max-resources). */
export const DEFAULT_MAX_RESOURCES = 1024;
/** The largest maxnr step of one write: the emergency hole (docs/tree.md) skips 10 numbers. */
export const MAXNR_MAX_STEP = 16;
export const NO_PRIMARY = '(none)';

export interface RuleEntry {
  p: string;
  v: string;
  s: number;
}

/** A batch's entries by path and by directory (a Map over a flat batch: merge.ts batchOf; a
 *  listing held by directory: incremental-merge.ts, indexed only where a rule looks). */
export interface BatchView {
  get(path: string): RuleEntry | undefined;
  /** the entries whose path is `rel`/NAME (one component below rel) */
  inDir(rel: string): Iterable<RuleEntry>;
}

export interface LinkFacts {
  /** the receiver's stored links, tombstones included */
  lookup: LinkLookup;
  /** the other entries of the same batch (the whole listing): by path, and those directly in a directory */
  batch: BatchView;
  /** logfile numbers the receiver knows in res: its logfiles and versionlinks (seq, host) */
  knownSeqs?: (res: string) => readonly { seq: number; host: string }[];
  /** whether resource-RES exists here, and how many resource directories exist */
  resources?: { exists: (res: string) => boolean; count: number };
}

export interface LinkLimits {
  /** the receiver's real clock (not its Lamport clock, which a peer's stamps move) */
  nowUs: number;
  stampWindowUs?: number;
  maxResources?: number;
}

const ok: Acceptance = { ok: true };
const refuse = (reason: string, quiet = false): Acceptance => (quiet ? { ok: false, reason, quiet } : { ok: false, reason });

export function checkStamp(e: RuleEntry, limits: LinkLimits): Acceptance {
  const windowUs = limits.stampWindowUs ?? DEFAULT_STAMP_WINDOW_US;
  if (!Number.isSafeInteger(e.s) || e.s <= 0) return refuse(`stamp ${e.s} is not a positive integer`);
  if (e.s > limits.nowUs + windowUs) {
    const aheadS = Math.round((e.s - limits.nowUs) / 1_000_000);
    return refuse(`stamp lies ${aheadS} s ahead of this host's clock (limit ${windowUs / 1_000_000} s)`);
  }
  return ok;
}

/** The resource a path lies in, or undefined. */
export function resourceOf(path: string): string | undefined {
  const first = path.split('/')[0]!;
  return first.startsWith('resource-') && path.includes('/') ? first.slice('resource-'.length) : undefined;
}

/** A stored link's live value (undefined when absent or a tombstone). */
function liveValue(f: LinkFacts, path: string, tombstone: string): string | undefined {
  const l = f.lookup(path);
  return l === undefined || l.deleted ? undefined : l.value;
}

/** The value at path the receiver will hold after this batch: the batch's if newer. */
function effectiveValue(f: LinkFacts, path: string, tombstone: string): string | undefined {
  const stored = f.lookup(path);
  const b = f.batch.get(path);
  if (b && (stored === undefined || b.s > stored.stampUs)) return b.v === tombstone ? undefined : b.v;
  return liveValue(f, path, tombstone);
}

const UINT = /^(0|[1-9]\d{0,15})$/;
function uint(v: string): number | undefined {
  if (!UINT.test(v)) return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : undefined;
}

function checkMaxnr(res: string, e: RuleEntry, sender: string, f: LinkFacts, tombstone: string): Acceptance {
  if (e.v === tombstone) return refuse('maxnr is never deleted (delete-resource keeps it)');
  const v = uint(e.v);
  if (v === undefined) return refuse(`maxnr ${JSON.stringify(e.v.slice(0, 40))} is not a logfile number`);
  const curText = liveValue(f, e.p, tombstone);
  const cur = curText === undefined ? undefined : uint(curText);
  if (cur === undefined) return ok; // a joining host learns the numbering as it is
  if (v <= cur) return v === cur ? ok : refuse(`maxnr only grows (here ${cur})`, true);
  const primary = effectiveValue(f, `resource-${res}/primary`, tombstone);
  const seqs = f.knownSeqs?.(res) ?? [];
  const ofPrimary = Math.max(0, ...seqs.filter((s) => s.host === primary).map((s) => s.seq), ...(sender === primary ? versionSeqsInBatch(f, res, primary) : []));
  // The designated primary's versionlinks name that logfile: those stored here, or those in this
  // batch when it comes from the primary itself (a listing carries third hosts' links too).
  if (v <= ofPrimary) return ok;
  if (sender !== primary) return refuse(`maxnr ${v} (here ${cur}) may only be raised by the designated primary ${primary ?? NO_PRIMARY}, not ${sender}`);
  const known = Math.max(cur, ...seqs.map((s) => s.seq));
  if (v > known + MAXNR_MAX_STEP) return refuse(`maxnr ${v} jumps more than ${MAXNR_MAX_STEP} logfiles past ${known}`);
  return ok;
}

function versionSeqsInBatch(f: LinkFacts, res: string, host: string | undefined): number[] {
  if (host === undefined) return [];
  const out: number[] = [];
  const prefix = `resource-${res}/`;
  // Versionlinks lie directly in the resource directory (VERSION_NAME has no '/').
  for (const e of f.batch.inDir(`resource-${res}`)) {
    const m = VERSION_NAME.exec(e.p.slice(prefix.length));
    if (m && m[2] === host && e.v.length > 0) out.push(Number(m[1]));
  }
  return out;
}

function checkSize(res: string, e: RuleEntry, sender: string, f: LinkFacts, tombstone: string): Acceptance {
  if (e.v === tombstone) return ok; // delete-resource
  const v = uint(e.v);
  if (v === undefined || v === 0) return refuse(`size ${JSON.stringify(e.v.slice(0, 40))} is not a positive byte count`);
  const curText = liveValue(f, e.p, tombstone);
  const cur = curText === undefined ? undefined : uint(curText);
  if (cur === undefined || v === cur) return ok;
  const primary = effectiveValue(f, `resource-${res}/primary`, tombstone);
  if (v < cur) return refuse(`size ${v} is smaller than ${cur}; a resource never shrinks`);
  if (sender !== primary) return refuse(`size ${v} (here ${cur}) may only be grown by the designated primary ${primary ?? NO_PRIMARY} (marsadm resize), not ${sender}`);
  return ok;
}

function checkPrimary(res: string, e: RuleEntry, f: LinkFacts, tombstone: string): Acceptance {
  if (e.v === tombstone || e.v === NO_PRIMARY) return ok;
  if (!isValidIdentifier(e.v)) return refuse(`primary ${JSON.stringify(e.v.slice(0, 40))} is not a host name`);
  if (effectiveValue(f, `resource-${res}/data-${e.v}`, tombstone) === undefined) return refuse(`primary ${e.v} is not a member of ${res}`);
  return ok;
}

/** A logfile's tombstone: from its origin, or once the origin's replay link is past it. */
function checkLogTombstone(res: string, name: string, sender: string, f: LinkFacts, tombstone: string): Acceptance {
  const m = LOG_NAME.exec(name);
  if (!m) return ok;
  const seq = Number(m[1]);
  const origin = m[2]!;
  if (sender === origin) return ok;
  const replay = liveValue(f, `resource-${res}/replay-${origin}`, tombstone);
  const at = replay === undefined ? undefined : LOG_NAME.exec(replay.split(',')[0] ?? '');
  if (at && Number(at[1]) > seq) return ok;
  return refuse(`only ${origin} deletes ${name} while it has not moved past it (its replay link: ${replay ?? 'none'})`);
}

/**
 * The value rules for one entry that ownership already allows. `created` collects the resources
 * this batch creates (for the cap), and is updated when the entry is accepted.
 */
export function checkLinkValue(e: RuleEntry, sender: string, f: LinkFacts, limits: LinkLimits, tombstone: string, created: Set<string>): Acceptance {
  const stamp = checkStamp(e, limits);
  if (!stamp.ok) return stamp;
  if (e.p === 'uuid') {
    const cur = liveValue(f, 'uuid', tombstone);
    // join-cluster writes a placeholder (ANY_UUID) that the cluster's real uuid replaces.
    return cur === undefined || cur === e.v || cur === ANY_UUID ? ok : refuse('the cluster uuid is never replaced');
  }
  const res = resourceOf(e.p);
  if (res === undefined) return ok;
  const name = e.p.slice(`resource-${res}/`.length);
  const verdict = name === 'maxnr' ? checkMaxnr(res, e, sender, f, tombstone)
    : name === 'size' ? checkSize(res, e, sender, f, tombstone)
      : name === 'primary' ? checkPrimary(res, e, f, tombstone)
        : e.v === tombstone ? checkLogTombstone(res, name, sender, f, tombstone) : ok;
  if (!verdict.ok) return verdict;
  return checkResourceCap(res, e, f, limits, tombstone, created);
}

function checkResourceCap(res: string, e: RuleEntry, f: LinkFacts, limits: LinkLimits, tombstone: string, created: Set<string>): Acceptance {
  const r = f.resources;
  if (!r || e.v === tombstone || r.exists(res) || created.has(res)) return ok;
  const max = limits.maxResources ?? DEFAULT_MAX_RESOURCES;
  if (r.count + created.size >= max) return refuse(`this cluster already holds ${r.count + created.size} resources (limit ${max}, marsd --max-resources); not creating resource-${res}`);
  created.add(res);
  return ok;
}
