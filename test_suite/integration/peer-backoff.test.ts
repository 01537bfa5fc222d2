// A peer link whose pulls keep failing (the peer refuses the listing, or our /mars is full and
// the merge cannot write) must back off like a link that cannot connect: the delay between
// attempts doubles. Regression: the backoff was reset on every successful connect, so such a
// link reconnected every 100 ms forever (seen with /mars full in emergency mode). Real sockets
// and a real PeerServer; the link's sleeps run on a simulated clock, so the delays are exact.
// Also the regular pulls' pacing (daemon/propagate/pull-pacing.ts): stretched while quiet,
// back to the interval after news or a notification.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { PeerServer } from '../../daemon/net/server.js';
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
  const refuse = async (): Promise<never> => { throw new Error('not in this test'); };
  const server = new PeerServer({
    host: 'alpha', uuid: UUID, secret: SECRET, log: () => undefined,
    handlers: {
      async getents(peer, since) {
        asked.push(since?.generation);
        const r = await svc.getents(peer, since);
        // A server that names a directory as unchanged which it never sent.
        if (spoil && r.listing?.since !== undefined) { spoil = false; r.listing.dirs.push('resource-zz'); }
        return r;
      },
      logRead: refuse, syncDigests: refuse, syncRead: refuse, position: refuse, pushLink: refuse, notify: () => undefined,
    },
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
  const served = new TreeStore(tempDir(t));
  served.write(globalPaths.uuid, UUID);
  served.ensureDir('ips');
  served.write('ips/ip-alpha', '127.0.0.1');
  const svc = new PeerService({ tree: served, host: 'alpha', activeLogEnd: () => undefined, primaryPosition: () => undefined, onTreeChanged: () => undefined, onNotify: () => undefined, log: () => undefined });
  const pulledAtMs: number[] = [];
  const refuse = async (): Promise<never> => { throw new Error('not in this test'); };
  const server = new PeerServer({
    host: 'alpha', uuid: UUID, secret: SECRET, log: () => undefined,
    handlers: {
      async getents(peer, since) { pulledAtMs.push(clock.nowMs()); return svc.getents(peer, since); },
      logRead: refuse, syncDigests: refuse, syncRead: refuse, position: refuse, pushLink: refuse, notify: () => undefined,
    },
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
  // The link sleeps on the simulated clock between pulls; its I/O is real.
  const pulls = async (n: number) => {
    const want = pulledAtMs.length + n;
    const deadlineMs = Date.now() + 20_000;
    while (pulledAtMs.length < want) {
      if (Date.now() > deadlineMs) throw new Error(`timed out waiting for ${n} pull(s) (at ${JSON.stringify(pulledAtMs)})`);
      await clock.advance(100);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  const gapsOfLast = (n: number) => pulledAtMs.slice(-n - 1).map((at, i, a) => (i === 0 ? 0 : at - a[i - 1]!)).slice(1);
  // Within one step of the clock (100 ms) of the expected wait.
  const near = (gapMs: number, expectedMs: number) => gapMs >= expectedMs && gapMs <= expectedMs + 100;

  await pulls(1); // the first, full listing brings the peer's tree: news
  await pulls(12);
  const quiet = gapsOfLast(12);
  t.comment(`quiet gaps: ${quiet.join(', ')} ms`);
  for (const [i, gap] of quiet.entries()) t.ok(near(gap, pullDelayMs(1000, i)), `quiet pull ${i + 1}: ${gap} ms, expected ${pullDelayMs(1000, i)}`);
  t.ok(near(quiet.at(-1)!, MAX_QUIET_FACTOR * 1000), 'capped');

  // News: a link the peer wrote comes with the next pull; the one after follows at the interval.
  served.write('ips/ip-gamma', '127.0.0.2');
  await pulls(2);
  t.equal(tree.value('ips/ip-gamma'), '127.0.0.2', 'merged');
  t.ok(near(gapsOfLast(1)[0]!, 1000), `after news: ${gapsOfLast(1)[0]} ms`);

  // Quiet again, then a notification: a pull at once, and the interval after it.
  await pulls(6);
  t.ok(gapsOfLast(1)[0]! >= 2000, `stretched again: ${gapsOfLast(1)[0]} ms`);
  const notifiedAtMs = clock.nowMs();
  link.pullSoon();
  await pulls(2);
  t.ok(pulledAtMs.at(-2)! - notifiedAtMs <= 100, 'the notification pulls at once');
  t.ok(near(gapsOfLast(1)[0]!, 1000), `after a notification: ${gapsOfLast(1)[0]} ms`);
});
