// `marsadm log-dump FILE`: verify a transaction logfile record by record and say where and
// why it ends. Exit codes: 0 = clean end or tolerable torn tail, 1 = defect, 2 = unreadable.
import { RecordCode } from '../../common/log/record.js';
import { type LogRecord, type LogStop, STOP_MEANING, readLogBatches } from '../../common/log/scanner.js';
import { rethrowInvariant } from '../../common/util/assert.js';

export interface LogDumpOptions {
  json: boolean;
  verbose: boolean; // one line per record
  from?: number; // start at this file offset (must be a record boundary)
}

export const EXIT_OK = 0;
export const EXIT_DEFECT = 1;
export const EXIT_UNREADABLE = 2;

interface Summary {
  records: number;
  recordBytes: number; // file bytes covered by good records
  payloadBytes: number;
  codes: Record<string, number>;
  firstStamp?: string;
  lastStamp?: string;
  firstSeqNr?: number;
  lastSeqNr?: number;
  deviceMinPos?: number;
  deviceEndPos?: number; // exclusive
}

export async function logDump(path: string, opts: LogDumpOptions, out: (line: string) => void): Promise<number> {
  const fromPos = opts.from ?? 0;
  const summary: Summary = { records: 0, recordBytes: 0, payloadBytes: 0, codes: {} };
  const recordLines: object[] = [];
  let stop: LogStop | undefined;
  try {
    for await (const item of readLogBatches(path, fromPos)) {
      if (item.type === 'end') {
        stop = item.stop;
        break;
      }
      for (const r of item.records) {
        account(summary, r);
        if (!opts.verbose) continue;
        if (opts.json) recordLines.push(recordJson(r));
        else out(recordLine(r));
      }
    }
  } catch (err) {
    rethrowInvariant(err); // the scanner's own bug is not an unreadable file
    const message = err instanceof Error ? err.message : String(err);
    if (opts.json) out(JSON.stringify({ file: path, error: message, exitCode: EXIT_UNREADABLE }));
    else out(`${path}: cannot read: ${message}`);
    return EXIT_UNREADABLE;
  }
  if (stop === undefined) throw new Error('log reader ended without a stop reason');

  const exitCode = stop.defect ? EXIT_DEFECT : EXIT_OK;
  const status = stop.defect ? 'defect' : stop.torn ? 'torn' : 'clean';
  if (opts.json) {
    out(
      JSON.stringify({
        file: path,
        fromPos,
        ...summary,
        ...(opts.verbose ? { recordList: recordLines } : {}),
        end: { status, kind: stop.kind, offset: stop.offset, detail: stop.detail, meaning: STOP_MEANING[stop.kind] },
        exitCode,
      }),
    );
    return exitCode;
  }

  out(`file:          ${path}${fromPos > 0 ? ` (from offset ${fromPos})` : ''}`);
  out(`records:       ${summary.records}${summary.records > 0 ? ` (seq_nr ${summary.firstSeqNr}..${summary.lastSeqNr})` : ''}`);
  out(`record bytes:  ${summary.recordBytes} (payload ${summary.payloadBytes})`);
  const codes = Object.entries(summary.codes).map(([name, n]) => `${name} ${n}`);
  if (codes.length > 0) out(`record codes:  ${codes.join(', ')}`);
  if (summary.records > 0) {
    out(`stamps:        ${summary.firstStamp} .. ${summary.lastStamp}`);
    if (summary.deviceMinPos !== undefined) out(`device range:  ${summary.deviceMinPos} .. ${summary.deviceEndPos} (bytes, end exclusive)`);
  }
  out(`end:           ${status} ${stop.kind} at offset ${stop.offset}: ${stop.detail}`);
  out(`meaning:       ${STOP_MEANING[stop.kind]}`);
  if (stop.torn) out(`               replay may apply everything before offset ${stop.offset} and stop there`);
  if (stop.defect) out(`               nothing at or after offset ${stop.offset} may be applied; the log needs repair or a resync`);
  return exitCode;
}

function account(s: Summary, r: LogRecord): void {
  s.records++;
  s.recordBytes += r.totalBytes;
  s.payloadBytes += r.payload.length;
  const name = codeName(r.code);
  s.codes[name] = (s.codes[name] ?? 0) + 1;
  const stamp = formatStamp(r);
  s.firstStamp ??= stamp;
  s.lastStamp = stamp;
  s.firstSeqNr ??= r.seqNr;
  s.lastSeqNr = r.seqNr;
  if (r.code === RecordCode.WriteOld) return; // pre-images do not change the device
  s.deviceMinPos = Math.min(s.deviceMinPos ?? r.devicePos, r.devicePos);
  s.deviceEndPos = Math.max(s.deviceEndPos ?? 0, r.devicePos + r.deviceBytes);
}

function recordLine(r: LogRecord): string {
  return `offset=${r.fileOffset} seq=${r.seqNr} stamp=${formatStamp(r)} pos=${r.devicePos} len=${r.deviceBytes} code=${codeName(r.code)}${r.more ? ' more' : ''}`;
}

function recordJson(r: LogRecord): object {
  return { offset: r.fileOffset, seqNr: r.seqNr, stamp: formatStamp(r), devicePos: r.devicePos, lengthBytes: r.deviceBytes, code: codeName(r.code), more: r.more };
}

function formatStamp(r: LogRecord): string {
  return `${r.stampSec}.${String(r.stampNsec).padStart(9, '0')}`;
}

function codeName(code: RecordCode): string {
  switch (code) {
    case RecordCode.WriteNew:
      return 'write';
    case RecordCode.WriteOld:
      return 'write-old';
    case RecordCode.ZeroRange:
      return 'zero-range';
  }
}
