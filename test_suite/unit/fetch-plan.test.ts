import t from 'tap';
import { planFetch, type FetchInput, type PeerListing } from '../../daemon/fetch/plan.js';

const L = (seq: number, origin: string) => `log-${String(seq).padStart(9, '0')}-${origin}`;
function input(over: Partial<FetchInput>): FetchInput {
  return { self: 'b', replaySeq: 1, local: new Map(), peers: [], finalLength: () => undefined, ...over };
}
const peer = (host: string, logs: [string, number][], connected = true): PeerListing => ({ host, connected, logs: new Map(logs) });

t.test('follows the growing logfile on its origin from the local length', async (t) => {
  const p = planFetch(input({ local: new Map([[L(1, 'a'), 100]]), peers: [peer('a', [[L(1, 'a'), 500]])] }));
  t.same(p, { kind: 'fetch', name: L(1, 'a'), seq: 1, origin: 'a', fromPos: 100, source: 'a', follow: true, knownEnd: 500 });
});

t.test('ascending order: a complete logfile is finished before the next one starts', async (t) => {
  const finalLength = (seq: number) => (seq === 1 ? 800 : undefined);
  const peers = [peer('a', [[L(1, 'a'), 800], [L(2, 'a'), 300]])];
  const p1 = planFetch(input({ local: new Map([[L(1, 'a'), 500]]), peers, finalLength }));
  t.match(p1, { kind: 'fetch', name: L(1, 'a'), fromPos: 500, follow: false, knownEnd: 800 });
  const p2 = planFetch(input({ local: new Map([[L(1, 'a'), 800]]), peers, finalLength }));
  t.match(p2, { kind: 'fetch', name: L(2, 'a'), fromPos: 0, follow: true });
});

t.test('logfiles below the replay link are ignored; own logfiles are never fetched', async (t) => {
  const p = planFetch(input({ replaySeq: 3, peers: [peer('a', [[L(2, 'a'), 10], [L(3, 'b'), 10]])] }));
  t.same(p.kind, 'idle');
});

t.test('another member serves a complete logfile when the origin is gone', async (t) => {
  const p = planFetch(input({
    local: new Map([[L(1, 'a'), 100]]),
    peers: [peer('a', [[L(1, 'a'), 900]], false), peer('c', [[L(1, 'a'), 900]])],
    finalLength: () => 900,
  }));
  t.match(p, { kind: 'fetch', source: 'c', fromPos: 100, follow: false });
  const idle = planFetch(input({ local: new Map([[L(1, 'a'), 100]]), peers: [peer('a', [[L(1, 'a'), 900]], false)], finalLength: () => 900 }));
  t.match(idle, { kind: 'idle', reason: /waiting for a connection/ });
});

t.test('duplicate numbers stop the fetcher (split brain)', async (t) => {
  const p = planFetch(input({ peers: [peer('a', [[L(2, 'a'), 10]]), peer('c', [[L(2, 'c'), 10]])] }));
  t.match(p, { kind: 'stop', reason: /two logfiles numbered 2 \(from a and c\)/ });
});

t.test('a local copy longer than the finished original stops', async (t) => {
  const p = planFetch(input({ local: new Map([[L(1, 'a'), 901]]), peers: [peer('a', [[L(1, 'a'), 900]])], finalLength: () => 900 }));
  t.match(p, { kind: 'stop', reason: /more than the 900/ });
});

t.test('a copy longer than what its origin offers is not requested again, and is no split brain while the logfile is unfinished', async (t) => {
  const plan = planFetch({
    self: 'gamma', replaySeq: 2,
    local: new Map([['log-000000002-alpha', 1000]]),
    peers: [{ host: 'alpha', connected: true, logs: new Map([['log-000000002-alpha', 400]]) }],
    finalLength: () => undefined,
  });
  t.equal(plan.kind, 'idle');
  t.match((plan as { reason: string }).reason, /offers 400 bytes, fewer than the 1000 here; waiting for a fresh listing/);
});

