// The per-peer request scheduler (daemon/net/scheduler.ts): never above its limits, control
// requests ahead of bulk ones, resources take turns, cancelled requests are never sent.
import t from 'tap';
import { RequestScheduler, type RequestClass, type Ticket } from '../../daemon/net/scheduler.js';
import { mulberry32 as makePrng } from '../helpers/prng.js';
import { PassThrough } from 'node:stream';
import { duplexFromPair } from '../../daemon/net/dial.js';
import { FrameDecoder } from '../../daemon/net/frame.js';
import { PeerConnection, type PeerHandlers } from '../../daemon/net/connection.js';

function harness(maxInFlight: number, maxBulkInFlight: number) {
  const s = new RequestScheduler({ maxInFlight, maxBulkInFlight });
  const granted: string[] = [];
  const tickets = new Map<string, Ticket>();
  const submit = (cls: RequestClass, key: string, name: string) => {
    tickets.set(name, s.submit(cls, key, () => granted.push(name)));
  };
  return { s, granted, tickets, submit };
}

t.test('never more than maxInFlight open, never more than maxBulkInFlight bulk', async (t) => {
  const { s, granted, submit, tickets } = harness(4, 3);
  for (let i = 0; i < 10; i++) submit('bulk', `r${i % 3}`, `b${i}`);
  t.equal(granted.length, 3, 'only maxBulkInFlight bulk requests are sent');
  t.equal(s.bulkInFlight, 3);
  submit('control', '', 'c0');
  submit('control', '', 'c1');
  t.same(granted.slice(3), ['c0'], 'the slot kept free for control requests is used; the next control waits');
  t.equal(s.inFlight, 4);
  s.release(tickets.get('c0')!);
  t.same(granted.slice(4), ['c1'], 'a freed slot goes to the waiting control request before any bulk one');
  s.release(tickets.get('b0')!);
  t.equal(granted.length, 6, 'a freed bulk slot goes to the next bulk request');
  t.equal(s.inFlight, 4);
});

t.test('round robin between resources within a class', async (t) => {
  const { s, granted, submit, tickets } = harness(2, 1);
  for (let i = 0; i < 6; i++) submit('bulk', 'big', `big${i}`);
  submit('bulk', 'small', 'small0');
  submit('bulk', 'other', 'other0');
  submit('bulk', 'small', 'small1');
  // one bulk slot: each release lets the next request in turn go
  for (let n = 0; n < 8 && granted.length < 9; n++) s.release(tickets.get(granted[granted.length - 1]!)!);
  t.same(granted.slice(0, 6), ['big0', 'big1', 'small0', 'other0', 'big2', 'small1'],
    'a resource with a deep queue gets one turn per round, the others are not starved');
});

t.test('a cancelled request is never granted and frees nothing it did not hold', async (t) => {
  const { s, granted, submit, tickets } = harness(2, 1);
  submit('bulk', 'a', 'b0');
  submit('bulk', 'a', 'b1');
  submit('bulk', 'b', 'b2');
  s.release(tickets.get('b1')!); // cancelled while queued
  t.equal(s.inFlight, 1, 'cancelling a queued request does not free a slot');
  s.release(tickets.get('b0')!);
  t.same(granted, ['b0', 'b2']);
  s.release(tickets.get('b0')!); // released twice: ignored
  t.equal(s.inFlight, 1);
});

t.test('clear returns every queued ticket and frees every slot', async (t) => {
  const { s, submit } = harness(3, 1);
  for (let i = 0; i < 5; i++) submit('bulk', `r${i}`, `b${i}`);
  const queued = s.clear();
  t.equal(queued.length, 4);
  t.ok(queued.every((q) => q.done && !q.granted));
  t.equal(s.inFlight, 0);
  t.equal(s.queued, 0);
});

t.test('random submit/release sequences keep the limits and grant each request once', async (t) => {
  const rnd = makePrng(11);
  const s = new RequestScheduler({ maxInFlight: 6, maxBulkInFlight: 4 });
  const open: Ticket[] = [];
  const grants = new Map<number, number>();
  let maxSeen = 0;
  let maxBulk = 0;
  for (let step = 0; step < 5000; step++) {
    if (rnd() < 0.55) {
      const cls: RequestClass = rnd() < 0.3 ? 'control' : 'bulk';
      const n = step;
      open.push(s.submit(cls, `r${Math.floor(rnd() * 5)}`, () => grants.set(n, (grants.get(n) ?? 0) + 1)));
    } else if (open.length > 0) {
      const i = Math.floor(rnd() * open.length);
      s.release(open[i]!);
      open.splice(i, 1);
    }
    maxSeen = Math.max(maxSeen, s.inFlight);
    maxBulk = Math.max(maxBulk, s.bulkInFlight);
    if (s.inFlight > 6 || s.bulkInFlight > 4) break;
  }
  t.ok(maxSeen <= 6 && maxBulk <= 4, `limits kept (max ${maxSeen} open, ${maxBulk} bulk)`);
  t.equal(maxSeen, 6, 'the limit was reached (the test exercised it)');
  t.ok(grants.size > 100 && [...grants.values()].every((n) => n === 1), 'no request granted twice');
});

t.test('a connection with 300 requests of 30 resources at once: no EBUSY, control requests get through', async (t) => {
  // The server runs at most 64 requests per connection (its default) and refuses more with
  // EBUSY; before the scheduler the client sent all 300 at once and 236 of them failed.
  const toServer = new PassThrough();
  const toClient = new PassThrough();
  let running = 0;
  let maxRunning = 0;
  const handlers: PeerHandlers = {
    async getents() { return { clockUs: 1, entries: [], logs: [] }; },
    async logRead(_peer, req) { return { pos: req.fromPos, durableEnd: req.fromPos }; },
    async syncDigests() { return { digests: Buffer.alloc(0), algorithm: 'md5' as const }; },
    async syncRead(_peer, req) {
      running++;
      maxRunning = Math.max(maxRunning, running);
      await new Promise((r) => setImmediate(r));
      running--;
      return Buffer.alloc(req.lengthBytes, 7);
    },
    async position() { return { seq: 1, origin: 'alpha', pos: 0 }; },
    async pushLink() {},
    notify() {},
  };
  const client = new PeerConnection({ peerUuid: 'u', stream: duplexFromPair(toClient, toServer), decoder: new FrameDecoder(), role: 'client', peerHost: 'alpha' });
  const server = new PeerConnection({ peerUuid: 'u', stream: duplexFromPair(toServer, toClient), decoder: new FrameDecoder(), role: 'server', peerHost: 'beta', handlers });
  t.teardown(() => { client.close('done'); server.close('done'); });
  const reads = Array.from({ length: 300 }, (_, i) => client.request({ t: 'sync-read', res: `r${i % 30}`, fromPos: 0, lengthBytes: 4096 }));
  const ping = client.ping();
  const results = await Promise.allSettled([...reads, ping]);
  const failed = results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
  t.same(failed, [], 'every request answered');
  t.ok(maxRunning <= 48, `the server never ran more than the client's limit (${maxRunning})`);
  t.notOk(client.isClosed || server.isClosed, 'the connection stays up');
});
