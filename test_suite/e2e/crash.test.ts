// Invariant 1 (docs/design.md §3) and write order under SIGKILL of marsd.
//
// One host with a 32 MiB resource. Each round: connect an NBD client, run a stream of writes
// (random 4 KiB-aligned offsets, 4..64 KiB, several in flight, a FLUSH every few writes, some
// FUA writes, a few WRITE_ZEROES), SIGKILL marsd at a random moment, restart it, wait until it
// is primary again, read the whole device and check it against an in-memory model:
//  (a) every write acknowledged before a FLUSH that completed, and every acknowledged FUA
//      write, is visible (unless overwritten by a later write that is visible too);
//  (b) the device equals the image before the round with writes 1..P of the round applied in
//      submission order, for some P, except that write P+1 may show in part (an unacknowledged
//      write is not atomic: the logger splits it into 4 KiB records and a crash can cut the log
//      between them), and every durable write of (a) is within that prefix.
// The device content after each round is the next round's model.
//
// Every data block carries its global write number and its index inside the write, and the
// rest of the block is a pseudo-random function of those two, so the content identifies the
// write exactly.
//
// ASSUMPTION (stated, not guaranteed by NBD): requests in flight at the same time on one
// connection have no defined order between them in the NBD protocol. The server reads one
// connection's requests in stream order and the transaction logger appends them in the order
// they arrive, so for a single connection the log order is the submission order. The model
// relies on that. It does not hold under memory back-pressure: with a small --mem-limit (e.g.
// MARS_CRASH_MARSD_ARGS='--mem-limit 256k') writes waiting for writeback progress are overtaken
// by later ones (NBD allows that, the model does not), so the default run uses the default limit.
//
// Before each restart, `marsadm log-dump` checks the logfiles the recovery will read: after a
// SIGKILL they may end in a torn tail, never in a defect.
//
// Environment knobs: MARS_CRASH_ROUNDS (default 50), MARS_CRASH_SEED (default random; printed),
// MARS_CRASH_KEEP (a directory: on a failure the host's directory is copied there for study),
// MARS_CRASH_MARSD_ARGS (extra marsd arguments, space-separated).
import t, { type Test } from 'tap';
import { cpSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { NbdClient, NbdConnectionClosed, NbdError } from '../../kernel-shim/nbd-client.js';
import { startHost, type MarsHost } from '../helpers/cluster.js';
import { mulberry32 } from '../helpers/prng.js';

const RES = 'r0';
const SIZE_BYTES = 32 * 1024 * 1024;
const BLOCK = 4096;
const NBLOCKS = SIZE_BYTES / BLOCK;
const ROUNDS = Number(process.env.MARS_CRASH_ROUNDS ?? 50);
/**
 * Hard stop for the whole loop: alone the 50 rounds take about 3 min on 2 cores, but beside the
 * multi-host tests (tap runs two files at a time) a round can take four times as long (a CI run
 * under load used 9 min for 46 rounds). The file's tap timeout is raised above it.
 */
const BUDGET_MS = 14 * 60_000;
const FILE_TIMEOUT_MS = BUDGET_MS + 2 * 60_000;
t.setTimeout(FILE_TIMEOUT_MS);
const MAX_WRITES_PER_ROUND = 3000;
const MAGIC = Buffer.from('MARSCRSH', 'latin1');

/** On a failure, keep the evidence if MARS_CRASH_KEEP names a directory. */
function keepEvidence(t: Test, host: MarsHost): void {
  const keep = process.env.MARS_CRASH_KEEP;
  if (!keep) return;
  cpSync(host.dir, keep, { recursive: true, verbatimSymlinks: true, filter: (src) => !src.endsWith('.sock') });
  t.comment(`host directory copied to ${keep}`);
}

/** Block `blockIdx` of global write `writeNo`: header, then xorshift32 words. */
function fillBlock(out: Buffer, at: number, writeNo: number, blockIdx: number): void {
  MAGIC.copy(out, at);
  out.writeUInt32LE(writeNo, at + 8);
  out.writeUInt32LE(blockIdx, at + 12);
  let x = (Math.imul(writeNo, 0x9e3779b1) ^ Math.imul(blockIdx + 1, 0x85ebca6b) ^ 0x5bd1e995) >>> 0 || 1;
  for (let p = at + 16; p < at + BLOCK; p += 4) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out.writeUInt32LE(x, p);
  }
}

