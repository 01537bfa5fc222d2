// The I/O half of tree propagation: list the entries this host offers to peers, and execute
// a merge plan (planMerge in merge.ts) against the local TreeStore.
import { unlinkSync } from 'node:fs';
import { logfileSizes } from '../../common/tree/log-sizes.js';
import type { TreeStore } from '../../common/tree/store.js';
import type { CachedEntry } from '../../common/tree/dir-cache.js';
import { LOG_NAME, VERSION_NAME } from '../../common/tree/log-names.js';
import { ownerOf } from '../../common/tree/ownership.js';
import { isValidIdentifier, isValidTreeComponent } from '../../common/tree/names.js';
import type { LocalState, MergePlan, TreeEntry } from './merge.js';
import type { LinkFacts } from './link-rules.js';
import { dirname } from 'node:path';
import { failStopOnInvariant, rethrowInvariant } from '../../common/util/assert.js';

export interface LogListing {
  res: string;
  /** log-SEQ-ORIGIN */
  name: string;
  /** bytes a peer may fetch (the durable end for a logfile still being written) */
  sizeBytes: number;
}

/**
 * One directory of the tree as a listing shows it: its replicated links (in the directory
 * listing's order) and, for a resource directory when sizes were asked for, its logfiles.
 * `listing` is the DirCache's listing object the links were taken from: the same object for as
 * long as the directory is unchanged (store.ts TreeStore.listing), so it identifies this
 * content (the delta listing, listing-delta.ts, relies on that).
 */
export interface DirRecord {
  /** '' for the root, else 1-2 path components */
  rel: string;
  listing: ReadonlyMap<string, CachedEntry>;
  /** the same array for as long as `listing` is the same object */
  entries: readonly TreeEntry[];
  /** present for a resource directory when durableEnd was given (served-logs.ts: the same
   *  array while nothing of it changed; never changed once handed out) */
  logs?: readonly LogListing[];
}

/** What a listing object yields (entries, subdirectories): computed once per object. */
const derivedOf = new WeakMap<ReadonlyMap<string, CachedEntry>, { entries: readonly TreeEntry[]; subdirs: readonly string[] }>();

function derive(rel: string, listing: ReadonlyMap<string, CachedEntry>): { entries: readonly TreeEntry[]; subdirs: readonly string[] } {
  let d = derivedOf.get(listing);
  if (d !== undefined) return d;
  const entries: TreeEntry[] = [];
  const subdirs: string[] = [];
  for (const [name, e] of listing) {
    if (name.startsWith('.')) continue;
    const path = rel === '' ? name : `${rel}/${name}`;
    if (!isValidTreeComponent(name)) continue; // not a tree path: lost+found of an ext4 /mars, a stray file
    if (e.kind === 'dir') subdirs.push(path);
    else if (e.kind === 'link' && ownerOf(path).kind !== 'local') entries.push({ p: path, v: e.value, s: e.stampUs });
  }
  derivedOf.set(listing, (d = { entries, subdirs }));
  return d;
}

/**
 * The tree's directories in listing order (pre-order: a directory, then each subdirectory's
 * records; two levels below the root), with their replicated links (tombstones included)
 * and, given `durableEnd`, each resource directory's logfiles with their sizes (the growing
 * ones stat'ed, log-sizes.ts). Each directory's cached listing is checked once for the whole
 * walk (TreeStore.readBatch); an unchanged directory costs that check and nothing per entry.
 */
export function collectDirs(tree: TreeStore, durableEnd?: DurableEndFn | LogsOf): DirRecord[] {
  const logsOf: LogsOf | undefined = durableEnd === undefined || typeof durableEnd === 'object' ? durableEnd
    : { logs: (t, rel, res) => logfileSizes(t, rel).map((l) => ({ res, name: l.name, sizeBytes: durableEnd(res, l.name, l.sizeBytes) })) };
  return tree.readBatch(() => walkDirs(tree, logsOf));
}

/** The bytes of a logfile a peer may fetch, from its file size. */
export type DurableEndFn = (res: string, name: string, fileBytes: number) => number;

/** What a listing offers of a resource directory's logfiles (serve/served-logs.ts keeps it
 *  from one walk to the next); called inside the walk's TreeStore.readBatch. */
export interface LogsOf {
  logs(tree: TreeStore, rel: string, res: string): LogListing[];
}

/**
 * Every replicated link (tombstones included) and, given `durableEnd`, every logfile with its
 * size (without it, `logs` is empty): collectDirs flattened, directory by directory. The
 * order is part of what a delta listing must reproduce (listing-delta.ts).
 */
export function collectEntries(tree: TreeStore, durableEnd?: DurableEndFn): { entries: TreeEntry[]; logs: LogListing[] } {
  return flattenDirs(collectDirs(tree, durableEnd));
}

