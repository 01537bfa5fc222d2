// The fault-injecting TCP proxy over real loopback TCP: byte-exact pass-through, latency as a
// pipe (not a sleep per chunk), bandwidth pacing shared by connections, cut, silent blackhole,
// drip, backpressure (bounded memory), statistics and close.
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { waitFor } from '../helpers/wait.js';

const KiB = 1024;
const MiB = 1024 * 1024;

interface TestServer {
  port: number;
  /** sockets the server accepted, in order */
  accepted: net.Socket[];
  /** bytes received over all connections */
  bytesIn: number;
  /** per connection: every chunk received with its arrival time */
  arrivals: Array<Array<{ atMs: number; bytes: number }>>;
  received: Buffer[][];
}

/** A server on 127.0.0.1 closed (with all its sockets) in teardown. */
async function startServer(t: Test, mode: 'echo' | 'sink', opts: { pauseSink?: boolean } = {}): Promise<TestServer> {
  const state: TestServer = { port: 0, accepted: [], bytesIn: 0, arrivals: [], received: [] };
  const server = net.createServer((sock) => {
    const i = state.accepted.length;
    state.accepted.push(sock);
    state.arrivals.push([]);
    state.received.push([]);
    sock.on('error', () => undefined);
    sock.on('data', (chunk: Buffer) => {
      state.bytesIn += chunk.length;
      state.arrivals[i]!.push({ atMs: performance.now(), bytes: chunk.length });
      if (mode === 'sink') state.received[i]!.push(chunk);
    });
    if (mode === 'echo') sock.pipe(sock);
    if (opts.pauseSink) sock.pause();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = (server.address() as net.AddressInfo).port;
  t.teardown(async () => {
    for (const s of state.accepted) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return state;
}

async function startProxy(t: Test, targetPort: number, maxQueuedBytes?: number): Promise<FaultProxy> {
  const logs: string[] = [];
  const proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort, log: (m) => logs.push(m), ...(maxQueuedBytes ? { maxQueuedBytes } : {}) });
  t.teardown(() => proxy.close());
  return proxy;
}

/** A client socket that records what it receives and whether it closed. */
interface Client {
  sock: net.Socket;
  data: Buffer[];
  bytes: number;
  closed: boolean;
}

/** `mayBeRefused`: the proxy may reset the connection before the connect completes here. */
async function connect(t: Test, port: number, mayBeRefused = false): Promise<Client> {
  const sock = net.connect({ host: '127.0.0.1', port });
  const c: Client = { sock, data: [], bytes: 0, closed: false };
  sock.on('error', () => undefined);
  sock.on('data', (chunk: Buffer) => {
    c.data.push(chunk);
    c.bytes += chunk.length;
  });
  sock.on('close', () => (c.closed = true));
  t.teardown(() => {
    sock.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', mayBeRefused ? () => resolve() : reject);
  });
  return c;
}

function takeAll(c: Client): Buffer {
  const all = Buffer.concat(c.data);
  c.data = [];
  c.bytes = 0;
  return all;
}

/** Round trip of one small message through an echo path, in ms. */
async function roundTripMs(t: Test, c: Client): Promise<number> {
  takeAll(c);
  const start = performance.now();
  c.sock.write('ping');
  await waitFor('echo of ping', () => c.bytes >= 4, 10_000, 1);
  const ms = performance.now() - start;
  t.equal(takeAll(c).toString(), 'ping');
  return ms;
}

/** The one place a test waits a fixed, bounded time: to show that nothing happens meanwhile. */
async function quietWindow(windowMs: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, windowMs));
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('rejects non-loopback addresses', async (t) => {
  await t.rejects(FaultProxy.start({ targetHost: '10.1.2.3', targetPort: 9 }), /127\.0\.0\.0\/8/);
  await t.rejects(FaultProxy.start({ listenHost: '0.0.0.0', targetHost: '127.0.0.1', targetPort: 9 }), /127\.0\.0\.0\/8/);
});

t.test('pass-through is byte-exact; statistics count it', async (t) => {
  const echo = await startServer(t, 'echo');
  const proxy = await startProxy(t, echo.port);
  t.match(proxy.address, /^127\.0\.0\.1:\d+$/);
  const c = await connect(t, proxy.port);
  const payload = randomBytes(4 * MiB);
  c.sock.write(payload);
  await waitFor('4 MiB echoed', () => c.bytes >= payload.length, 20_000);
  const got = takeAll(c);
  t.equal(got.length, payload.length);
  t.equal(sha(got), sha(payload), 'echo through the proxy equals what was sent');
  t.same(proxy.bytesForwarded, { up: payload.length, down: payload.length });
  t.equal(proxy.connectionsAccepted, 1);
  t.equal(proxy.activeConnections, 1);
  c.sock.end();
  await waitFor('client closed', () => c.closed);
  await waitFor('proxy forgot the connection', () => proxy.activeConnections === 0);
  t.equal(proxy.queuedBytes, 0);
});

t.test('a half-close travels after the data', async (t) => {
  const sink = await startServer(t, 'sink');
  const proxy = await startProxy(t, sink.port);
  proxy.setDelay(30, 'up');
  const c = await connect(t, proxy.port);
  c.sock.end(Buffer.from('last words'));
  await waitFor('server got the data', () => sink.bytesIn === 10);
  const serverSide = sink.accepted[0]!;
  await waitFor('server saw the end', () => serverSide.readableEnded || serverSide.destroyed);
  t.equal(Buffer.concat(sink.received[0]!).toString(), 'last words');
  await waitFor('both sides closed', () => c.closed && proxy.activeConnections === 0);
});

t.test('delay: every direction adds its latency to a round trip', async (t) => {
  // Only lower bounds are timing facts: a loaded machine can make any round trip slow, so the
  // "no delay" checks take the fastest of a few round trips, which the delay would bound from
  // below, instead of a wall-clock limit on each.
  const echo = await startServer(t, 'echo');
  const proxy = await startProxy(t, echo.port);
  const c = await connect(t, proxy.port);
  const fastestMs = async (n: number) => {
    let best = Infinity;
    for (let i = 0; i < n; i++) best = Math.min(best, await roundTripMs(t, c));
    return best;
  };
  const baseMs = await fastestMs(5);
  t.ok(baseMs < 100, `without delay the fastest of 5 round trips is under the 100 ms a delay of 50 ms each way gives (${baseMs.toFixed(1)} ms)`);

  proxy.setDelay(50);
  for (let i = 0; i < 3; i++) {
    const ms = await roundTripMs(t, c);
    t.ok(ms >= 100, `50 ms each way gives >= 100 ms round trip (${ms.toFixed(1)} ms)`);
  }

  proxy.setDelay(0);
  proxy.setDelay(80, 'down');
  const downOnly = await roundTripMs(t, c);
  t.ok(downOnly >= 80, `80 ms on 'down' only (${downOnly.toFixed(1)} ms)`);
  const downFastest = await fastestMs(3);
  t.ok(downFastest < 160, `and not on 'up' too: the fastest of 3 is under 2 x 80 ms (${downFastest.toFixed(1)} ms)`);

  proxy.reset();
  const after = await fastestMs(5);
  t.ok(after < 80, `reset() removes the delay: the fastest of 5 is under the 80 ms that were in force (${after.toFixed(1)} ms)`);
});

t.test('delay is a pipe: throughput is not serialised by the latency', async (t) => {
  const sink = await startServer(t, 'sink');
  const proxy = await startProxy(t, sink.port);
  proxy.setDelay(50);
  const c = await connect(t, proxy.port);
  const payload = randomBytes(16 * MiB);
  const start = performance.now();
  c.sock.write(payload);
  await waitFor('16 MiB through a 50 ms pipe', () => sink.bytesIn >= payload.length, 20_000, 2);
  const ms = performance.now() - start;
  // A sleep per chunk (<= 64 KiB) would need >= 256 x 50 ms = 12.8 s.
  t.ok(ms >= 50, `at least the latency (${ms.toFixed(0)} ms)`);
  t.comment(`16 MiB with 50 ms latency took ${ms.toFixed(0)} ms`);
  t.equal(sha(Buffer.concat(sink.received[0]!)), sha(payload));
});

t.test('bandwidth: paced rate within 30 % of the setting, shared by connections', async (t) => {
  const sink = await startServer(t, 'sink');
  const proxy = await startProxy(t, sink.port);
  const bytesPerS = 2 * MiB;
  proxy.setBandwidth(bytesPerS, 'up');

  const one = await connect(t, proxy.port);
  const payload = randomBytes(3 * MiB);
  let start = performance.now();
  one.sock.write(payload);
  await waitFor('3 MiB at 2 MiB/s', () => sink.bytesIn >= payload.length, 20_000, 2);
  let rate = payload.length / ((performance.now() - start) / 1000);
  t.ok(Math.abs(rate - bytesPerS) / bytesPerS <= 0.3, `one connection: ${(rate / MiB).toFixed(2)} MiB/s for 2 MiB/s`);
  t.equal(sha(Buffer.concat(sink.received[0]!)), sha(payload), 'paced data is intact');

  // Two connections share the link: together they get the setting, not twice it.
  const a = await connect(t, proxy.port);
  const b = await connect(t, proxy.port);
  const before = sink.bytesIn;
  const half = randomBytes(1.5 * MiB);
  start = performance.now();
  a.sock.write(half);
  b.sock.write(half);
  await waitFor('2 x 1.5 MiB at 2 MiB/s', () => sink.bytesIn - before >= 2 * half.length, 20_000, 2);
  rate = (2 * half.length) / ((performance.now() - start) / 1000);
  t.ok(Math.abs(rate - bytesPerS) / bytesPerS <= 0.3, `two connections together: ${(rate / MiB).toFixed(2)} MiB/s for 2 MiB/s`);

  // Unlimited again: the same amount goes much faster.
  proxy.setBandwidth(0);
  const fastBefore = sink.bytesIn;
  start = performance.now();
  one.sock.write(payload);
  await waitFor('3 MiB unlimited', () => sink.bytesIn - fastBefore >= payload.length, 20_000, 2);
  const unlimitedMs = performance.now() - start;
  t.equal(proxy.links.up.bucket, null, 'no pacing left after setBandwidth(0)');
  t.comment(`unlimited: 3 MiB in ${unlimitedMs.toFixed(0)} ms`);
});

t.test('cut: connections are reset and new ones refused until heal', async (t) => {
  const echo = await startServer(t, 'echo');
  const proxy = await startProxy(t, echo.port);
  const a = await connect(t, proxy.port);
  const b = await connect(t, proxy.port);
  await roundTripMs(t, a);
  await roundTripMs(t, b);
  t.equal(echo.accepted.length, 2);

  proxy.cut();
  await waitFor('clients see the cut', () => a.closed && b.closed, 5_000);
  await waitFor('servers see the cut', () => echo.accepted.every((s) => s.destroyed), 5_000);
  t.equal(proxy.activeConnections, 0);

  const refused = await connect(t, proxy.port, true); // TCP accepts, then the proxy resets it
  refused.sock.write('anyone?');
  await waitFor('new connection during a cut is closed', () => refused.closed, 5_000);
  t.equal(refused.bytes, 0, 'nothing came back');
  t.equal(echo.accepted.length, 2, 'the target never saw it');
  t.equal(proxy.connectionsRefused, 1);

  proxy.heal();
  const c = await connect(t, proxy.port);
  await roundTripMs(t, c); // asserts the echo: after heal a new connection works
  t.equal(proxy.connectionsAccepted, 4);
});

t.test('blackhole: nothing arrives and nothing closes; heal destroys the frozen connections', async (t) => {
  const echo = await startServer(t, 'echo');
  const proxy = await startProxy(t, echo.port);
  const a = await connect(t, proxy.port);
  await roundTripMs(t, a);
  const bytesAtServer = echo.bytesIn;
  const forwarded = proxy.bytesForwarded;

  proxy.blackhole();
  a.sock.write(randomBytes(256 * KiB));
  const b = await connect(t, proxy.port); // accepted locally, but the target never hears of it
  b.sock.write('hello?');
  await quietWindow(500);
  t.equal(echo.bytesIn, bytesAtServer, 'the server received nothing');
  t.equal(a.bytes, 0, 'the old connection received nothing');
  t.equal(b.bytes, 0, 'the new connection received nothing');
  t.notOk(a.closed, 'the old connection is still open');
  t.notOk(b.closed, 'the new connection is still open');
  t.equal(echo.accepted.length, 1, 'the new connection never reached the target');
  t.notOk(echo.accepted[0]!.destroyed, 'the server side is still open');
  t.same(proxy.bytesForwarded, forwarded, 'no byte forwarded');
  t.equal(proxy.activeConnections, 2);

  proxy.heal();
  await waitFor('partitioned connections destroyed on heal', () => a.closed && b.closed, 5_000);
  await waitFor('server side closed too', () => echo.accepted[0]!.destroyed, 5_000);
  const c = await connect(t, proxy.port);
  t.ok((await roundTripMs(t, c)) < 1000, 'a new connection works after heal');
});

t.test('blackhole in one direction only freezes that direction', async (t) => {
  const sink = await startServer(t, 'sink');
  const proxy = await startProxy(t, sink.port);
  const a = await connect(t, proxy.port);
  proxy.blackhole('down');
  a.sock.write('still flowing up');
  await waitFor('up direction still forwards', () => sink.bytesIn === 16, 5_000);
  sink.accepted[0]!.write('lost on the way down');
  await quietWindow(300);
  t.equal(a.bytes, 0, 'down direction forwards nothing');
  t.notOk(a.closed);
  proxy.heal();
  await waitFor('connection destroyed on heal', () => a.closed, 5_000);
});

t.test('drip: at most N bytes per interval; heal ends it', async (t) => {
  const sink = await startServer(t, 'sink');
  const proxy = await startProxy(t, sink.port);
  proxy.drip(1000, 100, 'up');
  const c = await connect(t, proxy.port);
  const payload = randomBytes(5000);
  const start = performance.now();
  c.sock.write(payload);
  await waitFor('5000 bytes dripped', () => sink.bytesIn >= payload.length, 10_000, 2);
  const ms = performance.now() - start;
  t.ok(ms >= 380, `5 windows of 1000 bytes take >= 4 intervals (${ms.toFixed(0)} ms)`);
  t.comment(`5 windows took ${ms.toFixed(0)} ms`);
  const arrivals = sink.arrivals[0]!;
  for (const [i, first] of arrivals.entries()) {
    let inWindow = 0;
    for (let j = i; j < arrivals.length && arrivals[j]!.atMs < first.atMs + 50; j++) inWindow += arrivals[j]!.bytes;
    if (inWindow > 1000) {
      t.fail(`${inWindow} bytes arrived within 50 ms of ${(first.atMs - start).toFixed(0)} ms`);
      break;
    }
  }
  t.equal(sha(Buffer.concat(sink.received[0]!)), sha(payload));

  proxy.heal();
  const more = randomBytes(512 * KiB);
  const before = sink.bytesIn;
  const healedAt = performance.now();
  c.sock.write(more);
  await waitFor('full speed after heal', () => sink.bytesIn - before >= more.length, 10_000, 2);
  t.equal(proxy.links.up.drip, null, 'no more dripping after heal');
  t.comment(`512 KiB after heal in ${(performance.now() - healedAt).toFixed(0)} ms`);
});

t.test('jitter: each connection stays in order, different connections overtake each other', async (t) => {
  const sink = await startServer(t, 'sink');
  const proxy = await startProxy(t, sink.port);
  proxy.setJitter(60, 7, 'up');
  const a = await connect(t, proxy.port);
  await waitFor('a accepted', () => sink.accepted.length === 1);
  const b = await connect(t, proxy.port);
  await waitFor('b accepted', () => sink.accepted.length === 2);
  const sent: [Buffer[], Buffer[]] = [[], []];
  let overtaken = 0;
  for (let round = 0; round < 20; round++) {
    const before = [sink.arrivals[0]!.length, sink.arrivals[1]!.length];
    for (const [i, c] of [a, b].entries()) {
      const msg = randomBytes(1000);
      sent[i as 0 | 1].push(msg);
      c.sock.write(msg);
    }
    await waitFor(`round ${round} arrived`, () => sink.received.every((r, i) => Buffer.concat(r).length === sent[i as 0 | 1].length * 1000), 10_000, 1);
    // b's message was sent after a's: arriving first, it overtook it.
    if (sink.arrivals[1]![before[1]!]!.atMs < sink.arrivals[0]![before[0]!]!.atMs) overtaken++;
  }
  for (const i of [0, 1] as const) t.equal(sha(Buffer.concat(sink.received[i]!)), sha(Buffer.concat(sent[i])), `connection ${i}: byte-exact, in order`);
  t.ok(overtaken > 0 && overtaken < 20, `the later connection's chunk arrived first in ${overtaken} of 20 rounds`);
  proxy.reset();
  t.equal(proxy.links.up.jitter, null, 'reset() ends the jitter');
  t.throws(() => proxy.setJitter(-1, 1), /bad jitter/);
});

t.test('backpressure: a stalled destination bounds what the proxy holds', async (t) => {
  const sink = await startServer(t, 'sink', { pauseSink: true });
  const maxQueuedBytes = 256 * KiB;
  const proxy = await startProxy(t, sink.port, maxQueuedBytes);
  const c = await connect(t, proxy.port);
  const payload = randomBytes(48 * MiB); // more than loopback socket buffers can absorb
  c.sock.write(payload);
  await waitFor('the proxy queue filled up and paused its source', () => proxy.peakQueuedBytes > maxQueuedBytes, 20_000);
  await waitFor('the sender feels backpressure', () => c.sock.writableLength > 0 && proxy.queuedBytes > maxQueuedBytes / 2, 20_000);
  // The source pauses once the queue exceeds the limit; a socket read or two (64 KiB) may follow.
  t.ok(proxy.peakQueuedBytes <= maxQueuedBytes + 128 * KiB, `peak queue ${proxy.peakQueuedBytes} bytes for a limit of ${maxQueuedBytes}`);

  sink.accepted[0]!.resume();
  await waitFor('everything arrives once the sink reads', () => sink.bytesIn >= payload.length, 30_000);
  t.equal(sha(Buffer.concat(sink.received[0]!)), sha(payload));
  t.ok(proxy.peakQueuedBytes <= maxQueuedBytes + 128 * KiB, 'the bound held throughout');
});

t.test('a target that refuses: the client is closed', async (t) => {
  // A port nobody listens on: one the OS just handed out, closed again.
  const dead = net.createServer();
  await new Promise<void>((resolve) => dead.listen(0, '127.0.0.1', resolve));
  const deadPort = (dead.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => dead.close(() => resolve()));
  const proxy = await startProxy(t, deadPort);
  const c = await connect(t, proxy.port);
  await waitFor('client closed after the target refused', () => c.closed, 5_000);
  await waitFor('proxy forgot the connection', () => proxy.activeConnections === 0, 5_000);
});

t.test('close: stops listening and destroys open connections', async (t) => {
  const echo = await startServer(t, 'echo');
  const proxy = await startProxy(t, echo.port);
  const a = await connect(t, proxy.port);
  await roundTripMs(t, a);
  await proxy.close();
  await waitFor('client closed', () => a.closed, 5_000);
  await t.rejects(connect(t, proxy.port), { code: 'ECONNREFUSED' });
});
