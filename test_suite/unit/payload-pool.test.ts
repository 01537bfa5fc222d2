// WRITE payloads split across socket chunks are read into reused buffers (kernel-shim/payload-pool.ts):
// a buffer goes back to the pool only after its write settled, so writes in flight never share
// memory; the pool keeps at most its bound; a buffer given back twice is a broken invariant.
import t from 'tap';
import { join } from 'node:path';
import { InvariantError } from '../../common/util/assert.js';
import type { BlockBackend } from '../../kernel-shim/backend.js';
import { NbdClient } from '../../kernel-shim/nbd-client.js';
import { NbdServer } from '../../kernel-shim/nbd-server.js';
import { MAX_POOLED_BYTES, PayloadPool, SERVER_POOL_BYTES } from '../../kernel-shim/payload-pool.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

const KiB = 1024;
const MiB = 1024 * KiB;

t.test('the pool hands a buffer out again only after it was given back, within its bound', async (t) => {
  const pool = new PayloadPool(512 * KiB);
  const a = pool.take(256 * KiB);
  const b = pool.take(200 * KiB); // same capacity class (256 KiB)
  t.equal(a.length, 256 * KiB);
  t.equal(b.length, 200 * KiB);
  t.not(a.buffer, b.buffer, 'two buffers out at once never share memory');
  pool.give(a);
  t.equal(pool.keptBytes, 256 * KiB);
  const c = pool.take(256 * KiB);
  t.equal(c.buffer, a.buffer, 'a given-back buffer is reused');
  t.equal(pool.keptBytes, 0);
  pool.give(b);
  pool.give(c);
  t.equal(pool.keptBytes, 512 * KiB);
  const d = pool.take(256 * KiB);
  const e = pool.take(256 * KiB);
  const f = pool.take(256 * KiB);
  pool.give(d);
  pool.give(e);
  pool.give(f); // over the bound: left to the garbage collector
  t.equal(pool.keptBytes, 512 * KiB, 'never more than the bound is kept');
  const small = pool.take(512);
  t.equal(small.length, 512);
  const big = pool.take(MAX_POOLED_BYTES + 4096);
  pool.give(big);
  t.equal(pool.keptBytes, 512 * KiB, 'a payload above the pooled sizes is not kept');
});

t.test('a buffer given back twice, or one the pool did not hand out, is an invariant failure', async (t) => {
  const pool = new PayloadPool(MiB);
  const a = pool.take(64 * KiB);
  pool.give(a);
  t.throws(() => pool.give(a), InvariantError);
  t.throws(() => pool.give(Buffer.alloc(64 * KiB)), InvariantError);
});

/** A backend that holds every write until released and keeps each write's buffer. */
class HoldingBackend implements BlockBackend {
  readonly sizeBytes = 8 * MiB;
  readonly mem = Buffer.alloc(8 * MiB);
  readonly seen: { offset: number; data: Buffer }[] = [];
  private release: (() => void) | undefined;
  private gate: Promise<void> | undefined;
  hold(): void {
    this.gate = new Promise((r) => (this.release = r));
  }
  open(): void {
    this.release?.();
    this.gate = undefined;
  }
  isWritable(): boolean {
    return true;
  }
  async read(offset: number, length: number): Promise<Buffer> {
    return Buffer.from(this.mem.subarray(offset, offset + length));
  }
  async write(offset: number, data: Buffer): Promise<void> {
    this.seen.push({ offset, data });
    if (this.gate) await this.gate;
    data.copy(this.mem, offset); // as a backend may: it reads the data until the write settles
  }
  async writeZeroes(): Promise<void> {}
  async trim(): Promise<void> {}
  async flush(): Promise<void> {}
}

t.test('over NBD: payloads in flight keep their own bytes, and settled ones are reused', async (t) => {
  const server = new NbdServer({ log: () => undefined });
  t.teardown(() => server.close());
  const socketPath = join(tempDir(t, 'mars-payload-pool-'), 'r.sock');
  const backend = new HoldingBackend();
  await server.addExport('r', backend, { socketPath });
  const client = await NbdClient.connect(socketPath, 'r');
  t.teardown(() => client.destroy());

  const PAYLOAD = 256 * KiB; // larger than a socket chunk: arrives split, read into a pooled buffer
  const COUNT = 8;
  const round = async (firstByte: number, by = client) => {
    backend.hold();
    const before = backend.seen.length;
    const writes = Array.from({ length: COUNT }, (_, i) => by.write(i * PAYLOAD, Buffer.alloc(PAYLOAD, firstByte + i)));
    await waitFor('every write to reach the backend', () => backend.seen.length === before + COUNT, 10_000);
    const held = backend.seen.slice(before);
    // All are in flight at once: each must still hold its own bytes.
    held.forEach((w, i) => t.ok(w.data.every((b) => b === firstByte + (w.offset / PAYLOAD)), `write ${i} in flight kept its bytes`));
    t.equal(new Set(held.map((w) => w.data.buffer)).size, COUNT, 'no two writes in flight share memory');
    backend.open();
    await Promise.all(writes);
    return held;
  };
  const first = await round(1);
  const second = await round(101);
  const firstBuffers = new Set(first.map((w) => w.data.buffer));
  t.ok(second.some((w) => firstBuffers.has(w.data.buffer)), 'buffers of settled writes were used again');
  t.same(await client.read(3 * PAYLOAD, PAYLOAD), Buffer.alloc(PAYLOAD, 104), 'the data the backend stored is the last write\'s');

  // One pool for the server: another connection gets the buffers the first one gave back,
  // and what is kept stays within the server's bound however many connections there are.
  const other = await NbdClient.connect(socketPath, 'r');
  t.teardown(() => other.destroy());
  const third = await round(201, other);
  const earlier = new Set([...first, ...second].map((w) => w.data.buffer));
  t.ok(third.some((w) => earlier.has(w.data.buffer)), 'a second connection reuses buffers the first one gave back');
  t.ok(server.payloads.keptBytes > 0 && server.payloads.keptBytes <= SERVER_POOL_BYTES, `kept ${server.payloads.keptBytes} bytes, within the server's bound`);
});
