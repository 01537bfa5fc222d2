// Hostile and broken clients against NbdServer, over raw node:net sockets: garbage before and
// during the handshake, oversized options, bad requests, dropped connections, a burst of
// pipelined reads whose replies are not read (backpressure), and removeExport with requests
// in flight. After each case a well-behaved client (nbdinfo) is still served and the process
// saw no uncaught exception or unhandled rejection.
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { BackendError, type BlockBackend } from '../../kernel-shim/backend.js';
import * as P from '../../kernel-shim/nbd-protocol.js';
import { NbdServer } from '../../kernel-shim/nbd-server.js';
import { ensureTools, TOOL_PATH } from '../helpers/prereqs.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

const MiB = 1024 * 1024;

/** In-memory backend; each block's first 8 bytes hold its offset so reads can be checked. */
class MemoryBackend implements BlockBackend {
  readonly mem: Buffer;
  /** while set, writes wait for it (to hold requests in flight) */
  gate: Promise<void> | null = null;
  writesStarted = 0;
  constructor(readonly sizeBytes: number) {
    this.mem = Buffer.alloc(sizeBytes);
    for (let off = 0; off < sizeBytes; off += 512) this.mem.writeUInt32BE(off, off + 4);
  }
  isWritable(): boolean {
    return true;
  }
  async read(offset: number, length: number): Promise<Buffer> {
    return Buffer.from(this.mem.subarray(offset, offset + length));
  }
  async write(offset: number, data: Buffer): Promise<void> {
    this.writesStarted++;
    if (this.gate) await this.gate;
    data.copy(this.mem, offset);
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.mem.fill(0, offset, offset + length);
  }
  async trim(): Promise<void> {}
  async flush(): Promise<void> {}
}

