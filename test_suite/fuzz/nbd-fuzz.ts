// The NBD server fuzzer (docs/reliability.md, "Fuzzing"): the real NbdServer on a Unix socket
// with a real FileBackend behind it, fed inputs from nbd-inputs.ts, one connection each. What
// must hold for every input:
//   - no uncaught exception or unhandled rejection in the process;
//   - the server ends the connection once the client has sent everything and half-closed
//     (within a deadline; the connection count goes back to 0);
//   - the backend sees only requests inside the export, aligned, with a length > 0 (the
//     server validates before it calls the backend: kernel-shim/backend.ts);
//   - no backend call at all for an input that never completed a handshake naming the export;
// and every `probeEvery` inputs (and at the end) a well-behaved client writes a block, flushes
// and reads it back unchanged. A violation carries the seed and the input's number, which
// replay it exactly (`npm run fuzz -- --target nbd --seed S --inputs N`).
import net from 'node:net';
import { join } from 'node:path';
import type { BlockBackend } from '../../kernel-shim/backend.js';
import { FileBackend } from '../../kernel-shim/file-backend.js';
import { NbdServer } from '../../kernel-shim/nbd-server.js';
import * as P from '../../kernel-shim/nbd-protocol.js';
import { mulberry32 } from '../helpers/prng.js';
import { nbdInput, type NbdInputKind } from './nbd-inputs.js';

const EXPORT = 'fz';
const SIZE_BYTES = 16 * 1024 * 1024;
const CLOSE_DEADLINE_MS = 10_000;

export interface FuzzReport {
  inputs: number;
  byKind: Record<NbdInputKind, number>;
  backendCalls: number;
  probes: number;
  violations: string[];
  rssGrowthBytes: number;
  elapsedMs: number;
}

/** The real backend, with every call checked against the server's contract and counted. */
export class CheckedBackend implements BlockBackend {
  calls = 0;
  readonly violations: string[] = [];
  constructor(private readonly inner: FileBackend) {}
  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }
  isWritable(): boolean {
    return true;
  }
  private check(op: string, offset: number, length: number): void {
    this.calls++;
    const ok = Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length > 0
      && offset % 512 === 0 && length % 512 === 0 && offset + length <= this.inner.sizeBytes;
    if (!ok) this.violations.push(`backend ${op} at ${offset} length ${length}: outside the export or unaligned`);
  }
  read(offset: number, length: number): Promise<Buffer> {
    this.check('read', offset, length);
    return this.inner.read(offset, length);
  }
  write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.check('write', offset, data.length);
    return this.inner.write(offset, data, fua);
  }
  writeZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    this.check('write-zeroes', offset, length);
    return this.inner.writeZeroes(offset, length, fua);
  }
  trim(offset: number, length: number, fua: boolean): Promise<void> {
    this.check('trim', offset, length);
    return this.inner.trim(offset, length, fua);
  }
  flush(): Promise<void> {
    this.calls++;
    return this.inner.flush();
  }
}

/** Sends the input's bytes in its chunks, half-closes, and waits for the server to close. */
export function send(sock: string, bytes: Buffer, chunks: number[], deadlineMs = CLOSE_DEADLINE_MS): Promise<'closed' | 'timeout'> {
  return new Promise((resolve) => {
    const s = net.connect(sock);
    const timer = setTimeout(() => {
      s.destroy();
      resolve('timeout');
    }, deadlineMs);
    s.on('error', () => undefined); // resets are part of the game
    s.on('data', () => undefined); // replies are read and dropped
    s.on('close', () => {
      clearTimeout(timer);
      resolve('closed');
    });
    s.once('connect', () => {
      let pos = 0;
      for (const c of chunks) {
        if (pos >= bytes.length) break;
        s.write(bytes.subarray(pos, Math.min(bytes.length, pos + c)));
        pos += c;
      }
      if (pos < bytes.length) s.write(bytes.subarray(pos));
      s.end();
    });
  });
}

