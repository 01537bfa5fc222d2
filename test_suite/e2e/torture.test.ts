// The torture runner in CI (docs/reliability.md, "Torture runner"): a fixed seed for two minutes
// (on a loaded machine longer, at most 4.5, until 8 faults ran) on two real marsd processes
// behind fault proxies. Every invariant must hold, and the run must have drawn a meaningful
// number of faults of several kinds. And the checks must fail when what they check is broken.
import t from 'tap';
import { appendFileSync, closeSync, openSync, writeSync } from 'node:fs';
import { NbdClient } from '../../kernel-shim/nbd-client.js';
import { checkAllEqual, checkPausedPrefix, checkPrimaryData, LogScanner, waitAllCaughtUp } from '../torture/checks.js';
import { runTorture } from '../torture/runner.js';
import { RES, World } from '../torture/world.js';
import { FAULT_KINDS } from '../torture/schedule.js';

const SEED = 1;

t.test(`torture: seed ${SEED}, 2 hosts, 2 minutes`, async (t) => {
  const r = await runTorture({ seed: SEED, minutes: 2, hosts: 2, minFaults: 8, maxMinutes: 4.5, log: (line) => t.comment(line) });
  const drawn = FAULT_KINDS.filter((k) => r.byKind[k] > 0);
  t.comment(`torture: faults=${r.faults} checks=${r.checks} violations=${r.violations.length} writes=${r.writes} kinds=${drawn.join(',')} time=${(r.elapsedMs / 1000).toFixed(0)}s`);
  t.same(r.violations, [], `no violation (replay: npm run torture -- --seed ${SEED} --hosts 2 --minutes 2)`);
  t.ok(r.faults >= 8, `${r.faults} faults injected (at least 8)`);
  t.ok(drawn.length >= 4, `${drawn.length} distinct kinds drawn (at least 4)`);
  t.ok(r.checks >= 4 * r.faults, `${r.checks} checks, at least four per fault`);
  t.ok(r.writes > 0, `${r.writes} acknowledged writes`);
});

t.test('the checks see broken invariants', async (t) => {
  const w = await World.start(2);
  t.teardown(() => w.close());
  await w.burst(5);
  await waitAllCaughtUp(w);
  t.same(await checkPrimaryData(w), [], 'the primary holds its history');
  const beta = w.secondaries[0]!;

  // An acknowledged write the primary never got: lost.
  w.oracle.nextWrite({ start: 7, count: 1 });
  t.match((await checkPrimaryData(w)).join(), /lost acknowledged and flushed write/, 'a lost write is seen');
  // A block the history never wrote, behind the oracle's back.
  const client = await NbdClient.connect(w.primary.socketPath(RES), RES);
  await client.write(4096 * 9, Buffer.alloc(4096, 0x5a));
  await client.flush();
  await client.disconnect();
  t.match((await checkPrimaryData(w)).join(), /no consistent state of the history.*block 9/, 'a foreign block is seen');

  await beta.marsadmOk(['pause-replay', RES]);
  await beta.until('beta paused', () => beta.actual(RES, 'is-replaying') === '0', 30_000);
  const fd = openSync(beta.dataPath, 'r+');
  writeSync(fd, Buffer.alloc(4096, 0xa5), 0, 4096, 4096 * 3);
  closeSync(fd);
  t.match((await checkPausedPrefix(w, beta)).join(), /no prefix of the primary's history/, 'a torn paused secondary is seen');
  t.match(checkAllEqual(w).join(), /beta's disk differs/, 'unequal disks are seen');

  const scanner = new LogScanner();
  scanner.scan(w);
  appendFileSync(beta.logPath, 'InvariantError: made up by the test\n');
  t.match(scanner.scan(w).join(), /beta's marsd log: InvariantError: made up/, 'an invariant line in a log is seen');
  t.same(scanner.scan(w), [], 'and reported once');
});
