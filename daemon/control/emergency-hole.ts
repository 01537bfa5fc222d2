// The links a primary writes when it enters emergency mode (the MARS user manual: space levels and emergency mode,
// `make_log_finalize`): the logfile that ended gets its final versionlink, a hole of 10
// numbers follows (a zero versionlink `version-H-HOST` and no logfile H), and the empty logfile
// H+1 is where logging resumes. Secondaries replay up to the end of the last complete logfile,
// see a logfile number that is not the next one, and stop there with replay-code -61: a
// consistent, outdated disk that needs a re-sync.
//
// Written while no unlogged write has reached the disk yet (EmergencyBackend.onEnter), the
// replay link first and durably: from then on a crash recovery never replays the ended logfile
// over unlogged writes (with the logfile after the hole missing, recovery simply starts the
// next one), and `log-delete` may free the ended logfile once no replica needs it. Every step is
// idempotent, so a failed attempt (a /mars too full even for a link) can simply be repeated.
import { TREE_FILE_MODE } from '../../common/tree/modes.js';
import { closeSync, constants as fsc, openSync, statSync } from 'node:fs';
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths, resourceDir } from '../../common/tree/paths.js';
import { ZERO_DIGEST } from '../../common/log/links.js';
import { logName } from '../../common/tree/log-names.js';
import { listLogfiles, raiseMaxnr, writeReplayLink, writeVersionLink } from '../../common/resource/links.js';
import { holeNumbers } from './decide-emergency.js';

export interface Hole {
  /** the logfile that ended */
  endedSeq: number;
  endPos: number;
  /** the zero versionlink's number: no logfile has it */
  holeSeq: number;
  /** the empty logfile where logging resumes */
  nextSeq: number;
}

/** Where the hole goes: above every logfile number used so far. */
export function planHole(tree: TreeStore, res: string, ended: { seq: number; endPos: number }): Hole {
  const highest = Math.max(
    listLogfiles(tree, res).reduce((m, l) => Math.max(m, l.seq), 0),
    Number(tree.value(resPaths.maxnr(res)) ?? '0') || 0,
  );
  const { holeSeq, nextSeq } = holeNumbers(ended.seq, highest);
  return { endedSeq: ended.seq, endPos: ended.endPos, holeSeq, nextSeq };
}

export function writeHole(tree: TreeStore, res: string, host: string, hole: Hole): void {
  writeReplayLink(tree, res, host, { seq: hole.nextSeq, origin: host, minPos: 0, len: 0 }, true);
  writeVersionLink(tree, res, host, hole.endedSeq, host, hole.endPos, true);
  // An empty next logfile made just before (log-rotate, rotation by size) was never written
  // and would look like the regular successor to the secondaries: they would wait for it
  // instead of stopping at the hole. The tombstone removes it, and any empty copy, everywhere.
  for (const l of listLogfiles(tree, res)) {
    if (l.origin !== host || l.seq <= hole.endedSeq || l.seq >= hole.holeSeq) continue;
    if (statSync(tree.abs(`${resourceDir(res)}/${l.name}`)).size === 0) tree.remove(`${resourceDir(res)}/${l.name}`);
  }
  tree.write(resPaths.version(res, hole.holeSeq, host), `${ZERO_DIGEST},${logName(hole.holeSeq, host)},0:`, { durable: true, onlyIfChanged: true });
  try {
    closeSync(openSync(tree.abs(resPaths.log(res, hole.nextSeq, host)), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, TREE_FILE_MODE));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  tree.fsyncDir(resourceDir(res));
  // The version chain goes on from the zero link, as after a new resource: a joining replica
  // copies these two links (join-resource needs them even while logging is still stopped).
  writeVersionLink(tree, res, host, hole.nextSeq, host, 0, true);
  raiseMaxnr(tree, res, hole.nextSeq);
}
