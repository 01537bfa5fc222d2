// Apply the records of one logfile to a data disk, in log order, verifying every record
// (docs/design.md §3.4): the scanner stops at the last good record; nothing after it is applied.
// Records are collected in a PendingIndex so overwrites coalesce and the disk gets sorted
// writes; the result is identical to applying record after record. Shared by primary crash
// recovery and the secondary's replayer.
//
// With `wholeWrites` (the replayer), a write request split into several records
// (RECORD_FLAG_MORE on all but its last) is applied whole or not at all: its records are held
// until its last one is read, reading is interrupted only between write requests, and endPos
// is always the end of a whole write request. So a replica whose replay stops anywhere holds a
// prefix of the origin's write requests, not of its pages (docs/design.md §3.3).
import { readLogBatches, type LogStop } from '../../common/log/scanner.js';
import { MAX_WHOLE_WRITE_LOG_BYTES, RecordCode } from '../../common/log/record.js';
import type { LogRecord } from '../../common/log/scan-stops.js';
import { PendingIndex, SECTOR_BYTES } from '../logger/pending-index.js';
import { writePages } from '../logger/writeback.js';
import type { DataDisk } from '../../common/disk/data-disk.js';
import { assert } from '../../common/util/assert.js';

const FLUSH_EVERY_BYTES = 64 << 20;

export interface ApplyResult {
  /**
   * end of the last applied record (a tolerable torn tail or a defect starts here; with
   * wholeWrites, a write request held back starts here)
   */
  endPos: number;
  /** with wholeWrites: bytes of verified records after endPos held back (an incomplete write request) */
  heldBytes: number;
  /**
   * Why reading stopped. When `interrupted`, reading stopped early at the record boundary
   * endPos on the caller's request, and stop is a 'clean-end' there.
   */
  stop: LogStop;
  interrupted: boolean;
  records: number;
  appliedBytes: number;
  /** seq_nr the record at endPos must carry (undefined: unknown) */
  nextSeqNr: number | undefined;
}

export interface ApplyOptions {
  path: string;
  seq: number;
  fromPos: number;
  /** stop here even if the file is longer (a fetcher's known durable end) */
  endPos?: number;
  disk: DataDisk;
  sizeBytes: number;
  onProgress?: (posBytes: number) => void;
  /** seq_nr of the record at fromPos, when the caller knows it (checked like every later one) */
  expectedSeqNr?: number;
  /**
   * Asked after each chunk of records: true stops reading there (a bounded batch, a pause).
   * Everything read so far is still written to the disk before applyLog returns.
   */
  shouldStop?: () => boolean;
  /**
   * Apply write requests whole (see above). The records of a write request still incomplete
   * where reading ends are held back, unless reading ended cleanly at `finalEndPos`: the
   * origin finished the logfile there, so a write request cut off by its crash is part of its
   * history as it stands. Without this option every verified record is applied (a primary's
   * recovery: its own disk takes whatever its log holds).
   */
  wholeWrites?: { finalEndPos: number | undefined };
  /**
   * Stop at the first end of a write request at or after this offset, as on request (a batch
   * limit that cuts no write request in two; `endPos` is the hard limit).
   */
  batchEndPos?: number;
}

