// Helpers for the history-chain tests (docs/tree.md "History chain"): alter a fetched logfile
// copy so that replay accepts it (checksums recomputed), and read versionlinks.
import { closeSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import type { Test } from 'tap';
import type { MarsHost } from './cluster.js';
import { caughtUpWith, writeWorkload, type TestCluster } from './multi-host.js';
import {
  decodeHeader, decodeTrailer, encodeRecord, HDR_PAYLOAD_LEN, RECORD_HEADER_BYTES, RECORD_OVERHEAD_BYTES,
} from '../../common/log/record.js';

/** h's newest own versionlink in res (of the logfile its replay link names): its number and value. */
export function newestOwnVersion(h: MarsHost, res: string): { seq: string; value: string } | undefined {
  const replay = h.link(`resource-${res}/replay-${h.name}`);
  if (!replay) return undefined;
  const seq = replay.slice(4, 13);
  const value = h.link(`resource-${res}/version-${seq}-${h.name}`);
  return value === undefined ? undefined : { seq, value };
}

/** LOGPOS of a versionlink value. */
export const logPosOf = (value: string): number => Number(value.split(':')[0]!.split(',')[2]);

/**
 * Change one payload byte of the last record in the file and re-encode the record, so its
 * checksums are valid again: what an attacker with write access to the copy, or a corrupting
 * path that recomputes checksums, leaves behind. Returns the record's offset.
 */
export function forgeLastRecord(path: string): number {
  const bytes = readFileSync(path);
  let at = 0;
  let last = -1;
  while (at + RECORD_HEADER_BYTES <= bytes.length) {
    last = at;
    at += RECORD_OVERHEAD_BYTES + bytes.readInt16LE(at + HDR_PAYLOAD_LEN);
  }
  if (last < 0 || at !== bytes.length) throw new Error(`${path}: ${bytes.length} bytes do not end at a record boundary (${at})`);
  const h = decodeHeader(bytes, last);
  const payload = Buffer.from(bytes.subarray(last + RECORD_HEADER_BYTES, last + RECORD_HEADER_BYTES + h.payloadBytes));
  payload[0] ^= 0xff;
  const tr = decodeTrailer(bytes, last + RECORD_HEADER_BYTES + h.payloadBytes);
  const out = Buffer.alloc(RECORD_OVERHEAD_BYTES + h.payloadBytes);
  encodeRecord(out, 0, { devicePos: h.devicePos, code: h.code, stampSec: h.stampSec, stampNsec: h.stampNsec, seqNr: tr.seqNr, payload, flags: h.flags });
  const fd = openSync(path, 'r+');
  try { writeSync(fd, out, 0, out.length, last); } finally { closeSync(fd); }
  return last;
}

/**
 * The history-chain scenario up to the forgery: alpha writes, beta (replay paused) fetches all
 * of it, the last record of beta's copy is forged with valid checksums beyond beta's replay
 * position, and beta's replay is resumed. Returns the logfile number and alpha's LOGPOS.
 */
export async function forgeFetchedCopy(t: Test, c: TestCluster, res: string, sizeBytes: number): Promise<{ seq: string; end: number }> {
  const [alpha, beta] = [c.host('alpha'), c.host('beta')];
  await writeWorkload(alpha, res, sizeBytes, 10, 1, 2);
  await alpha.until('beta caught up', () => caughtUpWith(beta, alpha, res), 60_000, 50);
  await beta.marsadmOk(['pause-replay', res]);
  await beta.until('beta\'s replay paused', () => beta.actual(res, 'is-replaying') === '0', 30_000);
  await writeWorkload(alpha, res, sizeBytes, 20, 2, 2);
  let theirs: { seq: string; value: string } | undefined;
  const copy = () => `${beta.marsDir}/resource-${res}/log-${theirs!.seq}-alpha`;
  await alpha.until('beta fetched everything alpha logged', () => {
    theirs = newestOwnVersion(alpha, res);
    if (!theirs) return false;
    const logPos = logPosOf(theirs.value);
    let have = -1;
    try { have = statSync(copy()).size; } catch { /* not yet */ }
    return logPos === statSync(`${alpha.marsDir}/resource-${res}/log-${theirs.seq}-alpha`).size && have === logPos;
  }, 60_000, 50);
  const end = logPosOf(theirs!.value);
  const replayedBefore = Number((beta.link(`resource-${res}/replay-beta`) ?? '').split(',')[1]);
  const forgedAt = forgeLastRecord(copy());
  t.ok(forgedAt >= replayedBefore, `the forged record at ${forgedAt} is beyond beta's replay position ${replayedBefore}`);
  await beta.marsadmOk(['resume-replay', res]);
  return { seq: theirs!.seq, end };
}