/** A raw NBD client: exact reads with deadlines, and helpers for the handshake. */
class RawClient {
  private buf: Buffer = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  ended = false;
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
      this.wake?.();
    });
    socket.on('error', () => undefined); // resets are expected in these tests
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.ended = true;
        this.wake?.();
        resolve();
      });
    });
  }

  static connect(path: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(path);
      s.once('connect', () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  write(data: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  async read(n: number, timeoutMs = 5_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.ended) throw new Error(`connection closed with ${this.buf.length}/${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out reading ${n} bytes (have ${this.buf.length})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          this.wake = null;
          resolve();
        };
      });
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** true if the server closed the connection within the deadline */
  async closedWithin(timeoutMs = 5_000): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      this.closed.then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    return r;
  }

  async greeting(clientFlags = P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES): Promise<void> {
    const g = await this.read(P.SERVER_GREETING_BYTES);
    if (!g.subarray(0, 8).equals(P.NBD_MAGIC) || !g.subarray(8, 16).equals(P.NBD_OPTS_MAGIC)) throw new Error('bad greeting');
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags >>> 0);
    this.write(flags);
  }

  async optionReply(): Promise<P.OptionReply> {
    const head = await this.read(P.OPTION_REPLY_HEADER_BYTES);
    const length = head.readUInt32BE(16);
    const data = await this.read(length);
    const decoded = P.decodeOptionReply(Buffer.concat([head, data]));
    if (!decoded) throw new Error('short option reply');
    return decoded.reply;
  }

  /** Full handshake with NBD_OPT_GO; returns the export size. */
  async go(name: string): Promise<number> {
    await this.greeting();
    this.write(P.encodeOptionRequest(P.NBD_OPT_GO, P.encodeInfoRequest(name, [P.NBD_INFO_BLOCK_SIZE])));
    let size = -1;
    for (;;) {
      const r = await this.optionReply();
      if (r.replyType === P.NBD_REP_ACK) break;
      if (r.replyType !== P.NBD_REP_INFO) throw new Error(`GO failed: reply type 0x${r.replyType.toString(16)}`);
      if (r.data.readUInt16BE(0) === P.NBD_INFO_EXPORT) size = r.data.readUInt32BE(2) * 2 ** 32 + r.data.readUInt32BE(6);
    }
    return size;
  }

  async simpleReply(timeoutMs = 5_000): Promise<P.SimpleReplyHeader> {
    const h = P.decodeSimpleReplyHeader(await this.read(P.SIMPLE_REPLY_HEADER_BYTES, timeoutMs));
    if (h.magic !== P.NBD_SIMPLE_REPLY_MAGIC) throw new Error(`bad reply magic 0x${h.magic.toString(16)}`);
    return h;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

function nbdinfoSize(uri: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('nbdinfo', ['--size', uri], { env: { ...process.env, PATH: TOOL_PATH }, timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`nbdinfo failed: ${String(stderr).trim() || err.message}`));
      else resolve(String(stdout).trim());
    });
  });
}

const missing = ensureTools(['nbdinfo']);
if (missing) {
  t.fail(missing);
} else {
  t.test('hostile clients', async (t) => {
    const uncaught: string[] = [];
    const onUncaught = (err: unknown) => uncaught.push(`uncaught: ${String(err)}`);
    const onRejection = (err: unknown) => uncaught.push(`unhandled rejection: ${String(err)}`);
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onRejection);
    t.teardown(() => {
      process.off('uncaughtException', onUncaught);
      process.off('unhandledRejection', onRejection);
    });

    const dir = tempDir(t, 'mars-nbd-garbage-');
    const sock = join(dir, 'r0.sock');
    const uri = `nbd+unix:///r0?socket=${sock}`;
    const backend = new MemoryBackend(64 * MiB);
    const logs: string[] = [];
    const server = new NbdServer({ log: (level, msg) => logs.push(`${level} ${msg}`), handshakeTimeoutMs: 1_000 });
    t.teardown(() => server.close());
    await server.addExport('r0', backend, { socketPath: sock });

    /** The server still serves a good client, and nothing escaped as an uncaught error. */
    const healthy = async (t: Test) => {
      t.equal(await nbdinfoSize(uri), String(64 * MiB), 'nbdinfo still works');
      t.same(uncaught, [], 'no uncaught exception or unhandled rejection');
    };
    /** Runs a case that must end with the server closing the connection and one log line. */
    const closesWithOneLogLine = async (t: Test, c: RawClient, what: RegExp) => {
      const before = logs.length;
      t.ok(await c.closedWithin(5_000), 'the server closed the connection');
      const lines = logs.slice(before).filter((l) => l.includes('closing the connection'));
      t.equal(lines.length, 1, 'one log line');
      t.match(lines[0] ?? '', what, 'the log line says what was wrong');
    };

    t.test('random bytes before the handshake', async (t) => {
      const c = await RawClient.connect(sock);
      const junk = randomBytes(64 * 1024);
      junk[0] = 0xff; // client flags with unknown bits
      c.write(junk);
      await closesWithOneLogLine(t, c, /bad client flags/);
      await healthy(t);
    });

    t.test('bad client flags', async (t) => {
      for (const flags of [0, 0x80000001, P.NBD_FLAG_C_NO_ZEROES]) {
        const c = await RawClient.connect(sock);
        await c.greeting(flags);
        await closesWithOneLogLine(t, c, /bad client flags/);
      }
      await healthy(t);
    });

    t.test('option with a 4 GiB length', async (t) => {
      const c = await RawClient.connect(sock);
      await c.greeting();
      const h = P.encodeOptionRequest(P.NBD_OPT_GO);
      h.writeUInt32BE(0xffffffff, 12);
      c.write(h);
      await closesWithOneLogLine(t, c, /4294967295 bytes/);
      await healthy(t);
    });

    t.test('bad option magic', async (t) => {
      const c = await RawClient.connect(sock);
      await c.greeting();
      c.write(Buffer.from('IHAVEOPX\0\0\0\x07\0\0\0\0', 'latin1'));
      await closesWithOneLogLine(t, c, /bad option magic/);
      await healthy(t);
    });

    t.test('truncated option, then half-close', async (t) => {
      const c = await RawClient.connect(sock);
      await c.greeting();
      const opt = P.encodeOptionRequest(P.NBD_OPT_GO, P.encodeInfoRequest('r0'));
      c.write(opt.subarray(0, 20));
      c.socket.end();
      t.ok(await c.closedWithin(5_000), 'the server closed the connection');
      await healthy(t);
    });

    t.test('truncated option, then silence: the handshake deadline closes it', async (t) => {
      const c = await RawClient.connect(sock);
      await c.greeting();
      c.write(P.encodeOptionRequest(P.NBD_OPT_GO, P.encodeInfoRequest('r0')).subarray(0, 20));
      await closesWithOneLogLine(t, c, /handshake not completed/);
      await healthy(t);
    });

    t.test('unknown options get ERR_UNSUP and parsing continues', async (t) => {
      const c = await RawClient.connect(sock);
      await c.greeting();
      c.write(P.encodeOptionRequest(99, Buffer.from('hello')));
      t.equal((await c.optionReply()).replyType, P.NBD_REP_ERR_UNSUP, 'option 99');
      c.write(P.encodeOptionRequest(P.NBD_OPT_STRUCTURED_REPLY));
      t.equal((await c.optionReply()).replyType, P.NBD_REP_ERR_UNSUP, 'STRUCTURED_REPLY');
      c.write(P.encodeOptionRequest(P.NBD_OPT_STARTTLS));
      t.equal((await c.optionReply()).replyType, P.NBD_REP_ERR_UNSUP, 'STARTTLS');
      c.write(P.encodeOptionRequest(P.NBD_OPT_LIST, Buffer.from('x')));
      t.equal((await c.optionReply()).replyType, P.NBD_REP_ERR_INVALID, 'LIST with data');
      c.write(P.encodeOptionRequest(P.NBD_OPT_GO, Buffer.from([0, 0, 0, 9, 1])));
      t.equal((await c.optionReply()).replyType, P.NBD_REP_ERR_INVALID, 'GO with a name longer than its data');
      c.write(P.encodeOptionRequest(P.NBD_OPT_INFO, P.encodeInfoRequest('nope')));
      t.equal((await c.optionReply()).replyType, P.NBD_REP_ERR_UNKNOWN, 'INFO for an unknown export');
      c.write(P.encodeOptionRequest(P.NBD_OPT_LIST));
      const server1 = await c.optionReply();
      t.equal(server1.replyType, P.NBD_REP_SERVER);
      t.equal(server1.data.toString('utf8', 4, 4 + server1.data.readUInt32BE(0)), 'r0');
      t.equal((await c.optionReply()).replyType, P.NBD_REP_ACK, 'LIST ends with ACK');
      c.write(P.encodeOptionRequest(P.NBD_OPT_GO, P.encodeInfoRequest('r0', [P.NBD_INFO_NAME])));
      const types: number[] = [];
      for (;;) {
        const r = await c.optionReply();
        if (r.replyType === P.NBD_REP_ACK) break;
        t.equal(r.replyType, P.NBD_REP_INFO);
        types.push(r.data.readUInt16BE(0));
      }
      t.same(types.sort(), [P.NBD_INFO_EXPORT, P.NBD_INFO_NAME, P.NBD_INFO_BLOCK_SIZE].sort(), 'GO answers EXPORT, NAME, BLOCK_SIZE');
      c.write(P.encodeRequestHeader({ type: P.NBD_CMD_READ, handleLo: 7, offset: 4096, length: 512 }));
      const r = await c.simpleReply();
      t.equal(r.error, 0);
      t.equal(r.handleLo, 7);
      t.equal((await c.read(512)).readUInt32BE(4), 4096, 'read data is right');
      c.write(P.encodeRequestHeader({ type: P.NBD_CMD_DISC }));
      t.ok(await c.closedWithin(5_000), 'DISC closes the connection');
    });

    t.test('NBD_OPT_EXPORT_NAME: known export with and without NO_ZEROES, unknown export', async (t) => {
      for (const noZeroes of [true, false]) {
        const c = await RawClient.connect(sock);
        await c.greeting(P.NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? P.NBD_FLAG_C_NO_ZEROES : 0));
        c.write(P.encodeOptionRequest(P.NBD_OPT_EXPORT_NAME, Buffer.from('r0')));
        const reply = await c.read(10 + (noZeroes ? 0 : 124));
        t.equal(reply.readUInt32BE(4), 64 * MiB, `size (NO_ZEROES ${noZeroes})`);
        t.ok(reply.readUInt16BE(8) & P.NBD_FLAG_HAS_FLAGS, 'transmission flags');
        c.write(P.encodeRequestHeader({ type: P.NBD_CMD_FLUSH, handleLo: 1 }));
        t.equal((await c.simpleReply()).error, 0, 'FLUSH works');
        c.destroy();
      }
      const c = await RawClient.connect(sock);
      await c.greeting();
      c.write(P.encodeOptionRequest(P.NBD_OPT_EXPORT_NAME, Buffer.from('nope')));
      t.ok(await c.closedWithin(5_000), 'unknown export: the session ends (EXPORT_NAME has no error reply)');
      await healthy(t);
    });

    t.test('transmission phase errors that keep the connection', async (t) => {
      const c = await RawClient.connect(sock);
      t.equal(await c.go('r0'), 64 * MiB);
      const cases: Array<[string, P.RequestFields, number]> = [
        ['huge read length', { type: P.NBD_CMD_READ, offset: 0, length: 0xfffffe00 }, P.NBD_EINVAL],
        ['read over 32 MiB', { type: P.NBD_CMD_READ, offset: 0, length: 33 * MiB }, P.NBD_EINVAL],
        ['read beyond the end', { type: P.NBD_CMD_READ, offset: 64 * MiB, length: 512 }, P.NBD_EINVAL],
        ['read at a 2^52 offset', { type: P.NBD_CMD_READ, offset: 2 ** 52, length: 512 }, P.NBD_EINVAL],
        ['zero-length read', { type: P.NBD_CMD_READ, offset: 0, length: 0 }, P.NBD_EINVAL],
        ['unknown command', { type: 99, offset: 0, length: 512 }, P.NBD_EINVAL],
        ['CACHE (not advertised)', { type: P.NBD_CMD_CACHE, offset: 0, length: 512 }, P.NBD_EINVAL],
        ['BLOCK_STATUS (no meta context)', { type: P.NBD_CMD_BLOCK_STATUS, offset: 0, length: 512 }, P.NBD_EINVAL],
        ['unknown command flag', { type: P.NBD_CMD_READ, flags: 0x8000, offset: 0, length: 512 }, P.NBD_EINVAL],
        ['NO_HOLE on TRIM', { type: P.NBD_CMD_TRIM, flags: P.NBD_CMD_FLAG_NO_HOLE, offset: 0, length: 512 }, P.NBD_EINVAL],
        ['write zeroes beyond the end', { type: P.NBD_CMD_WRITE_ZEROES, offset: 64 * MiB - 512, length: 1024 }, P.NBD_ENOSPC],
        ['FAST_ZERO', { type: P.NBD_CMD_WRITE_ZEROES, flags: P.NBD_CMD_FLAG_FAST_ZERO, offset: 0, length: 512 }, P.NBD_ENOTSUP],
      ];
      let handle = 100;
      for (const [what, req, errno] of cases) {
        c.write(P.encodeRequestHeader({ ...req, handleLo: ++handle }));
        const r = await c.simpleReply();
        t.equal(r.handleLo, handle, `${what}: handle echoed`);
        t.equal(r.error, errno, `${what}: error ${errno}`);
      }
      const maxOffset = P.encodeRequestHeader({ type: P.NBD_CMD_READ, handleLo: 55, length: 512 });
      maxOffset.fill(0xff, 16, 24); // offset 2^64 - 1
      c.write(maxOffset);
      const rm = await c.simpleReply();
      t.same([rm.handleLo, rm.error], [55, P.NBD_EINVAL], 'read at offset 2^64-1: EINVAL');
      // A rejected WRITE's payload is consumed: the next request parses fine.
      c.write(Buffer.concat([
        P.encodeRequestHeader({ type: P.NBD_CMD_WRITE, handleLo: 1, offset: 100, length: 1000 }),
        Buffer.alloc(1000, 0xee),
        P.encodeRequestHeader({ type: P.NBD_CMD_WRITE, handleLo: 2, offset: 64 * MiB, length: 4096 }),
        Buffer.alloc(4096, 0xee),
        P.encodeRequestHeader({ type: P.NBD_CMD_READ, handleLo: 3, offset: 8192, length: 512 }),
      ]));
      t.equal((await c.simpleReply()).error, P.NBD_EINVAL, 'misaligned write: EINVAL');
      t.equal((await c.simpleReply()).error, P.NBD_ENOSPC, 'write beyond the end: ENOSPC');
      const r = await c.simpleReply();
      t.same([r.handleLo, r.error], [3, 0], 'the read after them works');
      t.equal((await c.read(512)).readUInt32BE(4), 8192);
      t.ok(backend.mem.subarray(0, 8192).every((b) => b !== 0xee), 'rejected payloads were not written');
      c.destroy();
      await healthy(t);
    });

    t.test('transmission phase errors that close the connection', async (t) => {
      let c = await RawClient.connect(sock);
      await c.go('r0');
      c.write(P.encodeRequestHeader({ type: P.NBD_CMD_READ, magic: 0x12345678, length: 512 }));
      await closesWithOneLogLine(t, c, /bad request magic/);

      c = await RawClient.connect(sock);
      await c.go('r0');
      c.write(P.encodeRequestHeader({ type: P.NBD_CMD_WRITE, offset: 0, length: 0xfffffe00 }));
      c.write(Buffer.alloc(64 * 1024));
      await closesWithOneLogLine(t, c, /WRITE of 4294966784 bytes/);

      c = await RawClient.connect(sock);
      await c.go('r0');
      c.write(randomBytes(100_000));
      await closesWithOneLogLine(t, c, /bad request magic/);
      await healthy(t);
    });

    t.test('connection dropped in the middle of a WRITE payload', async (t) => {
      const writesBefore = backend.writesStarted;
      const c = await RawClient.connect(sock);
      await c.go('r0');
      await waitFor('the connection to count as open', () => server.connectionCount('r0') === 1, 5_000);
      c.write(P.encodeRequestHeader({ type: P.NBD_CMD_WRITE, handleLo: 1, offset: 0, length: MiB }));
      c.write(Buffer.alloc(300 * 1024, 0xcd));
      c.destroy();
      await waitFor('the server to drop the connection', () => server.connectionCount('r0') === 0, 5_000);
      t.equal(backend.writesStarted, writesBefore, 'a partial payload is never written');
      t.ok(backend.mem.subarray(0, MiB).every((b) => b !== 0xcd));
      await healthy(t);
    });

    t.test('10k pipelined reads whose replies are not read: bounded, then all answered', async (t) => {
      const N = 10_000;
      const LEN = 32 * 1024;
      const statsBefore = server.stats();
      const c = await RawClient.connect(sock);
      await c.go('r0');
      c.socket.pause(); // do not read replies
      const headers = Buffer.concat(
        Array.from({ length: N }, (_, i) => P.encodeRequestHeader({ type: P.NBD_CMD_READ, handleLo: i, offset: (i * LEN) % (64 * MiB), length: LEN })),
      );
      c.write(headers);
      await waitFor('the server to apply backpressure', () => server.stats().backpressurePauses > statsBefore.backpressurePauses, 20_000);
      const s = server.stats();
      t.ok(s.requests - statsBefore.requests < N, `the server stopped reading (${s.requests - statsBefore.requests} of ${N} requests taken)`);
      t.ok(s.peakInFlightRequests <= 256, `in-flight requests bounded (${s.peakInFlightRequests})`);
      t.ok(s.peakBufferedBytes <= 64 * MiB + LEN, `buffered bytes bounded (${s.peakBufferedBytes})`);

      // Now read every reply, parsing as a stream.
      const seen = new Uint8Array(N);
      let count = 0;
      let bad = 0;
      let pending: Buffer = Buffer.alloc(0);
      let need = P.SIMPLE_REPLY_HEADER_BYTES;
      let inPayload = false;
      let currentHandle = 0;
      const done = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`only ${count} of ${N} replies`)), 60_000);
        c.socket.removeAllListeners('data');
        c.socket.on('data', (chunk: Buffer) => {
          pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
          while (pending.length >= need) {
            if (!inPayload) {
              const h = P.decodeSimpleReplyHeader(pending);
              if (h.magic !== P.NBD_SIMPLE_REPLY_MAGIC || h.error !== 0 || h.handleLo >= N || seen[h.handleLo]) bad++;
              currentHandle = h.handleLo;
              pending = pending.subarray(P.SIMPLE_REPLY_HEADER_BYTES);
              need = LEN;
              inPayload = true;
            } else {
              if (pending.readUInt32BE(4) !== (currentHandle * LEN) % (64 * MiB)) bad++;
              seen[currentHandle] = 1;
              count++;
              pending = pending.subarray(LEN);
              need = P.SIMPLE_REPLY_HEADER_BYTES;
              inPayload = false;
              if (count === N) {
                clearTimeout(timer);
                resolve();
              }
            }
          }
        });
        c.socket.resume();
      });
      await done;
      t.equal(count, N, 'every request answered');
      t.equal(bad, 0, 'every reply well-formed with the right data');
      const after = server.stats();
      t.ok(after.peakInFlightRequests <= 256, `in-flight stayed bounded (${after.peakInFlightRequests})`);
      t.ok(after.peakBufferedBytes <= 64 * MiB + LEN, `buffered bytes stayed bounded (${after.peakBufferedBytes})`);
      c.destroy();
      await healthy(t);
    });

    t.test('10k pipelined reads, then the client vanishes', async (t) => {
      const c = await RawClient.connect(sock);
      await c.go('r0');
      c.socket.pause();
      const before = server.stats().backpressurePauses;
      c.write(Buffer.concat(Array.from({ length: 10_000 }, (_, i) => P.encodeRequestHeader({ type: P.NBD_CMD_READ, handleLo: i, offset: 0, length: 64 * 1024 }))));
      await waitFor('backpressure', () => server.stats().backpressurePauses > before, 20_000);
      c.destroy();
      await waitFor('the connection to go away', () => server.connectionCount('r0') === 0, 10_000);
      await healthy(t);
    });

    t.test('removeExport: in-flight requests are answered, new ones get ESHUTDOWN, then close', async (t) => {
      const sock2 = join(dir, 'r1.sock');
      const backend2 = new MemoryBackend(MiB);
      await server.addExport('r1', backend2, { socketPath: sock2 });
      const c = await RawClient.connect(sock2);
      await c.go('r1');
      let release!: () => void;
      backend2.gate = new Promise((resolve) => {
        release = resolve;
      });
      c.write(Buffer.concat([P.encodeRequestHeader({ type: P.NBD_CMD_WRITE, handleLo: 1, offset: 0, length: 4096 }), Buffer.alloc(4096, 0x77)]));
      await waitFor('the write to reach the backend', () => backend2.writesStarted === 1, 5_000);
      const removed = server.removeExport('r1');
      t.notOk(existsSync(sock2), 'the socket file is gone at once');
      t.notOk(server.hasExport('r1'), 'the export is no longer offered');
      c.write(Buffer.concat([
        P.encodeRequestHeader({ type: P.NBD_CMD_WRITE, handleLo: 2, offset: 4096, length: 4096 }),
        Buffer.alloc(4096, 0x78),
        P.encodeRequestHeader({ type: P.NBD_CMD_READ, handleLo: 3, offset: 0, length: 512 }),
      ]));
      const r2 = await c.simpleReply();
      t.same([r2.handleLo, r2.error], [2, P.NBD_ESHUTDOWN], 'a write after removeExport: ESHUTDOWN');
      const r3 = await c.simpleReply();
      t.same([r3.handleLo, r3.error], [3, P.NBD_ESHUTDOWN], 'a read after removeExport: ESHUTDOWN');
      t.equal(backend2.writesStarted, 1, 'no backend call after removeExport');
      release();
      const r1 = await c.simpleReply();
      t.same([r1.handleLo, r1.error], [1, 0], 'the in-flight write is answered');
      t.ok(await c.closedWithin(5_000), 'then the connection is closed');
      await removed;
      t.equal(backend2.mem[0], 0x77, 'the in-flight write happened');
      t.equal(backend2.mem[4096 + 8], 0, 'the rejected write did not');
      await healthy(t);
    });

    t.test('backend failures become error replies, the connection stays', async (t) => {
      const faultyLogs: string[] = [];
      const faulty = new NbdServer({ log: (level, msg) => faultyLogs.push(`${level} ${msg}`) });
      t.teardown(() => faulty.close());
      const sock3 = join(dir, 'faulty.sock');
      const be: BlockBackend = {
        sizeBytes: MiB,
        isWritable: () => true,
        read: async (_o, l) => Buffer.alloc(l - 512),
        write: async () => {
          throw new Error('disk on fire');
        },
        writeZeroes: async () => {
          throw new BackendError('ENOSPC', 'full');
        },
        trim: () => {
          throw new Error('synchronous throw');
        },
        flush: () => Promise.reject(new BackendError('EIO', 'sync failed')),
      };
      await faulty.addExport('faulty', be, { socketPath: sock3 });
      const c = await RawClient.connect(sock3);
      await c.go('faulty');
      c.write(Buffer.concat([
        P.encodeRequestHeader({ type: P.NBD_CMD_WRITE, handleLo: 1, offset: 0, length: 512 }),
        Buffer.alloc(512),
        P.encodeRequestHeader({ type: P.NBD_CMD_READ, handleLo: 2, offset: 0, length: 4096 }),
        P.encodeRequestHeader({ type: P.NBD_CMD_WRITE_ZEROES, handleLo: 3, offset: 0, length: 4096 }),
        P.encodeRequestHeader({ type: P.NBD_CMD_TRIM, handleLo: 4, offset: 0, length: 4096 }),
        P.encodeRequestHeader({ type: P.NBD_CMD_FLUSH, handleLo: 5 }),
      ]));
      const got = new Map<number, number>();
      for (let i = 0; i < 5; i++) {
        const r = await c.simpleReply();
        got.set(r.handleLo, r.error);
      }
      t.same(Object.fromEntries(got), { 1: P.NBD_EIO, 2: P.NBD_EIO, 3: P.NBD_ENOSPC, 4: P.NBD_EIO, 5: P.NBD_EIO }, 'errors mapped');
      t.equal(faultyLogs.filter((l) => l.startsWith('error')).length, 3, 'unexpected failures are logged (write, short read, trim)');
      c.write(P.encodeRequestHeader({ type: P.NBD_CMD_DISC }));
      t.ok(await c.closedWithin(5_000), 'the connection still worked and closes on DISC');
      t.same(uncaught, []);
    });

    t.test('nothing escaped', async (t) => {
      t.same(uncaught, []);
      t.same(logs.filter((l) => l.startsWith('error')), [], 'no error-level log lines');
      await waitFor('all connections closed', () => server.stats().connections === 0, 10_000);
    });
  });
}
