// The links a running primary keeps current with every status update: its replay link (where
// writeback stands) and its own versionlink of the logfile it writes (how far it is durable).
// Issue 11: an idle primary publishes every round, and writing both links unchanged cost a
// write's lstat and readlink each and, for the versionlink, computing its value (a digest
// chained over the previous link and the logfile's bytes) at every round.
//
// What is skipped, and why that is sound: a link is written only when its value differs from
// the one in the tree (the cached listing, common/tree/dir-cache.ts), which is what the write's
// onlyIfChanged would decide after its own lstat and readlink, so nothing is written (nor
// fsync'ed) that was not before. The versionlink's value is a function of its number, its
// LOGPOS, the previous versionlink's value and the logfile's bytes up to LOGPOS, which the
// logger only appends to: while the number, LOGPOS and the previous link are those of the
// last computation and the tree still holds its result, computing it again would give the
// same value.
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths } from '../../common/tree/paths.js';
import { formatReplayLink } from '../../common/log/links.js';
import { readReplayLink, writeReplayLink, writeVersionLink } from '../../common/resource/links.js';
import type { ReplayPosition } from '../logger/transaction-logger.js';

export class PrimaryLinks {
  /** the versionlink written or found last, with what its value was computed from */
  private version: { seq: number; logPos: number; prev: string | undefined; value: string } | undefined;
  /** versionlink values computed (for tests) */
  computed = 0;

  constructor(private readonly tree: TreeStore, private readonly res: string, private readonly host: string) {}

  /** Bring replay-HOST to `pos` and version-SEQ-HOST to `logPos` of logfile `seq` (own logfile). */
  publish(pos: ReplayPosition, seq: number, logPos: number, durable: boolean): void {
    const { tree, res, host } = this;
    const replay = { seq: pos.seq, origin: host, minPos: pos.minPos, len: pos.lenBytes };
    if (tree.value(resPaths.replay(res, host)) !== formatReplayLink(replay)) {
      const seqChanged = readReplayLink(tree, res, host)?.seq !== pos.seq;
      writeReplayLink(tree, res, host, replay, durable || seqChanged);
    }
    const prev = tree.value(resPaths.version(res, seq - 1, host));
    const last = this.version;
    if (last !== undefined && last.seq === seq && last.logPos === logPos && last.prev === prev
      && tree.value(resPaths.version(res, seq, host)) === last.value) return;
    this.computed++;
    const value = writeVersionLink(tree, res, host, seq, host, logPos, durable);
    this.version = { seq, logPos, prev, value };
  }
}
