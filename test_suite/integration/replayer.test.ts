// The secondary's replayer on real files: a local copy of the origin's logfile grows in pieces
// (as a fetcher appends, cut in the middle of records), and the data disk must equal the
// origin's history after a prefix at every stable point; links and versionlinks follow the
// origin's; the replayer switches logfiles, stops in front of a damaged record and asks for a
// re-fetch, stops at a hole, repairs a half-applied window, and pauses at a record boundary.
import t, { type Test } from 'tap';
import { appendFileSync, mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DataDisk } from '../../common/disk/data-disk.js';
import { TreeStore } from '../../common/tree/store.js';
import { resPaths } from '../../common/tree/paths.js';
import { encodeRecord, encodeZeroRangePayload, recordBytes, RecordCode, RECORD_FLAG_MORE, RECORD_HEADER_BYTES } from '../../common/log/record.js';
import { formatReplayLink, initialVersionLinks, nextVersionLink, parseReplayLink, parseVersionLink } from '../../common/log/links.js';
import { contentDigestOf } from '../../common/log/content-digest.js';
import { Replayer, type RefetchRequest, type ReplayStatus } from '../../daemon/replay/replayer.js';
import { REPLAY_STOP_CODE } from '../../daemon/replay/switchover.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { systemClock } from '../../common/util/clock.js';
import { mulberry32 as rng } from '../helpers/prng.js';

const RES = 'r0';
const ME = 'beta';
const ORIGIN = 'alpha';
const SIZE = 1 << 20;
const V0 = initialVersionLinks(1, ORIGIN).previous.value;

// ---- the origin's history -------------------------------------------------------------

interface WriteSpec {
  devicePos: number;
  data: Buffer | undefined; // undefined: a ZeroRange record
  lengthBytes: number;
}


/** n writes of 512..4096 bytes at sector-aligned places in a small area, so they overlap */
function makeWrites(n: number, seed: number, areaBytes = 256 * 1024): WriteSpec[] {
  const r = rng(seed);
  const out: WriteSpec[] = [];
  for (let i = 0; i < n; i++) {
    const lengthBytes = 512 * (1 + Math.floor(r() * 8));
    const devicePos = 512 * Math.floor(r() * ((areaBytes - lengthBytes) / 512));
    if (i % 17 === 16) {
      out.push({ devicePos, data: undefined, lengthBytes: lengthBytes * 4 });
      continue;
    }
    const data = Buffer.alloc(lengthBytes);
    for (let j = 0; j < lengthBytes; j += 4) data.writeUInt32LE((r() * 2 ** 32) >>> 0, j);
    out.push({ devicePos, data, lengthBytes });
  }
  return out;
}

interface OriginLog {
  bytes: Buffer;
  /** ends[i] = offset after record i */
  ends: number[];
  writes: WriteSpec[];
}

function encodeLog(writes: WriteSpec[]): OriginLog {
  const payloads = writes.map((w) => w.data ?? encodeZeroRangePayload(w.lengthBytes));
  const bytes = Buffer.alloc(payloads.reduce((n, p) => n + recordBytes(p.length), 0));
  const ends: number[] = [];
  let at = 0;
  writes.forEach((w, i) => {
    at += encodeRecord(bytes, at, {
      devicePos: w.devicePos, code: w.data ? RecordCode.WriteNew : RecordCode.ZeroRange,
      stampSec: 1000 + i, stampNsec: 0, seqNr: i + 1, payload: payloads[i]!,
    });
    ends.push(at);
  });
  return { bytes, ends, writes };
}

/** The origin's disk after the first `count` writes of each history, in order. */
function imageAfter(histories: { writes: WriteSpec[]; count: number }[]): Buffer {
  const img = Buffer.alloc(SIZE);
  for (const h of histories) {
    for (const w of h.writes.slice(0, h.count)) {
      if (w.data) w.data.copy(img, w.devicePos);
      else img.fill(0, w.devicePos, w.devicePos + w.lengthBytes);
    }
  }
  return img;
}

