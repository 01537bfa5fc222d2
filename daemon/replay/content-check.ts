// The content rule of the secondary's replay (pure, part of decideReplayStep): where the
// origin's versionlink names the replayed position and continues from the same PREV as ours,
// the two links cover the same logfile bytes, so they must be equal. A difference means the
// local copy's bytes differ from the origin's: a damaged or forged copy whose records passed
// their checksums and were applied. The replay stops there (the replayer keeps that stop) and
// this host never writes a versionlink equal to the origin's (docs/tree.md "History chain").
import { tryParseVersionLink, type VersionLink } from '../../common/log/links.js';
import { logName, versionName } from '../../common/tree/log-names.js';
import { REPLAY_STOP_CODE, type ReplayInput, type ReplayStep } from './replay-step.js';

export function contentCheck(v: ReplayInput, S: number, O: string, pos: number, reference: { value: string; link: VersionLink } | undefined): ReplayStep | undefined {
  if (O === v.host || !reference || reference.link.origin !== O || reference.link.logPos !== pos) return undefined;
  const own = v.versionLinks.find((e) => e.seq === S && e.host === v.host)?.value;
  if (own === undefined || own === reference.value) return undefined;
  const ownLink = tryParseVersionLink(own);
  // A different PREV: the histories before logfile S differ, which the switchover rules and
  // the split-brain check report; here only the bytes of logfile S are in question.
  if (!ownLink.ok || ownLink.value.prev !== reference.link.prev || ownLink.value.logPos !== pos) return undefined;
  const file = logName(S, O);
  return {
    kind: 'stop', code: REPLAY_STOP_CODE.EBADMSG, refetch: false, file, contentMismatch: { seq: S, origin: O, pos },
    reason: `content mismatch in ${file} at offset ${pos}: split brain or damaged copy: the bytes [0, ${pos}) of the local copy differ from the origin's `
      + `(own ${versionName(S, v.host)} is ${own}, the origin's is ${reference.value}) and were applied to this disk. `
      + `Replay stays at offset ${pos}; run "marsadm invalidate" on this host to resynchronise`,
  };
}
