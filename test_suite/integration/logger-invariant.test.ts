// The invariant policy in the primary's write path (common/util/assert.ts): where the logger
// turns a failure into a broken logfile writer, a fatal resource or a failed emergency-mode
// transition (all of which clients would only see as EIO), an InvariantError must also reach
// the process's uncaught-exception path, so marsd stops naming it instead of carrying on.
import t from 'tap';
import { join } from 'node:path';
import { InvariantError } from '../../common/util/assert.js';
import type { DataDisk } from '../../common/disk/data-disk.js';
import { EmergencyBackend } from '../../daemon/logger/emergency-backend.js';
import { LogWriter } from '../../daemon/logger/log-writer.js';
import { PendingIndex } from '../../daemon/logger/pending-index.js';
import type { TransactionLogger } from '../../daemon/logger/transaction-logger.js';
import { Writeback } from '../../daemon/logger/writeback.js';
import { SimClock } from '../helpers/sim-clock.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor, withDeadline } from '../helpers/wait.js';
import { escalations } from '../helpers/escalations.js';

async function settled(p: Promise<unknown>): Promise<unknown> {
  return p.then(() => 'resolved', (err: unknown) => err);
}

t.test('LogWriter: an InvariantError in the write loop breaks the writer and is escalated', async (t) => {
  const seen = escalations(t);
  const dir = tempDir(t, 'mars-logger-invariant-');
  const writer = await LogWriter.openFresh(join(dir, 'log-000000001-alpha'), 1);
  t.teardown(() => writer.finish());
  // onWritten is where the logger enters data into its index; an assertion there is a bug.
  const append = writer.appendWrite(0, Buffer.alloc(4096, 7), 1_000_000, false, () => {
    throw new InvariantError('test: pending index out of order');
  });
  const result = await settled(withDeadline(append, 5_000, 'the append to settle'));
  t.ok(result instanceof Error && /pending index out of order/.test(result.message), 'the waiter is failed');
  t.ok(writer.failed, 'the writer is broken for good');
  await waitFor('the error to reach the uncaught-exception path', () => seen.length > 0, 5_000);
  t.ok(seen[0] instanceof InvariantError, 'the InvariantError itself is escalated');
});

t.test('Writeback: an InvariantError from the disk write is escalated besides onError', async (t) => {
  const seen = escalations(t);
  const errors: Error[] = [];
  const disk = {
    writeMany: async () => { throw new InvariantError('test: data disk write out of range'); },
    datasync: async () => undefined,
  } as unknown as DataDisk;
  const index = new PendingIndex();
  const wb = new Writeback({
    index, disk, syncLog: async () => undefined, onApplied: () => undefined, onWritten: () => undefined,
    logEnd: () => ({ seq: 1, pos: 4096 }), appliedAtStart: { seq: 1, pos: 0 }, syncIntervalMs: 5_000,
    onError: (err) => errors.push(err), maxBatchBytes: 1 << 20, delayMs: 200, startBytes: 0, clock: new SimClock(),
  });
  t.teardown(() => wb.stop());
  index.put(0, 4096, Buffer.alloc(4096, 1), { seq: 1, pos: 0 });
  wb.kick(); // startBytes 0: starts at once, no timer
  await waitFor('writeback to fail', () => errors.length > 0, 5_000);
  t.ok(errors[0] instanceof InvariantError, 'the resource is failed (onError) as before');
  await waitFor('the error to reach the uncaught-exception path', () => seen.length > 0, 5_000);
  t.ok(seen[0] instanceof InvariantError, 'and the InvariantError is escalated');
});

t.test('EmergencyBackend: an InvariantError while entering emergency mode is escalated', async (t) => {
  const seen = escalations(t);
  const clock = new SimClock(1_234_000);
  const logger = {
    sizeBytes: 1 << 20,
    stopLogging: async () => { throw new InvariantError('test: logfile ended behind its durable end'); },
    refuseWrites: () => undefined,
  } as unknown as TransactionLogger;
  const backend = new EmergencyBackend({ disk: {} as DataDisk, logger, onEnter: async () => undefined, log: () => undefined, clock });
  // Callers that only wait for the transition drop its error: the origin must escalate.
  void backend.enter('test').catch(() => undefined);
  t.equal(backend.sinceMs, 1_234_000, 'sinceMs comes from the injected clock');
  await waitFor('the error to reach the uncaught-exception path', () => seen.length > 0, 5_000);
  t.ok(seen[0] instanceof InvariantError, 'the InvariantError is escalated');
  const write = await settled(backend.write(0, Buffer.alloc(512), false));
  t.match(String(write), /EIO|data disk failed/, 'later requests still get EIO until the process is gone');
});
