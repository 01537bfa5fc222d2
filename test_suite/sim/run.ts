// The simulation's runner for long runs (docs/reliability.md):
//   node dist/test_suite/sim/run.js [--seeds N] [--seed S] [--hosts H] [--chaos-ms MS] [--minutes M] [--trace]
// runs seeds S, S+1, ... S+N-1 and prints figures; a violation prints the seed, the step and the
// command that replays it (with --trace, every operation of that seed up to the violation).
// --minutes M starts no seed after M minutes: the figures then say how many seeds ran.
import { DEFAULT_OPTIONS, runSeed, type SimOptions } from './world.js';
import { describeFailure } from './describe.js';

interface Args extends SimOptions {
  seeds: number;
  seed: number;
  minutes: number | undefined;
}

function parseArgs(argv: readonly string[]): Args {
  const a: Args = { ...DEFAULT_OPTIONS, seeds: 100, seed: 1, minutes: undefined };
  const num = (flag: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isSafeInteger(n) || n < min) throw new Error(`${flag} needs an integer >= ${min}, got ${v ?? 'nothing'}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === '--seeds') a.seeds = num(flag, argv[++i], 1);
    else if (flag === '--seed') a.seed = num(flag, argv[++i], 0);
    else if (flag === '--hosts') a.hosts = num(flag, argv[++i], 2);
    else if (flag === '--chaos-ms') a.chaosMs = num(flag, argv[++i], 100);
    else if (flag === '--minutes') a.minutes = num(flag, argv[++i], 1);
    else if (flag === '--trace') a.trace = true;
    else throw new Error(`unknown argument ${flag} (use --seeds N --seed S --hosts H --chaos-ms MS --minutes M --trace)`);
  }
  return a;
}

function main(): number {
  let a: Args;
  try {
    a = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`sim: ${(err as Error).message}\n`);
    return 2;
  }
  const started = process.hrtime.bigint();
  let steps = 0, ops = 0, checks = 0, messages = 0, lost = 0, violations = 0, ran = 0;
  const deadlineNs = a.minutes === undefined ? undefined : started + BigInt(a.minutes) * 60_000_000_000n;
  let lastProgressNs = started;
  for (let seed = a.seed; seed < a.seed + a.seeds; seed++) {
    const now = process.hrtime.bigint();
    if (deadlineNs !== undefined && now >= deadlineNs) {
      process.stderr.write(`sim: --minutes ${a.minutes} used up after ${ran} of ${a.seeds} seeds\n`);
      break;
    }
    if (now - lastProgressNs >= 60_000_000_000n) {
      lastProgressNs = now;
      process.stderr.write(`sim: ${ran} seeds\n`);
    }
    const r = runSeed(seed, a);
    ran++;
    steps += r.steps; ops += r.ops; checks += r.checks; messages += r.messages; lost += r.lost;
    if (a.trace) for (const line of r.trace) process.stdout.write(`  ${line}\n`);
    if (r.violation) {
      violations++;
      process.stdout.write(`${describeFailure(r, a)}\n`);
      break;
    }
  }
  const s = Number(process.hrtime.bigint() - started) / 1e9;
  process.stdout.write(`sim: seeds=${ran} hosts=${a.hosts} steps=${steps} ops=${ops} messages=${messages} lost=${lost} checks=${checks} violations=${violations} time=${s.toFixed(1)}s seeds/s=${(ran / s).toFixed(1)}\n`);
  return violations === 0 ? 0 : 1;
}

process.exitCode = main();
