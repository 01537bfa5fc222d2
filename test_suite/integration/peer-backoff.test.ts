// A peer link whose pulls keep failing (the peer refuses the listing, or our /mars is full and
// the merge cannot write) must back off like a link that cannot connect: the delay between
// attempts doubles. Regression: the backoff was reset on every successful connect, so such a
// link reconnected every 100 ms forever (seen with /mars full in emergency mode). Real sockets
// and a real PeerServer; the link's sleeps run on a simulated clock, so the delays are exact.
// Also the regular pulls' pacing (daemon/propagate/pull-pacing.ts): stretched while quiet,
// back to the interval after news or a notification.
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { PeerServer } from '../../daemon/net/server.js';
import type { PeerHandlers } from '../../daemon/net/service.js';
import { PeerLink, linkTarget } from '../../daemon/propagate/peer-manager.js';
import { TreeStore } from '../../common/tree/store.js';
import { globalPaths } from '../../common/tree/paths.js';
import { SimClock } from '../helpers/sim-clock.js';
import { tempDir } from '../helpers/tmp.js';

const SECRET = randomBytes(32);
const UUID = 'alpha_1700000000.000000001';

t.test('a link whose pulls fail backs off: 100, 200, 400, 800 ms between attempts', async (t) => {
  const clock = new SimClock();
  const attemptsAtMs: number[] = [];
  const refuse = async (): Promise<never> => { throw new Error('refused for the test'); };
  const server = new PeerServer({
    host: 'alpha', uuid: UUID, secret: SECRET, log: () => undefined,
    handlers: {
      async getents() { attemptsAtMs.push(clock.nowMs()); throw new Error('no space left on device (the test)'); },
      logRead: refuse, syncDigests: refuse, syncRead: refuse, position: refuse, pushLink: refuse, notify: () => undefined,
    },
  });
  const { port } = await server.listen('127.0.0.1:0');
  t.teardown(() => server.close());
  const root = tempDir(t);
  mkdirSync(join(root, 'actual-beta')); // marsd makes it at start; the link's status goes there
  const tree = new TreeStore(root);
  tree.write(globalPaths.uuid, UUID);
  const link = new PeerLink('alpha', linkTarget(`127.0.0.1:${port}`, undefined), {
    tree, host: 'beta', pullIntervalMs: 1000, log: () => undefined, onTreeChanged: () => undefined, onListing: () => undefined, clock,
  }, () => SECRET);
  t.teardown(() => link.stop());
  const status = () => tree.value(globalPaths.actual('beta', 'peer-alpha')) ?? '';

  // Simulated time only moves while the link sleeps after a lost connection (its status says
  // "down"); connecting and the failing pull are real socket I/O.
  const deadlineMs = Date.now() + 30_000;
  while (attemptsAtMs.length < 5 && Date.now() < deadlineMs) {
    if (status().startsWith('down')) await clock.advance(10);
    else await new Promise((r) => setTimeout(r, 5));
  }
  t.equal(attemptsAtMs.length, 5, `five attempts (${status()})`);
  const gapsMs = attemptsAtMs.slice(1).map((at, i) => at - attemptsAtMs[i]!);
  t.comment(`simulated gaps between attempts: ${gapsMs.join(', ')} ms`);
  for (const [i, expected] of [100, 200, 400, 800].entries()) {
    t.ok(gapsMs[i]! >= expected && gapsMs[i]! < expected + 50, `attempt ${i + 2} came ${gapsMs[i]} ms after the previous (backoff ${expected} ms)`);
  }
  t.match(status(), /pull failed: .*no space left on device/, 'the status says why');
});

/**
 * A PeerServer of alpha answering only listings, with `getents`, and beta's PeerLink to it on a
 * fresh tree, on `clock`; both end with the test.
 */
