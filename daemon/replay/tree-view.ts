// The replayer's input from the /mars tree (the one place the replayer reads it): its replay
// link, the local logfiles and the versionlinks from the replay link's number - 1 on, who
// is the designated primary, and the content mismatch it keeps (content-mismatch-HOST).
// decideReplayStep (switchover.ts) decides on it.
import { lstatSync } from 'node:fs';
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths, resourceDir } from '../../common/tree/paths.js';
import { LOG_NAME, VERSION_NAME } from '../../common/tree/log-names.js';
import { readReplayLink } from '../../common/resource/links.js';
import type { LocalLogfile, ReplayInput, VersionLinkEntry } from './switchover.js';
import { parseContentMismatch } from './content-check.js';

/** Everything decideReplayStep needs except the replayer's own memory of the last scan. */
export type ReplayTreeView = Omit<ReplayInput, 'scan'>;

/** Read the decision's input from the /mars tree (the one place the replayer reads it). */
export function readReplayTreeView(tree: TreeStore, res: string, host: string): ReplayTreeView {
  const replay = readReplayLink(tree, res, host);
  const dir = resourceDir(res);
  const firstVersionSeq = replay ? replay.seq - 1 : 0;
  const logfiles: LocalLogfile[] = [];
  const versionLinks: VersionLinkEntry[] = [];
  for (const name of tree.list(dir)) {
    const log = LOG_NAME.exec(name);
    if (log) {
      try {
        const st = lstatSync(tree.abs(`${dir}/${name}`));
        if (st.isFile()) logfiles.push({ seq: Number(log[1]), origin: log[2]!, sizeBytes: st.size });
      } catch { /* deleted concurrently */ }
      continue;
    }
    const version = VERSION_NAME.exec(name);
    if (version && Number(version[1]) >= firstVersionSeq) {
      const value = tree.value(`${dir}/${name}`);
      if (value !== undefined) versionLinks.push({ seq: Number(version[1]), host: version[2]!, value });
    }
  }
  const primary = tree.value(resPaths.primary(res));
  const attached = tree.value(resPaths.todo(res, host, 'attach')) === '1';
  const keptValue = tree.value(resPaths.contentMismatch(res, host));
  const keptMismatch = keptValue === undefined ? undefined : parseContentMismatch(keptValue) ?? 'malformed';
  return {
    host, replay, logfiles, versionLinks, keptMismatch,
    designatedPrimary: primary,
    isDesignatedPrimary: primary === host && attached,
  };
}
