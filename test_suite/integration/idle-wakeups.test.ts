// An idle marsd sleeps (issue 11): its main thread wakes for the control round, the heartbeat
// and the peer pulls, a few times a second, not a hundred. prom-client's event-loop lag
// monitor sampled every 10 ms by default (a timer of its own in every marsd, with or without
// --metrics): 100 wake-ups a second, about a tenth of an idle daemon's CPU with one resource.
// Counted on a real marsd process: the voluntary context switches of its main thread (each
// sleep in epoll_wait that a timer or an event ends is one) over a measuring window.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { startHost } from '../helpers/cluster.js';

/** voluntary context switches of the process's main thread so far */
function wakeups(pid: number): number {
  const status = readFileSync(`/proc/${pid}/task/${pid}/status`, 'utf8');
  const m = /^voluntary_ctxt_switches:\s+(\d+)$/m.exec(status);
  if (!m) throw new Error(`no voluntary_ctxt_switches in /proc/${pid}/task/${pid}/status`);
  return Number(m[1]);
}

/** The measuring window: a deliberate wait, as idleness is what is measured. */
const WINDOW_MS = 3000;
/** Well above what an idle daemon needs (about 10 a second here), well below 100 a second. */
const MAX_WAKEUPS_PER_S = 40;

t.test('an idle marsd wakes a few times a second, not every 10 ms', async (t) => {
  const host = await startHost(t, { host: 'alpha', sizeBytes: 0, extraArgs: ['--metrics', '127.0.0.1:0'] });
  const pid = host.pid!;
  t.ok(pid > 0, 'marsd runs');
  const before = wakeups(pid);
  const startedMs = Date.now();
  await new Promise((resolve) => setTimeout(resolve, WINDOW_MS));
  const perS = ((wakeups(pid) - before) * 1000) / (Date.now() - startedMs);
  t.comment(`main thread: ${perS.toFixed(1)} wake-ups a second`);
  t.ok(perS < MAX_WAKEUPS_PER_S, `${perS.toFixed(1)} wake-ups a second, fewer than ${MAX_WAKEUPS_PER_S}`);
});
