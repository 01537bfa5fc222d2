// Value formats of the two central symlinks of a resource (the MARS user manual: the replay link and versionlink formats):
//   replay-HOST        -> log-SEQ-ORIGIN,MINPOS,LEN
//   version-SEQ-HOST   -> DIGEST,log-SEQ-ORIGIN,LOGPOS:PREV
// and the logfile name log-SEQ-ORIGIN (SEQ = 9 decimal digits).
//
// Values arrive from disk and from peers, so parsing is strict: exactly the canonical form
// we write (decimal numbers without sign or leading zeros, safe integers only, origin names
// that cannot form a path). parse* functions return undefined on bad input; the tryParse*
// variants say why. They never throw on bad input. Formatting functions assert their
// inputs, since a bad value there is a bug in our code.
import { createHash } from 'node:crypto';
import { assert } from '../util/assert.js';
import { isContentDigest } from './content-digest.js';
import { isValidOrigin, logName, MAX_LOG_SEQ, parseLogName, tryParseLogName, type ParseResult } from '../tree/log-names.js';

export const DIGEST_HEX_CHARS = 32;
export const ZERO_DIGEST = '0'.repeat(DIGEST_HEX_CHARS);

export interface ReplayLink {
  seq: number;
  origin: string;
  minPos: number; // bytes of the logfile known to be applied
  len: number; // bytes after minPos that may be partially applied
}

export interface VersionLink {
  digest: string; // 32 lowercase hex chars
  seq: number;
  origin: string;
  logPos: number; // logfile length in bytes as known/applied by the link's host
  prev: string; // chain prefix of the previous versionlink ("" when there is none)
}

export function formatReplayLink(link: ReplayLink): string {
  assertPosition(link.minPos, 'replay MINPOS');
  assertPosition(link.len, 'replay LEN');
  return `${logName(link.seq, link.origin)},${link.minPos},${link.len}`;
}

export function tryParseReplayLink(value: string): ParseResult<ReplayLink> {
  const parts = value.split(',');
  if (parts.length !== 3) return fail(`replay link ${show(value)} must have 3 comma-separated fields: log-SEQ-ORIGIN,MINPOS,LEN`);
  const name = tryParseLogName(parts[0]!);
  if (!name.ok) return fail(`replay link ${show(value)}: ${name.reason}`);
  const minPos = parsePosition(parts[1]!);
  if (minPos === undefined) return fail(`replay link ${show(value)}: MINPOS ${show(parts[1]!)} is not a non-negative safe integer`);
  const len = parsePosition(parts[2]!);
  if (len === undefined) return fail(`replay link ${show(value)}: LEN ${show(parts[2]!)} is not a non-negative safe integer`);
  return { ok: true, value: { seq: name.value.seq, origin: name.value.origin, minPos, len } };
}

export function parseReplayLink(value: string): ReplayLink | undefined {
  const r = tryParseReplayLink(value);
  return r.ok ? r.value : undefined;
}

// Order of replay progress: logfile sequence number, then MINPOS (MARS compare_replaylinks).
export function compareReplayLinks(a: ReplayLink, b: ReplayLink): number {
  if (a.seq !== b.seq) return a.seq < b.seq ? -1 : 1;
  if (a.minPos !== b.minPos) return a.minPos < b.minPos ? -1 : 1;
  return 0;
}

export function formatVersionLink(link: VersionLink): string {
  assert(isDigest(link.digest), `versionlink digest ${show(link.digest)} is not 32 lowercase hex chars`);
  assertPosition(link.logPos, 'versionlink LOGPOS');
  assert(link.prev === '' || parseChainPrefix(link.prev) !== undefined, `versionlink PREV ${show(link.prev)} is malformed`);
  return `${link.digest},${logName(link.seq, link.origin)},${link.logPos}:${link.prev}`;
}

/**
 * Parsed versionlinks by value (issue 11: an idle replayer parsed the same few links a dozen
 * times per tick). Parsing is a pure function of the string, so a remembered result is the
 * result; results are frozen, as every caller gets the same object. Bounded: when full it is
 * emptied (the links in use are parsed again once).
 */
const parsedVersions = new Map<string, ParseResult<VersionLink>>();
export const PARSED_VERSIONS_MAX = 4096;

export function tryParseVersionLink(value: string): ParseResult<VersionLink> {
  let r = parsedVersions.get(value);
  if (r === undefined) {
    r = parseVersionLinkValue(value);
    if (r.ok) Object.freeze(r.value);
    Object.freeze(r);
    if (parsedVersions.size >= PARSED_VERSIONS_MAX) parsedVersions.clear();
    parsedVersions.set(value, r);
  }
  return r;
}

