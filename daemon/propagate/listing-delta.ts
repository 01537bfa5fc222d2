// A peer listing (getents) sent as a delta since the client's last pull (issue 11: between two
// pulls of an idle cluster nearly nothing changes, yet every pull built, encoded, sent, parsed
// and validated the whole tree, O(resources x logfiles) per pull and peer).
//
// The server gives each directory of its listing a generation from a counter of its own
// process, taken anew whenever what the listing shows of that directory may have changed: its
// DirCache listing object is another one (the cache hands out a new object whenever it reads
// the directory again, and never an old one back: dir-cache.ts; the links of a directory are
// derived from that object alone, tree-io.ts), its logfiles or their sizes differ from the
// last walk's, or it was missing from the last walk. A reply carries the counter's value
// (`generation`) and the process's random `epoch`. A client that holds the listing of
// generation G asks with since G; the reply then holds, in full, every directory whose
// generation is above G, and names all directories present.
//
// Why the client's reconstruction equals the full listing of that moment: a directory whose
// generation is at most G had that generation already when the listing G was built (a new
// one is always above every value handed out before), so it was in listing G with the same
// content, and the client holds that content; every other directory is in the reply. A
// directory gone is not named, so the client drops it. A directory the client does not hold
// (which a correct server never omits) refuses the delta. The client reconstructs in the
// order of `dirs`, each directory's entries in their listed order: the order of the server's
// full listing (tree-io.ts flattenDirs), so planMerge and the tombstone rules see the very
// same listing as from a full pull.
//
// The client asks without `since` (a full listing) after each (re)connect, after any error
// (the connection is closed, and with it the held listing), and at least every
// FULL_LISTING_EVERY_MS as a safety net. A server that does not know `since` (an older one)
// answers in full and without an epoch; a server restarted has another epoch and answers in
// full.
import { randomBytes } from 'node:crypto';
import { assert } from '../../common/util/assert.js';
import { listingDirOf, type Entry, type EntsPayload, type ListingSince, type LogInfo } from '../net/messages.js';
import type { DirRecord } from './tree-io.js';

/**
 * How long a client builds on deltas before it asks for a full listing again: a safety net, not
 * part of the correctness argument (the property tests compare deltas with full listings). At
 * 100 resources x 1000 logfiles a full listing costs its server about 1.5 s (walk and JSON) and
 * its client the parse and validation of 41 MB: every 30 s that was most of an idle daemon's
 * CPU, every 5 minutes it is about 1 % of a core.
 */
export const FULL_LISTING_EVERY_MS = 300_000;

/** The server side: the generation of each directory of its listing. */
export class ListingGenerations {
  /** random per process start: a client's `since` from an earlier process must not be used */
  readonly epoch = randomBytes(8).toString('hex');
  private counter = 0;
  /** rel → what the last walk saw of the directory, and its generation */
  private readonly known = new Map<string, { listing: DirRecord['listing']; logs: DirRecord['logs']; generation: number }>();

  get generation(): number {
    return this.counter;
  }

  /**
   * Take a walk of the tree (collectDirs, synchronous, so nothing changes between its
   * directories and this call): the generation of each of its directories, in walk order.
   */
  stamp(dirs: readonly DirRecord[]): number[] {
    const present = new Set<string>();
    const out: number[] = [];
    for (const d of dirs) {
      assert(!present.has(d.rel), `directory ${d.rel} listed twice in one walk`);
      present.add(d.rel);
      let k = this.known.get(d.rel);
      if (k === undefined || k.listing !== d.listing || !sameLogs(k.logs, d.logs)) {
        this.known.set(d.rel, (k = { listing: d.listing, logs: d.logs, generation: ++this.counter }));
      } else {
        k.logs = d.logs;
      }
      out.push(k.generation);
    }
    // A directory missing from this walk gets a new generation should it show up again.
    for (const rel of this.known.keys()) if (!present.has(rel)) this.known.delete(rel);
    return out;
  }

  /** Whether `since` names a listing of this process that a delta can build on. */
  canBuildOn(since: ListingSince | undefined): since is ListingSince {
    return since !== undefined && since.epoch === this.epoch && since.generation <= this.counter;
  }
}

/** One directory of a peer's listing: its entries and (a resource directory) its logfiles, in
 *  listed order. The client keeps the same object for a directory a delta names unchanged, so
 *  the object identifies that content (incremental-merge.ts relies on it). */
export interface DirContent {
  readonly entries: readonly Entry[];
  readonly logs: readonly LogInfo[];
}

/** The same logfiles with the same sizes in the same order; the same array (served-logs.ts
 *  hands the last walk's on while nothing changed) at once. */
function sameLogs(a: DirRecord['logs'], b: DirRecord['logs']): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i]!.name !== b[i]!.name || a[i]!.sizeBytes !== b[i]!.sizeBytes) return false;
  return true;
}

/** One directory of a peer's listing: every directory's entries and logfiles. */
export interface HeldListing {
  epoch: string;
  generation: number;
  dirs: ReadonlyMap<string, DirContent>;
}

/** A delta that does not fit the listing we hold: refused, nothing is changed. */
export class ListingDeltaError extends Error {
  override name = 'ListingDeltaError';
}