function describeBlock(block: Buffer): string {
  if (block.every((b) => b === 0)) return 'zeroes';
  if (block.subarray(0, 8).equals(MAGIC)) return `write #${block.readUInt32LE(8)} block ${block.readUInt32LE(12)}`;
  return `unrecognised bytes ${block.subarray(0, 16).toString('hex')}`;
}

// ---- the model -------------------------------------------------------------------------------

interface ModelWrite {
  /** 1-based position in this round's submission order */
  idx: number;
  /** global write number (tags the content) */
  writeNo: number;
  firstBlock: number;
  blocks: number;
  kind: 'data' | 'zero';
  fua: boolean;
  acked: boolean;
  durable: boolean;
}

const ZERO_BLOCK = Buffer.alloc(BLOCK);
const scratch = Buffer.allocUnsafe(BLOCK);

function expectedBlock(w: ModelWrite, block: number): Buffer {
  if (w.kind === 'zero') return ZERO_BLOCK;
  fillBlock(scratch, 0, w.writeNo, block - w.firstBlock);
  return scratch;
}

interface Analysis {
  /** every P in 0..n for which the device is base + writes 1..P + part of write P+1 */
  feasible: number[];
  /** blocks no write of the round touched that differ from the base */
  untouchedMismatches: number[];
}

/**
 * Which prefixes P of the round's writes explain the device content? The device must equal
 * base + writes 1..P, except that write P+1 may be torn: any of its blocks may show it. (An
 * unacknowledged NBD write is not atomic: the logger splits it into 4 KiB records, and a crash
 * can cut the log between them. A durable write is never the torn one: P >= last durable.)
 */
function analyse(base: Buffer, device: Buffer, writes: ModelWrite[]): Analysis {
  const n = writes.length;
  const covering = new Map<number, number[]>();
  for (const w of writes) {
    for (let b = w.firstBlock; b < w.firstBlock + w.blocks; b++) {
      let list = covering.get(b);
      if (!list) covering.set(b, (list = []));
      list.push(w.idx);
    }
  }
  // diff[P] counts blocks whose content rules out prefix P (difference array over 0..n).
  const diff = new Int32Array(n + 2);
  const exclude = (from: number, to: number) => {
    if (from > to) return;
    diff[from]! += 1;
    diff[to + 1]! -= 1;
  };
  const untouchedMismatches: number[] = [];
  for (let b = 0; b < NBLOCKS; b++) {
    const observed = device.subarray(b * BLOCK, (b + 1) * BLOCK);
    const baseBlock = base.subarray(b * BLOCK, (b + 1) * BLOCK);
    const list = covering.get(b);
    if (!list) {
      if (!observed.equals(baseBlock)) untouchedMismatches.push(b);
      continue;
    }
    // Segments of P with the same expected content: [0, c1-1] base, [ci, c(i+1)-1] write ci.
    // The last P of a segment is also fine if the block shows the next write (torn at P+1).
    const shows = list.map((idx) => observed.equals(expectedBlock(writes[idx - 1]!, b)));
    const segments: { from: number; to: number; ok: boolean }[] = [{ from: 0, to: list[0]! - 1, ok: observed.equals(baseBlock) }];
    for (let i = 0; i < list.length; i++) {
      segments.push({ from: list[i]!, to: i + 1 < list.length ? list[i + 1]! - 1 : n, ok: shows[i]! });
    }
    segments.forEach((seg, i) => {
      if (seg.ok) return;
      const nextShown = i < list.length && shows[i]!; // segment i is followed by write list[i]
      exclude(seg.from, nextShown ? seg.to - 1 : seg.to);
    });
  }
  const feasible: number[] = [];
  let run = 0;
  for (let p = 0; p <= n; p++) {
    run += diff[p]!;
    if (run === 0) feasible.push(p);
  }
  return { feasible, untouchedMismatches };
}

