// npm run torture -- --minutes N --seed S [--hosts H] [--resources 1-8] [--only KIND,KIND]
// Runs the torture runner (docs/reliability.md, "Torture runner"): prints the faults by kind and
// a last line "torture: faults=N checks=N violations=N writes=N". A violation prints the seed
// and step that replay it; the exit code is then 1 (2: bad arguments or a setup failure).
import { FAULT_KINDS, parseKinds, type FaultKind } from './schedule.js';
import { runTorture, type TortureResult } from './runner.js';

export interface Args { minutes: number; seed: number; hosts: number; resources: number; kinds: FaultKind[] | undefined }

export function parseArgs(argv: string[]): Args {
  const a: Args = { minutes: 5, seed: 1, hosts: 3, resources: 1, kinds: undefined };
  const int = (flag: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (v === undefined || v.trim() === '' || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new Error(`${flag} needs an integer from ${min} to ${max}, got ${v ?? 'nothing'}`);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === '--minutes') {
      const v = argv[++i];
      const n = Number(v);
      if (v === undefined || v.trim() === '' || !Number.isFinite(n) || n <= 0 || n > 24 * 60) throw new Error(`--minutes needs a number of minutes above 0 (at most 1440), got ${v ?? 'nothing'}`);
      a.minutes = n;
    } else if (flag === '--seed') a.seed = int(flag, argv[++i], 0, 2 ** 32 - 1);
    else if (flag === '--hosts') a.hosts = int(flag, argv[++i], 2, 5);
    else if (flag === '--resources') a.resources = int(flag, argv[++i], 1, 8);
    else if (flag === '--only') {
      const v = argv[++i];
      if (v === undefined) throw new Error(`--only needs a list of fault kinds (${FAULT_KINDS.join(',')})`);
      a.kinds = parseKinds(v);
    } else throw new Error(`unknown argument ${flag} (use --minutes N --seed S [--hosts 2-5] [--resources 1-8] [--only KIND,...])`);
  }
  return a;
}

export function report(a: Args, r: TortureResult): string {
  const lines = ['fault kind            count'];
  for (const k of FAULT_KINDS) {
    if (a.kinds && !a.kinds.includes(k)) continue;
    lines.push(`${k.padEnd(21)} ${String(r.byKind[k]).padStart(5)}`);
  }
  const replay = `npm run torture -- --seed ${a.seed} --hosts ${a.hosts}${a.resources > 1 ? ` --resources ${a.resources}` : ''} --minutes ${a.minutes}${a.kinds ? ` --only ${a.kinds.join(',')}` : ''}`;
  for (const n of r.notDrawn) lines.push(`torture: ${n.kind} was not drawn: ${n.why}`);
  for (const v of r.violations) lines.push(`torture: VIOLATION seed ${a.seed} step ${v.step} (${v.kind}): ${v.message}`, `replay: ${replay}`);
  if (r.keptLogs) lines.push(`marsd logs and /mars trees (without logfiles) kept in ${r.keptLogs}`);
  lines.push(`time: ${(r.elapsedMs / 1000).toFixed(1)}s seed=${a.seed} hosts=${a.hosts} resources=${a.resources}`);
  lines.push(`torture: faults=${r.faults} checks=${r.checks} violations=${r.violations.length} writes=${r.writes}`);
  return lines.join('\n');
}

async function main(): Promise<number> {
  let a: Args;
  try {
    a = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`torture: ${(err as Error).message}\n`);
    return 2;
  }
  const r = await runTorture({ seed: a.seed, minutes: a.minutes, hosts: a.hosts, resources: a.resources, ...(a.kinds ? { kinds: a.kinds } : {}),
    log: (line) => process.stderr.write(`${line}\n`) });
  process.stdout.write(`${report(a, r)}\n`);
  return r.violations.length === 0 ? 0 : 1;
}

main().then((code) => process.exit(code), (err: Error) => {
  process.stderr.write(`torture: ${err.message}\n`);
  process.exit(2);
});