t.test('regression: a listing taken during a rotation (offer 0, versionlink not final) is no split brain', async (t) => {
  // Issue 11: with 100 resources 7 fetchers stopped with "has 1048576 bytes, more than the 0
  // its origin h1 offers": h1 listed log 3 after its logger had moved on to log 4 but before
  // it wrote the final versionlink of log 3, so it offered 0 bytes of it.
  const name = L(3, 'h1');
  const during = planFetch(input({ self: 'h2', replaySeq: 3, local: new Map([[name, 1048576]]), peers: [peer('h1', [[name, 0], [L(4, 'h1'), 0]])] }));
  t.not(during.kind, 'stop', 'the fetcher does not stop');
  t.match(during, { kind: 'idle', reason: /waiting for a fresh listing/ });
  const after = planFetch(input({
    self: 'h2', replaySeq: 3, local: new Map([[name, 1048576]]), peers: [peer('h1', [[name, 1048576], [L(4, 'h1'), 10]])],
    finalLength: (seq) => (seq === 3 ? 1048576 : undefined),
  }));
  t.match(after, { kind: 'fetch', name: L(4, 'h1'), fromPos: 0 }, 'with the next listing it goes on with the next logfile');
  const diverged = planFetch(input({
    self: 'h2', replaySeq: 3, local: new Map([[name, 1048576]]), peers: [peer('h1', [[name, 4096]])], finalLength: (seq) => (seq === 3 ? 4096 : undefined),
  }));
  t.match(diverged, { kind: 'stop', reason: /more than the 4096 its origin h1 finished with/ }, 'a divergence the versionlinks prove still stops it');
});

// A forced failover whose old primary (a) is gone: c ended a's logfile 1 at 400 bytes and
// started logfile 2; a never writes version-2-a. The final length of logfile 1 is c's.
t.test('after a forced failover the fetcher takes the new primary\'s end of the old logfile', async (t) => {
  const finalLength = (seq: number, origin: string, successor: string) => (seq === 1 && origin === 'a' && successor === 'c' ? 400 : undefined);
  const peers = [peer('a', [], false), peer('c', [[L(1, 'a'), 400], [L(2, 'c'), 100]])];
  t.match(planFetch(input({ local: new Map([[L(1, 'a'), 500]]), peers, finalLength })), { kind: 'fetch', name: L(2, 'c'), source: 'c', fromPos: 0 },
    'a copy holding more of the dead origin\'s logfile than the new history: on to the next logfile, no stop');
  t.match(planFetch(input({ local: new Map([[L(1, 'a'), 400]]), peers, finalLength })), { kind: 'fetch', name: L(2, 'c'), source: 'c' }, 'complete at 400: next logfile');
  t.match(planFetch(input({ local: new Map([[L(1, 'a'), 300]]), peers, finalLength })), { kind: 'fetch', name: L(1, 'a'), source: 'c', fromPos: 300, follow: false, knownEnd: 400 },
    'the rest of logfile 1 from the new primary, up to its end');
});

// Found by the torture suite: the origin rotated (or handed over) before any write, so its
// logfile 3 was finished at 0 bytes. The plan counted the missing local copy as complete
// (0 === 0) and moved on, while the replayer waited for the file forever.
t.test('a logfile finished empty and missing here is created, not skipped', async (t) => {
  const finalLength = (seq: number) => (seq === 3 ? 0 : undefined);
  const peers = [peer('a', [[L(3, 'a'), 0], [L(4, 'a'), 200]])];
  t.match(planFetch(input({ replaySeq: 3, peers, finalLength })), { kind: 'fetch', name: L(3, 'a'), fromPos: 0, follow: false, knownEnd: 0 },
    'missing: create it');
  t.match(planFetch(input({ replaySeq: 3, local: new Map([[L(3, 'a'), 0]]), peers, finalLength })), { kind: 'fetch', name: L(4, 'a'), fromPos: 0, follow: true },
    'present and empty: complete, on to the next logfile');
  const handedOver = (seq: number, origin: string, successor: string) => (seq === 3 && origin === 'a' && successor === 'c' ? 0 : undefined);
  t.match(planFetch(input({ replaySeq: 3, peers: [peer('a', [[L(3, 'a'), 0]]), peer('c', [[L(4, 'c'), 100]])], finalLength: handedOver })),
    { kind: 'fetch', name: L(3, 'a'), knownEnd: 0 }, 'also when another host continued the history from 0 bytes of it');
});