/** base + writes 1..p, for failure reports. */
function applyPrefix(base: Buffer, writes: ModelWrite[], p: number): Buffer {
  const img = Buffer.from(base);
  for (const w of writes.slice(0, p)) {
    for (let b = w.firstBlock; b < w.firstBlock + w.blocks; b++) expectedBlock(w, b).copy(img, b * BLOCK);
  }
  return img;
}

/**
 * Check (a), independent of any order model: each block of a durable write shows that write,
 * or a write submitted after it that covers the block. Returns the violations.
 */
function durableLost(device: Buffer, writes: ModelWrite[]): string[] {
  const lost: string[] = [];
  for (const d of writes) {
    if (!d.durable) continue;
    for (let b = d.firstBlock; b < d.firstBlock + d.blocks; b++) {
      const observed = device.subarray(b * BLOCK, (b + 1) * BLOCK);
      if (observed.equals(expectedBlock(d, b))) continue;
      const later = writes.some((w) => w.idx > d.idx && b >= w.firstBlock && b < w.firstBlock + w.blocks && observed.equals(expectedBlock(w, b)));
      if (!later) lost.push(`write ${d.idx} (#${d.writeNo}${d.fua ? ' FUA' : ' flushed'}) block ${b}: device has ${describeBlock(observed)}`);
    }
  }
  return lost;
}

function explainFailure(base: Buffer, device: Buffer, writes: ModelWrite[], p: number): string {
  const img = applyPrefix(base, writes, p);
  const lines: string[] = [];
  let count = 0;
  for (let b = 0; b < NBLOCKS; b++) {
    const d = device.subarray(b * BLOCK, (b + 1) * BLOCK);
    const e = img.subarray(b * BLOCK, (b + 1) * BLOCK);
    if (d.equals(e)) continue;
    count++;
    if (lines.length < 12) {
      const writers = writes.filter((w) => b >= w.firstBlock && b < w.firstBlock + w.blocks)
        .map((w) => `${w.idx}(#${w.writeNo}${w.kind === 'zero' ? ' zero' : ''}${w.acked ? ' acked' : ''}${w.durable ? ' durable' : ''})`);
      lines.push(`  block ${b}: device has ${describeBlock(d)}, prefix ${p} expects ${describeBlock(e)}; writes covering it: ${writers.join(' ') || 'none'}`);
    }
  }
  // Which writes does the device show? Count the blocks of each write that no later write of
  // the round covers ("own" blocks) and how many of them hold exactly that write's data.
  const lastWriter = new Map<number, number>();
  for (const w of writes) for (let b = w.firstBlock; b < w.firstBlock + w.blocks; b++) lastWriter.set(b, w.idx);
  const wlines: string[] = [];
  for (const w of writes.slice(Math.max(0, p - 10), p + 30)) {
    let own = 0;
    let shown = 0;
    for (let b = w.firstBlock; b < w.firstBlock + w.blocks; b++) {
      if (lastWriter.get(b) !== w.idx) continue;
      own++;
      if (device.subarray(b * BLOCK, (b + 1) * BLOCK).equals(expectedBlock(w, b))) shown++;
    }
    wlines.push(`  write ${w.idx} (#${w.writeNo} ${w.kind}${w.fua ? ' FUA' : ''}, blocks ${w.firstBlock}+${w.blocks}${w.acked ? ', acked' : ''}${w.durable ? ', durable' : ''}): shows ${shown} of its ${own} last-written blocks`);
  }
  return `${count} blocks differ from base + writes 1..${p}:\n${lines.join('\n')}\nwrites around ${p}:\n${wlines.join('\n')}`;
}

// ---- one round -------------------------------------------------------------------------------

interface RoundResult {
  writes: ModelWrite[];
  killMode: string;
  flushesDone: number;
  errors: string[];
}

/**
 * Streams writes into the export until marsd is SIGKILLed (by a timer or after a number of
 * acknowledged writes), and records exactly which writes were acknowledged and which were
 * durable (acknowledged FUA, or acknowledged before a FLUSH was sent that then completed).
 */
