// Apply the records of one logfile to a data disk, in log order, verifying every record
// (docs/design.md §3.4): the scanner stops at the last good record; nothing after it is applied.
// Records are collected in a PendingIndex so overwrites coalesce and the disk gets sorted
// writes; the result is identical to applying record after record. Shared by primary crash
// recovery and the secondary's replayer.
import { readLogBatches, type LogStop } from '../../common/log/scanner.js';
import { RecordCode } from '../../common/log/record.js';
import { PendingIndex, SECTOR_BYTES } from '../logger/pending-index.js';
import { writePages } from '../logger/writeback.js';
import type { DataDisk } from '../../common/disk/data-disk.js';

const FLUSH_EVERY_BYTES = 64 << 20;

export interface ApplyResult {
  /** end of the last applied record (a tolerable torn tail or a defect starts here) */
  endPos: number;
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
}

export async function applyLog(o: ApplyOptions): Promise<ApplyResult> {
  const index = new PendingIndex();
  let records = 0;
  let appliedBytes = 0;
  let stop: LogStop | undefined;
  let interrupted = false;
  let endPos = o.fromPos;
  let nextSeqNr = o.expectedSeqNr;
  const flush = async () => {
    const batch = index.takeBatch(Number.MAX_SAFE_INTEGER);
    await writePages(o.disk, batch);
    index.completeBatch(batch);
  };
  const readOptions = {
    ...(o.endPos === undefined ? {} : { endPos: o.endPos }),
    ...(o.expectedSeqNr === undefined ? {} : { expectedSeqNr: o.expectedSeqNr }),
  };
  outer: for await (const item of readLogBatches(o.path, o.fromPos, readOptions)) {
    if (item.type === 'end') {
      stop = item.stop;
      break;
    }
    for (const r of item.records) {
      if (r.code === RecordCode.WriteOld) { endPos = r.fileOffset + r.totalBytes; nextSeqNr = r.seqNr + 1; continue; }
      const outside = r.devicePos + r.deviceBytes > o.sizeBytes;
      const unaligned = r.devicePos % SECTOR_BYTES !== 0 || r.deviceBytes % SECTOR_BYTES !== 0;
      if (outside || unaligned) {
        stop = {
          kind: 'bad-field', torn: false, defect: true, offset: r.fileOffset,
          detail: outside
            ? `record ${r.seqNr} writes [${r.devicePos}, +${r.deviceBytes}) beyond the device size ${o.sizeBytes}`
            : `record ${r.seqNr} at device position ${r.devicePos} is not aligned to ${SECTOR_BYTES} bytes`,
        };
        break outer;
      }
      index.put(r.devicePos, r.deviceBytes, r.code === RecordCode.ZeroRange ? undefined : r.payload, { seq: o.seq, pos: r.fileOffset });
      records++;
      appliedBytes += r.deviceBytes;
      endPos = r.fileOffset + r.totalBytes;
      nextSeqNr = r.seqNr + 1;
    }
    if (index.bytesHeld >= FLUSH_EVERY_BYTES) await flush();
    o.onProgress?.(endPos);
    if (o.shouldStop?.()) {
      // Leaving the loop closes the reader; endPos is the end of a complete record.
      interrupted = true;
      stop = { kind: 'clean-end', torn: false, defect: false, offset: endPos, detail: `stopped on request at offset ${endPos}` };
      break;
    }
  }
  await flush();
  if (!stop) throw new Error(`${o.path}: log reader ended without a stop reason`);
  return { endPos, stop, interrupted, records, appliedBytes, nextSeqNr };
}
