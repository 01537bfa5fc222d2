// A secondary's fetcher parks while its origin's logfile does not grow (daemon/fetch/fetcher.ts:
// after two long polls that brought nothing it sends none until a listing offers more, or 30 s
// passed), and the origin notifies its peers when its log resumes after a quiet second
// (daemon/logger/log-resume.ts). Real marsd processes. The peers' regular pulls are made rare
// (--pull-interval-ms 30000), so the first write after a pause reaches the parked secondary
// only through that notification, or through the 30 s safety follow: it must be there long
// before the safety follow would have brought it.
import t from 'tap';
import { setTimeout as delay } from 'node:timers/promises';
import { startCluster } from '../helpers/multi-host.js';
import { writeRandomBlocks } from '../helpers/replicate.js';

const RES = 'r0';
const SIZE = 8 << 20;
/** how long the first write after the pause may take to be replayed: well below PARKED_FOLLOW_MS (30 s) */
const RESUME_DEADLINE_MS = 15_000;

t.test('the first write after a pause reaches a parked secondary through the primary\'s notification', async (t) => {
  const c = await startCluster(t, { hosts: ['alpha', 'beta'], sizeBytes: SIZE, res: RES, hostArgs: () => ['--pull-interval-ms', '30000'] });
  const beta = c.host('beta');
  await writeRandomBlocks(c.primary, RES, SIZE, 20, 1);
  await c.waitCaughtUp(beta);
  // An idle period, not a wait for an event: two empty long polls of 1 s each park beta's
  // fetcher, and the primary's log has been quiet for more than a second.
  await delay(5_000);
  const startedMs = Date.now();
  await writeRandomBlocks(c.primary, RES, SIZE, 1, 2);
  await c.waitCaughtUp(beta, RESUME_DEADLINE_MS);
  t.ok(Date.now() - startedMs < RESUME_DEADLINE_MS, `replayed on beta ${Date.now() - startedMs} ms after the write`);
});
