// A following log-read (PeerService.logRead with follow) on a file that does not grow: a
// cancel ends it within a poll, not at the end of its wait; bytes appended later are sent; and
// the logger's own active logfile is looked at in memory (its durable end), not stat'ed; a
// follow of our own logfile that the logger rotated away from ends at its final end at once.
// With the logger's wake-up (waitActiveLog) an idle follow of our own logfile sleeps until the
// end moves instead of looking every 10 ms.
import t, { type Test } from 'tap';
import { appendFileSync, mkdirSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { PeerService } from '../../daemon/serve/peer-service.js';
import { GrowthWaiters } from '../../daemon/logger/growth-waiters.js';
import { SimClock } from '../helpers/sim-clock.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor, withDeadline } from '../helpers/wait.js';

const NAME_OTHER = 'log-000000001-beta';
const NAME_OWN = 'log-000000002-alpha';

/**
 * activeEnd: the logger's durable end of log 2 (alpha's own). currentSeq: the logfile alpha's
 * logger appends to now (2 by default while activeEnd is defined; undefined: not primary).
 */
function setup(t: Test, activeEnd: () => number | undefined, currentSeq: () => number | undefined = () => (activeEnd() === undefined ? undefined : 2), growth?: GrowthWaiters, clock?: SimClock) {
  const dir = tempDir(t);
  const tree = new TreeStore(dir, new LamportClock());
  mkdirSync(join(dir, 'resource-r0'));
  for (const name of [NAME_OTHER, NAME_OWN]) writeFileSync(join(dir, 'resource-r0', name), Buffer.alloc(4096, 1));
  const service = new PeerService({
    tree, host: 'alpha',
    activeLogEnd: (_res, seq) => (seq === 2 ? activeEnd() : undefined),
    ...(growth ? { waitActiveLog: async (_res: string, seq: number, mark: number, signal: AbortSignal) => {
      if (seq !== currentSeq() || growth.isEnded) return false;
      await growth.wait(mark, signal);
      return true;
    } } : {}),
    primaryPosition: () => { const seq = currentSeq(); return seq === undefined ? undefined : { seq, origin: 'alpha', pos: 0 }; },
    onTreeChanged: () => undefined, onNotify: () => undefined, log: () => undefined,
    ...(clock ? { clock } : {}),
  });
  return { dir, service };
}

const request = (name: string) => ({ t: 'log-read' as const, id: 1, res: 'r0', name, fromPos: 0, follow: true, waitMs: 60_000, rateBytesPerS: 0 });

t.test('a cancel ends an idle follow within a poll, with the durable end', async (t) => {
  const { service } = setup(t, () => undefined);
  const ac = new AbortController();
  let sent = 0;
  const done = service.logRead('beta', request(NAME_OTHER), { reserve: async () => undefined, release: () => undefined, send: async (_pos, data) => { sent += data.length; } }, ac.signal);
  await waitFor('the first 4 KiB sent', () => sent === 4096, 5_000);
  ac.abort();
  const end = await withDeadline(done, 5_000, 'the follow to end after the cancel (its wait is 60 s)');
  t.same(end, { pos: 4096, durableEnd: 4096 });
});

t.test('bytes appended to an idle followed file are sent', async (t) => {
  const { dir, service } = setup(t, () => undefined);
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  let sent = 0;
  const done = service.logRead('beta', request(NAME_OTHER), { reserve: async () => undefined, release: () => undefined, send: async (_pos, data) => { sent += data.length; } }, ac.signal);
  await waitFor('the first 4 KiB sent', () => sent === 4096, 5_000);
  appendFileSync(join(dir, 'resource-r0', NAME_OTHER), Buffer.alloc(1000, 2));
  await waitFor('the appended bytes sent', () => sent === 5096, 5_000);
  ac.abort();
  t.same(await withDeadline(done, 5_000, 'the end'), { pos: 5096, durableEnd: 5096 });
});

t.test('the own active logfile: only its durable end moving lets bytes out', async (t) => {
  let durable = 4096;
  let looks = 0;
  const { dir, service } = setup(t, () => { looks++; return durable; });
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  let sent = 0;
  const done = service.logRead('beta', request(NAME_OWN), { reserve: async () => undefined, release: () => undefined, send: async (_pos, data) => { sent += data.length; } }, ac.signal);
  await waitFor('the durable 4 KiB sent', () => sent === 4096, 5_000);
  appendFileSync(join(dir, 'resource-r0', NAME_OWN), Buffer.alloc(1000, 2)); // written, not yet durable
  const seen = looks;
  await waitFor('a few looks at the durable end', () => looks >= seen + 3, 5_000);
  t.equal(sent, 4096, 'bytes beyond the durable end are not sent');
  durable = 5096;
  await waitFor('the now durable bytes sent', () => sent === 5096, 5_000);
  ac.abort();
  t.same(await withDeadline(done, 5_000, 'the end'), { pos: 5096, durableEnd: 5096 });
});

const sink = (onSend: (n: number) => void) => ({ reserve: async () => undefined, release: () => undefined, send: async (_pos: number, data: Buffer) => onSend(data.length) });

t.test('our own logfile rotated away from: a follow ends at its final end, without waiting', async (t) => {
  const { service } = setup(t, () => 4096, () => 3); // the logger appends to log 3 now
  let sent = 0;
  const done = service.logRead('beta', request(NAME_OWN), sink((n) => { sent += n; }), new AbortController().signal);
  // The request waits up to 60 s for growth; a finished logfile must not make it wait at all.
  t.same(await withDeadline(done, 2_000, 'the follow of a finished logfile to end'), { pos: 4096, durableEnd: 4096 });
  t.equal(sent, 4096);
});

t.test('a rotation during a follow ends it once the final end is sent', async (t) => {
  let current = 2;
  let durable = 4096;
  const { dir, service } = setup(t, () => durable, () => current);
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  let sent = 0;
  const done = service.logRead('beta', request(NAME_OWN), sink((n) => { sent += n; }), ac.signal);
  await waitFor('the durable 4 KiB sent', () => sent === 4096, 5_000);
  appendFileSync(join(dir, 'resource-r0', NAME_OWN), Buffer.alloc(1000, 2));
  durable = 5096; // the rotation made the rest durable (LogWriter.close) ...
  current = 3; // ... and the logger moved on
  t.same(await withDeadline(done, 2_000, 'the follow to end after the rotation'), { pos: 5096, durableEnd: 5096 });
  t.equal(sent, 5096, 'the final bytes were sent first');
});

t.test('a rotation with nothing left to send ends a waiting follow at once', async (t) => {
  let current = 2;
  const { service } = setup(t, () => 4096, () => current);
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  let sent = 0;
  const done = service.logRead('beta', request(NAME_OWN), sink((n) => { sent += n; }), ac.signal);
  await waitFor('the durable 4 KiB sent', () => sent === 4096, 5_000);
  current = 3; // everything was durable already: the end does not move, the logfile is final
  t.same(await withDeadline(done, 2_000, 'the follow to end after the rotation'), { pos: 4096, durableEnd: 4096 });
});

t.test('not primary: our own older logfile is final, a follow ends at once', async (t) => {
  const { service } = setup(t, () => undefined, () => undefined);
  // No versionlink in this tree: the durable end of our own non-active logfile is 0 bytes.
  const done = service.logRead('beta', request(NAME_OWN), sink(() => undefined), new AbortController().signal);
  t.same(await withDeadline(done, 2_000, 'the follow to end'), { pos: 0, durableEnd: 0 });
});

t.test('with the logger\'s wake-up, an idle follow of our own logfile sleeps until the end moves', async (t) => {
  let durable = 4096;
  let current = 2;
  let looks = 0;
  const growth = new GrowthWaiters();
  const clock = new SimClock();
  const { dir, service } = setup(t, () => { looks++; return durable; }, () => current, growth, clock);
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  let sent = 0;
  const done = service.logRead('beta', request(NAME_OWN), sink((n) => { sent += n; }), ac.signal);
  await clock.until('the durable 4 KiB sent', () => sent === 4096, { maxMs: 1_000 });
  const seen = looks;
  await clock.advance(10_000);
  // Looking every 10 ms (FOLLOW_POLL_MS) took 1,000 looks in these 10 s.
  t.ok(looks - seen <= 2, `at most 2 looks at the durable end in 10 s idle (${looks - seen})`);
  t.equal(clock.pendingTimers, 1, 'one timer: the end of the follow\'s wait');
  appendFileSync(join(dir, 'resource-r0', NAME_OWN), Buffer.alloc(1000, 2));
  durable = 5096;
  growth.moved(durable);
  await clock.flush();
  await waitFor('the now durable bytes sent on the wake-up, no time passing', () => sent === 5096, 5_000);
  current = 3; // a rotation: the writer ended and the logger moved on
  growth.end();
  await clock.flush();
  t.same(await withDeadline(done, 2_000, 'the follow to end after the rotation'), { pos: 5096, durableEnd: 5096 });
});

/** Whether this process holds path open now (/proc/self/fd). */
function holdsOpen(path: string): boolean {
  return readdirSync('/proc/self/fd').some((fd) => {
    try { return readlinkSync(`/proc/self/fd/${fd}`) === path; } catch { return false; }
  });
}

t.test('an idle follow of our own logfile at its durable end holds the file open only while bytes go out', async (t) => {
  let durable = 4096;
  const growth = new GrowthWaiters();
  const clock = new SimClock();
  const { dir, service } = setup(t, () => durable, () => 2, growth, clock);
  const path = join(dir, 'resource-r0', NAME_OWN);
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  let sent = 0;
  const done = service.logRead('beta', { ...request(NAME_OWN), fromPos: 4096 }, sink((n) => { sent += n; }), ac.signal);
  await clock.advance(5_000);
  // Before: every follow request opened, stat'ed and closed the file (one per second and
  // secondary resource on an idle primary).
  t.notOk(holdsOpen(path), 'waiting at the durable end: the logfile is not open');
  appendFileSync(path, Buffer.alloc(1000, 2));
  durable = 5096;
  growth.moved(durable);
  await clock.flush();
  await waitFor('the new bytes sent', () => sent === 1000, 5_000);
  ac.abort();
  await clock.flush();
  t.same(await withDeadline(done, 2_000, 'the follow to end on the cancel'), { pos: 5096, durableEnd: 5096 });
  t.notOk(holdsOpen(path), 'closed when the follow ended');
});
