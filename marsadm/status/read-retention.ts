// Gather the input of planLogRetention (log-retention.ts) from this host's tree: members,
// replay/sync links, peer heartbeats and the local logfiles.
import { lstatSync } from 'node:fs';
import type { TreeStore } from '../../common/tree/store.js';
import { globalPaths, resPaths, resourceDir } from '../../common/tree/paths.js';
import { LOG_NAME } from '../../common/tree/log-names.js';
import { isValidIdentifier } from '../../common/tree/names.js';
import type { RetentionInput, RetentionLogfile } from './log-retention.js';
import { rethrowInvariant } from '../../common/util/assert.js';

function suffixed(names: string[], prefix: string): string[] {
  return names.filter((n) => n.startsWith(prefix) && isValidIdentifier(n.slice(prefix.length))).map((n) => n.slice(prefix.length));
}

export function readRetentionInput(tree: TreeStore, res: string, self: string, windowS: number, force: boolean, nowMs = Date.now()): RetentionInput {
  const dir = resourceDir(res);
  const names = tree.list(dir);
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
  const logfiles: RetentionLogfile[] = [];
  for (const name of names) {
    const m = LOG_NAME.exec(name);
    if (!m) continue;
    try {
      const st = lstatSync(tree.abs(`${dir}/${name}`));
      if (st.isFile()) logfiles.push({ seq: Number(m[1]), origin: m[2]!, name, sizeBytes: st.size, mtimeMs: st.mtimeMs });
    } catch { /* deleted concurrently */ }
  }
  return { members, replay, syncing, syncpos, heartbeatAgeS, self, windowS, logfiles, nowMs, force };
}