/** Number of complete records within the first `bytes` bytes. */
function recordsWithin(log: OriginLog, bytes: number): number {
  return log.ends.filter((e) => e <= bytes).length;
}

// ---- a secondary's /mars and disk ---------------------------------------------------------

async function setup(t: Test, opts: { maxBatchBytes?: number; replay?: string } = {}) {
  const dir = tempDir(t, 'mars-replayer-');
  const root = join(dir, 'mars');
  mkdirSync(root);
  const tree = new TreeStore(root);
  tree.ensureDir(resPaths.dir(RES));
  tree.write(resPaths.size(RES), String(SIZE));
  tree.write(resPaths.primary(RES), ORIGIN);
  tree.write(resPaths.version(RES, 0, ORIGIN), V0);
  tree.write(resPaths.version(RES, 0, ME), V0); // join-resource copies the primary's links
  tree.write(resPaths.replay(RES, ME), opts.replay ?? formatReplayLink({ seq: 1, origin: ORIGIN, minPos: 0, len: 0 }));
  const diskPath = join(dir, 'disk.img');
  writeFileSync(diskPath, Buffer.alloc(SIZE));
  const disk = await DataDisk.open(diskPath);
  const refetches: RefetchRequest[] = [];
  const statuses: ReplayStatus[] = [];
  const logs: string[] = [];
  const replayer = new Replayer({
    tree, res: RES, host: ME, disk, sizeBytes: SIZE, clock: systemClock,
    log: (level, msg) => logs.push(`${level}: ${msg}`),
    onRefetch: (r) => refetches.push(r),
    onStatus: (s) => statuses.push(s),
    ...(opts.maxBatchBytes === undefined ? {} : { maxBatchBytes: opts.maxBatchBytes }),
  });
  t.teardown(async () => {
    await replayer.stop();
    await disk.close();
  });
  const copyPath = (seq: number) => tree.abs(resPaths.log(RES, seq, ORIGIN));
  /** the origin's versionlinks: version-SEQ-alpha over its logfile bytes, chained to version-(SEQ-1)-alpha */
  const originVersion = (seq: number, bytes: Uint8Array) => {
    const value = nextVersionLink(tree.value(resPaths.version(RES, seq - 1, ORIGIN))!, seq, ORIGIN, bytes.length, contentDigestOf(bytes));
    tree.write(resPaths.version(RES, seq, ORIGIN), value);
    return value;
  };
  const replayLink = () => parseReplayLink(tree.value(resPaths.replay(RES, ME))!)!;
  const ownVersion = (seq: number) => tree.value(resPaths.version(RES, seq, ME));
  const disk0 = () => readFileSync(diskPath);
  // A deadline, not a duration: replaying 800 small batches, each with a durable link write,
  // took over 10 s beside the e2e tests on 2 cores (6-10 s alone).
  const settled = (what: string, pos: number, seq = 1) => waitFor(what, () => {
    const s = replayer.status;
    return s.position?.seq === seq && s.replayedPos === pos && !s.applying && s.replayCode !== 0 ? s : undefined;
  }, 60_000);
  return { tree, replayer, disk: disk0, diskPath, refetches, statuses, logs, copyPath, originVersion, replayLink, ownVersion, settled };
}