async function writeStormAndKill(host: MarsHost, rnd: () => number, nextWriteNo: () => number): Promise<RoundResult> {
  const client = await NbdClient.connect(host.socketPath(RES), RES);
  if (client.sizeBytes !== SIZE_BYTES) throw new Error(`export has ${client.sizeBytes} bytes, expected ${SIZE_BYTES}`);
  const writes: ModelWrite[] = [];
  const errors: string[] = [];
  const queueDepth = 1 + Math.floor(rnd() * 16);
  const flushEvery = 2 + Math.floor(rnd() * 8);
  const fuaRate = rnd() * 0.15;
  let killed = false;
  let killMode: string;
  let timer: NodeJS.Timeout | undefined;
  let ackedCount = 0;
  let killAfterAcks = Infinity;
  const kill = () => {
    if (killed) return;
    killed = true;
    host.kill('SIGKILL');
  };
  if (rnd() < 0.5) {
    const ms = Math.floor(rnd() * 400);
    killMode = `timer ${ms} ms`;
    timer = setTimeout(kill, ms);
  } else {
    killAfterAcks = Math.floor(rnd() * 300);
    killMode = `after ${killAfterAcks} acks`;
    if (killAfterAcks === 0) kill();
  }

  let inFlight = 0;
  let slotFreed: (() => void) | null = null;
  const settled: Promise<unknown>[] = [];
  let ackedNotDurable: ModelWrite[] = [];
  let flushesDone = 0;
  let sinceFlush = 0;
  const onError = (what: string) => (err: unknown) => {
    if (err instanceof NbdConnectionClosed) {
      if (!killed) errors.push(`${what}: connection closed before marsd was killed: ${err.message}`);
    } else if (err instanceof NbdError) {
      errors.push(`${what}: server replied ${err.code}`);
    } else {
      errors.push(`${what}: ${(err as Error).message}`);
    }
  };
  const track = (p: Promise<void>, onOk: () => void, what: string) => {
    inFlight++;
    settled.push(p.then(onOk, onError(what)).finally(() => {
      inFlight--;
      const f = slotFreed;
      slotFreed = null;
      f?.();
    }));
  };

  for (let i = 0; i < MAX_WRITES_PER_ROUND && !killed && client.isOpen; i++) {
    while (inFlight >= queueDepth && !killed && client.isOpen) await new Promise<void>((r) => (slotFreed = r));
    if (killed || !client.isOpen) break;
    if (sinceFlush >= flushEvery) {
      sinceFlush = 0;
      // NBD: a FLUSH covers the writes that completed before it was sent.
      const covered = ackedNotDurable;
      ackedNotDurable = [];
      track(client.flush(), () => {
        flushesDone++;
        for (const w of covered) w.durable = true;
      }, 'FLUSH');
      continue;
    }
    sinceFlush++;
    const blocks = 1 + Math.floor(rnd() * 16);
    const firstBlock = Math.floor(rnd() * (NBLOCKS - blocks + 1));
    const kind = rnd() < 0.05 ? 'zero' : 'data';
    const fua = rnd() < fuaRate;
    const w: ModelWrite = { idx: writes.length + 1, writeNo: nextWriteNo(), firstBlock, blocks, kind, fua, acked: false, durable: false };
    writes.push(w);
    let op: Promise<void>;
    if (kind === 'zero') {
      op = client.writeZeroes(firstBlock * BLOCK, blocks * BLOCK, { fua });
    } else {
      const data = Buffer.allocUnsafe(blocks * BLOCK);
      for (let k = 0; k < blocks; k++) fillBlock(data, k * BLOCK, w.writeNo, k);
      op = client.write(firstBlock * BLOCK, data, { fua });
    }
    track(op, () => {
      w.acked = true;
      if (fua) w.durable = true;
      else ackedNotDurable.push(w);
      ackedCount++;
      if (ackedCount >= killAfterAcks) kill();
    }, `${kind === 'zero' ? 'WRITE_ZEROES' : 'WRITE'} ${w.idx}`);
  }
  if (!killed) {
    killMode += ' (stream ended first: killed at its end)';
    kill();
  }
  clearTimeout(timer);
  await host.waitExit(20_000);
  // The socket closes with the process: every request settles (acknowledged or not).
  await Promise.race([
    Promise.all(settled),
    new Promise((_, reject) => setTimeout(() => reject(new Error('requests did not settle within 20 s after the kill')), 20_000).unref()),
  ]);
  client.destroy();
  return { writes, killMode, flushesDone, errors };
}