export async function applyLog(o: ApplyOptions): Promise<ApplyResult> {
  const index = new PendingIndex();
  let records = 0;
  let appliedBytes = 0;
  let stop: LogStop | undefined;
  let interrupted = false;
  let stopAsked = false; // shouldStop said yes while a request was held: stop at its end
  let endPos = o.fromPos;
  let nextSeqNr = o.expectedSeqNr;
  /** verified records of a write request whose last record has not been read yet */
  const held: LogRecord[] = [];
  const flush = async () => {
    const batch = index.takeBatch(Number.MAX_SAFE_INTEGER);
    await writePages(o.disk, batch);
    index.completeBatch(batch);
  };
  const apply = (r: LogRecord) => {
    endPos = r.fileOffset + r.totalBytes;
    nextSeqNr = r.seqNr + 1;
    if (r.code === RecordCode.WriteOld) return;
    index.put(r.devicePos, r.deviceBytes, r.code === RecordCode.ZeroRange ? undefined : r.payload, { seq: o.seq, pos: r.fileOffset });
    records++;
    appliedBytes += r.deviceBytes;
  };
  const applyHeld = () => {
    for (const h of held) apply(h);
    held.length = 0;
  };
  outer: for await (const item of readLogBatches(o.path, o.fromPos, readOptionsOf(o))) {
    if (item.type === 'end') {
      stop = item.stop;
      break;
    }
    for (const r of item.records) {
      stop = outOfRange(r, o.sizeBytes);
      if (stop) break outer;
      if (o.wholeWrites && r.more) {
        held.push(r);
        stop = overlongRequest(held);
        if (stop) break outer;
        continue;
      }
      applyHeld();
      apply(r);
      if (stopAsked || (o.batchEndPos !== undefined && endPos >= o.batchEndPos)) {
        interrupted = true;
        stop = requestedStop(endPos, stopAsked ? 'stopped on request' : 'batch limit reached');
        break outer;
      }
    }
    if (index.bytesHeld >= FLUSH_EVERY_BYTES) await flush();
    o.onProgress?.(endPos);
    // Only between write requests: a held request is read to its end, and reading stops there
    // (above), not at a later chunk end that happens to fall between requests.
    if (!stopAsked && o.shouldStop?.()) stopAsked = true;
    if (stopAsked && held.length === 0) {
      interrupted = true; // leaving the loop closes the reader; endPos ends a complete record
      stop = requestedStop(endPos, 'stopped on request');
      break;
    }
  }
  if (!stop) throw new Error(`${o.path}: log reader ended without a stop reason`);
  // The origin's history ends inside this write request: it is applied as the origin left it.
  if (held.length > 0 && stop.kind === 'clean-end' && stop.offset === o.wholeWrites?.finalEndPos) applyHeld();
  const last = held[held.length - 1];
  const heldBytes = last === undefined ? 0 : last.fileOffset + last.totalBytes - endPos;
  await flush();
  assert(heldBytes === 0 || o.wholeWrites !== undefined, 'records held back without wholeWrites');
  return { endPos, heldBytes, stop, interrupted, records, appliedBytes, nextSeqNr };
}

function readOptionsOf(o: ApplyOptions): { endPos?: number; expectedSeqNr?: number } {
  return {
    ...(o.endPos === undefined ? {} : { endPos: o.endPos }),
    ...(o.expectedSeqNr === undefined ? {} : { expectedSeqNr: o.expectedSeqNr }),
  };
}

/** The stop reported when reading ends early at the record boundary endPos on the caller's request. */
function requestedStop(endPos: number, why: string): LogStop {
  return { kind: 'clean-end', torn: false, defect: false, offset: endPos, detail: `${why} at offset ${endPos}` };
}

/** The defect stop when a verified record cannot be applied to a device of sizeBytes, or undefined. */
function outOfRange(r: LogRecord, sizeBytes: number): LogStop | undefined {
  const problem = r.code === RecordCode.WriteOld ? undefined
    : r.devicePos + r.deviceBytes > sizeBytes ? `record ${r.seqNr} writes [${r.devicePos}, +${r.deviceBytes}) beyond the device size ${sizeBytes}`
    : r.devicePos % SECTOR_BYTES !== 0 || r.deviceBytes % SECTOR_BYTES !== 0 ? `record ${r.seqNr} at device position ${r.devicePos} is not aligned to ${SECTOR_BYTES} bytes`
    : undefined;
  return problem === undefined ? undefined : { kind: 'bad-field', torn: false, defect: true, offset: r.fileOffset, detail: problem };
}

/**
 * The defect stop when the records flagged MORE from held[0] on run longer than any write
 * request (the logger never flags across MAX_WHOLE_WRITE_LOG_BYTES, record.ts), or undefined.
 */
function overlongRequest(held: readonly LogRecord[]): LogStop | undefined {
  const first = held[0]!;
  const last = held[held.length - 1]!;
  if (last.fileOffset + last.totalBytes - first.fileOffset <= MAX_WHOLE_WRITE_LOG_BYTES) return undefined;
  return { kind: 'bad-field', torn: false, defect: true, offset: first.fileOffset, detail: `records flagged MORE from offset ${first.fileOffset} run beyond ${MAX_WHOLE_WRITE_LOG_BYTES} bytes, longer than any write request` };
}