t.test('replays a growing copy; the disk is a prefix state at every stable point', async (t) => {
  const s = await setup(t);
  const log = encodeLog(makeWrites(60, 1));
  const total = log.bytes.length;
  const v1 = s.originVersion(1, log.bytes); // the origin is ahead: everything is durable there
  writeFileSync(s.copyPath(1), Buffer.alloc(0));
  s.replayer.start();

  // cuts: inside a header, inside a payload, exactly at a boundary, one byte past one, the end
  const cuts = [log.ends[3]! + 20, log.ends[10]! + RECORD_HEADER_BYTES + 100, log.ends[25]!, log.ends[40]! + 1, total];
  let copied = 0;
  for (const [i, cut] of cuts.entries()) {
    appendFileSync(s.copyPath(1), log.bytes.subarray(copied, cut));
    copied = cut;
    if (i !== 2) s.replayer.nudge(); // one piece is found by the fallback poll alone
    const n = recordsWithin(log, cut);
    const boundary = n === 0 ? 0 : log.ends[n - 1]!;
    const st = await s.settled(`replay up to ${boundary} of ${cut} copied bytes`, boundary);
    t.ok(s.disk().equals(imageAfter([{ writes: log.writes, count: n }])), `disk equals the origin after ${n} records (copy cut at ${cut})`);
    t.same(s.replayLink(), { seq: 1, origin: ORIGIN, minPos: boundary, len: 0 }, 'replay link at the record boundary');
    t.equal(s.ownVersion(1), nextVersionLink(V0, 1, ORIGIN, boundary, contentDigestOf(log.bytes.subarray(0, boundary))), 'own versionlink describes the replayed prefix');
    t.equal(st.restBytes, total - boundary, 'rest bytes = origin length - replayed');
    t.equal(st.consistent, true);
    if (cut !== boundary) t.match(st.waitReason, /not yet fetched further: incomplete record/, 'a torn tail at the local end waits');
  }
  t.equal(s.ownVersion(1), v1, 'equal versionlinks: identical history');
  t.equal(s.replayer.status.caughtUp, true);
  t.equal(s.replayer.replayCode, 1);
  t.equal(s.refetches.length, 0);
});

t.test('switches to the next logfile with the correct links', async (t) => {
  const s = await setup(t);
  const log1 = encodeLog(makeWrites(30, 2));
  const log2 = encodeLog(makeWrites(30, 3));
  s.originVersion(1, log1.bytes);
  writeFileSync(s.copyPath(1), log1.bytes);
  s.replayer.start();
  await s.settled('log 1 replayed', log1.bytes.length);
  t.equal(s.replayLink().seq, 1, 'no switch while the origin has not finished logfile 1');
  t.match(s.replayer.status.waitReason, /caught up/);

  // The origin rotates: final version-1, empty log-2 and version-2 at LOGPOS 0.
  const v1 = s.originVersion(1, log1.bytes);
  writeFileSync(s.copyPath(2), Buffer.alloc(0));
  const v2empty = s.originVersion(2, Buffer.alloc(0));
  s.replayer.nudge();
  await s.settled('switched to log 2', 0, 2);
  t.same(s.replayLink(), { seq: 2, origin: ORIGIN, minPos: 0, len: 0 }, 'replay link log-000000002-alpha,0,0');
  t.equal(s.ownVersion(1), v1, 'final own version-1 equals the origin\'s');
  t.equal(s.ownVersion(2), v2empty, 'own version-2 at LOGPOS 0 equals the origin\'s');

  appendFileSync(s.copyPath(2), log2.bytes);
  const v2 = s.originVersion(2, log2.bytes);
  s.replayer.nudge();
  await s.settled('log 2 replayed', log2.bytes.length, 2);
  t.ok(s.disk().equals(imageAfter([{ writes: log1.writes, count: 30 }, { writes: log2.writes, count: 30 }])), 'disk equals the origin after both logfiles');
  t.equal(s.ownVersion(2), v2, 'equal versionlinks after logfile 2');
  t.ok(s.logs.some((l) => /continuing with log-000000002-alpha/.test(l)));
});

