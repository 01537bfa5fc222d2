// The torture runner's fault schedule (test_suite/torture/schedule.ts): a pure function of the
// seed (the same steps for the same seed, whatever else runs), every kind drawable, --only
// honoured, and bad kinds refused with a clear message.
import t from 'tap';
import { FAULT_KINDS, parseKinds, Schedule } from '../torture/schedule.js';

t.test('deterministic for a seed, different for another', async (t) => {
  const a = Schedule.take(42, 200);
  t.same(Schedule.take(42, 200), a, 'the same seed gives the same steps');
  t.not(JSON.stringify(Schedule.take(43, 200)), JSON.stringify(a), 'another seed gives another schedule');
  t.same(a.map((s) => s.step), Array.from({ length: 200 }, (_, i) => i + 1), 'steps are numbered from 1');
  const lazy = new Schedule(42);
  for (let i = 0; i < 50; i++) t.same(lazy.next(), a[i], `step ${i + 1} drawn one at a time equals the batch`);
});

t.test('every kind is drawable, and fairly often', async (t) => {
  for (const seed of [0, 1, 7, 123_456]) {
    const steps = Schedule.take(seed, 1_800);
    for (const k of FAULT_KINDS) {
      const n = steps.filter((s) => s.kind === k).length;
      t.ok(n >= 50, `seed ${seed}: ${k} drawn ${n} times in 1,800 steps`);
    }
    t.ok(steps.every((s) => Number.isInteger(s.pick) && s.pick >= 0 && s.pick < 2 ** 32 && s.writeSeed >= 1), `seed ${seed}: picks and write seeds in range`);
  }
});

t.test('a fixed seed draws the first steps the CI torture test relies on', async (t) => {
  const kinds = new Set(Schedule.take(1, 8).map((s) => s.kind));
  t.ok(kinds.size >= 4, `seed 1 draws ${kinds.size} distinct kinds in its first 8 steps`);
});

t.test('the kinds of issue 16 are known and can be narrowed to', async (t) => {
  for (const k of ['jitter-link', 'mars-full', 'replace-host', 'kill-during-handover', 'kill-during-sync']) {
    t.ok(FAULT_KINDS.includes(k as never), `${k} is a fault kind`);
    t.same(parseKinds(k), [k], `--only ${k}`);
  }
});

t.test('--only restricts the kinds; unknown kinds are refused', async (t) => {
  const only = parseKinds('cron, kill-primary,cron');
  t.same(only, ['cron', 'kill-primary'], 'trimmed, deduplicated');
  t.ok(Schedule.take(5, 100, only).every((s) => only.includes(s.kind)), 'only those are drawn');
  t.throws(() => parseKinds('cron,explode'), /unknown fault kind "explode" \(known: kill-secondary/);
  t.throws(() => parseKinds(' , '), /at least one fault kind/);
  t.throws(() => new Schedule(-1), /non-negative integer/);
  t.throws(() => new Schedule(1.5), /non-negative integer/);
  t.throws(() => new Schedule(1, []), /at least one fault kind/);
});
