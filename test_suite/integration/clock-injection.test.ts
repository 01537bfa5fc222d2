// The kernel-shim and logger shells take their time from an injected Clock: with a SimClock
// their deadlines and delays fire when the test moves time, not after real waiting. Each case
// checks that the shell's timer was set on the injected clock (exactly one more pending timer)
// and that nothing fires before the simulated time reaches it.
import t from 'tap';
import net from 'node:net';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import type { BlockBackend } from '../../kernel-shim/backend.js';
import { NbdClient, NbdConnectionClosed } from '../../kernel-shim/nbd-client.js';
import { NbdServer } from '../../kernel-shim/nbd-server.js';
import { NBD_FLAG_C_FIXED_NEWSTYLE, NBD_FLAG_C_NO_ZEROES, NBD_OPT_ABORT, NBD_OPTS_MAGIC } from '../../kernel-shim/nbd-protocol.js';
import { DataDisk } from '../../common/disk/data-disk.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { LogWriter } from '../../daemon/logger/log-writer.js';
import { LOG_SYNC_FOR_PEERS_MS, TransactionLogger, WRITEBACK_DELAY_MS } from '../../daemon/logger/transaction-logger.js';
import { SimClock } from '../helpers/sim-clock.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

const MiB = 1024 * 1024;

function memoryBackend(gate?: Promise<void>): BlockBackend {
  const mem = Buffer.alloc(MiB);
  return {
    sizeBytes: MiB,
    isWritable: () => true,
    read: async (o, l) => Buffer.from(mem.subarray(o, o + l)),
    write: async (o, d) => { if (gate) await gate; d.copy(mem, o); },
    writeZeroes: async (o, l) => { mem.fill(0, o, o + l); },
    trim: async () => undefined,
    flush: async () => undefined,
  };
}

t.test('NbdServer: the handshake deadline runs on the injected clock', async (t) => {
  const clock = new SimClock();
  const logs: string[] = [];
  const server = new NbdServer({ log: (l, m) => logs.push(`${l} ${m}`), handshakeTimeoutMs: 10_000, clock });
  t.teardown(() => server.close());
  const socketPath = join(tempDir(t, 'mars-clock-'), 'r.sock');
  await server.addExport('r', memoryBackend(), { socketPath });
  const before = clock.pendingTimers;
  const sock = net.connect(socketPath);
  sock.on('error', () => undefined);
  sock.resume(); // read the greeting, or 'end' (and 'close') would wait for it to be consumed
  const closed = new Promise<void>((r) => sock.on('close', () => r()));
  await waitFor('the greeting', () => server.stats().connections === 1, 5_000);
  t.equal(clock.pendingTimers, before + 1, 'the deadline is a timer of the injected clock');
  clock.advanceSync(9_999);
  await clock.flush();
  t.equal(server.stats().connections, 1, 'still open 1 ms before the deadline');
  clock.advanceSync(1);
  await closed;
  t.ok(logs.some((l) => l.includes('handshake not completed within 10000 ms')), 'closed at the deadline, saying why');
});

t.test('NbdServer: removeExport grace for stuck requests runs on the injected clock', async (t) => {
  const clock = new SimClock();
  const server = new NbdServer({ log: () => undefined, shutdownGraceMs: 30_000, clock });
  t.teardown(() => server.close());
  const socketPath = join(tempDir(t, 'mars-clock-'), 'r.sock');
  let started = false;
  const never = new Promise<void>(() => undefined);
  const backend = memoryBackend(never);
  const write = backend.write.bind(backend);
  backend.write = (o, d, f) => { started = true; return write(o, d, f); };
  await server.addExport('r', backend, { socketPath });
  const client = await NbdClient.connect(socketPath, 'r', { clock });
  const stuck = client.write(0, Buffer.alloc(512)).then(() => 'acknowledged', (e: unknown) => e);
  await waitFor('the write to reach the backend', () => started, 5_000);
  let removed = false;
  const before = clock.pendingTimers;
  const removing = server.removeExport('r').then(() => { removed = true; });
  await clock.flush();
  t.equal(clock.pendingTimers, before + 1, 'the grace is a timer of the injected clock');
  clock.advanceSync(29_999);
  await clock.flush();
  t.notOk(removed, 'still waiting 1 ms before the grace ends');
  t.notOk(removed, 'removeExport waits for the request in flight');
  clock.advanceSync(1);
  await removing;
  t.ok(await stuck instanceof NbdConnectionClosed, 'after the grace the connection is cut');
});

