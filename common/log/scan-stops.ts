// What a scan of a transaction logfile returns: the verified records and exactly why reading
// stopped (docs/logfile-format.md, "Scanner stop classes"), with the meaning of every stop
// class for recovery. Only types and the constructors of stops live here; scan-record.ts
// classifies bytes, scanner.ts reads files.
//
// The classes are disjoint on purpose: a torn tail (the last write before a crash that
// reached the disk only partly) is the only tolerated irregularity, every defect stops
// replay for good, and the two pending kinds exist only while a scan has not reached EOF.
import { assert } from '../util/assert.js';
import type { RecordCode } from './record.js';

export interface LogRecord {
  fileOffset: number; // where the record starts in the logfile
  totalBytes: number; // header + payload + trailer; the next record starts at fileOffset + totalBytes
  devicePos: number; // byte offset on the block device (l_pos)
  code: RecordCode;
  stampSec: number; // Lamport stamp of the write request
  stampNsec: number;
  seqNr: number; // record number within this logfile, 1-based
  payload: Buffer; // zero-copy view into the scanned buffer
  deviceBytes: number; // bytes of the device the record covers: payload length, or the ZeroRange length
  more: boolean; // RECORD_FLAG_MORE: the next record belongs to the same write request
}

// Tolerable: the file ends inside the last record, as after a crash during its write.
export type TornKind = 'incomplete-header' | 'truncated-record' | 'zero-tail';
// Never tolerated: replay must stop before the record and report it.
export type DefectKind =
  | 'bad-start-magic'
  | 'repeated-byte'
  | 'zeroed-region'
  | 'bad-version'
  | 'invalid-record'
  | 'bad-length'
  | 'bad-flags'
  | 'bad-code'
  | 'bad-end-magic'
  | 'bad-valid-copy'
  | 'seq-mismatch'
  | 'bad-meta-checksum'
  | 'bad-field'
  | 'bad-checksum';
export type StopKind = 'clean-end' | TornKind | DefectKind;

// offset: file offset where reading stopped = end of the last good record = start of the
// torn or defective one. Everything before it is verified and may be applied.
export type LogStop =
  | { kind: 'clean-end'; torn: false; defect: false; offset: number; detail: string }
  | { kind: TornKind; torn: true; defect: false; offset: number; detail: string }
  | { kind: DefectKind; torn: false; defect: true; offset: number; detail: string };

// Only while not at EOF: the record at `offset` continues beyond the buffer.
export interface NeedMoreStop {
  kind: 'need-more';
  offset: number;
}
// Only while not at EOF: zeros run from zeroFromOffset to the end of the buffer where a
// record (or its end magic) should be. If the rest of the file is zero too, it is a
// zero-filled tail; if anything non-zero follows, it is a zeroed hole (a defect).
export interface ZeroPendingStop {
  kind: 'zero-pending';
  offset: number;
  zeroFromOffset: number;
}
export type ScanStop = LogStop | NeedMoreStop | ZeroPendingStop;

export interface ScanResult<S extends ScanStop = ScanStop> {
  records: LogRecord[];
  endOffset: number; // file offset after the last good record
  nextSeqNr: number | undefined; // seq_nr the record at endOffset must carry (undefined: unknown)
  stop: S;
}

export interface ScanOptions {
  // seq_nr the first record must carry; leave undefined when starting mid-file at an
  // unknown record number (then the first record sets the expectation).
  expectedSeqNr?: number;
  // true when buf extends to the end of the file (or the planned end of reading).
  atEof: boolean;
}

// What each stop class means for recovery; shown by `marsadm log-dump` and the docs.
export const STOP_MEANING: Readonly<Record<StopKind, string>> = {
  'clean-end': 'the file ends exactly after a complete, verified record',
  'incomplete-header': 'torn tail: the file ends inside a record header (a write cut short by a crash); everything before is valid',
  'truncated-record': 'torn tail: the header is intact but the record is longer than the rest of the file (a write cut short); everything before is valid',
  'zero-tail': 'torn tail: the rest of the file is zero bytes where a record should be (space allocated but never written); everything before is valid',
  'bad-start-magic': 'defect: non-zero bytes that are not a record start where a record must begin (overwritten or misplaced data)',
  'repeated-byte': 'defect: the same byte repeated over a magic number, typical of uninitialised or defective storage (RAID/disk cache)',
  'zeroed-region': 'defect: zero bytes where a record must be, but non-zero data follows later: a hole in the log, never a torn tail',
  'bad-version': 'defect: record format version is not 1',
  'invalid-record': 'defect: the record is marked invalid (valid flag not 1)',
  'bad-length': 'defect: record lengths are inconsistent or out of range',
  'bad-flags': 'defect: unknown checksum flags or a compressed record, which this implementation does not write or read',
  'bad-code': 'defect: unknown record code',
  'bad-end-magic': 'defect: the end magic after the payload is wrong (the record is overwritten or its length is wrong)',
  'bad-valid-copy': 'defect: the trailer copy of the valid flag is not 1',
  'seq-mismatch': 'defect: record sequence number out of order (a lost, duplicated or foreign record)',
  'bad-meta-checksum': 'defect: a header or trailer field fails its checksum (bit flip in device position, stamp or another field)',
  'bad-field': 'defect: a field holds an impossible value (negative position, nanoseconds >= 1e9, unknown record flags, a non-zero spare, ...)',
  'bad-checksum': 'defect: the payload does not match its CRC32C digest',
};

// Decides a zero-pending stop once the caller knows the first non-zero byte at or after
// the end of the scanned buffer (undefined: none up to EOF).
export function resolveZeroPending(p: ZeroPendingStop, nonZeroAtOffset: number | undefined): LogStop {
  if (nonZeroAtOffset === undefined) {
    return torn('zero-tail', p.offset, `zero bytes from offset ${p.zeroFromOffset} to the end of the file`);
  }
  assert(nonZeroAtOffset >= p.zeroFromOffset, 'non-zero byte must follow the zero run');
  return zeroedRegion(p.offset, p.zeroFromOffset, nonZeroAtOffset);
}

export function isPending(stop: ScanStop): stop is NeedMoreStop | ZeroPendingStop {
  return stop.kind === 'need-more' || stop.kind === 'zero-pending';
}

export function torn(kind: TornKind, offset: number, detail: string): LogStop {
  return { kind, torn: true, defect: false, offset, detail };
}

export function defect(kind: DefectKind, offset: number, detail: string): LogStop {
  return { kind, torn: false, defect: true, offset, detail };
}

export function zeroedRegion(offset: number, zeroFromOffset: number, nonZeroAtOffset: number): LogStop {
  return defect('zeroed-region', offset, `zero bytes from offset ${zeroFromOffset} where a ${zeroFromOffset === offset ? 'record' : 'record end magic'} must be, but non-zero data at offset ${nonZeroAtOffset}`);
}
