// The content rule of the secondary's replay (pure, part of decideReplayStep): where the
// origin's versionlink names the replayed position and continues from the same PREV as ours,
// the two links cover the same logfile bytes, so they must be equal. A difference means the
// local copy's bytes differ from the origin's: a damaged or forged copy whose records passed
// their checksums and were applied. The replay stops there and this host never writes a
// versionlink equal to the origin's (docs/tree.md "History chain").
//
// The stop is kept: the replayer writes it to the local link content-mismatch-HOST
// (`log-SEQ-ORIGIN,POS`), and while the replay link stays in that logfile at or beyond POS the
// decision is that stop, also after a restart and once the origin's versionlink has moved past
// POS (then the comparison above no longer sees the difference). invalidate removes the link.
import { tryParseVersionLink, type ReplayLink, type VersionLink } from '../../common/log/links.js';
import { LOG_NAME, logName, versionName } from '../../common/tree/log-names.js';
import { REPLAY_STOP_CODE, type ContentMismatch, type ReplayInput, type ReplayStep } from './replay-step.js';

/** The value of content-mismatch-HOST: `log-SEQ-ORIGIN,POS`. */
export function formatContentMismatch(m: ContentMismatch): string {
  return `${logName(m.seq, m.origin)},${m.pos}`;
}

/** Parse the value of content-mismatch-HOST; undefined when malformed. */
export function parseContentMismatch(value: string): ContentMismatch | undefined {
  const comma = value.lastIndexOf(',');
  if (comma < 0) return undefined;
  const name = LOG_NAME.exec(value.slice(0, comma));
  const posText = value.slice(comma + 1);
  if (!name || name[0].length !== comma || !/^(0|[1-9]\d{0,15})$/.test(posText)) return undefined;
  const pos = Number(posText);
  if (!Number.isSafeInteger(pos)) return undefined;
  return { seq: Number(name[1]), origin: name[2]!, pos };
}

export function sameMismatch(a: ContentMismatch | 'malformed' | undefined, b: ContentMismatch | undefined): boolean {
  return a !== undefined && a !== 'malformed' && b !== undefined && a.seq === b.seq && a.origin === b.origin && a.pos === b.pos;
}

/** A kept mismatch holds while replay stays in its logfile at or beyond its position (invalidate moves it back). */
export function keptMismatchHolds(link: ReplayLink | undefined, m: ContentMismatch): boolean {
  return link !== undefined && link.seq === m.seq && link.origin === m.origin && link.minPos >= m.pos;
}

/**
 * The stop for a kept mismatch, or undefined when none holds. `current` is what the content
 * check says now: while it still sees the same mismatch, its message (with both links) is kept.
 */
export function keptMismatchStep(v: ReplayInput, link: ReplayLink, current: ReplayStep | undefined): ReplayStep | undefined {
  const m = v.keptMismatch;
  if (m === undefined) return undefined;
  if (m === 'malformed') {
    return {
      kind: 'stop', code: REPLAY_STOP_CODE.EINVAL, refetch: false,
      reason: `content-mismatch-${v.host} is malformed: a content mismatch was found here earlier, but where is unknown; replay stays stopped. Run "marsadm invalidate" on this host to resynchronise`,
    };
  }
  if (!keptMismatchHolds(link, m)) return undefined;
  if (current?.kind === 'stop' && sameMismatch(m, current.contentMismatch)) return current;
  const file = logName(m.seq, m.origin);
  const own = v.versionLinks.find((e) => e.seq === m.seq && e.host === v.host)?.value;
  return {
    kind: 'stop', code: REPLAY_STOP_CODE.EBADMSG, refetch: false, file, contentMismatch: m,
    reason: `content mismatch in ${file} at offset ${m.pos}: split brain or damaged copy: the bytes [0, ${m.pos}) of the local copy differed from the origin's `
      + `when its versionlink named this position (own ${versionName(m.seq, v.host)} is ${own ?? 'missing'}; kept in content-mismatch-${v.host}) and were applied to this disk. `
      + `Replay stays at offset ${m.pos}; run "marsadm invalidate" on this host to resynchronise`,
  };
}

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
