// Per-peer byte totals (daemon/net/peer-traffic.ts) over real PeerConnections back to back in
// memory: the totals are the frame bytes each end's transport counted, summed over open and
// closed connections, equal at both ends, and never go down when a connection closes; the
// metrics registry exposes them as mars_peer_bytes_total{peer,direction}.
import t from 'tap';
import { PassThrough } from 'node:stream';
import { createRequire } from 'node:module';
import { duplexFromPair } from '../../daemon/net/dial.js';
import { FrameDecoder } from '../../daemon/net/frame.js';
import { PeerConnection, type PeerHandlers } from '../../daemon/net/connection.js';
import { PeerTraffic } from '../../daemon/net/peer-traffic.js';
import { MarsMetrics } from '../../daemon/metrics/registry.js';
import { TreeStore } from '../../common/tree/store.js';
import { newResourceCounters } from '../../common/util/metrics-recorder.js';
import { tempDir } from '../helpers/tmp.js';

const parse = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => { name: string; type: string; metrics: { value?: string; labels?: Record<string, string> }[] }[];
const LOG_BYTES = 512 * 1024;

const HANDLERS: PeerHandlers = {
  async getents() { return { clockUs: 1, entries: [], logs: [] }; },
  async logRead(_peer, req, sink) {
    await sink.send(req.fromPos, Buffer.alloc(LOG_BYTES, 7));
    return { pos: req.fromPos + LOG_BYTES, durableEnd: req.fromPos + LOG_BYTES };
  },
  async syncDigests() { return { digests: Buffer.alloc(0), algorithm: 'md5' as const }; },
  async syncRead(_peer, req) { return Buffer.alloc(req.lengthBytes); },
  async position() { return { seq: 1, origin: 'alpha', pos: 0 }; },
  async pushLink() {},
  notify() {},
};

/** beta (client) dials alpha (server); each side tracks its end in its own tally. */
function connect(betaSide: PeerTraffic, alphaSide: PeerTraffic) {
  const toServer = new PassThrough();
  const toClient = new PassThrough();
  const client = new PeerConnection({ stream: duplexFromPair(toClient, toServer), decoder: new FrameDecoder(), role: 'client', peerHost: 'alpha', peerUuid: 'u' });
  const server = new PeerConnection({ stream: duplexFromPair(toServer, toClient), decoder: new FrameDecoder(), role: 'server', peerHost: 'beta', peerUuid: 'u', handlers: HANDLERS });
  betaSide.track(client);
  alphaSide.track(server);
  return { client, server };
}

async function readLog(client: PeerConnection): Promise<number> {
  let got = 0;
  await client.stream({ t: 'log-read', res: 'r1', name: 'log-000000001-alpha', fromPos: 0, follow: false, waitMs: 0, rateBytesPerS: 0 }, (_h, p) => void (got += p.length));
  return got;
}

t.test('totals are the bytes on the wire, equal at both ends, monotonic over closed connections', async (t) => {
  const betaSide = new PeerTraffic();
  const alphaSide = new PeerTraffic();
  t.same([...betaSide.totals()], [], 'nothing before the first connection');
  const first = connect(betaSide, alphaSide);
  t.equal(await readLog(first.client), LOG_BYTES);
  const b1 = betaSide.totals().get('alpha')!;
  const a1 = alphaSide.totals().get('beta')!;
  t.ok(b1.receivedBytes > LOG_BYTES && b1.receivedBytes < LOG_BYTES + 4096, `received the log data plus frame headers (${b1.receivedBytes})`);
  t.equal(b1.receivedBytes, first.client.stats.bytesReceived, 'what the transport counted');
  t.equal(a1.sentBytes, b1.receivedBytes, 'alpha sent what beta received');
  t.equal(a1.receivedBytes, b1.sentBytes, 'and the other way round');
  first.client.close('test');
  await first.server.closed;
  const b2 = betaSide.totals().get('alpha')!;
  t.same(b2, b1, 'a closed connection keeps counting in the total');
  const second = connect(betaSide, alphaSide);
  t.teardown(() => { second.client.close('done'); second.server.close('done'); });
  await readLog(second.client);
  const b3 = betaSide.totals().get('alpha')!;
  t.ok(b3.receivedBytes >= b1.receivedBytes * 2 - 64, `the second connection adds (${b1.receivedBytes} -> ${b3.receivedBytes})`);
  t.equal(alphaSide.totals().get('beta')!.sentBytes, b3.receivedBytes);
});

t.test('a connection already closed when tracked is counted once', async (t) => {
  const tally = new PeerTraffic();
  const { client, server } = connect(new PeerTraffic(), new PeerTraffic());
  await readLog(client);
  client.close('test');
  await server.closed;
  tally.track(client);
  t.equal(tally.totals().get('alpha')!.receivedBytes, client.stats.bytesReceived);
  t.throws(() => tally.track(client), /tracked twice/, 'tracking a connection twice is a bug (it would count twice)');
  t.equal(tally.totals().get('alpha')!.receivedBytes, client.stats.bytesReceived, 'still counted once');
});

t.test('mars_peer_bytes_total{peer,direction} in the exposition, every member from the start', async (t) => {
  const betaSide = new PeerTraffic();
  const { client, server } = connect(betaSide, new PeerTraffic());
  t.teardown(() => { client.close('done'); server.close('done'); });
  await readLog(client);
  const metrics = new MarsMetrics({
    tree: new TreeStore(tempDir(t)), host: 'beta', windowS: 60, nowMs: () => Date.now(), resources: () => [], counters: () => newResourceCounters(),
    peers: () => [{ peer: 'alpha', connected: true }, { peer: 'gamma', connected: false }],
    peerTraffic: () => betaSide.totals(), logfileCount: () => 0,
  });
  const f = parse(await metrics.registry.metrics()).find((x) => x.name === 'mars_peer_bytes_total');
  t.equal(f?.type, 'COUNTER');
  const v = (peer: string, direction: string) => Number(f?.metrics.find((m) => m.labels?.peer === peer && m.labels?.direction === direction)?.value);
  t.equal(v('alpha', 'received'), client.stats.bytesReceived);
  t.equal(v('alpha', 'sent'), client.stats.bytesSent);
  t.equal(v('gamma', 'sent'), 0, 'a member never connected has its series at 0');
  t.equal(v('gamma', 'received'), 0);
});
