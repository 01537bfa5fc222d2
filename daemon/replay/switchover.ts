// What the secondary's replayer does next, as a pure function of what it knows (the MARS user
// manual: replay; replaying in order): apply more bytes of the current logfile, wait (for the fetcher, for the
// origin's versionlinks), switch to the next logfile, or stop with a MARS-style negative code.
// No I/O here: the replayer (replayer.ts) gathers the input and executes the step, so every
// rule below can be tested tick by tick without files.
//
// Why the rules are strict (docs/design.md §3.4, §3.7): replay only ever applies a verified prefix of
// the origin's history, so it stops in front of a defect, a torn record that the origin says is
// complete, a duplicate logfile number, a hole in the numbering and a version chain mismatch.
// Wherever it stops, the disk equals the primary's disk after some prefix of its writes.
//
// Switchover from logfile SEQ (origin O) to SEQ+1 (origin O') needs MARS's conditions
// (`is_switchover_possible`), with the values (not the string lengths) of positions compared:
//   1. exactly one logfile numbered SEQ+1                       (else stop: split brain)
//   2. numbers contiguous                                       (else stop: hole)
//   3. own version-SEQ-HOST identical to version-SEQ-O         (else stop: chain mismatch)
//   4. version-(SEQ+1)-O' exists                                (else wait; a designated primary skips this)
//   5. replayed end == LOGPOS of version-SEQ-O                  (else wait for the fetcher / stop: beyond it)
//   6. PREV of version-(SEQ+1)-O' == chain prefix of own version-SEQ-HOST (else stop: chain mismatch)
// MARS waits on a failing condition 3 because its versionlink lags the replay; here the own
// versionlink is brought up to the replay link first ('record-version'), so when both describe
// the same LOGPOS and still differ, the histories before SEQ differ: that is a stop.
import { tryParseVersionLink, versionChainPrefix, type ReplayLink, type VersionLink } from '../../common/log/links.js';
import { logName, versionName } from '../../common/tree/log-names.js';
import { STOP_MEANING } from '../../common/log/scanner.js';
import { contentCheck, keptMismatchStep } from './content-check.js';

export * from './replay-step.js';
import { REPLAY_STOP_CODE, type ReplayInput, type ReplayStep, type LocalLogfile, type ScanOutcome } from './replay-step.js';


type LinkLookup = { state: 'missing' } | { state: 'malformed'; value: string; reason: string } | { state: 'ok'; value: string; link: VersionLink };

