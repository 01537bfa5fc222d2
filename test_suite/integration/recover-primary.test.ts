// Primary crash recovery on real files (daemon/replay/recover-primary.ts): a logfile whose
// end cuts a write request in two, between its records (a SIGKILL during a short write, or a
// power cut that kept only part of the page cache), must leave the disk without any record of
// that request: it was never acknowledged, and the disk must stay a state of whole writes
// (docs/design.md §3.3). The logfile is cut back to the end of the last whole request, and the
// versionlink says so, so a second recovery and every secondary agree.
import t, { type Test } from 'tap';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DataDisk } from '../../common/disk/data-disk.js';
import { TreeStore } from '../../common/tree/store.js';
import { resPaths } from '../../common/tree/paths.js';
import { encodeRecord, recordBytes, RecordCode, RECORD_FLAG_MORE, RECORD_HEADER_BYTES } from '../../common/log/record.js';
import { formatReplayLink, initialVersionLinks, parseVersionLink } from '../../common/log/links.js';
import { recoverPrimary, RecoveryError } from '../../daemon/replay/recover-primary.js';
import { tempDir } from '../helpers/tmp.js';

const RES = 'r0';
const ME = 'alpha';
const SIZE = 1 << 20;
const PAGE = 4096;

/** One write request: `pages` consecutive 4 KiB pages from `firstPage`, each filled with `fill`. */
interface Request { firstPage: number; pages: number; fill: number }

/** The records of the requests, as the logger writes them: every record but a request's last flagged MORE. */
function encodeRequests(requests: Request[], firstSeqNr = 1): { bytes: Buffer; starts: number[] } {
  const total = requests.reduce((n, r) => n + r.pages * recordBytes(PAGE), 0);
  const bytes = Buffer.alloc(total);
  const starts: number[] = [];
  let at = 0;
  let seqNr = firstSeqNr;
  for (const r of requests) {
    starts.push(at);
    for (let i = 0; i < r.pages; i++) {
      at += encodeRecord(bytes, at, {
        devicePos: (r.firstPage + i) * PAGE, code: RecordCode.WriteNew, stampSec: 1000, stampNsec: 0, seqNr: seqNr++,
        payload: Buffer.alloc(PAGE, r.fill), flags: i < r.pages - 1 ? RECORD_FLAG_MORE : 0,
      });
    }
  }
  return { bytes, starts };
}

/** The disk after the given whole requests, in order. */
function imageOf(requests: Request[]): Buffer {
  const img = Buffer.alloc(SIZE);
  for (const r of requests) img.fill(r.fill, r.firstPage * PAGE, (r.firstPage + r.pages) * PAGE);
  return img;
}

/** A designated primary's /mars after a crash: its logfiles 1.. with the given bytes, replay link at log 1 offset 0. */
async function crashedPrimary(t: Test, logs: Buffer[]) {
  const dir = tempDir(t, 'mars-recover-');
  const root = join(dir, 'mars');
  mkdirSync(root);
  const tree = new TreeStore(root);
  tree.ensureDir(resPaths.dir(RES));
  tree.write(resPaths.size(RES), String(SIZE));
  tree.write(resPaths.primary(RES), ME);
  const v = initialVersionLinks(1, ME);
  tree.write(resPaths.version(RES, v.previous.seq, ME), v.previous.value);
  tree.write(resPaths.version(RES, v.current.seq, ME), v.current.value);
  logs.forEach((bytes, i) => writeFileSync(tree.abs(resPaths.log(RES, i + 1, ME)), bytes));
  tree.write(resPaths.replay(RES, ME), formatReplayLink({ seq: 1, origin: ME, minPos: 0, len: 0 }));
  tree.write(resPaths.maxnr(RES), String(logs.length));
  const diskPath = join(dir, 'disk.img');
  writeFileSync(diskPath, Buffer.alloc(SIZE));
  const messages: string[] = [];
  const recover = async () => {
    const disk = await DataDisk.open(diskPath);
    try {
      return await recoverPrimary({ tree, res: RES, host: ME, disk, sizeBytes: SIZE, onProgress: () => {}, log: (m) => messages.push(m) });
    } finally {
      await disk.close();
    }
  };
  const logPath = (seq: number) => tree.abs(resPaths.log(RES, seq, ME));
  const logPos = (seq: number) => parseVersionLink(tree.value(resPaths.version(RES, seq, ME))!)!.logPos;
  return { tree, recover, disk: () => readFileSync(diskPath), logPath, logPos, messages };
}

