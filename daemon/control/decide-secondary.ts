// Which secondary work should run for one resource on this host (the MARS user manual: fetching logfiles,
// §4.3, §5.1), as a pure function of the tree snapshot. A secondary opens its disk when
// attached; fetches while `connect` is on; syncs while `sync` is on and its syncstatus is
// below the size; replays while `allow-replay` is on and no sync is unfinished (sync and
// replay write the same disk: replay waits until the sync is through, then replays from the
// join point so the mixed-time image becomes consistent).
import type { ResourceSnapshot } from '../../common/resource/snapshot.js';

export interface SecondaryPlan {
  disk: boolean;
  fetch: boolean;
  sync: boolean;
  replay: boolean;
  /**
   * keep the replayer paused rather than stopped: after a crash it re-applies a half-applied
   * window first, so the disk is a consistent past state even while replay is switched off
   */
  repairOnly: boolean;
  /** why something wanted does not run (status), empty when all is as wanted */
  why: string;
}

export const NOTHING: SecondaryPlan = { disk: false, fetch: false, sync: false, replay: false, repairOnly: false, why: '' };

/**
 * `handover`: this host is the designated primary but still completes the previous primary's
 * history (decide-handover.ts): fetch and replay go on, a sync does not start.
 */
export function decideSecondary(s: ResourceSnapshot, host: string, opts: { handover?: string } = {}): SecondaryPlan {
  if (s.removed !== undefined) return { ...NOTHING, why: s.removed };
  if (s.dataPath === undefined || s.sizeBytes === undefined) return { ...NOTHING, why: 'not a member here' };
  if (s.designatedPrimary === host && opts.handover === undefined) return { ...NOTHING, why: 'designated primary here' };
  if (!s.todo.attach) return { ...NOTHING, why: 'detached' };
  if (s.replayLink === undefined) return { ...NOTHING, disk: true, why: 'no replay link (join-resource not finished)' };
  const syncDone = s.syncstatusBytes !== undefined && s.syncstatusBytes >= s.sizeBytes;
  const hasPrimary = s.designatedPrimary !== undefined;
  const sync = s.todo.sync && !syncDone && hasPrimary && opts.handover === undefined;
  const replay = s.todo['allow-replay'] && syncDone;
  const why = [
    opts.handover !== undefined ? `becoming primary: ${opts.handover}` : '',
    !s.todo.connect ? 'fetch paused' : '',
    !syncDone && !s.todo.sync ? 'sync paused' : '',
    !syncDone && !hasPrimary ? 'no designated primary to sync from' : '',
    !s.todo['allow-replay'] ? 'replay paused' : '',
    s.todo['allow-replay'] && !syncDone ? 'replay waits for the sync' : '',
  ].filter(Boolean).join('; ');
  return { disk: true, fetch: s.todo.connect, sync, replay, repairOnly: syncDone && !replay, why };
}
