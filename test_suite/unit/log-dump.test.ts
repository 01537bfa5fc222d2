// `marsadm log-dump`: output and exit codes on clean, torn, corrupt and unreadable files.
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RECORD_FLAG_MORE, RecordCode, encodeRecord, encodeZeroRangePayload, recordBytes } from '../../common/log/record.js';
import { logDump } from '../../marsadm/commands/log-dump.js';
import { tempDir } from '../helpers/tmp.js';

// Three writes and one zero range: device range 4096 .. 1 MiB + 8192.
function buildLog(): { file: Buffer; offsets: number[] } {
  const recs = [
    { devicePos: 4096, code: RecordCode.WriteNew, payload: Buffer.alloc(512, 1) },
    { devicePos: 8192, code: RecordCode.WriteNew, payload: Buffer.alloc(4096, 2), flags: RECORD_FLAG_MORE },
    { devicePos: 1 << 20, code: RecordCode.ZeroRange, payload: encodeZeroRangePayload(8192) },
    { devicePos: 65536, code: RecordCode.WriteNew, payload: Buffer.alloc(1024, 3) },
  ];
  const file = Buffer.alloc(recs.reduce((s, r) => s + recordBytes(r.payload.length), 0));
  const offsets: number[] = [];
  let at = 0;
  recs.forEach((r, i) => {
    offsets.push(at);
    at += encodeRecord(file, at, { ...r, stampSec: 1_700_000_000 + i, stampNsec: 5 + i, seqNr: i + 1 });
  });
  return { file, offsets };
}

async function run(path: string, opts: { json?: boolean; verbose?: boolean; from?: number } = {}): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const code = await logDump(path, { json: opts.json ?? false, verbose: opts.verbose ?? false, from: opts.from }, (l) => lines.push(l));
  return { code, lines };
}

t.test('clean file: summary, verbose lines, exit 0', async (t) => {
  const dir = tempDir(t);
  const { file, offsets } = buildLog();
  const path = join(dir, 'log-000000001-a');
  writeFileSync(path, file);

  const plain = await run(path);
  t.equal(plain.code, 0);
  const text = plain.lines.join('\n');
  t.match(text, /records:\s+4 \(seq_nr 1\.\.4\)/);
  t.match(text, new RegExp(`record bytes:\\s+${file.length} `));
  t.match(text, /stamps:\s+1700000000\.000000005 \.\. 1700000003\.000000008/);
  t.match(text, new RegExp(`device range:\\s+4096 \\.\\. ${(1 << 20) + 8192} `));
  t.match(text, new RegExp(`end:\\s+clean clean-end at offset ${file.length}`));
  t.notMatch(text, /offset=0 seq=1/, 'no per-record lines without verbose');

  const verbose = await run(path, { verbose: true });
  t.equal(verbose.code, 0);
  const recLines = verbose.lines.filter((l) => l.startsWith('offset='));
  t.equal(recLines.length, 4);
  t.equal(recLines[0], 'offset=0 seq=1 stamp=1700000000.000000005 pos=4096 len=512 code=write');
  t.equal(recLines[1], `offset=${offsets[1]} seq=2 stamp=1700000001.000000006 pos=8192 len=4096 code=write more`, 'a record with another of its write request after it says "more"');
  t.equal(recLines[2], `offset=${offsets[2]} seq=3 stamp=1700000002.000000007 pos=1048576 len=8192 code=zero-range`);

  const json = await run(path, { json: true, verbose: true });
  t.equal(json.code, 0);
  t.equal(json.lines.length, 1, 'one JSON object');
  const obj = JSON.parse(json.lines[0]!);
  t.equal(obj.records, 4);
  t.equal(obj.recordBytes, file.length);
  t.equal(obj.deviceMinPos, 4096);
  t.equal(obj.deviceEndPos, (1 << 20) + 8192);
  t.same(obj.codes, { write: 3, 'zero-range': 1 });
  t.same(obj.end, { status: 'clean', kind: 'clean-end', offset: file.length, detail: obj.end.detail, meaning: obj.end.meaning });
  t.equal(obj.recordList.length, 4);
  t.same(obj.recordList.map((r: { more: boolean }) => r.more), [false, true, false, false]);
  t.equal(obj.exitCode, 0);

  const from = await run(path, { json: true, from: offsets[2] });
  t.equal(JSON.parse(from.lines[0]!).records, 2);
});

t.test('torn file: exit 0, says torn and where', async (t) => {
  const dir = tempDir(t);
  const { file, offsets } = buildLog();
  const path = join(dir, 'torn');
  writeFileSync(path, file.subarray(0, offsets[3]! + 100));
  const r = await run(path);
  t.equal(r.code, 0);
  const text = r.lines.join('\n');
  t.match(text, /records:\s+3 /);
  t.match(text, new RegExp(`end:\\s+torn truncated-record at offset ${offsets[3]}`));
  t.match(text, /torn tail/);
  const j = JSON.parse((await run(path, { json: true })).lines[0]!);
  t.match(j.end, { status: 'torn', kind: 'truncated-record', offset: offsets[3] });
});

t.test('corrupt file: exit 1, names the class and offset', async (t) => {
  const dir = tempDir(t);
  const { file, offsets } = buildLog();
  const bad = Buffer.from(file);
  bad[offsets[1]! + 48 + 1000]! ^= 0x01; // payload bit flip in record 2
  const path = join(dir, 'corrupt');
  writeFileSync(path, bad);
  const r = await run(path);
  t.equal(r.code, 1);
  const text = r.lines.join('\n');
  t.match(text, /records:\s+1 /);
  t.match(text, new RegExp(`end:\\s+defect bad-checksum at offset ${offsets[1]}`));
  t.match(text, /nothing at or after offset/);
  const j = JSON.parse((await run(path, { json: true })).lines[0]!);
  t.match(j, { exitCode: 1, end: { status: 'defect', kind: 'bad-checksum', offset: offsets[1] } });
});

t.test('unreadable file: exit 2', async (t) => {
  const dir = tempDir(t);
  const r = await run(join(dir, 'does-not-exist'));
  t.equal(r.code, 2);
  t.match(r.lines.join('\n'), /cannot read/);
  const j = await run(join(dir, 'does-not-exist'), { json: true });
  t.equal(j.code, 2);
  t.match(JSON.parse(j.lines[0]!), { exitCode: 2 });
  // A directory is not a logfile either.
  t.equal((await run(dir)).code, 2);
});