// ---- the logfiles after the kill ---------------------------------------------------------------

interface LogCheck {
  file: string;
  status: string;
  records: number;
  summary: string;
}

/**
 * `marsadm log-dump --json` of every logfile from the replay link's on: after a SIGKILL a
 * logfile may end in a torn tail, never in a defect.
 */
async function checkLogsAfterKill(host: MarsHost): Promise<LogCheck[]> {
  const dir = join(host.marsDir, `resource-${RES}`);
  const replay = host.link(`resource-${RES}/replay-${host.name}`) ?? '';
  const fromSeq = Number(/^log-(\d{9})-/.exec(replay)?.[1] ?? '0');
  const files = readdirSync(dir).filter((f) => /^log-\d{9}-/.test(f) && Number(f.slice(4, 13)) >= fromSeq).sort();
  const out: LogCheck[] = [];
  for (const f of files) {
    const r = await host.marsadm(['log-dump', '--json', join(dir, f)]);
    let parsed: { end?: { status: string; kind: string; offset: number; detail: string }; records?: number } = {};
    try {
      parsed = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}');
    } catch { /* reported below */ }
    out.push({
      file: f,
      status: parsed.end?.status ?? `unparsable (exit ${r.code}: ${r.stderr.trim() || r.stdout.trim()})`,
      records: parsed.records ?? -1,
      summary: parsed.end ? `${parsed.end.status} ${parsed.end.kind} at ${parsed.end.offset}: ${parsed.end.detail}` : r.stdout.trim(),
    });
  }
  return out;
}

// ---- the test --------------------------------------------------------------------------------

