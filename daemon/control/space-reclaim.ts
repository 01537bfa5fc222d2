// A secondary at space level 2 or more frees /mars by deleting its local copies of logfiles it
// has completely replayed (decide-emergency.ts `replayedCopies`). The files are unlinked, not
// tombstoned: a tombstone would propagate and delete every member's copy, including the
// origin's, which other replicas may still need.
import { unlinkSync } from 'node:fs';
import type { TreeStore } from '../../common/tree/store.js';
import { resourceDir } from '../../common/tree/paths.js';
import { listLogfiles, readReplayLink } from '../../common/resource/links.js';
import { replayedCopies } from './decide-emergency.js';
import { failStopOnInvariant } from '../../common/util/assert.js';

/** Delete this host's replayed copies of foreign logfiles of `res`; returns their names. */
export function deleteReplayedCopies(tree: TreeStore, res: string, host: string, log: (level: 'info' | 'warn', msg: string) => void): string[] {
  const replay = readReplayLink(tree, res, host);
  const victims = replayedCopies(host, replay?.seq, listLogfiles(tree, res));
  const deleted: string[] = [];
  for (const v of victims) {
    try {
      unlinkSync(tree.abs(`${resourceDir(res)}/${v.name}`));
      deleted.push(v.name);
    } catch (err) {
      failStopOnInvariant(err);
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log('warn', `${res}: cannot delete the replayed copy ${v.name}: ${(err as Error).message}`);
    }
  }
  // The directory changed behind the store: drop its cached listing, or a read later in the
  // same pass (the control round reads in one batch) would still list the deleted copies.
  if (deleted.length > 0) tree.changed(resourceDir(res));
  if (deleted.length > 0) {
    log('info', `${res}: /mars space low: deleted ${deleted.length} replayed logfile cop${deleted.length === 1 ? 'y' : 'ies'} (${deleted.join(', ')})`);
  }
  return deleted;
}