export function decideReplayStep(v: ReplayInput): ReplayStep {
  const link = v.replay;
  if (!link) {
    return stop(REPLAY_STOP_CODE.EINVAL, `replay-${v.host} is missing or malformed; replay cannot start (join-resource or invalidate writes it)`);
  }
  const S = link.seq;
  const O = link.origin;
  const file = logName(S, O);
  const cur = v.logfiles.find((l) => l.seq === S && l.origin === O);
  const next = successorOf(v, S);
  const originLink = referenceLink(v, S, O, next);
  const originLen = originLink.state === 'ok' ? originLink.link.logPos : undefined;
  const final = isFinal(v, S, next);

  // A crash in the middle of a batch left [MINPOS, MINPOS+LEN) possibly half applied: re-apply
  // all of it (idempotent) before anything else, or the disk is not a prefix state.
  if (link.len > 0) return repairStep(v, link, cur, originLen, final);
  const pos = link.minPos;

  // A content mismatch found earlier (content-check.ts) holds until invalidate moves replay back.
  const checked = contentCheck(v, S, O, pos, originLink.state === 'ok' ? originLink : undefined);
  const kept = keptMismatchStep(v, link, checked);
  if (kept) return kept;

  // The own versionlink always describes the replay link, so conditions 3 and 6 compare the
  // real replayed history.
  const versionStep = ownVersionStep(v, S, O, pos) ?? checked;
  if (versionStep) return versionStep;

  if (!cur) {
    if (pos > 0) {
      return stop(REPLAY_STOP_CODE.ENOENT, `logfile ${file} is missing, but ${pos} bytes of it were replayed: it must be fetched again`, true, file);
    }
    return wait(`logfile ${file} not yet present (the fetcher has not started it)`, false);
  }
  if (final && originLen !== undefined && pos > originLen) {
    return stop(REPLAY_STOP_CODE.EPROTO, `replayed ${pos} bytes of ${file}, but its origin finished it at ${originLen} bytes: this replica holds writes the origin's history lacks (split brain?)`);
  }
  if (cur.sizeBytes < pos) {
    return wait(`the local copy of ${file} has ${cur.sizeBytes} bytes, less than the replayed ${pos} (being fetched again?)`, false);
  }

  // Never read past the origin's final length: bytes beyond it are not part of its history.
  const limit = final && originLen !== undefined ? Math.min(cur.sizeBytes, originLen) : cur.sizeBytes;
  const scan = v.scan && v.scan.endPos === pos ? v.scan : undefined;
  if (scan?.stopClass === 'defect') return defectStop(S, O, scan, originLen, final, '');
  const limitIsFinal = final && originLen !== undefined && limit === originLen;
  // Read again when the copy grew, or when a write request held back at its end turns out to
  // be where the origin finished the logfile (cut off by the origin's crash).
  if (limit > pos && (!scan || limit > scan.limitBytes || (scan.stopClass === 'incomplete-write' && limitIsFinal))) {
    return { kind: 'apply', seq: S, origin: O, fromPos: pos, toPos: limit, repair: false, final: limitIsFinal };
  }
  const atFinalEnd = final && originLen === pos;
  // At the final end a held request is not history (a forced failover ended the file before it).
  if (scan?.stopClass === 'incomplete-write' && !atFinalEnd) {
    return wait(`logfile ${file} not yet fetched further: the write request at offset ${pos} is incomplete in the local copy (${cur.sizeBytes} bytes); its records are applied together`, false);
  }
  if (scan?.stopClass === 'torn' && !atFinalEnd) {
    if (final && originLen !== undefined && cur.sizeBytes >= originLen) {
      return {
        kind: 'stop', code: REPLAY_STOP_CODE.EBADMSG, refetch: true, file,
        defect: { seq: S, origin: O, file, offset: pos, kind: scan.stopKind, detail: scan.detail },
        reason: `logfile ${file} ends inside a record at offset ${pos} (${scan.stopKind}: ${scan.detail}), but its origin finished it at ${originLen} bytes: the copy is damaged; replay stays at offset ${pos}, re-fetching ${file}`,
      };
    }
    const known = originLen === undefined ? 'the origin\'s length is not known yet' : `the origin has ${originLen} bytes`;
    return wait(`logfile ${file} not yet fetched further: incomplete record at offset ${pos} (local copy ${cur.sizeBytes} bytes, ${known})`, false);
  }
  return atEndOfFile(v, S, O, pos, cur, originLink, next);
}

/** The half-applied window [MINPOS, MINPOS+LEN) a crash left: re-apply it, or say why not yet. */
function repairStep(v: ReplayInput, link: ReplayLink, cur: LocalLogfile | undefined, originLen: number | undefined, final: boolean): ReplayStep {
  const file = logName(link.seq, link.origin);
  const windowEnd = link.minPos + link.len;
  if (v.scan && v.scan.stopClass === 'defect' && v.scan.endPos === link.minPos) {
    return defectStop(link.seq, link.origin, v.scan, originLen, final,
      `; the disk may hold half-applied writes of [${link.minPos}, ${windowEnd}) and stays inconsistent until the copy is repaired`);
  }
  if (!cur) {
    return stop(REPLAY_STOP_CODE.ENOENT, `logfile ${file} is missing, but replay-${v.host} names the half-applied window [${link.minPos}, ${windowEnd}) of it: the disk stays inconsistent until the logfile is fetched again`, true, file);
  }
  if (cur.sizeBytes < windowEnd) {
    return wait(`the local copy of ${file} has ${cur.sizeBytes} bytes, less than the end ${windowEnd} of the half-applied window: waiting for the fetcher before repairing`, false);
  }
  return { kind: 'apply', seq: link.seq, origin: link.origin, fromPos: link.minPos, toPos: windowEnd, repair: true, final: final && originLen === windowEnd };
}