const WHOLE: Request[] = [{ firstPage: 0, pages: 2, fill: 0x11 }, { firstPage: 10, pages: 1, fill: 0x22 }];
const CUT: Request = { firstPage: 20, pages: 4, fill: 0x33 };

t.test('a logfile ending cleanly between the records of a write request: none of them reaches the disk', async (t) => {
  const { bytes, starts } = encodeRequests([...WHOLE, CUT]);
  const cutAt = starts[2]! + 2 * recordBytes(PAGE); // two of the request's four records made it
  const p = await crashedPrimary(t, [bytes.subarray(0, cutAt)]);
  const result = await p.recover();
  t.ok(p.disk().equals(imageOf(WHOLE)), 'the disk holds the whole requests and nothing of the cut one');
  t.equal(result.nextSeq, 2, 'the logger starts logfile 2');
  t.equal(statSync(p.logPath(1)).size, starts[2], 'the logfile is cut back to the end of the last whole request');
  t.equal(p.logPos(1), starts[2], 'the versionlink ends there too');
  t.match(p.messages.join('\n'), /write request cut off by the crash/, 'the log says why bytes were dropped');

  // A crash right after recovery, before the logger wrote anything: a second recovery agrees.
  await p.recover();
  t.ok(p.disk().equals(imageOf(WHOLE)), 'a second recovery leaves the same disk');
  t.equal(p.logPos(1), starts[2], 'and the same versionlink');
});

t.test('a torn record after whole records of the same request: the request is dropped whole', async (t) => {
  const { bytes, starts } = encodeRequests([...WHOLE, CUT]);
  const cutAt = starts[2]! + recordBytes(PAGE) + RECORD_HEADER_BYTES + 100; // record 2 of 4 torn in its payload
  const p = await crashedPrimary(t, [bytes.subarray(0, cutAt)]);
  await p.recover();
  t.ok(p.disk().equals(imageOf(WHOLE)), 'no page of the cut request on the disk');
  t.equal(statSync(p.logPath(1)).size, starts[2], 'the logfile ends after the last whole request');
  t.equal(p.logPos(1), starts[2], 'the versionlink ends there too');
});

t.test('a logfile ending with a whole request is replayed whole and not cut', async (t) => {
  const { bytes } = encodeRequests([...WHOLE, CUT]);
  const p = await crashedPrimary(t, [bytes]);
  await p.recover();
  t.ok(p.disk().equals(imageOf([...WHOLE, CUT])), 'every request on the disk');
  t.equal(statSync(p.logPath(1)).size, bytes.length, 'nothing cut');
  t.equal(p.logPos(1), bytes.length);
});

t.test('an older logfile that a recovery before this fix left ending inside a request is history as it stands', async (t) => {
  // Secondaries applied such a request as the origin left it (the replayer's final end), so the
  // primary's disk must hold it too; the logfile after it goes on.
  const first = encodeRequests([...WHOLE, CUT]);
  const cutAt = first.starts[2]! + 2 * recordBytes(PAGE);
  const next: Request = { firstPage: 40, pages: 1, fill: 0x44 };
  const second = encodeRequests([next]);
  const p = await crashedPrimary(t, [first.bytes.subarray(0, cutAt), second.bytes]);
  await p.recover();
  const expected = imageOf([...WHOLE, next]);
  expected.fill(CUT.fill, CUT.firstPage * PAGE, (CUT.firstPage + 2) * PAGE);
  t.ok(p.disk().equals(expected), 'the older logfile is applied as it stands, then the next one');
  t.equal(statSync(p.logPath(1)).size, cutAt, 'a logfile followed by more history is never cut');
  t.equal(p.logPos(1), cutAt);
  t.equal(p.logPos(2), second.bytes.length);
});

t.test('a defect is still refused', async (t) => {
  const { bytes, starts } = encodeRequests([...WHOLE, CUT]);
  const broken = Buffer.from(bytes);
  broken[starts[1]! + RECORD_HEADER_BYTES + 5]! ^= 0xff; // a payload byte of a whole request, followed by more records
  const p = await crashedPrimary(t, [broken]);
  await t.rejects(p.recover(), RecoveryError);
  t.equal(statSync(p.logPath(1)).size, bytes.length, 'nothing cut on a refusal');
});
