// The workload driver against an in-process NBD server on a temporary file: every acknowledged
// write lands and the file passes the oracle; runs are deterministic for a seed; abort, the
// deadline and a server that goes away all stop it cleanly, with the oracle accepting the
// maybe-written writes; and a damaged file is caught.
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlockBackend } from '../../kernel-shim/backend.js';
import { FileBackend } from '../../kernel-shim/file-backend.js';
import { NbdServer } from '../../kernel-shim/nbd-server.js';
import { WriteOrderOracle, type CheckResult, type ReadImage } from '../helpers/oracle.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { Prng, runWorkload } from '../helpers/workload.js';

const DISK_BYTES = 8 * 1024 * 1024;
const BS = 4096;

interface Export {
  server: NbdServer;
  socketPath: string;
  diskPath: string;
  logs: string[];
}

/** An NbdServer exporting a fresh sparse file as 'disk'; closed and removed in teardown. */
async function startExport(t: Test, name = 'w'): Promise<Export> {
  const dir = tempDir(t, 'mars-workload-');
  const diskPath = join(dir, `${name}.img`);
  const socketPath = join(dir, `${name}.sock`);
  const file = await FileBackend.open(diskPath, { create: true, sizeBytes: DISK_BYTES });
  const logs: string[] = [];
  const server = new NbdServer({ log: (level, msg) => logs.push(`${level} ${msg}`), shutdownGraceMs: 2_000 });
  t.teardown(async () => {
    await server.close();
    await file.close();
  });
  await server.addExport('disk', file, { socketPath });
  return { server, socketPath, diskPath, logs };
}

/** Reads the backing file directly, as a replica's disk would be read. */
async function fileReader(t: Test, path: string): Promise<ReadImage> {
  const fh = await open(path, 'r');
  t.teardown(() => fh.close());
  return async (pos, len) => {
    const buf = Buffer.alloc(len);
    const { bytesRead } = await fh.read(buf, 0, len, pos);
    if (bytesRead !== len) throw new Error(`short read at ${pos}`);
    return buf;
  };
}

function assertOk(t: Test, r: CheckResult, what: string): asserts r is Extract<CheckResult, { ok: true }> {
  if (!r.ok) t.fail(`${what}: ${r.reason}`);
  else t.pass(what);
}

t.test('Prng is deterministic and spreads over its range', async (t) => {
  const a = new Prng(42);
  const b = new Prng(42);
  const xs = Array.from({ length: 1000 }, () => a.below(10));
  t.same(xs, Array.from({ length: 1000 }, () => b.below(10)), 'same seed, same numbers');
  t.equal(new Set(xs).size, 10, 'every value in [0, 10) appears');
  t.ok(xs.every((x) => Number.isInteger(x) && x >= 0 && x < 10));
  t.not(new Prng(1).nextU32(), new Prng(2).nextU32());
});

t.test('a complete run: all writes acknowledged, flushed, and the file is the full history', async (t) => {
  const ex = await startExport(t);
  const oracle = new WriteOrderOracle({ deviceBytes: DISK_BYTES, blockBytes: BS });
  const r = await runWorkload({
    socketPath: ex.socketPath, exportName: 'disk', oracle,
    writes: 3000, durationMs: 30_000, blocksPerWrite: { min: 1, max: 16 },
    queueDepth: 16, flushEvery: 250, fuaEvery: 50, seed: 7,
  });
  t.equal(r.stopReason, 'count', r.error ?? 'stopped at the write count');
  t.equal(r.submitted, 3000);
  t.equal(r.acknowledged, 3000);
  t.equal(r.failed, 0);
  t.same([r.firstSeq, r.lastSeq], [1, 3000]);
  t.ok(r.flushes >= 12, `${r.flushes} flushes`);
  t.equal(r.durableSeq, 3000, 'the final flush made everything durable');
  t.equal(oracle.pendingCount, 0);
  const read = await fileReader(t, ex.diskPath);
  const check = await oracle.checkReached(read, oracle.lastSeq);
  assertOk(t, check, 'the file holds the whole history');
  t.same([check.prefixMin, check.prefixMax], [3000, 3000]);

  // The check can fail: roll one block written by the last write back to zeros.
  const last = oracle.blockRangeOf(oracle.lastSeq);
  const fh = await open(ex.diskPath, 'r+');
  await fh.write(Buffer.alloc(BS), 0, BS, last.start * BS);
  await fh.close();
  const after = await oracle.checkReached(read, oracle.lastSeq);
  t.notOk(after.ok, 'a rolled-back block is caught');
  if (!after.ok) t.match(after.reason, new RegExp(`block ${last.start}`));
});

t.test('the same seed gives the same disk', async (t) => {
  const digests: string[] = [];
  for (const name of ['a', 'b']) {
    const ex = await startExport(t, name);
    const oracle = new WriteOrderOracle({ deviceBytes: DISK_BYTES });
    const r = await runWorkload({ socketPath: ex.socketPath, exportName: 'disk', oracle, writes: 800, durationMs: 30_000, queueDepth: 32, seed: 99 });
    t.equal(r.acknowledged, 800, r.error ?? `run ${name}`);
    digests.push(createHash('sha256').update(await readFile(ex.diskPath)).digest('hex'));
  }
  t.equal(digests[0], digests[1]);
});

