// The control-plane simulation in CI (docs/reliability.md): 1,000 seeds of 3 hosts with loss,
// delay, reordering and partitions, each checked after every change; the same seed twice gives
// the same run; and the checker does see a broken invariant.
import t from 'tap';
import { runSeed, type SimOptions } from './world.js';
import { describeFailure } from './describe.js';
import { InvariantChecker } from './invariants.js';
import { SimHost } from './host.js';

const CI_SEEDS = 1_000;
const FIRST_SEED = 1;
const CI_OPTIONS: SimOptions = { hosts: 3, chaosMs: 1_500 };

t.test(`${CI_SEEDS} seeds hold every invariant`, async (t) => {
  let steps = 0, ops = 0, checks = 0, purged = 0, lost = 0;
  const started = Date.now();
  for (let seed = FIRST_SEED; seed < FIRST_SEED + CI_SEEDS; seed++) {
    const r = runSeed(seed, CI_OPTIONS);
    steps += r.steps; ops += r.ops; checks += r.checks; purged += r.purged; lost += r.lost;
    if (r.violation) {
      t.fail(describeFailure(r, CI_OPTIONS));
      return;
    }
  }
  t.comment(`sim: seeds=${CI_SEEDS} steps=${steps} ops=${ops} checks=${checks} purged=${purged} lost=${lost} in ${Date.now() - started} ms`);
  t.ok(ops > CI_SEEDS * 20, 'the seeds did work (operations ran)');
  t.ok(purged > 0 && lost > 0, 'tombstones were purged and messages lost');
});

t.test('a seed replays exactly', async (t) => {
  const a = runSeed(4242, { ...CI_OPTIONS, trace: true });
  const b = runSeed(4242, { ...CI_OPTIONS, trace: true });
  t.ok(a.trace.length > 20);
  t.same(b.trace, a.trace);
  t.equal(b.steps, a.steps);
  t.equal(b.checks, a.checks);
});

t.test('the checker reports a stamp moving back, a resurrection and diverged trees', async (t) => {
  const c = new InvariantChecker();
  let nowMs = 1;
  const h = new SimHost('alpha', () => nowMs, 0, c);
  h.write('resource-r0/size', '10');
  const { s } = h.tree.get('resource-r0/size')!;
  c.afterWrite(h, 'resource-r0/size', { v: '10', s }, { v: '10', s: s - 1 });
  t.equal(c.violations.at(-1)?.invariant, 'stamps-forward');
  h.write('resource-r0/primary', '.deleted');
  const del = h.tree.get('resource-r0/primary')!.s;
  c.afterWrite(h, 'resource-r0/primary', undefined, { v: 'alpha', s: del - 1 });
  t.equal(c.violations.at(-1)?.invariant, 'no-resurrection');
  const other = new SimHost('bravo', () => nowMs, 0, c);
  nowMs = 2;
  c.checkConverged([h, other]);
  t.equal(c.violations.at(-1)?.invariant, 'convergence');
});

t.test('the seeds that found a removed host\'s links staying on a survivor converge (regression)', async (t) => {
  // docs/reliability.md, "Found by the simulation": seed 1 (a zombie's status link) and seed
  // 1334 (primary naming the removed host), 3 hosts, 3 s of chaos.
  for (const seed of [1, 1334]) {
    const r = runSeed(seed, { hosts: 3, chaosMs: 3_000 });
    t.equal(r.violation, undefined, r.violation ? describeFailure(r, { hosts: 3, chaosMs: 3_000 }) : `seed ${seed}`);
  }
});

t.test('the seed that found a tombstone purged while an older answer of its owner was on its way converges (regression)', async (t) => {
  // docs/reliability.md, "Found by the simulation": seed 21376 of a 100,000-seed run, 3 hosts,
  // 1.5 s of chaos (the purge rule of daemon/propagate/tombstones.ts, peerPulledAtMs).
  for (const seed of [21376]) {
    const r = runSeed(seed, CI_OPTIONS);
    t.equal(r.violation, undefined, r.violation ? describeFailure(r, CI_OPTIONS) : `seed ${seed}`);
  }
});
