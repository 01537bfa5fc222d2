// Gather the input of planLogRetention (log-retention.ts) from this host's tree: members,
// replay/sync links, peer heartbeats and the local logfiles.
import { lstatSync } from 'node:fs';
import type { TreeStore } from '../../common/tree/store.js';
import { globalPaths, resPaths, resourceDir } from '../../common/tree/paths.js';
import { LOG_NAME } from '../../common/tree/log-names.js';
import { isValidIdentifier } from '../../common/tree/names.js';
import { planLogRetention, type HeldBack, type RetentionInput, type RetentionLogfile } from './log-retention.js';
import { rethrowInvariant } from '../../common/util/assert.js';

function suffixed(names: string[], prefix: string): string[] {
  return names.filter((n) => n.startsWith(prefix) && isValidIdentifier(n.slice(prefix.length))).map((n) => n.slice(prefix.length));
}

export function readRetentionInput(tree: TreeStore, res: string, self: string, windowS: number, force: boolean, nowMs = Date.now()): RetentionInput {
  const links = readRetentionLinks(tree, res, self, windowS, force, nowMs);
  return { ...links, logfiles: readRetentionLogfiles(tree, res, -Infinity) };
}

/**
 * Who holds logfiles back (planLogRetention's heldBack), stat'ing only the logfiles that can be
 * held: those numbered from the lowest need on (issue 11: `marsadm view` stat'ed every logfile
 * of every resource for this one line). Equal to the full plan's heldBack because the held
 * logfiles lie at or above keepFromSeq (when it is known; else every logfile is stat'ed), and
 * the newest logfile, which is never held, is among them whenever any of them could be held.
 * keepFromSeq comes from the replay and sync links alone, so a plan without logfiles gives it.
 */
export function readHeldBack(tree: TreeStore, res: string, self: string, windowS: number, force: boolean, nowMs = Date.now()): HeldBack | undefined {
  const links = readRetentionLinks(tree, res, self, windowS, force, nowMs);
  const keepFromSeq = planLogRetention({ ...links, logfiles: [] }).keepFromSeq;
  return planLogRetention({ ...links, logfiles: readRetentionLogfiles(tree, res, keepFromSeq ?? -Infinity) }).heldBack;
}

function readRetentionLinks(tree: TreeStore, res: string, self: string, windowS: number, force: boolean, nowMs: number): Omit<RetentionInput, 'logfiles'> {
  const names = tree.list(resourceDir(res));
  const members = suffixed(names, 'data-').filter((h) => tree.value(resPaths.data(res, h)) !== undefined).sort();
  const replay = new Map<string, string>();
  for (const h of suffixed(names, 'replay-')) {
    const v = tree.value(resPaths.replay(res, h));
    if (v !== undefined) replay.set(h, v);
  }
  const syncpos = new Map<string, string>();
  for (const h of suffixed(names, 'syncpos-')) {
    const v = tree.value(resPaths.syncpos(res, h));
    if (v !== undefined) syncpos.set(h, v);
  }
  const sizeText = tree.value(resPaths.size(res));
  const size = sizeText !== undefined && /^\d+$/.test(sizeText) ? Number(sizeText) : undefined;
  const syncing = new Set<string>();
  for (const h of members) {
    const st = tree.value(resPaths.syncstatus(res, h));
    const done = st !== undefined && /^\d+$/.test(st) && size !== undefined && Number(st) >= size;
    if (!done) syncing.add(h);
  }
  const heartbeatAgeS = new Map<string, number | undefined>();
  for (const h of new Set([...members, ...replay.keys()])) {
    let age: number | undefined;
    try {
      const time = tree.value(globalPaths.actual(h, 'time'));
      const sec = time === undefined ? NaN : Number(time);
      age = Number.isFinite(sec) ? Math.max(0, nowMs / 1000 - sec) : undefined;
    } catch (err) {
      rethrowInvariant(err); // else an invalid name: no heartbeat age
    }
    heartbeatAgeS.set(h, age);
  }
  return { members, replay, syncing, syncpos, heartbeatAgeS, self, windowS, nowMs, force };
}

/** The regular logfiles numbered fromSeq or higher, with sizes and mtimes. */
function readRetentionLogfiles(tree: TreeStore, res: string, fromSeq: number): RetentionLogfile[] {
  const dir = resourceDir(res);
  const logfiles: RetentionLogfile[] = [];
  for (const name of tree.list(dir)) {
    // Numbers below fromSeq are passed over before the name is parsed (SEQ: 9 digits after "log-").
    if (!name.startsWith('log-') || Number(name.slice(4, 13)) < fromSeq) continue;
    const m = LOG_NAME.exec(name);
    if (!m) continue;
    try {
      const st = lstatSync(tree.abs(`${dir}/${name}`));
      if (st.isFile()) logfiles.push({ seq: Number(m[1]), origin: m[2]!, name, sizeBytes: st.size, mtimeMs: st.mtimeMs });
    } catch { /* deleted concurrently */ }
  }
  return logfiles;
}