t.test('a flipped bit stops replay in front of the record and asks for a re-fetch', async (t) => {
  const s = await setup(t);
  const log = encodeLog(makeWrites(40, 4));
  s.originVersion(1, log.bytes);
  const bad = Buffer.from(log.bytes);
  const victim = 12; // the first byte of record 12's payload (0-based)
  bad[log.ends[victim - 1]! + RECORD_HEADER_BYTES] ^= 0x04;
  writeFileSync(s.copyPath(1), bad);
  s.replayer.start();

  const st = await waitFor('replay stops on the defect', () => (s.replayer.replayCode < 0 ? s.replayer.status : undefined), 10_000);
  const defectAt = log.ends[victim - 1]!;
  t.equal(st.replayCode, REPLAY_STOP_CODE.EBADMSG, 'replay-code -74 (EBADMSG)');
  t.match(st.message, new RegExp(`log-000000001-alpha at offset ${defectAt}.*bad-checksum`), 'a clear status: file, offset, class');
  t.equal(st.replayedPos, defectAt, 'stopped at the end of the last good record');
  t.same(s.replayLink(), { seq: 1, origin: ORIGIN, minPos: defectAt, len: 0 });
  t.equal(s.ownVersion(1), nextVersionLink(V0, 1, ORIGIN, defectAt, contentDigestOf(log.bytes.subarray(0, defectAt))), 'own versionlink at the replayed position');
  t.ok(s.disk().equals(imageAfter([{ writes: log.writes, count: victim }])), 'nothing from the damaged record on is applied');
  t.same(s.refetches.map((r) => [r.file, r.offset]), [['log-000000001-alpha', defectAt]], 'one re-fetch request for the damaged copy');

  // Nudges and a pause/resume cycle: still stopped, no second request.
  s.replayer.nudge();
  await s.replayer.pause();
  s.replayer.start();
  t.equal(s.replayer.replayCode, REPLAY_STOP_CODE.EBADMSG);
  t.equal(s.refetches.length, 1);

  // The fetcher fetches the logfile again from offset 0.
  writeFileSync(s.copyPath(1), log.bytes.subarray(0, 1000));
  s.replayer.nudge();
  appendFileSync(s.copyPath(1), log.bytes.subarray(1000));
  s.replayer.nudge();
  await s.settled('replay continues after the re-fetch', log.bytes.length);
  t.equal(s.replayer.replayCode, 1);
  t.equal(s.replayer.message, 'OK');
  t.ok(s.disk().equals(imageAfter([{ writes: log.writes, count: 40 }])), 'the whole history is applied');
});

t.test('a hole in the numbering stops replay consistently at the end of the last logfile', async (t) => {
  const s = await setup(t);
  const log = encodeLog(makeWrites(20, 5));
  s.originVersion(1, log.bytes);
  writeFileSync(s.copyPath(1), log.bytes);
  // Emergency mode on the origin: log-12-alpha and version-11-alpha = 000...0,log-11-alpha,0:
  writeFileSync(s.copyPath(12), Buffer.alloc(0));
  s.tree.write(resPaths.version(RES, 11, ORIGIN), `${'0'.repeat(32)},log-000000011-alpha,0:`);
  s.replayer.start();
  const st = await waitFor('replay stops at the hole', () => (s.replayer.replayCode < 0 ? s.replayer.status : undefined), 10_000);
  t.equal(st.replayCode, REPLAY_STOP_CODE.ENODATA);
  t.match(st.message, /hole in the logfile sequence after 1 \(emergency mode or deleted logfile\)/);
  t.same(s.replayLink(), { seq: 1, origin: ORIGIN, minPos: log.bytes.length, len: 0 }, 'still on logfile 1, at its end');
  t.ok(s.disk().equals(imageAfter([{ writes: log.writes, count: 20 }])), 'the disk is the origin\'s state before the hole');
  t.equal(st.consistent, true);
  t.equal(s.refetches.length, 0, 'a hole is not repaired by fetching again');
});

