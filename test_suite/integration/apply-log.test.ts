// applyLog with whole write requests (daemon/replay/apply-log.ts) on real logfiles and a real
// data file: a stop asked while a request is held ends reading at that request's end (not at
// some later chunk end that happens to fall between requests), and records flagged MORE that
// run longer than any write request are a defect, not a request to wait for.
import t, { type Test } from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { applyLog } from '../../daemon/replay/apply-log.js';
import { DataDisk } from '../../common/disk/data-disk.js';
import { encodeRecord, recordBytes, RecordCode, RECORD_FLAG_MORE, MAX_WHOLE_WRITE_LOG_BYTES } from '../../common/log/record.js';
import { DEFAULT_READ_CHUNK_BYTES } from '../../common/log/scanner.js';
import { tempDir } from '../helpers/tmp.js';

const PAGE = 4096;
const DEVICE_BYTES = 1 << 20;

/** A logfile of `requests` write requests of `pages` 4 KiB records each; the ends of the requests. */
function splitLog(requests: number, pages: number, allMore = false): { bytes: Buffer; writeEnds: number[] } {
  const bytes = Buffer.alloc(requests * pages * recordBytes(PAGE));
  const writeEnds: number[] = [];
  let at = 0;
  let seqNr = 1;
  const payload = Buffer.alloc(PAGE);
  for (let i = 0; i < requests; i++) {
    for (let p = 0; p < pages; p++) {
      payload.fill((i * 7 + p) & 0xff);
      at += encodeRecord(bytes, at, {
        devicePos: ((i * pages + p) * PAGE) % DEVICE_BYTES, code: RecordCode.WriteNew, stampSec: 1000 + i, stampNsec: 0, seqNr: seqNr++,
        payload, flags: allMore || p + 1 < pages ? RECORD_FLAG_MORE : 0,
      });
    }
    writeEnds.push(at);
  }
  return { bytes, writeEnds };
}

async function setup(t: Test, bytes: Buffer) {
  const dir = tempDir(t);
  const path = join(dir, 'log-000000001-alpha');
  writeFileSync(path, bytes);
  writeFileSync(join(dir, 'data.img'), Buffer.alloc(DEVICE_BYTES));
  const disk = await DataDisk.open(join(dir, 'data.img'));
  t.teardown(() => disk.close());
  return { path, disk };
}

t.test('a stop asked while a request is held ends at that request\'s end', async (t) => {
  // 1 MiB writes: 256 records, a little more than a read chunk, so chunk ends fall inside requests.
  const log = splitLog(8, 256);
  t.ok(log.writeEnds[0]! > DEFAULT_READ_CHUNK_BYTES, 'a request is longer than a read chunk');
  const { path, disk } = await setup(t, log.bytes);
  let asked = 0;
  const r = await applyLog({
    path, seq: 1, fromPos: 0, disk, sizeBytes: DEVICE_BYTES, wholeWrites: { finalEndPos: undefined },
    shouldStop: () => { asked++; return true; },
  });
  t.equal(r.interrupted, true);
  t.equal(r.stop.kind, 'clean-end');
  t.ok(asked >= 1);
  t.equal(r.endPos, log.writeEnds[0], `stopped at the end of the request under way (${r.endPos}), not at ${log.bytes.length}`);
  t.equal(r.heldBytes, 0);
  t.equal(r.records, 256, 'exactly one whole request applied');
});

t.test('records flagged MORE beyond the longest write request are a defect', async (t) => {
  const pages = Math.ceil(MAX_WHOLE_WRITE_LOG_BYTES / recordBytes(PAGE)) + 1;
  const log = splitLog(1, pages, true);
  const { path, disk } = await setup(t, log.bytes);
  const r = await applyLog({ path, seq: 1, fromPos: 0, disk, sizeBytes: DEVICE_BYTES, wholeWrites: { finalEndPos: log.bytes.length } });
  t.match(r.stop, { kind: 'bad-field', defect: true, offset: 0, detail: /flagged MORE from offset 0 run beyond/ });
  t.equal(r.endPos, 0, 'nothing applied');
  t.equal(r.records, 0);
});