/** An ents reply as the connection delivers it (the payload already checked by parseEntsPayload). */
export interface ListingReply extends EntsPayload {
  epoch?: string | undefined;
  generation?: number | undefined;
  since?: number | undefined;
}

/** The peer's full listing, as applyListing gives it. */
export interface AppliedListing {
  held: HeldListing | undefined;
  /**
   * The listing by directory, in listing order: `entries` and `logs` are the concatenation of
   * its directories' (undefined: an older peer, or a full listing whose entries or logfiles
   * are not grouped in the order of its directories, which our servers never send).
   */
  dirs: ReadonlyMap<string, DirContent> | undefined;
  /** every entry, in listing order (built when first asked for: O(listing)) */
  readonly entries: Entry[];
  /** every logfile (built when first asked for) */
  readonly logs: LogInfo[];
}

/**
 * The peer's full listing from a reply to a request that named `asked` (undefined: no since),
 * and what to hold for the next delta. Pure: `held` is not changed; a delta that does not
 * fit it throws ListingDeltaError. Costs O(directories) plus the payload's size: a directory
 * the delta names unchanged is taken over as the held object, not copied.
 */
export function applyListing(held: HeldListing | undefined, asked: ListingSince | undefined, reply: ListingReply): AppliedListing {
  if (reply.epoch === undefined || reply.generation === undefined || reply.dirs === undefined) {
    // An older peer: a full listing, nothing to build on.
    return { held: undefined, dirs: undefined, entries: reply.entries, logs: reply.logs };
  }
  const groups = groupByDir(reply);
  if (reply.since === undefined) {
    const full: HeldListing = { epoch: reply.epoch, generation: reply.generation, dirs: groups };
    return { held: full, dirs: inListingOrder(reply, groups) ? groups : undefined, entries: reply.entries, logs: reply.logs };
  }
  if (asked === undefined || held === undefined) throw new ListingDeltaError(`a delta since generation ${reply.since} answers a request for a full listing`);
  if (reply.epoch !== asked.epoch || asked.epoch !== held.epoch) throw new ListingDeltaError(`a delta of listing epoch ${reply.epoch}, asked for ${asked.epoch}`);
  if (reply.since !== asked.generation || asked.generation !== held.generation) throw new ListingDeltaError(`a delta since generation ${reply.since}, asked since ${asked.generation}`);
  const changed = new Set(reply.changed);
  const dirs = new Map<string, DirContent>();
  for (const d of reply.dirs) {
    const content = changed.has(d) ? groups.get(d) : held.dirs.get(d);
    if (content === undefined) throw new ListingDeltaError(`a delta names directory ${JSON.stringify(d)} as unchanged, but no listing of it is held`);
    dirs.set(d, content);
  }
  return withFlatViews({ held: { epoch: reply.epoch, generation: reply.generation, dirs }, dirs });
}

/** entries and logs as the concatenation of the directories', built once when first read. */
function withFlatViews(a: { held: HeldListing; dirs: ReadonlyMap<string, DirContent> }): AppliedListing {
  let flat: { entries: Entry[]; logs: LogInfo[] } | undefined;
  const flatten = () => {
    if (flat !== undefined) return flat;
    flat = { entries: [], logs: [] };
    for (const content of a.dirs.values()) {
      for (const e of content.entries) flat.entries.push(e);
      for (const l of content.logs) flat.logs.push(l);
    }
    return flat;
  };
  return { ...a, get entries() { return flatten().entries; }, get logs() { return flatten().logs; } };
}

/** Whether a full reply lists its entries and logfiles directory by directory in the order of
 *  its `dirs` (as our servers do: tree-io.ts flattenDirs), so that the groups concatenated are
 *  the reply itself. */
function inListingOrder(reply: ListingReply, groups: ReadonlyMap<string, DirContent>): boolean {
  const rank = new Map<string, number>();
  let i = 0;
  for (const d of groups.keys()) rank.set(d, i++);
  let last = -1;
  for (const e of reply.entries) {
    const r = rank.get(listingDirOf(e.p))!;
    if (r < last) return false;
    last = r;
  }
  last = -1;
  for (const l of reply.logs) {
    const r = rank.get(`resource-${l.res}`)!;
    if (r < last) return false;
    last = r;
  }
  return true;
}

/** The payload's entries and logfiles by directory, each in payload order; every directory of
 *  the payload (a delta: the changed ones) present, empty ones too. */
function groupByDir(reply: ListingReply): Map<string, DirContent> {
  const groups = new Map<string, { entries: Entry[]; logs: LogInfo[] }>();
  for (const d of reply.changed ?? reply.dirs ?? []) groups.set(d, { entries: [], logs: [] });
  for (const e of reply.entries) {
    const g = groups.get(listingDirOf(e.p));
    // parseEntsPayload checked that each entry is in a directory the payload covers.
    if (g === undefined) throw new ListingDeltaError(`entry ${e.p} is outside the listed directories`);
    g.entries.push(e);
  }
  for (const l of reply.logs) {
    const g = groups.get(`resource-${l.res}`);
    if (g === undefined) throw new ListingDeltaError(`logfile ${l.name} of ${l.res} is outside the listed directories`);
    g.logs.push(l);
  }
  return groups;
}