t.test('a half-applied window left by a crash is re-applied on start, even when paused', async (t) => {
  const log = encodeLog(makeWrites(30, 6));
  const from = log.ends[9]!;
  const to = log.ends[19]! + 50; // the window ended inside record 20 (a torn local end back then)
  const s = await setup(t, { replay: formatReplayLink({ seq: 1, origin: ORIGIN, minPos: from, len: to - from }) });
  s.originVersion(1, log.bytes);
  writeFileSync(s.copyPath(1), log.bytes);
  // The crash left records 0..9 applied and, of the window, only 17 and 12, out of order.
  const img = imageAfter([{ writes: log.writes, count: 10 }]);
  for (const i of [17, 12]) log.writes[i]!.data?.copy(img, log.writes[i]!.devicePos);
  writeFileSync(join(s.tree.root, '..', 'disk.img'), img);

  s.replayer.start({ paused: true });
  const st = await waitFor('window repaired', () => (s.replayer.consistent && s.replayLink().len === 0 ? s.replayer.status : undefined), 10_000);
  t.ok(s.statuses.some((x) => !x.consistent), 'reported inconsistent until the window was re-applied');
  t.same(s.replayLink(), { seq: 1, origin: ORIGIN, minPos: log.ends[19]!, len: 0 }, 'replay link at the last record inside the window');
  t.equal(s.ownVersion(1), nextVersionLink(V0, 1, ORIGIN, log.ends[19]!, contentDigestOf(log.bytes.subarray(0, log.ends[19]!))));
  t.ok(s.disk().equals(imageAfter([{ writes: log.writes, count: 20 }])), 'the disk is a prefix state again');
  t.equal(st.isReplaying, false, 'and replay stays paused');
  s.replayer.nudge();
  await s.replayer.pause(); // one more decision while paused
  t.equal(s.replayLink().minPos, log.ends[19]!, 'nothing beyond the window was applied while paused');
  t.match(s.replayer.status.waitReason, /paused/);

  s.replayer.start();
  await s.settled('rest replayed after resume', log.bytes.length);
  t.ok(s.disk().equals(imageAfter([{ writes: log.writes, count: 30 }])));
});

t.test('pause resolves at a record boundary with the replay link durable', async (t) => {
  const s = await setup(t, { maxBatchBytes: 8192 });
  const log = encodeLog(makeWrites(800, 7));
  const link = await replayAndPause(s, log.bytes);
  t.equal(link.len, 0, 'no half-applied window after pause');
  t.equal(link.minPos, s.replayer.replayedPos);
  const n = log.ends.indexOf(link.minPos) + 1;
  t.ok(n > 0, `paused at a record boundary (${link.minPos})`);
  t.ok(link.minPos < log.bytes.length, 'paused in the middle of the logfile');
  t.ok(s.disk().equals(imageAfter([{ writes: log.writes, count: n }])), 'the disk holds exactly the records before the replay link');
  t.equal(parseVersionLink(s.ownVersion(1)!)!.logPos, link.minPos, 'own versionlink at the same position');
  t.equal(s.replayer.isReplaying, false);

  s.replayer.nudge();
  await s.replayer.pause();
  t.equal(s.replayLink().minPos, link.minPos, 'a nudge does not resume a paused replay');

  s.replayer.start();
  await s.settled('replay finishes after resume', log.bytes.length);
  t.ok(s.disk().equals(imageAfter([{ writes: log.writes, count: 800 }])));
});

t.test('a record beyond the device is a defect that a re-fetch cannot repair', async (t) => {
  const s = await setup(t);
  const writes = makeWrites(10, 8);
  writes.push({ devicePos: SIZE - 512, data: Buffer.alloc(4096, 7), lengthBytes: 4096 });
  writes.push(...makeWrites(5, 9));
  const log = encodeLog(writes);
  s.originVersion(1, log.bytes);
  writeFileSync(s.copyPath(1), log.bytes);
  s.replayer.start();
  const st = await waitFor('replay stops on the record beyond the device', () => (s.replayer.replayCode < 0 ? s.replayer.status : undefined), 10_000);
  t.equal(st.replayCode, REPLAY_STOP_CODE.EBADMSG);
  t.match(st.message, /bad-field.*beyond the device size/);
  t.equal(st.replayedPos, log.ends[9]!);
  t.ok(s.disk().equals(imageAfter([{ writes, count: 10 }])), 'the records before it are applied, none after');
  t.equal(s.refetches.length, 0, 'no re-fetch: the copy is faithful');
});