t.test('SIGKILL of marsd never loses durable writes and keeps write order', { timeout: FILE_TIMEOUT_MS }, async (t) => {
  // A fixed seed: CI runs the same schedule every time; MARS_CRASH_SEED explores others.
  const seed = Number(process.env.MARS_CRASH_SEED ?? 90210);
  t.comment(`seed ${seed} (MARS_CRASH_SEED=${seed} repeats this run), ${ROUNDS} rounds`);
  const rnd = mulberry32(seed);
  const started = Date.now();

  const extraArgs = (process.env.MARS_CRASH_MARSD_ARGS ?? '').split(' ').filter((a) => a !== '');
  if (extraArgs.length) t.comment(`marsd ${extraArgs.join(' ')}`);
  const host = await startHost(t, { host: 'alpha', sizeBytes: SIZE_BYTES, extraArgs });
  await host.createResource(RES);
  await host.waitPrimary(RES);

  let model: Buffer = Buffer.alloc(SIZE_BYTES); // a fresh sparse data file reads as zeroes
  {
    const c = await NbdClient.connect(host.socketPath(RES), RES);
    const initial = await c.readRange(0, SIZE_BYTES);
    await c.disconnect();
    t.ok(initial.equals(model), 'a new resource reads as zeroes');
  }

  let writeNo = 0;
  const totals = { rounds: 0, writes: 0, acked: 0, durable: 0, ackedButLost: 0 };
  for (let round = 1; round <= ROUNDS; round++) {
    if (Date.now() - started > BUDGET_MS) {
      t.fail(`time budget of ${BUDGET_MS / 1000} s used up after ${round - 1} of ${ROUNDS} rounds`);
      break;
    }
    const roundStart = Date.now();
    const { writes, killMode, flushesDone, errors } = await writeStormAndKill(host, rnd, () => ++writeNo);
    if (errors.length > 0) {
      t.fail(`round ${round}: requests failed while marsd was running`, { errors: errors.slice(0, 10) });
      break;
    }
    const logs = await checkLogsAfterKill(host);
    const badLogs = logs.filter((l) => l.status !== 'clean' && l.status !== 'torn');
    const tornLogs = logs.filter((l) => l.status === 'torn');
    if (badLogs.length > 0) {
      keepEvidence(t, host);
      t.fail(`round ${round}: after the SIGKILL a logfile is defective (before any recovery)`, { logs, writes: writes.length });
      break;
    }
    const restartAt = Date.now();
    await host.start();
    try {
      await host.waitPrimary(RES, 30_000);
    } catch (err) {
      keepEvidence(t, host);
      throw err;
    }
    const recoveryMs = Date.now() - restartAt;
    const diskState = await host.view('diskstate', RES);
    if (/DefectiveLog/.test(diskState) || host.actual(RES, 'replay-code') !== '0') {
      t.fail(`round ${round}: marsd did not restart cleanly: diskstate ${diskState}, replay-code ${host.actual(RES, 'replay-code')}`, {
        error: host.actual(RES, 'msg-err-replay-stop'), log: host.logTail(15),
      });
      break;
    }

    const client = await NbdClient.connect(host.socketPath(RES), RES);
    const device = await client.readRange(0, SIZE_BYTES);
    await client.disconnect();

    const n = writes.length;
    const acked = writes.filter((w) => w.acked);
    const durable = writes.filter((w) => w.durable);
    const maxDurable = durable.reduce((m, w) => Math.max(m, w.idx), 0);
    const maxAcked = acked.reduce((m, w) => Math.max(m, w.idx), 0);
    const { feasible, untouchedMismatches } = analyse(model, device, writes);
    const best = feasible.length > 0 ? feasible[feasible.length - 1]! : -1;
    const ackedButLost = acked.filter((w) => w.idx > best).length;
    const tornNext = best >= 0 && best < n && !device.equals(applyPrefix(model, writes, best));
    t.comment(`round ${round}: kill ${killMode}; submitted ${n}, acked ${acked.length}, durable ${durable.length} `
      + `(last durable ${maxDurable}, last acked ${maxAcked}, flushes ${flushesDone}); prefix ${best}`
      + `${feasible.length > 1 ? ` (feasible ${feasible[0]}..${best})` : ''}${tornNext ? ` + part of write ${best + 1}` : ''}; restart+recovery ${recoveryMs} ms; diskstate ${diskState}; `
      + `round ${Date.now() - roundStart} ms${tornLogs.length ? `; torn log tail: ${tornLogs.map((l) => l.summary).join('; ')}` : ''}`);

    if (untouchedMismatches.length > 0) {
      t.fail(`round ${round}: ${untouchedMismatches.length} blocks no write touched changed`, {
        blocks: untouchedMismatches.slice(0, 10).map((b) => `${b}: ${describeBlock(device.subarray(b * BLOCK, (b + 1) * BLOCK))}`),
      });
      break;
    }
    // (a) durable writes are visible unless overwritten by a later write that is visible.
    const lostDurable = durableLost(device, writes);
    if (lostDurable.length > 0) {
      keepEvidence(t, host);
      t.fail(`round ${round}: ${lostDurable.length} blocks of durable writes are lost`, { lost: lostDurable.slice(0, 20) });
      break;
    }
    // (b) the device is the pre-round image plus a prefix of the write order.
    if (feasible.length === 0) {
      keepEvidence(t, host);
      t.fail(`round ${round}: the device is not the pre-round image plus any prefix of the write order`, {
        detail: explainFailure(model, device, writes, Math.max(maxDurable, maxAcked)),
      });
      break;
    }
    // (a) + (b): the durable writes are inside the prefix the device shows.
    const feasibleWithDurable = feasible.filter((p) => p >= maxDurable);
    if (feasibleWithDurable.length === 0) {
      const lost = durable.filter((w) => w.idx > best).map((w) => `${w.idx}(#${w.writeNo}${w.fua ? ' FUA' : ' flushed'})`);
      t.fail(`round ${round}: durable writes are missing: the device shows prefix ${best}, but write ${maxDurable} was durable`, {
        lost: lost.slice(0, 20),
        detail: explainFailure(model, device, writes, maxDurable),
      });
      break;
    }
    totals.rounds++;
    totals.writes += n;
    totals.acked += acked.length;
    totals.durable += durable.length;
    totals.ackedButLost += ackedButLost;
    model = device;
  }

  t.equal(totals.rounds, ROUNDS, `all ${ROUNDS} rounds passed`);
  t.comment(`totals: ${JSON.stringify(totals)} in ${Math.round((Date.now() - started) / 1000)} s `
    + '(ackedButLost: acknowledged, not durable, and not on the device after the kill; allowed by NBD)');
  t.notMatch(host.logTail(100_000), /unhandled rejection/, 'marsd logged no unhandled rejection');
});