t.test('NbdClient: the handshake deadline runs on the injected clock', async (t) => {
  const clock = new SimClock();
  const socketPath = join(tempDir(t, 'mars-clock-'), 'silent.sock');
  const silent = net.createServer(() => undefined); // accepts, never greets
  await new Promise<void>((r) => silent.listen(socketPath, r));
  t.teardown(() => new Promise<void>((r) => silent.close(() => r())));
  t.teardown(() => { for (const s of sockets) s.destroy(); });
  const sockets: net.Socket[] = [];
  silent.on('connection', (s) => sockets.push(s));
  let outcome: unknown = 'pending';
  const before = clock.pendingTimers;
  const connecting = NbdClient.connect(socketPath, 'r', { timeoutMs: 10_000, clock }).then((c) => { c.destroy(); return 'connected'; }, (e: unknown) => e);
  void connecting.then((o) => { outcome = o; });
  await waitFor('the connection', () => sockets.length === 1, 5_000);
  await clock.flush();
  t.equal(clock.pendingTimers, before + 1, 'the deadline is a timer of the injected clock');
  clock.advanceSync(9_999);
  await clock.flush();
  t.equal(outcome, 'pending', 'no timeout 1 ms before the deadline');
  clock.advanceSync(1);
  t.match(String(await connecting), /timed out after 10000 ms: NBD handshake/, 'times out when the clock passes the deadline');
});

t.test('TransactionLogger: the writeback delay runs on the injected clock', async (t) => {
  const clock = new SimClock();
  const dir = tempDir(t, 'mars-clock-');
  const diskPath = join(dir, 'disk.img');
  writeFileSync(diskPath, Buffer.alloc(MiB));
  const disk = await DataDisk.open(diskPath);
  const writer = await LogWriter.openFresh(join(dir, 'log-000000001-alpha'), 1);
  const logger = new TransactionLogger({
    disk, sizeBytes: MiB, clock: new LamportClock(), timeClock: clock, memLimitBytes: 64 * MiB, writer, onFatal: (e) => t.fail(e.message),
  });
  t.teardown(async () => { await logger.stop(); await disk.close(); });
  const before = clock.pendingTimers;
  await logger.write(4096, Buffer.alloc(4096, 9), false);
  t.equal(logger.writebackRestBytes() > 0, true, 'logged, not yet written back');
  await clock.flush();
  t.equal(clock.pendingTimers, before + 2, 'the writeback delay and the log sync for peers are timers of the injected clock');
  const durableBefore = logger.durablePos;
  clock.advanceSync(LOG_SYNC_FOR_PEERS_MS);
  await waitFor('the log sync for peers', () => logger.durablePos > durableBefore, 5_000);
  t.equal(clock.pendingTimers, before + 1, 'only the writeback delay is left');
  clock.advanceSync(WRITEBACK_DELAY_MS - LOG_SYNC_FOR_PEERS_MS - 1);
  await clock.flush();
  t.equal(logger.writebackRestBytes() > 0, true, 'no writeback 1 ms before the delay');
  clock.advanceSync(1);
  await waitFor('writeback and the data sync', () => logger.writebackRestBytes() === 0, 5_000);
  t.pass('written back once the injected clock passed the delay');
});

t.test('NbdServer: a client that sends NBD_OPT_ABORT and never closes is cut off after the grace', async (t) => {
  const clock = new SimClock();
  const server = new NbdServer({ log: () => undefined, clock });
  t.teardown(() => server.close());
  const socketPath = join(tempDir(t, 'mars-clock-'), 'r.sock');
  await server.addExport('r', memoryBackend(), { socketPath });
  // allowHalfOpen: our side stays open after the server ends its side, like a stuck client.
  const sock = net.connect({ path: socketPath, allowHalfOpen: true });
  t.teardown(() => { sock.destroy(); });
  sock.on('error', () => undefined);
  sock.resume();
  await waitFor('the greeting', () => server.stats().connections === 1, 5_000);
  const option = Buffer.alloc(16);
  NBD_OPTS_MAGIC.copy(option, 0);
  option.writeUInt32BE(NBD_OPT_ABORT, 8);
  sock.write(Buffer.concat([Buffer.from([0, 0, 0, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES]), option]));
  await waitFor('the server to end its side', () => sock.readableEnded, 5_000);
  t.equal(server.stats().connections, 1, 'the connection is still there while the client keeps its side open');
  clock.advanceSync(4_999);
  await clock.flush();
  t.equal(server.stats().connections, 1, 'still there 1 ms before the grace ends');
  clock.advanceSync(1);
  await waitFor('the connection to be gone', () => server.stats().connections === 0, 5_000);
  t.pass('cut off when the grace passed on the injected clock');
});
