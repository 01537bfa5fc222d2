// The I/O half of tree propagation: list the entries this host offers to peers, and execute
// a merge plan (planMerge in merge.ts) against the local TreeStore.
import { unlinkSync } from 'node:fs';
import { logfileSizes } from '../../common/tree/log-sizes.js';
import type { TreeStore } from '../../common/tree/store.js';
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
 * Every replicated link (tombstones included) and, given `durableEnd`, every logfile with its
 * size (the growing ones stat'ed, log-sizes.ts; without it, `logs` is empty). Each directory's cached listing is
 * checked once for the whole walk (TreeStore.readBatch), not once per entry.
 */
export function collectEntries(tree: TreeStore, durableEnd?: (res: string, name: string, fileBytes: number) => number): { entries: TreeEntry[]; logs: LogListing[] } {
  return tree.readBatch(() => walkEntries(tree, durableEnd));
}

function walkEntries(tree: TreeStore, durableEnd: ((res: string, name: string, fileBytes: number) => number) | undefined): { entries: TreeEntry[]; logs: LogListing[] } {
  const entries: TreeEntry[] = [];
  const logs: LogListing[] = [];
  const visit = (rel: string, depth: number) => {
    const res = rel.startsWith('resource-') && depth === 1 ? rel.slice('resource-'.length) : undefined;
    if (res !== undefined && durableEnd !== undefined && isValidIdentifier(res)) {
      // Sizes from the cache of finished logfiles' sizes (log-sizes.ts), the growing ones stat'ed.
      for (const l of logfileSizes(tree, rel)) logs.push({ res, name: l.name, sizeBytes: durableEnd(res, l.name, l.sizeBytes) });
    }
    // The directory's cached listing itself: a name from it needs no lookup of its own.
    const listing = tree.listing(rel);
    if (listing === undefined) return; // vanished
    for (const [name, e] of listing) {
      if (name.startsWith('.')) continue;
      const path = rel === '' ? name : `${rel}/${name}`;
      if (!isValidTreeComponent(name)) continue; // not a tree path: lost+found of an ext4 /mars, a stray file
      if (e.kind === 'dir') {
        if (depth < 2) visit(path, depth + 1);
        continue;
      }
      if (e.kind !== 'link' || ownerOf(path).kind === 'local') continue;
      entries.push({ p: path, v: e.value, s: e.stampUs });
    }
  };
  try {
    visit('', 0);
  } catch (err) {
    rethrowInvariant(err);
    throw new Error(`cannot list the tree: ${(err as Error).message}`);
  }
  return { entries, logs };
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
