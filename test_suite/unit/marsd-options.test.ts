// marsd's integer options: a value outside its range, or not a plain integer, is refused with
// the range in the message; a valid one is taken as a number.
import t from 'tap';
import { buildProgram } from '../../daemon/main.js';

function parse(args: string[]): { opts: Record<string, unknown>; error?: string } {
  let error: string | undefined;
  const program = buildProgram().exitOverride().configureOutput({ writeErr: (s) => { error = (error ?? '') + s; }, writeOut: () => {} });
  program.action(() => {}); // parse only: do not start a daemon
  try {
    program.parse(['node', 'marsd', ...args]);
  } catch {
    return { opts: {}, error: error ?? 'refused' };
  }
  return { opts: program.opts(), ...(error !== undefined ? { error } : {}) };
}

t.test('integer options: range and form checked', async (t) => {
  t.equal(parse(['--pull-interval-ms', '250']).opts['pullIntervalMs'], 250);
  t.equal(parse(['--max-resources', '100000']).opts['maxResources'], 100_000);
  t.equal(parse(['--tombstone-min-age-ms', '0']).opts['tombstoneMinAgeMs'], 0);
  for (const [opt, bad, range] of [
    ['--pull-interval-ms', '5', '20..60000'],
    ['--pull-interval-ms', '1e3', '20..60000'],
    ['--scan-interval-ms', '100.5', '50..60000'],
    ['--startup-grace-ms', '-1', '0..3600000'],
    ['--max-resources', '0', '1..100000'],
    ['--max-resources', '', '1..100000'],
    ['--tombstone-min-age-ms', '0x10', '0..86400000'],
  ] as const) {
    const r = parse([opt, bad]);
    t.match(r.error, `must be an integer ${range}`, `${opt} ${JSON.stringify(bad)} refused with its range`);
  }
});