t.test('resize: a record in the grown area is applied when the disk grew, even before the grown size link arrived', async (t) => {
  const s = await setup(t);
  // The replayer started at SIZE; the disk grows underneath (the admin grew it, marsadm resize
  // followed on the primary), and the primary's writes into the new area arrive here before
  // the grown size link does (links and logfiles travel separately).
  truncateSync(s.diskPath, 2 * SIZE);
  const writes = makeWrites(5, 3);
  writes.push({ devicePos: SIZE + 8192, data: Buffer.alloc(4096, 9), lengthBytes: 4096 });
  writes.push({ devicePos: 2 * SIZE + 4096, data: Buffer.alloc(4096, 5), lengthBytes: 4096 });
  const log = encodeLog(writes);
  s.originVersion(1, log.bytes);
  writeFileSync(s.copyPath(1), log.bytes);
  s.replayer.start();
  const st = await waitFor('replay stops on the record beyond the grown disk', () => (s.replayer.replayCode < 0 ? s.replayer.status : undefined), 10_000);
  t.equal(st.replayedPos, log.ends[5]!, 'the record in the grown area was applied');
  t.ok(readFileSync(s.diskPath).subarray(SIZE + 8192, SIZE + 12288).equals(Buffer.alloc(4096, 9)), 'its data is on the disk');
  t.match(st.message, /beyond the device size 2097152/, 'beyond the grown disk and the size link it is still a defect');
});

// ---- write requests split into several records (RECORD_FLAG_MORE) ------------------------

/** A log of write requests of 1..4 pages, each split into one record per page as the logger does. */
function encodeSplitLog(requests: number, seed: number): { bytes: Buffer; writeEnds: number[]; recordEnds: number[]; image: (count: number) => Buffer } {
  const r = rng(seed);
  const specs: { devicePos: number; data: Buffer }[] = [];
  for (let i = 0; i < requests; i++) {
    const pages = 1 + Math.floor(r() * 4);
    const data = Buffer.alloc(pages * 4096);
    for (let j = 0; j < data.length; j += 4) data.writeUInt32LE((r() * 2 ** 32) >>> 0, j);
    specs.push({ devicePos: 4096 * Math.floor(r() * (64 - pages)), data });
  }
  const bytes = Buffer.alloc(specs.reduce((n, w) => n + (w.data.length / 4096) * recordBytes(4096), 0));
  const writeEnds: number[] = [];
  const recordEnds: number[] = [];
  let at = 0;
  let seqNr = 1;
  for (const [i, w] of specs.entries()) {
    for (let p = 0; p < w.data.length; p += 4096) {
      at += encodeRecord(bytes, at, {
        devicePos: w.devicePos + p, code: RecordCode.WriteNew, stampSec: 1000 + i, stampNsec: 0, seqNr: seqNr++,
        payload: w.data.subarray(p, p + 4096), flags: p + 4096 < w.data.length ? RECORD_FLAG_MORE : 0,
      });
      recordEnds.push(at);
    }
    writeEnds.push(at);
  }
  const image = (count: number) => {
    const img = Buffer.alloc(SIZE);
    for (const w of specs.slice(0, count)) w.data.copy(img, w.devicePos);
    return img;
  };
  return { bytes, writeEnds, recordEnds, image };
}

