// What reached the process's uncaught-exception and unhandled-rejection paths during a test:
// where failStopOnInvariant (common/util/assert.ts) sends an InvariantError, so that marsd ends.
import type { Test } from 'tap';

export function escalations(t: Test): unknown[] {
  const seen: unknown[] = [];
  const onError = (err: unknown) => seen.push(err);
  process.on('uncaughtException', onError);
  process.on('unhandledRejection', onError);
  t.teardown(() => {
    process.off('uncaughtException', onError);
    process.off('unhandledRejection', onError);
  });
  return seen;
}