export function flattenDirs(dirs: readonly DirRecord[]): { entries: TreeEntry[]; logs: LogListing[] } {
  const entries: TreeEntry[] = [];
  const logs: LogListing[] = [];
  for (const d of dirs) {
    for (const e of d.entries) entries.push(e);
    if (d.logs) for (const l of d.logs) logs.push(l);
  }
  return { entries, logs };
}

function walkDirs(tree: TreeStore, logsOf: LogsOf | undefined): DirRecord[] {
  const out: DirRecord[] = [];
  const visit = (rel: string, depth: number) => {
    // The directory's cached listing itself: a name from it needs no lookup of its own.
    const listing = tree.listing(rel);
    if (listing === undefined) return; // vanished
    const { entries, subdirs } = derive(rel, listing);
    const record: DirRecord = { rel, listing, entries };
    const res = rel.startsWith('resource-') && depth === 1 ? rel.slice('resource-'.length) : undefined;
    if (res !== undefined && logsOf !== undefined && isValidIdentifier(res)) {
      // Sizes from the cache of finished logfiles' sizes (log-sizes.ts), the growing ones stat'ed.
      record.logs = logsOf.logs(tree, rel, res);
    }
    out.push(record);
    if (depth < 2) for (const sub of subdirs) visit(sub, depth + 1);
  };
  try {
    visit('', 0);
  } catch (err) {
    rethrowInvariant(err);
    throw new Error(`cannot list the tree: ${(err as Error).message}`);
  }
  return out;
}

export function localState(tree: TreeStore, path: string): LocalState {
  let e;
  try {
    e = tree.entry(path);
  } catch (err) {
    failStopOnInvariant(err);
    return { kind: 'absent' }; // not a valid tree path
  }
  if (e === undefined) return { kind: 'absent' };
  if (e.kind === 'file') return { kind: 'file' };
  if (e.kind !== 'link') return { kind: 'other' };
  tree.clock.observe(e.stampUs);
  return { kind: 'link', value: e.value, stampUs: e.stampUs };
}

/** Execute the writes of a merge plan; returns how many links changed. */
export function applyMergePlan(tree: TreeStore, plan: MergePlan): number {
  let changed = 0;
  for (const w of plan.writes) {
    const dir = dirname(w.p);
    if (dir !== '.') tree.ensureDir(dir);
    if (w.replaceFile) {
      try { unlinkSync(tree.abs(w.p)); } catch { /* already gone */ }
    }
    // A deleted logfile must stay deleted after a crash: make the unlink durable.
    if (tree.write(w.p, w.v, w.replaceFile ? { stampUs: w.s, durable: true } : { stampUs: w.s })) changed++;
  }
  return changed;
}

/** What the value rules (link-rules.ts) need of the receiver's tree, read lazily and cached. */
export function mergeFacts(tree: TreeStore): Pick<LinkFacts, 'knownSeqs' | 'resources'> {
  const seqs = new Map<string, { seq: number; host: string }[]>();
  const dirs = new Set(tree.list('').filter((n) => n.startsWith('resource-')).map((n) => n.slice('resource-'.length)));
  return {
    knownSeqs(res) {
      let out = seqs.get(res);
      if (out) return out;
      out = [];
      for (const name of tree.list(`resource-${res}`)) {
        const m = LOG_NAME.exec(name) ?? VERSION_NAME.exec(name);
        if (m) out.push({ seq: Number(m[1]), host: m[2]! });
      }
      seqs.set(res, out);
      return out;
    },
    resources: { exists: (res) => dirs.has(res), count: dirs.size },
  };
}

/**
 * The live links of `host` here, and the `primary` links naming it (removed-links.ts), in
 * `resDir` only when given. Walks the resource directories: run only when a removal marker
 * comes into force, which is rare.
 */
export function linksOfHost(tree: TreeStore, host: string, resDir: string | undefined): TreeEntry[] {
  const out: TreeEntry[] = [];
  const take = (path: string) => {
    let e;
    try {
      e = tree.entry(path);
    } catch (err) {
      failStopOnInvariant(err);
      return; // not a valid tree path
    }
    if (e?.kind === 'link') out.push({ p: path, v: e.value, s: e.stampUs });
  };
  const dirs = resDir !== undefined ? [resDir] : [`actual-${host}`, `defaults-${host}`, ...tree.list('').filter((n) => n.startsWith('resource-'))];
  for (const dir of dirs) {
    for (const name of tree.list(dir)) {
      const path = `${dir}/${name}`;
      if (name === `todo-${host}` || name === `actual-${host}`) for (const k of tree.list(path)) take(`${path}/${k}`);
      else if (!dir.startsWith('resource-') || name === 'primary' || name.endsWith(`-${host}`)) take(path);
    }
  }
  return out;
}
