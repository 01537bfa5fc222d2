// Reading a transaction logfile: parse records strictly one after the other and classify
// exactly why reading stopped (docs/logfile-format.md, "Scanner stop classes"). This is the
// module the rest of the code imports (marsadm log-dump and log-truncate, recovery, replay,
// the split-brain check); it is built from two parts:
//   scan-stops.ts   what a scan returns: records, the stop classes and what they mean
//   scan-record.ts  the pure classification of a buffer, record by record (scanBuffer)
// and adds here the streaming over a file of any size, chunk by chunk.
//
// The scanner never resynchronises by searching for the next magic: a record that does not
// start exactly where the previous one ended is a hole, and a hole is never skipped
// (docs/design.md invariant 4). The only tolerated irregularity is a torn tail: the last write
// before a crash that reached the disk only partly (a strict prefix of the file as written,
// or a zero-filled remainder). Everything else is a defect that stops replay for good.
//
// A record that straddles two chunks is carried over into the next read (never more than
// one record's bytes), and a zero run reaching the end of a chunk is resolved by looking
// for a non-zero byte further on, so the stop does not depend on the chunk size.
import { open } from 'node:fs/promises';
import { assert } from '../util/assert.js';
import { MAX_RECORD_BYTES } from './record.js';
import { resolveZeroPending, type LogRecord, type LogStop } from './scan-stops.js';
import { firstNonZeroByte, scanBuffer } from './scan-record.js';

export {
  STOP_MEANING, isPending, resolveZeroPending,
  type DefectKind, type LogRecord, type LogStop, type NeedMoreStop, type ScanOptions, type ScanResult, type ScanStop, type StopKind,
  type TornKind, type ZeroPendingStop,
} from './scan-stops.js';
export { firstNonZeroByte, scanBuffer } from './scan-record.js';

export const DEFAULT_READ_CHUNK_BYTES = 1024 * 1024;

export interface ReadLogOptions {
  chunkBytes?: number; // read size; records straddling chunks are carried over
  // seq_nr of the first record; default 1 when starting at offset 0, else unknown.
  expectedSeqNr?: number;
  // Treat this offset as the end of the file (e.g. the durable length a fetcher knows).
  // Default and upper bound: the file size when reading starts.
  endPos?: number;
}

export type LogBatchItem = { type: 'batch'; records: LogRecord[] } | { type: 'end'; stop: LogStop };
export type LogRecordItem = { type: 'record'; record: LogRecord } | { type: 'end'; stop: LogStop };

// Yields the verified records chunk by chunk, then exactly one 'end' item with the stop
// reason; stop.offset is the exact end of the last good record. Payload views stay valid
// for as long as the caller keeps them (every chunk gets its own buffer).
// Throws on I/O errors and when fromPos lies beyond the end of the file.
export async function* readLogBatches(path: string, fromPos: number, opts: ReadLogOptions = {}): AsyncGenerator<LogBatchItem, void, undefined> {
  const chunkBytes = opts.chunkBytes ?? DEFAULT_READ_CHUNK_BYTES;
  assert(Number.isSafeInteger(chunkBytes) && chunkBytes > 0, `bad chunkBytes ${chunkBytes}`);
  assert(Number.isSafeInteger(fromPos) && fromPos >= 0, `bad fromPos ${fromPos}`);
  const fh = await open(path, 'r');
  try {
    const fileBytes = (await fh.stat()).size;
    const limit = opts.endPos === undefined ? fileBytes : Math.min(opts.endPos, fileBytes);
    if (fromPos > limit) throw new RangeError(`${path}: start offset ${fromPos} is beyond the end of the log (${limit} bytes)`);

    let expected = opts.expectedSeqNr ?? (fromPos === 0 ? 1 : undefined);
    let carryPos = fromPos; // file offset of carry[0]
    let carry = Buffer.alloc(0); // an incomplete record from the previous chunk
    for (;;) {
      const readPos = carryPos + carry.length;
      const wantBytes = Math.min(chunkBytes, limit - readPos);
      const buf = Buffer.allocUnsafe(carry.length + wantBytes);
      carry.copy(buf, 0);
      const gotBytes = await readFully(fh, buf, carry.length, wantBytes, readPos);
      const data = buf.subarray(0, carry.length + gotBytes);
      // A short read means the file shrank under us: its current end is the end.
      const atEof = gotBytes < wantBytes || readPos + gotBytes >= limit;

      const result = scanBuffer(data, carryPos, { expectedSeqNr: expected, atEof });
      if (result.records.length > 0) yield { type: 'batch', records: result.records };
      expected = result.nextSeqNr;
      const stop = result.stop;
      if (stop.kind === 'need-more') {
        assert(!atEof, 'scanner asked for more data at EOF');
        carry = data.subarray(result.endOffset - carryPos);
        assert(carry.length < MAX_RECORD_BYTES, `carry of ${carry.length} bytes exceeds one record`);
        carryPos = result.endOffset;
        continue;
      }
      if (stop.kind === 'zero-pending') {
        const nonZeroAt = await findNonZero(fh, readPos + gotBytes, limit, chunkBytes);
        yield { type: 'end', stop: resolveZeroPending(stop, nonZeroAt) };
        return;
      }
      yield { type: 'end', stop };
      return;
    }
  } finally {
    await fh.close();
  }
}

// The same stream, one record at a time.
export async function* readLogRecords(path: string, fromPos: number, opts: ReadLogOptions = {}): AsyncGenerator<LogRecordItem, void, undefined> {
  for await (const item of readLogBatches(path, fromPos, opts)) {
    if (item.type === 'end') {
      yield item;
      return;
    }
    for (const record of item.records) yield { type: 'record', record };
  }
}

type FileHandle = Awaited<ReturnType<typeof open>>;

async function readFully(fh: FileHandle, buf: Buffer, at: number, lengthBytes: number, filePos: number): Promise<number> {
  let gotBytes = 0;
  while (gotBytes < lengthBytes) {
    const { bytesRead } = await fh.read(buf, at + gotBytes, lengthBytes - gotBytes, filePos + gotBytes);
    if (bytesRead === 0) break;
    gotBytes += bytesRead;
  }
  return gotBytes;
}

// File offset of the first non-zero byte in [from, to), or undefined.
async function findNonZero(fh: FileHandle, from: number, to: number, chunkBytes: number): Promise<number | undefined> {
  const buf = Buffer.allocUnsafe(Math.max(1, Math.min(chunkBytes, to - from)));
  let pos = from;
  while (pos < to) {
    const gotBytes = await readFully(fh, buf, 0, Math.min(buf.length, to - pos), pos);
    if (gotBytes === 0) break;
    const i = firstNonZeroByte(buf, 0, gotBytes);
    if (i >= 0) return pos + i;
    pos += gotBytes;
  }
  return undefined;
}
