// The fetcher following a copy that exists does not open it for a long poll that brings no
// bytes (issue 11: an open, fstat and close per resource and second on an idle secondary); the
// bytes that do arrive are written at their offset, and a copy whose size changed underneath
// is not written. An idle follow parks after two empty long polls until a listing offers more
// (or the parking time ends). Real files in a temp dir; the member serving the logfile is scripted (the
// FetchPeers interface), time is a simulated clock.
import t, { type Test } from 'tap';
import type { LogFn } from '../../common/util/log.js';
import { readdirSync, readFileSync, readlinkSync, statSync, truncateSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { resPaths } from '../../common/tree/paths.js';
import { logName } from '../../common/tree/log-names.js';
import { formatReplayLink } from '../../common/log/links.js';
import { Fetcher, PARKED_FOLLOW_MS, type FetchPeers } from '../../daemon/fetch/fetcher.js';
import type { LogReadParams } from '../../daemon/propagate/peer-calls.js';
import { SimClock } from '../helpers/sim-clock.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

/** Whether this process holds a file descriptor of `path` (Linux: /proc/self/fd). */
function isOpen(path: string): boolean {
  for (const fd of readdirSync('/proc/self/fd')) {
    try { if (readlinkSync(`/proc/self/fd/${fd}`) === path) return true; } catch { /* closed meanwhile */ }
  }
  return false;
}

/** A secondary h2's tree with resource r0 replaying log 1 of h1; path: where that copy goes. */
function secondaryOf(t: Test): { tree: TreeStore; path: string } {
  const root = tempDir(t);
  const tree = new TreeStore(root);
  mkdirSync(join(root, 'resource-r0'));
  tree.write(resPaths.replay('r0', 'h2'), formatReplayLink({ seq: 1, origin: 'h1', minPos: 0, len: 0 }));
  return { tree, path: join(root, 'resource-r0', logName(1, 'h1')) };
}

/** h2's fetcher of r0, running until the test ends. */
function startFetcher(t: Test, tree: TreeStore, peers: FetchPeers, clock: SimClock, log: LogFn = () => {}): Fetcher {
  const fetcher = new Fetcher({ tree, res: 'r0', host: 'h2', peers, rateBytesPerS: 0, log, clock, onAppended: () => {} });
  fetcher.start();
  t.teardown(() => fetcher.stop());
  return fetcher;
}

t.test('following an existing copy: opened only when bytes arrive', async (t) => {
  const { tree, path } = secondaryOf(t);
  writeFileSync(path, Buffer.alloc(10, 1));

  const calls: { fromPos: number; openDuringPoll: boolean }[] = [];
  const warnings: string[] = [];
  // The origin offers 10 bytes, then 15 (a growing logfile: no versionlink of the next number).
  let offered = 10;
  const clock = new SimClock();
  const peers: FetchPeers = {
    listings: () => [{ host: 'h1', connected: true, logs: new Map([[logName(1, 'h1'), offered]]) }],
    logRead: async (_peer: string, p: LogReadParams, onData, signal) => {
      calls.push({ fromPos: p.fromPos, openDuringPoll: isOpen(path) });
      const n = calls.length;
      if (n === 1) {
        clock.advanceSync(p.waitMs); // a poll that brings nothing: the origin waited it out
        return { pos: p.fromPos, durableEnd: 10 };
      }
      if (n === 2) {
        offered = 15;
        await onData(10, Buffer.alloc(5, 2));
        return { pos: 15, durableEnd: 15 };
      }
      if (n === 3) {
        truncateSync(path, 3); // changed underneath (not by the fetcher)
        offered = 20;
        await onData(15, Buffer.alloc(5, 3));
        return { pos: 20, durableEnd: 20 };
      }
      // Then wait until stopped.
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
      return { pos: p.fromPos, durableEnd: offered };
    },
  };
  const fetcher = startFetcher(t, tree, peers, clock, (_l, m) => warnings.push(m));
  await waitFor('three polls and the warning', () => calls.length >= 3 && warnings.length > 0);
  t.same(calls.slice(0, 3).map((c) => c.fromPos), [10, 10, 15]);
  t.same(calls.slice(0, 3).map((c) => c.openDuringPoll), [false, false, false], 'the copy is not held open while polling');
  t.match(warnings[0], /changed size underneath \(3 instead of 15\)/);
  t.equal(statSync(path).size, 3, 'nothing written into a copy that changed size underneath');
  t.same([...readFileSync(path)], [1, 1, 1]);
  t.notOk(isOpen(path), 'closed after the failed attempt');
});

t.test('a copy that does not exist yet is created at once, even while no bytes arrive', async (t) => {
  const { tree, path } = secondaryOf(t);
  let polls = 0;
  const peers: FetchPeers = {
    listings: () => [{ host: 'h1', connected: true, logs: new Map([[logName(1, 'h1'), 0]]) }],
    logRead: async (_peer, p, _onData, signal) => {
      polls++;
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
      return { pos: p.fromPos, durableEnd: 0 };
    },
  };
  const fetcher = startFetcher(t, tree, peers, new SimClock());
  await waitFor('the first poll', () => polls >= 1);
  t.equal(statSync(path).size, 0, 'the empty copy exists (the replayer waits for the file)');
});

t.test('following an existing empty copy (the newest logfile right after a rotation): not opened while polling', async (t) => {
  const { tree, path } = secondaryOf(t);
  writeFileSync(path, Buffer.alloc(0));
  const openDuringPoll: boolean[] = [];
  const clock = new SimClock();
  const peers: FetchPeers = {
    listings: () => [{ host: 'h1', connected: true, logs: new Map([[logName(1, 'h1'), 0]]) }],
    logRead: async (_peer, p, _onData, signal) => {
      openDuringPoll.push(isOpen(path));
      if (openDuringPoll.length < 3) {
        clock.advanceSync(p.waitMs); // a poll that brings nothing: the origin waited it out
        return { pos: p.fromPos, durableEnd: 0 };
      }
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
      return { pos: p.fromPos, durableEnd: 0 };
    },
  };
  const fetcher = startFetcher(t, tree, peers, clock);
  await waitFor('two polls', () => openDuringPoll.length >= 2);
  await clock.advance(PARKED_FOLLOW_MS); // two empty follows park it; the parking runs out
  await waitFor('three polls', () => openDuringPoll.length >= 3);
  t.same(openDuringPoll, [false, false, false]);
});

t.test('a follow that ends at once without bytes (the origin finished the logfile) is not repeated in a tight loop', async (t) => {
  const { tree, path } = secondaryOf(t);
  writeFileSync(path, Buffer.alloc(10, 1));
  let polls = 0;
  const peers: FetchPeers = {
    // Our tree does not know log 2 yet, so the plan stays "follow log 1 from 10".
    listings: () => [{ host: 'h1', connected: true, logs: new Map([[logName(1, 'h1'), 10]]) }],
    logRead: async (_peer, p) => { polls++; return { pos: p.fromPos, durableEnd: 10 }; },
  };
  const clock = new SimClock();
  const fetcher = startFetcher(t, tree, peers, clock);
  await waitFor('the first poll', () => polls >= 1);
  await clock.flush();
  t.equal(polls, 1, 'no second poll before the clock moved');
  await clock.advance(100);
  await waitFor('the second poll after FOLLOW_ENDED_EARLY_MS', () => polls >= 2);
  fetcher.nudge();
  await waitFor('a nudge (tree change) plans again at once', () => polls >= 3);
});

t.test('an idle follow parks after two empty long polls; a listing that offers more, or the parking time, ends it', async (t) => {
  const { tree, path } = secondaryOf(t);
  writeFileSync(path, Buffer.alloc(10, 1));
  let offered = 10; // what h1's listing offers of its growing logfile
  const polls: number[] = [];
  const clock = new SimClock();
  const peers: FetchPeers = {
    listings: () => [{ host: 'h1', connected: true, logs: new Map([[logName(1, 'h1'), offered]]) }],
    logRead: async (_peer, p, onData) => {
      polls.push(p.fromPos);
      if (offered > p.fromPos) {
        await onData(p.fromPos, Buffer.alloc(offered - p.fromPos, 2));
        return { pos: offered, durableEnd: offered };
      }
      clock.advanceSync(p.waitMs); // nothing new: the origin waited the long poll out
      return { pos: p.fromPos, durableEnd: offered };
    },
  };
  const fetcher = startFetcher(t, tree, peers, clock);

  await waitFor('two empty follows', () => polls.length >= 2);
  await clock.flush();
  fetcher.nudge(); // a listing that offers nothing new does not end the parking
  await clock.advance(PARKED_FOLLOW_MS - 1);
  t.same(polls, [10, 10], 'parked: no follow for almost the parking time, nudged or not');
  t.equal(fetcher.active, true, 'a parked fetcher still counts as copying (status does not flap)');

  offered = 15;
  fetcher.nudge(); // the origin's log resumed: it notified us, we pulled, the listing offers more
  await waitFor('a follow at once, with the new bytes', () => polls.length >= 3 && statSync(path).size === 15);
  t.equal(polls[2], 10);

  await waitFor('two more empty follows', () => polls.length >= 5);
  await clock.flush();
  t.same(polls, [10, 10, 10, 15, 15], 'after bytes it follows again, and parks after two empty polls');
  await clock.advance(PARKED_FOLLOW_MS);
  await waitFor('one follow when the parking time ends', () => polls.length >= 6);
  await clock.flush();
  await clock.advance(PARKED_FOLLOW_MS - 1);
  t.equal(polls.length, 6, 'that follow brought nothing: parked again at once');
});
