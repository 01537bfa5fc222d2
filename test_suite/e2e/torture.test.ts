// The torture runner in CI (docs/reliability.md, "Torture runner"): a fixed seed for about two
// minutes on two real marsd processes behind fault proxies. Every invariant must hold, and the
// run must have drawn a meaningful number of faults of several kinds.
import t from 'tap';
import { runTorture } from '../torture/runner.js';
import { FAULT_KINDS } from '../torture/schedule.js';

const SEED = 1;

t.test(`torture: seed ${SEED}, 2 hosts, 2 minutes`, async (t) => {
  const r = await runTorture({ seed: SEED, minutes: 2, hosts: 2, log: (line) => t.comment(line) });
  const drawn = FAULT_KINDS.filter((k) => r.byKind[k] > 0);
  t.comment(`torture: faults=${r.faults} checks=${r.checks} violations=${r.violations.length} writes=${r.writes} kinds=${drawn.join(',')} time=${(r.elapsedMs / 1000).toFixed(0)}s`);
  t.same(r.violations, [], `no violation (replay: npm run torture -- --seed ${SEED} --hosts 2 --minutes 2)`);
  t.ok(r.faults >= 8, `${r.faults} faults injected (at least 8)`);
  t.ok(drawn.length >= 4, `${drawn.length} distinct kinds drawn (at least 4)`);
  t.ok(r.checks >= 4 * r.faults, `${r.checks} checks, at least four per fault`);
  t.ok(r.writes > 0, `${r.writes} acknowledged writes`);
});
