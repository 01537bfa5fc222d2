// The replayer's input from the /mars tree (the one place the replayer reads it): its replay
// link, the local logfiles from the replay link's number on and the versionlinks from that
// number - 1 on, who is the designated primary, and the content mismatch it keeps
// (content-mismatch-HOST). decideReplayStep (switchover.ts) decides on it.
//
// Cost (issue 11: this ran an lstat of every logfile of the resource at every tick, 500 ms, and
// was the largest part of an idle secondary's CPU): the names come from an index built once per
// listing object (common/tree/listing-index.ts), and only the logfiles numbered from the replay
// link's SEQ on are stat'ed, each at every tick. decideReplayStep looks at no other logfile:
// the replayed one (SEQ), its successor SEQ+1 and any higher number (hole, split brain, the
// bytes still to replay). While idle, SEQ is the newest number, so a tick costs the stat of
// the directory, of a todo directory and of one or two logfiles. Their sizes are stat'ed here
// and never taken from a cache: the fetcher appends to them and a re-fetch truncates one in
// place, neither of which changes the directory.
import { lstatSync } from 'node:fs';
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths, resourceDir } from '../../common/tree/paths.js';
import { firstAtOrAbove, listingIndex } from '../../common/tree/listing-index.js';
import { readReplayLink } from '../../common/resource/links.js';
import type { LocalLogfile, ReplayInput, VersionLinkEntry } from './switchover.js';
import { parseContentMismatch } from './content-check.js';

/** Everything decideReplayStep needs except the replayer's own memory of the last scan. */
export type ReplayTreeView = Omit<ReplayInput, 'scan'>;

/** lstat calls of logfiles made here (for tests and the cost model) */
export const treeViewStats = { lstats: 0 };

/** Read the decision's input from the /mars tree (the one place the replayer reads it). */
export function readReplayTreeView(tree: TreeStore, res: string, host: string): ReplayTreeView {
  // Each directory's cached listing is checked once for all the reads below.
  return tree.readBatch(() => readView(tree, res, host));
}

function readView(tree: TreeStore, res: string, host: string): ReplayTreeView {
  const replay = readReplayLink(tree, res, host);
  const dir = resourceDir(res);
  const logfiles: LocalLogfile[] = [];
  const versionLinks: VersionLinkEntry[] = [];
  const listing = tree.listing(dir);
  // Without a replay link the decision stops before it looks at any logfile.
  if (listing !== undefined && replay !== undefined) {
    const { logs, versions } = listingIndex(listing);
    for (let i = firstAtOrAbove(logs, replay.seq); i < logs.length; i++) {
      const l = logs[i]!;
      treeViewStats.lstats++;
      try {
        const st = lstatSync(tree.abs(`${dir}/${l.name}`));
        if (st.isFile()) logfiles.push({ seq: l.seq, origin: l.origin, sizeBytes: st.size });
      } catch { /* deleted concurrently */ }
    }
    for (let i = firstAtOrAbove(versions, replay.seq - 1); i < versions.length; i++) {
      const v = versions[i]!;
      tree.clock.observe(v.stampUs); // as tree.value would: a stamp read is a stamp seen
      versionLinks.push({ seq: v.seq, host: v.host, value: v.value });
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