t.test('abort: stops promptly, in-flight writes settle, everything acknowledged is there', async (t) => {
  const ex = await startExport(t);
  const oracle = new WriteOrderOracle({ deviceBytes: DISK_BYTES });
  const ac = new AbortController();
  const run = runWorkload({ socketPath: ex.socketPath, exportName: 'disk', oracle, writes: 10_000_000, durationMs: 60_000, queueDepth: 8, signal: ac.signal, seed: 3 });
  await waitFor('500 writes submitted', () => oracle.lastSeq >= 500, 30_000, 1);
  const abortedAt = Date.now();
  ac.abort();
  const r = await run;
  t.ok(Date.now() - abortedAt < 5_000, 'returned promptly');
  t.equal(r.stopReason, 'aborted');
  t.ok(r.submitted < 10_000_000);
  t.equal(r.failed, 0);
  t.equal(r.acknowledged, r.submitted);
  t.equal(oracle.pendingCount, 0);
  assertOk(t, await oracle.checkReached(await fileReader(t, ex.diskPath), oracle.lastSeq), 'every acknowledged write is on disk');
});

t.test('an aborted signal before the start writes nothing', async (t) => {
  const oracle = new WriteOrderOracle({ deviceBytes: DISK_BYTES });
  const r = await runWorkload({ socketPath: '/nonexistent.sock', exportName: 'disk', oracle, writes: 10, durationMs: 1000, signal: AbortSignal.abort() });
  t.equal(r.stopReason, 'aborted');
  t.equal(r.submitted, 0);
});

t.test('no server: connect-failed, nothing written', async (t) => {
  const dir = tempDir(t);
  const oracle = new WriteOrderOracle({ deviceBytes: DISK_BYTES });
  const r = await runWorkload({ socketPath: join(dir, 'none.sock'), exportName: 'disk', oracle, writes: 10, durationMs: 1000 });
  t.equal(r.stopReason, 'connect-failed');
  t.match(r.error, /ENOENT|connect/);
  t.equal(oracle.lastSeq, 0);
});

t.test('the duration bounds a run', async (t) => {
  const ex = await startExport(t);
  const oracle = new WriteOrderOracle({ deviceBytes: DISK_BYTES });
  const r = await runWorkload({ socketPath: ex.socketPath, exportName: 'disk', oracle, writes: 10_000_000, durationMs: 300, seed: 5 });
  t.equal(r.stopReason, 'time');
  t.ok(r.elapsedMs < 300 + 5_000, `${r.elapsedMs} ms`);
  t.ok(r.acknowledged > 0);
  assertOk(t, await oracle.checkReached(await fileReader(t, ex.diskPath), oracle.lastSeq), 'file holds the history');
});

t.test('the server goes away: the run stops, maybe-written writes are accepted either way', async (t) => {
  const ex = await startExport(t);
  const oracle = new WriteOrderOracle({ deviceBytes: DISK_BYTES });
  const run = runWorkload({ socketPath: ex.socketPath, exportName: 'disk', oracle, writes: 10_000_000, durationMs: 60_000, queueDepth: 32, blocksPerWrite: { min: 1, max: 4 }, seed: 11 });
  await waitFor('1000 writes submitted', () => oracle.lastSeq >= 1000, 30_000, 1);
  const closing = ex.server.close();
  const r = await run;
  await closing;
  t.ok(r.stopReason === 'connection-lost' || r.stopReason === 'write-error', `stopped: ${r.stopReason} (${r.error}; ${r.acknowledged} acknowledged, ${r.failed} failed)`);
  t.equal(r.acknowledged + r.failed, r.submitted, 'every write settled one way or the other');
  t.equal(oracle.pendingCount, 0);
  t.equal(oracle.failedWrites, r.failed);
  const read = await fileReader(t, ex.diskPath);
  // Acknowledged writes must all be there; failed ones may or may not be.
  assertOk(t, await oracle.checkReached(read, oracle.lastSeq), 'the file is a consistent state with every acknowledged write');
});

/** A backend whose writes hang until released: a server that stopped answering. */
class HangingBackend implements BlockBackend {
  readonly sizeBytes = DISK_BYTES;
  private readonly waiting: Array<() => void> = [];
  isWritable(): boolean {
    return true;
  }
  async read(_offset: number, length: number): Promise<Buffer> {
    return Buffer.alloc(length);
  }
  write(): Promise<void> {
    return new Promise((resolve) => this.waiting.push(resolve));
  }
  async writeZeroes(): Promise<void> {}
  async trim(): Promise<void> {}
  async flush(): Promise<void> {}
  get hung(): number {
    return this.waiting.length;
  }
  releaseAll(): void {
    for (const r of this.waiting.splice(0)) r();
  }
}

t.test('a server that stops answering: bounded by the settle time, unanswered writes fail', async (t) => {
  const dir = tempDir(t, 'mars-workload-');
  const socketPath = join(dir, 'hang.sock');
  const backend = new HangingBackend();
  const server = new NbdServer({ log: () => undefined, shutdownGraceMs: 1_000 });
  t.teardown(async () => {
    backend.releaseAll();
    await server.close();
  });
  await server.addExport('disk', backend, { socketPath });
  const oracle = new WriteOrderOracle({ deviceBytes: DISK_BYTES });
  const r = await runWorkload({ socketPath, exportName: 'disk', oracle, writes: 1000, durationMs: 200, settleTimeoutMs: 300, queueDepth: 4, seed: 2 });
  t.equal(r.stopReason, 'time');
  t.equal(r.submitted, 4, 'the queue filled and nothing more was sent');
  t.equal(backend.hung, 4);
  t.equal(r.acknowledged, 0);
  t.equal(r.failed, 4, 'cut off after the settle time: maybe written');
  t.match(r.error, /unanswered after 300 ms/);
  t.ok(r.elapsedMs < 200 + 2 * 300 + 5_000, `${r.elapsedMs} ms: the run ends after its duration and one settle time, not when the hung requests would`);
  t.equal(oracle.pendingCount, 0);
  t.equal(r.durableSeq, 0, 'no FLUSH covered them');
});