function parseVersionLinkValue(value: string): ParseResult<VersionLink> {
  const colon = value.indexOf(':');
  if (colon < 0) return fail(`versionlink ${show(value)} has no ':'`);
  const head = parseChainPrefix(value.slice(0, colon));
  if (head === undefined) return fail(`versionlink ${show(value)}: ${show(value.slice(0, colon))} is not DIGEST,log-SEQ-ORIGIN,LOGPOS`);
  const prev = value.slice(colon + 1);
  if (prev !== '' && parseChainPrefix(prev) === undefined) return fail(`versionlink ${show(value)}: PREV ${show(prev)} is neither empty nor DIGEST,log-SEQ-ORIGIN,LOGPOS`);
  return { ok: true, value: { ...head, prev } };
}

export function parseVersionLink(value: string): VersionLink | undefined {
  const r = tryParseVersionLink(value);
  return r.ok ? r.value : undefined;
}

// The part before the first ':' ("DIGEST,log-SEQ-ORIGIN,LOGPOS"): what the next link
// stores as PREV. Throws when the value has no ':' (not a versionlink at all).
export function versionChainPrefix(value: string): string {
  const colon = value.indexOf(':');
  if (colon < 0) throw new Error(`versionlink ${show(value)} has no ':'`);
  return value.slice(0, colon);
}

// The versionlink for logfile `seq` of `origin`, `logPos` bytes long, whose bytes [0, logPos)
// have the content digest `contentDigest` (SHA-256 hex, common/log/content-digest.ts), chained
// to the full value of the previous versionlink ('' when there is none). The digest covers the
// content and the whole previous value, so equal links on two hosts prove an identical history:
// the same logfiles, the same lengths and the same bytes.
// Throws when prevFullValue is not empty and not a valid versionlink: extending a broken
// chain would hide exactly the divergence the chain exists to detect.
export function nextVersionLink(prevFullValue: string, seq: number, origin: string, logPos: number, contentDigest: string): string {
  if (prevFullValue !== '') {
    const prev = tryParseVersionLink(prevFullValue);
    if (!prev.ok) throw new Error(`cannot extend the version chain: ${prev.reason}`);
  }
  assertPosition(logPos, 'versionlink LOGPOS');
  assert(isValidOrigin(origin), `invalid origin host name ${show(origin)}`);
  assert(isContentDigest(contentDigest), `content digest ${show(contentDigest)} is not 64 lowercase hex chars`);
  const digest = versionDigest(`${seq},${origin},${logPos},${contentDigest}:${prevFullValue}`);
  const prev = prevFullValue === '' ? '' : versionChainPrefix(prevFullValue);
  return formatVersionLink({ digest, seq, origin, logPos, prev });
}

// MD5 (lowercase hex) of the ASCII digest input; exported for tests and diagnostics.
export function versionDigest(input: string): string {
  return createHash('md5').update(input, 'latin1').digest('hex');
}

// The fake links marsadm create-resource writes for a new resource starting at logfile
// `seq` on `host`: version-(seq-1) and version-seq, both with zero digests.
export function initialVersionLinks(seq: number, host: string): { previous: { seq: number; value: string }; current: { seq: number; value: string } } {
  assert(Number.isInteger(seq) && seq >= 1 && seq <= MAX_LOG_SEQ, `bad initial log sequence number ${seq}`);
  const previousPrefix = `${ZERO_DIGEST},${logName(seq - 1, host)},0`;
  return {
    previous: { seq: seq - 1, value: `${previousPrefix}:` },
    current: { seq, value: `${ZERO_DIGEST},${logName(seq, host)},0:${previousPrefix}` },
  };
}

function parseChainPrefix(text: string): Omit<VersionLink, 'prev'> | undefined {
  const parts = text.split(',');
  if (parts.length !== 3 || !isDigest(parts[0]!)) return undefined;
  const name = parseLogName(parts[1]!);
  const logPos = parsePosition(parts[2]!);
  if (name === undefined || logPos === undefined) return undefined;
  return { digest: parts[0]!, seq: name.seq, origin: name.origin, logPos };
}

function isDigest(text: string): boolean {
  return /^[0-9a-f]{32}$/.test(text);
}

// Canonical non-negative decimal: "0" or no leading zero, and a safe integer.
function parsePosition(text: string): number | undefined {
  if (!/^(0|[1-9][0-9]{0,15})$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

function assertPosition(n: number, what: string): void {
  assert(Number.isSafeInteger(n) && n >= 0, `${what} ${n} is not a non-negative safe integer`);
}

function fail<T>(reason: string): ParseResult<T> {
  return { ok: false, reason };
}

function show(text: string): string {
  return JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}...` : text);
}
