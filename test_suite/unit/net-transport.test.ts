// The peer connection's keepalive, idle timeout and log-read rate limit on simulated time: the
// connection takes its Clock from the caller (common/util/clock.ts), so these run without a
// single real sleep and the times in the messages are exact.
import t from 'tap';
import { PassThrough } from 'node:stream';
import { SimClock } from '../helpers/sim-clock.js';
import { duplexFromPair } from '../../daemon/net/dial.js';
import { FrameDecoder } from '../../daemon/net/frame.js';
import { PeerConnection, type PeerHandlers } from '../../daemon/net/connection.js';


const HANDLERS: PeerHandlers = {
  async getents() { return { clockUs: 1, entries: [], logs: [] }; },
  async logRead(_peer, req, sink) {
    const data = Buffer.alloc(1024 * 1024, 5);
    await sink.send(req.fromPos, data);
    return { pos: req.fromPos + data.length, durableEnd: req.fromPos + data.length };
  },
  async syncDigests() { return { digests: Buffer.alloc(0), algorithm: 'md5' as const }; },
  async syncRead(_peer, req) { return Buffer.alloc(req.lengthBytes); },
  async position() { return { seq: 1, origin: 'alpha', pos: 0 }; },
  async pushLink() {},
  notify() {},
};

/** A client and a server connected back to back in memory, on one manual clock. */
function pair(clock: SimClock, opts: { keepaliveMs: number; idleTimeoutMs: number }) {
  const toServer = new PassThrough();
  const toClient = new PassThrough();
  const common = { peerUuid: 'u', clock, ...opts };
  const client = new PeerConnection({ ...common, stream: duplexFromPair(toClient, toServer), decoder: new FrameDecoder(), role: 'client', peerHost: 'alpha' });
  const server = new PeerConnection({ ...common, stream: duplexFromPair(toServer, toClient), decoder: new FrameDecoder(), role: 'server', peerHost: 'beta', handlers: HANDLERS });
  return { client, server };
}

t.test('keepalive: a ping exactly when nothing was sent for keepaliveMs, and a healthy pair stays up', async (t) => {
  const clock = new SimClock();
  const { client, server } = pair(clock, { keepaliveMs: 1000, idleTimeoutMs: 3000 });
  t.teardown(() => { client.close('done'); server.close('done'); });
  await clock.advance(999);
  t.equal(client.stats.framesSent, 0, 'no ping before keepaliveMs');
  await clock.advance(1);
  t.equal(client.stats.framesSent, 1, 'the client pinged at keepaliveMs');
  t.equal(client.stats.framesReceived, 1, 'and got its pong');
  await clock.advance(60_000);
  t.notOk(client.isClosed || server.isClosed, 'a minute of simulated idleness: the pings keep both ends up');
  t.ok(client.stats.framesSent >= 60 && server.stats.framesSent >= 60, `both ends pinged (${client.stats.framesSent}, ${server.stats.framesSent} frames)`);
});

t.test('idle timeout: a silent peer is dropped after exactly idleTimeoutMs', async (t) => {
  const clock = new SimClock();
  const sink = new PassThrough();
  sink.resume(); // whatever we send disappears; nothing ever comes back
  const conn = new PeerConnection({ stream: duplexFromPair(new PassThrough(), sink), decoder: new FrameDecoder(), role: 'client', peerHost: 'alpha', peerUuid: 'u', clock, keepaliveMs: 1000, idleTimeoutMs: 3000 });
  const pending = conn.getents().then(() => undefined, (err: Error) => err);
  await clock.advance(2999);
  t.notOk(conn.isClosed, 'still open just before the timeout');
  await clock.advance(1);
  t.equal(await conn.closed, 'peer silent for 3000 ms');
  t.match((await pending)?.message, /peer silent for 3000 ms/, 'the open request fails with the reason');
  t.equal(clock.pendingTimers, 0, 'the closed connection left no timer behind');
});

t.test('the log-read rate limit waits on the injected clock', async (t) => {
  const clock = new SimClock();
  const { client, server } = pair(clock, { keepaliveMs: 1_000_000, idleTimeoutMs: 2_000_000 });
  t.teardown(() => { client.close('done'); server.close('done'); });
  let bytes = 0;
  const rateBytesPerS = 256 * 1024;
  const read = client.stream({ res: 'r1', name: 'log-000000001-alpha', fromPos: 0, follow: false, waitMs: 0, rateBytesPerS, t: 'log-read' }, (_h, payload) => void (bytes += payload.length));
  await clock.advance(0);
  t.ok(bytes > 240 * 1024 && bytes <= 256 * 1024, `the first burst (256 KiB) goes out at once (${bytes} bytes)`);
  await clock.advance(1000);
  t.ok(bytes >= 500 * 1024 && bytes <= 520 * 1024, `one simulated second later, one second's worth more (${bytes} bytes)`);
  await clock.advance(2000);
  t.equal(bytes, 1024 * 1024, 'all of it after (1 MiB - burst) / rate = 3 s');
  t.equal((await read).pos, 1024 * 1024);
});