/**
 * Own version-SEQ-HOST must describe the replay link before anything else happens (a crash
 * between the two writes leaves it behind): 'record-version', or a stop when the chain cannot be
 * extended. On the origin's own logfile, version-SEQ-HOST is the origin's link: written by the
 * logger only. "Describes" is checked on the fields (logfile, LOGPOS, PREV): the DIGEST needs
 * the bytes, which the replayer hashes when it writes the link.
 */
function ownVersionStep(v: ReplayInput, S: number, O: string, pos: number): ReplayStep | undefined {
  if (O === v.host) return undefined;
  const own = v.versionLinks.find((e) => e.seq === S && e.host === v.host)?.value;
  const prev = v.versionLinks.find((e) => e.seq === S - 1 && e.host === v.host)?.value ?? '';
  let prevPrefix = '';
  if (prev !== '') {
    const parsed = tryParseVersionLink(prev);
    if (!parsed.ok) {
      return stop(REPLAY_STOP_CODE.EINVAL, `own ${versionName(S - 1, v.host)} is malformed (cannot extend the version chain: ${parsed.reason}); the version chain cannot be extended`);
    }
    prevPrefix = versionChainPrefix(prev);
  }
  const ownLink = own === undefined ? undefined : tryParseVersionLink(own);
  const describes = ownLink?.ok === true && ownLink.value.seq === S && ownLink.value.origin === O
    && ownLink.value.logPos === pos && ownLink.value.prev === prevPrefix;
  return describes ? undefined : { kind: 'record-version', seq: S, origin: O, logPos: pos };
}

// Replay reached the end of what can be read of logfile S: switch, wait or stop.
function atEndOfFile(v: ReplayInput, S: number, O: string, pos: number, cur: LocalLogfile, originLink: LinkLookup, next: Successor): ReplayStep {
  const file = logName(S, O);
  const originVersion = versionName(S, O);
  const originLen = originLink.state === 'ok' ? originLink.link.logPos : undefined;

  if (next.origins.length >= 2) { // condition 1
    return stop(REPLAY_STOP_CODE.EEXIST, `split brain: two logfiles numbered ${S + 1} from ${next.origins.join(' and ')}; replay stays at the end of ${file} (${pos} bytes). Resolve it with "marsadm primary" on the host whose data wins and "marsadm invalidate" on the others`);
  }
  if (next.origins.length === 0) {
    if (next.higher !== undefined) { // condition 2: the origin moved on past a gap
      if (originLen === undefined) return wait(`waiting for ${originVersion} (${describeLink(originLink)}): the next logfile is number ${next.higher}, not ${S + 1}`, false);
      if (pos < originLen) return wait(`logfile ${file} not yet fetched completely: ${pos} of ${originLen} bytes replayed`, false);
      return stop(REPLAY_STOP_CODE.ENODATA, `hole in the logfile sequence after ${S} (emergency mode or deleted logfile): the next logfile is number ${next.higher}; the replica stays consistent at the end of ${file} (${pos} bytes). Run "marsadm invalidate" to resynchronise`);
    }
    if (originLen !== undefined && originLen > pos) {
      return wait(`logfile ${file} not yet fetched further: ${pos} of ${originLen} bytes replayed`, false);
    }
    return wait(`caught up: replayed all ${pos} bytes of ${file} fetched so far`, true);
  }

  const O2 = next.origins[0]!;
  const nextFile = logName(S + 1, O2);
  const nextVersionName = versionName(S + 1, O2);
  if (v.isDesignatedPrimary && O === v.host && O2 !== v.host) {
    return stop(REPLAY_STOP_CODE.EEXIST, `split brain: this host is the designated primary and wrote ${file}, but ${O2} wrote the next logfile ${nextFile}; a designated primary never continues from its own logfile into a foreign one`);
  }
  if (originLen === undefined) return wait(`waiting for ${originVersion} (${describeLink(originLink)}) before switching to ${nextFile}`, false);
  const nextLink = lookupVersion(v, S + 1, O2);
  if (pos < originLen) return wait(`logfile ${file} not yet fetched completely: ${pos} of ${originLen} bytes replayed`, false); // condition 5
  if (nextLink.state === 'missing' && !v.isDesignatedPrimary) { // condition 4
    return wait(`waiting for ${nextVersionName}: the origin has not finished ${file} yet (${pos} bytes replayed)`, true);
  }
  if (nextLink.state === 'malformed') {
    return stop(REPLAY_STOP_CODE.EPROTO, `${nextVersionName} is malformed (${nextLink.reason}); cannot verify the version chain before ${nextFile}`);
  }
  if (pos !== originLen) {
    // Not final yet, so LOGPOS may be a stale view of a file the origin still writes.
    return wait(`replayed ${pos} bytes of ${file}, the origin's ${originVersion} says ${originLen}: waiting for it to catch up`, false);
  }
  // condition 3 (on the origin's own logfile the two links are the same link)
  const ownValue = O === v.host ? originLink.state === 'ok' ? originLink.value : undefined : v.versionLinks.find((e) => e.seq === S && e.host === v.host)?.value;
  if (ownValue === undefined || originLink.state !== 'ok') return wait(`waiting for own ${versionName(S, v.host)}`, false);
  if (ownValue !== originLink.value) {
    return stop(REPLAY_STOP_CODE.EPROTO, `version chain mismatch at ${S}: split brain? own ${versionName(S, v.host)} is ${ownValue}, the origin's ${originVersion} is ${originLink.value}: the histories before ${file} differ. The replica stays consistent at the end of ${file}`);
  }
  // condition 6
  if (nextLink.state === 'ok' && nextLink.link.prev !== versionChainPrefix(ownValue)) {
    return stop(REPLAY_STOP_CODE.EPROTO, `version chain mismatch at ${S + 1}: split brain? ${nextVersionName} continues from ${JSON.stringify(nextLink.link.prev)}, but this replica ended ${file} at ${JSON.stringify(versionChainPrefix(ownValue))}. The replica stays consistent at the end of ${file}`);
  }
  if (!v.logfiles.some((l) => l.seq === S + 1 && l.origin === O2)) {
    return wait(`next logfile ${nextFile} not yet present (the fetcher has not started it)`, false);
  }
  return { kind: 'switch', from: { seq: S, origin: O, endPos: pos }, to: { seq: S + 1, origin: O2 } };
}