t.test('a write request split into records is applied whole: copy ends, batch limits and pauses inside one hold it back', async (t) => {
  const s = await setup(t, { maxBatchBytes: 3 * recordBytes(4096) });
  const log = encodeSplitLog(40, 8);
  s.originVersion(1, log.bytes);
  writeFileSync(s.copyPath(1), Buffer.alloc(0));
  s.replayer.start();
  // Copy ends at record boundaries inside write requests (and one inside a record).
  const inside = log.recordEnds.filter((e) => !log.writeEnds.includes(e));
  t.ok(inside.length >= 5, 'the history has write requests of several records');
  const cuts = [inside[1]!, inside[3]! + 100, inside[Math.floor(inside.length / 2)]!, inside[inside.length - 1]!, log.bytes.length];
  let copied = 0;
  for (const cut of cuts) {
    appendFileSync(s.copyPath(1), log.bytes.subarray(copied, cut));
    copied = cut;
    s.replayer.nudge();
    const whole = log.writeEnds.filter((e) => e <= cut).length;
    const boundary = whole === 0 ? 0 : log.writeEnds[whole - 1]!;
    const st = await s.settled(`replay up to the write boundary ${boundary} of ${cut} copied bytes`, boundary);
    t.ok(s.disk().equals(log.image(whole)), `disk equals the origin after ${whole} whole write requests (copy cut at ${cut})`);
    t.same(s.replayLink(), { seq: 1, origin: ORIGIN, minPos: boundary, len: 0 }, 'replay link at the end of a write request');
    if (log.recordEnds.includes(cut) && cut !== boundary) {
      t.match(st.waitReason, /write request at offset \d+ is incomplete in the local copy/, 'held back, waiting for the rest');
      t.equal(st.caughtUp, false, 'a held write request is not caught up');
    }
  }
  t.equal(s.replayer.status.caughtUp, true);
  t.ok(s.disk().equals(log.image(40)));
});

t.test('pausing inside a long run of split write requests stops between two of them', async (t) => {
  const s = await setup(t, { maxBatchBytes: 2 * recordBytes(4096) });
  const log = encodeSplitLog(600, 9);
  const link = await replayAndPause(s, log.bytes);
  const whole = log.writeEnds.indexOf(link.minPos) + 1;
  t.ok(whole > 0, `paused at the end of a write request (${link.minPos})`);
  t.ok(link.minPos < log.bytes.length, 'paused in the middle of the logfile');
  t.ok(s.disk().equals(log.image(whole)), 'the disk holds exactly the write requests before the replay link');
  s.replayer.start();
  await s.settled('replay finishes after resume', log.bytes.length);
  t.ok(s.disk().equals(log.image(600)));
});

t.test('a logfile its origin finished inside a write request (cut off by a crash) is applied as it stands, then replay switches', async (t) => {
  const s = await setup(t);
  const log = encodeSplitLog(20, 10);
  const cutAt = log.recordEnds.find((e) => e > log.writeEnds[10]! && !log.writeEnds.includes(e))!;
  const part = log.bytes.subarray(0, cutAt);
  writeFileSync(s.copyPath(1), part);
  s.originVersion(1, part); // the origin's LOGPOS so far: not final yet
  s.replayer.start();
  const whole = log.writeEnds.filter((e) => e <= cutAt).length;
  await s.settled('held in front of the cut-off write request', log.writeEnds[whole - 1]!);
  t.ok(s.disk().equals(log.image(whole)), 'only whole write requests while the logfile may grow');
  // The origin restarted: logfile 1 is final at cutAt, logfile 2 follows.
  writeFileSync(s.copyPath(2), Buffer.alloc(0));
  s.originVersion(2, Buffer.alloc(0));
  s.replayer.nudge();
  await s.settled('switched to log 2', 0, 2);
  const img = log.image(whole);
  for (let at = log.writeEnds[whole - 1]!; at < cutAt; at += recordBytes(4096)) part.copy(img, part.readUInt32LE(at + 28), at + RECORD_HEADER_BYTES, at + RECORD_HEADER_BYTES + 4096);
  t.ok(s.disk().equals(img), 'the cut-off write request is applied as far as the origin logged it');
});

/** Offer logfile 1 whole, start the replayer and pause it once it has applied something. */
async function replayAndPause(s: Awaited<ReturnType<typeof setup>>, bytes: Buffer): Promise<ReturnType<typeof s.replayLink>> {
  s.originVersion(1, bytes);
  writeFileSync(s.copyPath(1), bytes);
  s.replayer.start();
  await waitFor('replay under way', () => s.replayer.replayedPos > 0, 10_000);
  await s.replayer.pause();
  return s.replayLink();
}
