// The primary tells its peers when its log resumes after a quiet time (daemon/logger/log-resume.ts),
// so their parked fetchers look at once; a log under load, which moves every few milliseconds,
// tells nobody. Driven through a real TransactionLogger and LogWriter on real files (the
// durable end moves at each fdatasync), with a simulated clock for the quiet time.
import t from 'tap';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { DataDisk } from '../../common/disk/data-disk.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { LogWriter } from '../../daemon/logger/log-writer.js';
import { TransactionLogger } from '../../daemon/logger/transaction-logger.js';
import { LOG_RESUME_QUIET_MS, LogResumeEdge } from '../../daemon/logger/log-resume.js';
import { SimClock } from '../helpers/sim-clock.js';
import { tempDir } from '../helpers/tmp.js';

t.test('the edge: the first move, and a move after the quiet time; not the moves in between', async (t) => {
  const clock = new SimClock();
  let told = 0;
  const edge = new LogResumeEdge(clock, () => told++);
  edge.moved();
  t.equal(told, 1, 'the first move of a log is a resume');
  await clock.advance(LOG_RESUME_QUIET_MS - 1);
  edge.moved();
  await clock.advance(LOG_RESUME_QUIET_MS - 1);
  edge.moved();
  t.equal(told, 1, 'moves closer together than the quiet time tell nobody, however long they go on');
  await clock.advance(LOG_RESUME_QUIET_MS);
  edge.moved();
  t.equal(told, 2, 'a move after a quiet time is told');
});

t.test('a TransactionLogger tells when its durable end moves after a quiet time, also after a rotation', async (t) => {
  const dir = tempDir(t);
  const SIZE = 1 << 20;
  writeFileSync(join(dir, 'disk'), Buffer.alloc(SIZE));
  const disk = await DataDisk.open(join(dir, 'disk'));
  t.teardown(() => disk.close());
  const clock = new SimClock();
  let resumed = 0;
  const logger = new TransactionLogger({
    disk, sizeBytes: SIZE, clock: new LamportClock(), timeClock: clock, memLimitBytes: 16 << 20,
    writer: await LogWriter.openFresh(join(dir, 'log-1'), 1), onFatal: (err) => t.fail(err.message),
    onLogResumed: () => resumed++,
  });
  t.teardown(() => logger.stop());
  const page = Buffer.alloc(4096, 7);
  await logger.write(0, page, true); // FUA: durable on its reply
  t.equal(resumed, 1, 'the first durable write is a resume');
  await logger.write(4096, page, true);
  t.equal(resumed, 1, 'the next one right after it is not');
  await clock.advance(LOG_RESUME_QUIET_MS);
  await logger.write(8192, page, true);
  t.equal(resumed, 2, 'a durable write after a quiet time is');
  await logger.rotate(await LogWriter.openFresh(join(dir, 'log-2'), 2));
  await clock.advance(LOG_RESUME_QUIET_MS);
  await logger.write(0, page, true);
  t.equal(resumed, 3, 'the logfile after a rotation tells too');
});