/**
 * Bytes still to replay: the known length of the current logfile (the origin's LOGPOS or the
 * local size, whichever is larger) minus the replayed position, plus the known lengths of the
 * following logfiles while their numbering is unambiguous.
 */
export function replayRestBytes(v: ReplayInput): number {
  const link = v.replay;
  if (!link) return 0;
  let rest = Math.max(0, knownLength(v, link.seq, link.origin) - link.minPos);
  for (let seq = link.seq + 1; ; seq++) {
    const next = successorOf(v, seq - 1);
    if (next.origins.length !== 1) break;
    rest += knownLength(v, seq, next.origins[0]!);
  }
  return rest;
}

function knownLength(v: ReplayInput, seq: number, origin: string): number {
  const local = v.logfiles.find((l) => l.seq === seq && l.origin === origin)?.sizeBytes ?? 0;
  const link = lookupVersion(v, seq, origin);
  return Math.max(local, link.state === 'ok' ? link.link.logPos : 0);
}

interface Successor {
  /** origins of logfile SEQ+1: local logfiles and the origins' own versionlinks, sorted */
  origins: string[];
  /** the lowest number above SEQ+1 seen, when there is one */
  higher: number | undefined;
}

function successorOf(v: ReplayInput, S: number): Successor {
  const origins = new Set<string>();
  let higher: number | undefined;
  const see = (seq: number, origin: string) => {
    if (seq === S + 1) origins.add(origin);
    else if (seq > S + 1 && (higher === undefined || seq < higher)) higher = seq;
  };
  for (const l of v.logfiles) see(l.seq, l.origin);
  for (const e of v.versionLinks) {
    const parsed = tryParseVersionLink(e.value);
    // Only the origin's own link proves that the origin created that logfile: other
    // hosts' versionlinks name logfiles they replayed.
    if (parsed.ok && parsed.value.origin === e.host && parsed.value.seq === e.seq) see(e.seq, e.host);
  }
  return { origins: [...origins].sort(), higher };
}

