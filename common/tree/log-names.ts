// The names MARS gives numbered things inside a resource directory, formatted and parsed in
// this one place (the MARS user manual: /mars naming):
//   log-SEQ-ORIGIN       a transaction logfile, written by ORIGIN
//   version-SEQ-HOST     HOST's versionlink for logfile number SEQ
// SEQ is exactly 9 decimal digits (%09d), so names sort by number. ORIGIN and HOST contain no
// '/', '.', ',' or ':': a name can neither escape a directory nor break the comma- and
// colon-separated link values that embed it (common/log/links.ts).
//
// Formatting asserts its inputs (a bad number or host here is a bug of ours); parsing never
// throws, because names arrive from directory listings and from peers.
import { assert } from '../util/assert.js';

export const SEQ_DIGITS = 9;
export const MAX_LOG_SEQ = 999_999_999; // %09d must stay 9 digits for names to sort and parse
export const ORIGIN_PATTERN = /^[A-Za-z0-9_][-A-Za-z0-9_]{0,62}$/;

const ORIGIN_SOURCE = '[A-Za-z0-9_][-A-Za-z0-9_]{0,62}';
/** `log-SEQ-ORIGIN` file names inside a resource directory: [1] SEQ, [2] ORIGIN. */
export const LOG_NAME = new RegExp(`^log-(\\d{${SEQ_DIGITS}})-(${ORIGIN_SOURCE})$`);
/** `version-SEQ-HOST` link names inside a resource directory: [1] SEQ, [2] HOST. */
export const VERSION_NAME = new RegExp(`^version-(\\d{${SEQ_DIGITS}})-(${ORIGIN_SOURCE})$`);

export type ParseResult<T> = { ok: true; value: T } | { ok: false; reason: string };

export interface LogName {
  seq: number;
  origin: string;
}

export function isValidOrigin(origin: string): boolean {
  return ORIGIN_PATTERN.test(origin);
}

/** SEQ as it appears in names: 9 digits with leading zeros. */
export function seqString(seq: number): string {
  assert(Number.isSafeInteger(seq) && seq >= 0 && seq <= MAX_LOG_SEQ, `log sequence number ${seq} outside 0..${MAX_LOG_SEQ}`);
  return String(seq).padStart(SEQ_DIGITS, '0');
}

export function logName(seq: number, origin: string): string {
  assert(isValidOrigin(origin), `invalid origin host name ${JSON.stringify(origin)}`);
  return `log-${seqString(seq)}-${origin}`;
}

export function versionName(seq: number, host: string): string {
  assert(isValidOrigin(host), `invalid host name ${JSON.stringify(host)}`);
  return `version-${seqString(seq)}-${host}`;
}

export function tryParseLogName(name: string): ParseResult<LogName> {
  const m = /^log-([0-9]{9})-(.*)$/s.exec(name);
  if (!m) return { ok: false, reason: `${show(name)} is not log-<9 digits>-<origin>` };
  const origin = m[2]!;
  if (!isValidOrigin(origin)) return { ok: false, reason: `${show(name)}: invalid origin host name ${show(origin)}` };
  return { ok: true, value: { seq: Number(m[1]), origin } };
}

export function parseLogName(name: string): LogName | undefined {
  const r = tryParseLogName(name);
  return r.ok ? r.value : undefined;
}

/** `version-SEQ-HOST` as { seq, host }, or undefined for any other name. */
export function parseVersionName(name: string): { seq: number; host: string } | undefined {
  const m = VERSION_NAME.exec(name);
  return m ? { seq: Number(m[1]), host: m[2]! } : undefined;
}

function show(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}...` : s);
}