async function linkToServer(t: Test, clock: SimClock, getents: PeerHandlers['getents']): Promise<{ tree: TreeStore; link: PeerLink }> {
  const refuse = async (): Promise<never> => { throw new Error('not in this test'); };
  const server = new PeerServer({
    host: 'alpha', uuid: UUID, secret: SECRET, log: () => undefined,
    handlers: { getents, logRead: refuse, syncDigests: refuse, syncRead: refuse, position: refuse, pushLink: refuse, notify: () => undefined },
  });
  const { port } = await server.listen('127.0.0.1:0');
  t.teardown(() => server.close());
  const root = tempDir(t);
  mkdirSync(join(root, 'actual-beta'));
  const tree = new TreeStore(root);
  tree.write(globalPaths.uuid, UUID);
  const link = new PeerLink('alpha', linkTarget(`127.0.0.1:${port}`, undefined), {
    tree, host: 'beta', pullIntervalMs: 1000, log: () => undefined, onTreeChanged: () => undefined, onListing: () => undefined, clock,
  }, () => SECRET);
  t.teardown(() => link.stop());
  return { tree, link };
}

t.test('a link asks for deltas, for a full listing every FULL_LISTING_EVERY_MS and after a refused delta, and merges the same tree', async (t) => {
  const { PeerService } = await import('../../daemon/serve/peer-service.js');
  const { FULL_LISTING_EVERY_MS } = await import('../../daemon/propagate/listing-delta.js');
  const clock = new SimClock();
  const serverRoot = tempDir(t);
  const served = new TreeStore(serverRoot);
  served.write(globalPaths.uuid, UUID);
  served.ensureDir('ips');
  served.write('ips/ip-alpha', '127.0.0.1');
  served.write('ips/ip-beta', '127.0.0.1');
  const svc = new PeerService({ tree: served, host: 'alpha', activeLogEnd: () => undefined, primaryPosition: () => undefined, onTreeChanged: () => undefined, onNotify: () => undefined, log: () => undefined });
  const asked: (number | undefined)[] = [];
  let spoil = false;
  const { tree, link } = await linkToServer(t, clock, async (peer, since) => {
    asked.push(since?.generation);
    const r = await svc.getents(peer, since);
    // A server that names a directory as unchanged which it never sent.
    if (spoil && r.listing?.since !== undefined) { spoil = false; r.listing.dirs.push('resource-zz'); }
    return r;
  });
  const until = async (what: string, cond: () => boolean) => {
    const deadlineMs = Date.now() + 20_000;
    while (!cond()) {
      if (Date.now() > deadlineMs) throw new Error(`timed out: ${what} (asked ${JSON.stringify(asked)}, status ${tree.value(globalPaths.actual('beta', 'peer-alpha'))})`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  // Simulated time moves in small steps while we wait: the link sleeps on the clock between
  // pulls (and after a lost connection), its I/O is real.
  const pullsAfter = async (n: number) => {
    const want = asked.length + n;
    const deadlineMs = Date.now() + 20_000;
    while (asked.length < want) {
      if (Date.now() > deadlineMs) throw new Error(`timed out waiting for ${n} pull(s) (asked ${JSON.stringify(asked)})`);
      await clock.advance(100);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  await until('the first pull', () => asked.length >= 1);
  await pullsAfter(3);
  t.equal(asked[0], undefined, 'the first pull asks for the full listing');
  t.ok(asked.slice(1, 4).every((g) => g !== undefined), 'the next ones for deltas');
  served.write('ips/ip-gamma', '127.0.0.2');
  await pullsAfter(1);
  await until('the merge', () => tree.value('ips/ip-gamma') === '127.0.0.2');
  t.pass('a change merged from a delta');
  const beforeFull = asked.length;
  t.notOk(asked.slice(1).includes(undefined), `no full listing within the first ${FULL_LISTING_EVERY_MS / 1000} s`);
  await clock.advance(FULL_LISTING_EVERY_MS);
  await pullsAfter(2);
  t.ok(asked.slice(beforeFull).includes(undefined), `a full listing after ${FULL_LISTING_EVERY_MS / 1000} s (${JSON.stringify(asked)})`);
  spoil = true;
  const before = asked.length;
  await pullsAfter(1);
  await pullsAfter(1);
  t.ok(asked.slice(before + 1).includes(undefined), 'after the refused delta the link starts over in full');
  t.equal(tree.exists('resource-zz'), false, 'the refused delta merged nothing');
  t.equal(tree.value('ips/ip-gamma'), '127.0.0.2');
});

t.test('regular pulls stretch while they bring nothing new, and come every interval again after news or a notification', async (t) => {
  const { PeerService } = await import('../../daemon/serve/peer-service.js');
  const { pullDelayMs, MAX_QUIET_FACTOR } = await import('../../daemon/propagate/pull-pacing.js');
  const clock = new SimClock();
  // The waits the link sleeps between pulls, as it asks the clock for them: exact however long
  // the real I/O of a pull takes (no other timer of a connected link waits whole seconds).
  const sleepsMs: number[] = [];
  const setTimeoutOfClock = clock.setTimeout.bind(clock);
  clock.setTimeout = (fn: () => void, delayMs: number) => {
    if (delayMs >= 1000 && delayMs <= MAX_QUIET_FACTOR * 1000 && delayMs % 1000 === 0) sleepsMs.push(delayMs);
    return setTimeoutOfClock(fn, delayMs);
  };
  const served = new TreeStore(tempDir(t));
  served.write(globalPaths.uuid, UUID);
  served.ensureDir('ips');
  served.write('ips/ip-alpha', '127.0.0.1');
  const svc = new PeerService({ tree: served, host: 'alpha', activeLogEnd: () => undefined, primaryPosition: () => undefined, onTreeChanged: () => undefined, onNotify: () => undefined, log: () => undefined });
  let pullCount = 0;
  const { tree, link } = await linkToServer(t, clock, (peer, since) => { pullCount++; return svc.getents(peer, since); });
  /** Until the link has slept n more times (each sleep ends in the next pull); advance: let simulated time pass. */
  const sleeps = async (n: number, advance = true) => {
    const want = sleepsMs.length + n;
    const deadlineMs = Date.now() + 20_000;
    while (sleepsMs.length < want) {
      if (Date.now() > deadlineMs) throw new Error(`timed out waiting for ${n} sleep(s) (slept ${JSON.stringify(sleepsMs)}, ${pullCount} pulls)`);
      if (advance) await clock.advance(100);
      await new Promise((r) => setTimeout(r, 5));
    }
  };

  await sleeps(1); // after the first, full listing: it brought the peer's tree (news)
  t.equal(sleepsMs[0], 1000, 'after news: the interval');
  await sleeps(12);
  const quiet = sleepsMs.slice(1, 13);
  t.comment(`waits after quiet pulls: ${quiet.join(', ')} ms`);
  t.same(quiet, quiet.map((_, i) => pullDelayMs(1000, i + 1)), 'after each quiet pull a longer wait, step by step');
  t.equal(quiet.at(-1), MAX_QUIET_FACTOR * 1000, 'capped');

  // News: a link the peer wrote comes with the next pull; the wait after it is the interval.
  served.write('ips/ip-gamma', '127.0.0.2');
  await sleeps(1);
  t.equal(tree.value('ips/ip-gamma'), '127.0.0.2', 'merged');
  t.equal(sleepsMs.at(-1), 1000, 'after news: the interval again');
  await sleeps(4);
  t.ok(sleepsMs.at(-1)! > 1000, `stretched again: ${sleepsMs.at(-1)} ms`);

  // A notification: a pull at once (simulated time stands still), then the interval.
  const pullsBefore = pullCount;
  link.pullSoon();
  await sleeps(1, false);
  t.equal(pullCount, pullsBefore + 1, 'the notification pulled at once');
  t.equal(sleepsMs.at(-1), 1000, 'after a notification: the interval');
});
