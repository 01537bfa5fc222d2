// The links a primary writes when it enters emergency mode (reference/mars.md §3.4,
// `make_log_finalize`): the logfile that ended gets its final versionlink, a hole of 10
// numbers follows (a zero versionlink `version-H-HOST` and no logfile H), and the empty logfile
// H+1 is where logging resumes. Secondaries replay up to the end of the last complete logfile,
// see a logfile number that is not the next one, and stop there with replay-code -61: a
// consistent, outdated disk that needs a re-sync.
//
// Written once, while no unlogged write has reached the disk yet (EmergencyBackend.onEnter).
// The replay link moves past the hole last and durably: from then on a crash recovery never
// replays the ended logfile over unlogged writes, and `log-delete` may free it once no replica
// needs it.
import { closeSync, constants as fsc, openSync } from 'node:fs';
import type { TreeStore } from '../tree/store.js';
import { resPaths, resourceDir } from '../tree/paths.js';
import { logName, ZERO_DIGEST } from '../log/links.js';
import { listLogfiles, raiseMaxnr, writeReplayLink, writeVersionLink } from './resource-links.js';
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

export function writeHole(tree: TreeStore, res: string, host: string, ended: { seq: number; endPos: number }): Hole {
  writeVersionLink(tree, res, host, ended.seq, host, ended.endPos, true);
  const highest = Math.max(
    listLogfiles(tree, res).reduce((m, l) => Math.max(m, l.seq), 0),
    Number(tree.value(resPaths.maxnr(res)) ?? '0') || 0,
  );
  const { holeSeq, nextSeq } = holeNumbers(ended.seq, highest);
  tree.write(resPaths.version(res, holeSeq, host), `${ZERO_DIGEST},${logName(holeSeq, host)},0:`, { durable: true });
  try {
    closeSync(openSync(tree.abs(resPaths.log(res, nextSeq, host)), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  tree.fsyncDir(resourceDir(res));
  // The version chain goes on from the zero link, as after a new resource: a joining replica
  // copies these two links (join-resource needs them even while logging is still stopped).
  writeVersionLink(tree, res, host, nextSeq, host, 0, true);
  raiseMaxnr(tree, res, nextSeq);
  writeReplayLink(tree, res, host, { seq: nextSeq, origin: host, minPos: 0, len: 0 }, true);
  return { endedSeq: ended.seq, endPos: ended.endPos, holeSeq, nextSeq };
}