/** A well-behaved client: GO, WRITE a block, FLUSH, READ it back, DISC. Throws on any difference. */
async function probe(sock: string, rand: () => number): Promise<void> {
  const s = net.connect(sock);
  let buf = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  let failed: Error | undefined;
  s.on('data', (d: Buffer) => { buf = Buffer.concat([buf, d]); wake?.(); });
  s.on('error', (e) => { failed = e; wake?.(); });
  s.on('close', () => { failed ??= new Error('closed'); wake?.(); });
  const read = async (n: number): Promise<Buffer> => {
    const deadline = Date.now() + CLOSE_DEADLINE_MS;
    while (buf.length < n) {
      if (failed) throw new Error(`probe: ${failed.message} with ${buf.length}/${n} bytes`);
      if (Date.now() > deadline) throw new Error(`probe: timed out waiting for ${n} bytes`);
      await new Promise<void>((res) => { const t = setTimeout(res, 100); wake = () => { clearTimeout(t); res(); }; });
    }
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    return out;
  };
  try {
    await read(P.SERVER_GREETING_BYTES);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES);
    s.write(Buffer.concat([flags, P.encodeOptionRequest(P.NBD_OPT_GO, P.encodeInfoRequest(EXPORT, []))]));
    for (;;) {
      const head = await read(P.OPTION_REPLY_HEADER_BYTES);
      const data = await read(head.readUInt32BE(16));
      const reply = P.decodeOptionReply(Buffer.concat([head, data]))!.reply;
      if (reply.replyType === P.NBD_REP_ACK) break;
      if (reply.replyType !== P.NBD_REP_INFO) throw new Error(`probe: GO refused (0x${reply.replyType.toString(16)})`);
    }
    const offset = 4096 * Math.floor(rand() * (SIZE_BYTES / 4096));
    const block = Buffer.alloc(4096);
    for (let i = 0; i < block.length; i += 4) block.writeUInt32LE(Math.floor(rand() * 0x1_0000_0000), i);
    const expectReply = async (what: string) => {
      const h = P.decodeSimpleReplyHeader(await read(P.SIMPLE_REPLY_HEADER_BYTES));
      if (h.magic !== P.NBD_SIMPLE_REPLY_MAGIC || h.error !== 0) throw new Error(`probe: ${what} failed (magic 0x${h.magic.toString(16)}, error ${h.error})`);
    };
    s.write(Buffer.concat([P.encodeRequestHeader({ type: P.NBD_CMD_WRITE, offset, length: 4096, handleLo: 1 }), block]));
    await expectReply('write');
    s.write(P.encodeRequestHeader({ type: P.NBD_CMD_FLUSH, handleLo: 2 }));
    await expectReply('flush');
    s.write(P.encodeRequestHeader({ type: P.NBD_CMD_READ, offset, length: 4096, handleLo: 3 }));
    await expectReply('read');
    if (!(await read(4096)).equals(block)) throw new Error(`probe: block at ${offset} read back different`);
    s.write(P.encodeRequestHeader({ type: P.NBD_CMD_DISC, handleLo: 4 }));
  } finally {
    s.destroy();
  }
}

async function waitNoConnections(server: NbdServer): Promise<boolean> {
  const deadline = Date.now() + CLOSE_DEADLINE_MS;
  while (server.stats().connections > 0) {
    if (Date.now() > deadline) return false;
    // The server sees the close in the same or the next turn: poll by turns first, then by time.
    await new Promise((r) => (Date.now() + CLOSE_DEADLINE_MS - deadline < 50 ? setImmediate(r) : setTimeout(r, 5)));
  }
  return true;
}

export interface NbdFuzzOptions {
  dir: string;
  seed: number;
  inputs: number;
  probeEvery?: number;
  /** stop early after this long (the CI budget); the report says how many ran */
  maxMs?: number;
  onProgress?: (done: number) => void;
}

export async function fuzzNbd(o: NbdFuzzOptions): Promise<FuzzReport> {
  const started = Date.now();
  const violations: string[] = [];
  const onUncaught = (err: unknown) => violations.push(`uncaught exception: ${String(err)}`);
  const onRejection = (err: unknown) => violations.push(`unhandled rejection: ${String(err)}`);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onRejection);
  const file = await FileBackend.open(join(o.dir, 'disk'), { create: true, sizeBytes: SIZE_BYTES, writable: true });
  const backend = new CheckedBackend(file);
  const server = new NbdServer({ log: () => undefined, handshakeTimeoutMs: 2_000, replyStallMs: 5_000, shutdownGraceMs: 2_000 });
  const sock = join(o.dir, 'fz.sock');
  await server.addExport(EXPORT, backend, { socketPath: sock });
  const rand = mulberry32(o.seed);
  const probeRand = mulberry32(o.seed ^ 0x5eed);
  const byKind: Record<NbdInputKind, number> = { garbage: 0, handshake: 0, transmission: 0 };
  const rss0 = process.memoryUsage().rss;
  let probes = 0;
  let n = 0;
  try {
    for (; n < o.inputs && violations.length === 0 && backend.violations.length === 0; n++) {
      if (o.maxMs !== undefined && Date.now() - started > o.maxMs) break;
      const input = nbdInput(rand, EXPORT, SIZE_BYTES);
      byKind[input.kind]++;
      const callsBefore = backend.calls;
      const where = `seed ${o.seed}, input ${n} (${input.kind}, ${input.bytes.length} bytes)`;
      if ((await send(sock, input.bytes, input.chunks)) === 'timeout') violations.push(`${where}: the server did not close the connection ${CLOSE_DEADLINE_MS} ms after the client half-closed`);
      if (!(await waitNoConnections(server))) violations.push(`${where}: a connection stayed open`);
      if (input.expectsNoIo && backend.calls !== callsBefore) violations.push(`${where}: ${backend.calls - callsBefore} backend call(s) without a handshake naming the export`);
      if ((n + 1) % (o.probeEvery ?? 200) === 0) {
        await probe(sock, probeRand).catch((e: Error) => violations.push(`${where}: after it, ${e.message}`));
        probes++;
      }
      o.onProgress?.(n + 1);
    }
    if (violations.length === 0) {
      await probe(sock, probeRand).catch((e: Error) => violations.push(`final probe: ${e.message}`));
      probes++;
    }
  } finally {
    await server.close();
    await file.close();
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onRejection);
  }
  return {
    inputs: n, byKind, backendCalls: backend.calls, probes,
    violations: [...violations, ...backend.violations],
    rssGrowthBytes: process.memoryUsage().rss - rss0,
    elapsedMs: Date.now() - started,
  };
}