// The origin will not append to logfile S any more: it wrote the successor's versionlink, or
// moved on past a gap. Only then is its LOGPOS the final length.
function isFinal(v: ReplayInput, S: number, next: Successor): boolean {
  if (next.origins.length === 0) return next.higher !== undefined;
  if (next.origins.length > 1) return false;
  const O2 = next.origins[0]!;
  if (lookupVersion(v, S + 1, O2).state === 'ok') return true;
  return v.isDesignatedPrimary && v.logfiles.some((l) => l.seq === S + 1 && l.origin === O2);
}

function lookupVersion(v: ReplayInput, seq: number, host: string): LinkLookup {
  const value = v.versionLinks.find((e) => e.seq === seq && e.host === host)?.value;
  if (value === undefined) return { state: 'missing' };
  const parsed = tryParseVersionLink(value);
  if (!parsed.ok) return { state: 'malformed', value, reason: parsed.reason };
  if (parsed.value.seq !== seq) return { state: 'malformed', value, reason: `it names logfile ${parsed.value.seq}, not ${seq}` };
  return { state: 'ok', value, link: parsed.value };
}

/**
 * The versionlink that says where logfile S ends in the history that goes on: the origin's own,
 * unless another host O2 started logfile S+1 (a handover, or a forced failover whose old primary
 * is gone): then O2's version-S-O2, because O2's chain (PREV of version-(S+1)-O2) continues from
 * there. After a planned handover both links are equal; after a forced failover the old
 * origin's bytes beyond O2's end are not part of the history.
 */
function referenceLink(v: ReplayInput, S: number, O: string, next: Successor): LinkLookup {
  if (next.origins.length === 1 && next.origins[0] !== O && next.origins[0] !== v.host) {
    const O2 = next.origins[0]!;
    if (lookupVersion(v, S + 1, O2).state === 'ok') {
      const theirs = lookupVersion(v, S, O2);
      if (theirs.state === 'ok' && theirs.link.origin === O) return theirs;
    }
  }
  return lookupVersion(v, S, O);
}

function describeLink(l: LinkLookup): string {
  return l.state === 'missing' ? 'not yet propagated here' : l.state === 'malformed' ? `malformed: ${l.reason}` : 'present';
}

function defectStop(S: number, O: string, scan: ScanOutcome, originLen: number | undefined, final: boolean, extra: string): ReplayStep {
  const file = logName(S, O);
  const confirmed = final || (originLen !== undefined && scan.endPos < originLen);
  const where = confirmed
    ? `inside the part its origin confirmed as written${originLen !== undefined ? ` (${originLen} bytes)` : ''}`
    : `at the end of the local copy, beyond what the origin has confirmed so far`;
  // A record that verified but names an impossible device range was copied faithfully:
  // fetching it again cannot help.
  const refetch = scan.stopKind !== 'bad-field';
  return {
    kind: 'stop', code: REPLAY_STOP_CODE.EBADMSG, refetch, file,
    defect: { seq: S, origin: O, file, offset: scan.endPos, kind: scan.stopKind, detail: scan.detail },
    reason: `defective logfile copy ${file} at offset ${scan.endPos}, ${where}: ${scan.stopKind} (${scan.detail}); ${STOP_MEANING[scan.stopKind]}. `
      + `Replay stays in front of it (everything before offset ${scan.endPos} is applied)${extra}`
      + (refetch ? `; re-fetching ${file} from offset 0` : '; fetching it again cannot help: check that the resource has the same size on every host'),
  };
}

function stop(code: number, reason: string, refetch = false, file?: string): ReplayStep {
  return file === undefined ? { kind: 'stop', code, reason, refetch } : { kind: 'stop', code, reason, refetch, file };
}

function wait(reason: string, caughtUp: boolean): ReplayStep {
  return { kind: 'wait', reason, caughtUp };
}

