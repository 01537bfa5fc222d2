// npm run fuzz -- [--target nbd] [--inputs N] [--seed S] [--minutes M]
// Runs a fuzzer (docs/reliability.md, "Fuzzing") and prints its figures; a violation prints the
// seed and input number that replay it, and the exit code is 1.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fuzzNbd } from './nbd-fuzz.js';
import { fuzzPeer } from './peer-fuzz.js';

interface Args { target: 'nbd' | 'peer'; inputs: number; seed: number; minutes: number | undefined }

function parse(argv: string[]): Args {
  const a: Args = { target: 'nbd', inputs: 10_000, seed: 1, minutes: undefined };
  const num = (flag: string, v: string | undefined): number => {
    const n = Number(v);
    if (v === undefined || !Number.isSafeInteger(n) || n < 0) throw new Error(`${flag} needs a non-negative integer, got ${v ?? 'nothing'}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === '--target') {
      const t = argv[++i];
      if (t !== 'nbd' && t !== 'peer') throw new Error(`--target: unknown target ${t ?? '(none)'} (known: nbd, peer)`);
      a.target = t;
    } else if (flag === '--inputs') a.inputs = num(flag, argv[++i]);
    else if (flag === '--seed') a.seed = num(flag, argv[++i]);
    else if (flag === '--minutes') a.minutes = num(flag, argv[++i]);
    else throw new Error(`unknown argument ${flag} (use --target nbd|peer --inputs N --seed S --minutes M)`);
  }
  return a;
}

async function main(): Promise<number> {
  const a = parse(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), 'mars-fuzz-'));
  try {
    let last = Date.now();
    const common = {
      dir, seed: a.seed, inputs: a.inputs, ...(a.minutes !== undefined ? { maxMs: a.minutes * 60_000 } : {}),
      onProgress: (done: number) => {
        if (Date.now() - last < 10_000) return;
        last = Date.now();
        process.stderr.write(`fuzz: ${done} inputs\n`);
      },
    };
    let figures: string;
    let r: { inputs: number; violations: string[]; elapsedMs: number };
    if (a.target === 'nbd') {
      const x = await fuzzNbd(common);
      r = x;
      figures = `garbage=${x.byKind.garbage} handshake=${x.byKind.handshake} transmission=${x.byKind.transmission} backend-calls=${x.backendCalls} probes=${x.probes} rss-growth=${(x.rssGrowthBytes / 2 ** 20).toFixed(1)}MiB`;
    } else {
      const x = await fuzzPeer(common);
      r = x;
      figures = `garbage=${x.byKind.garbage} handshake=${x.byKind.handshake} session=${x.byKind.session} tampered=${x.tampered} handler-calls=${x.handlerCalls} probes=${x.probes}`;
    }
    for (const v of r.violations) process.stdout.write(`fuzz: VIOLATION ${v}\nreplay: npm run fuzz -- --target ${a.target} --seed ${a.seed} --inputs ${r.inputs}\n`);
    process.stdout.write(`fuzz: target=${a.target} seed=${a.seed} inputs=${r.inputs} ${figures} violations=${r.violations.length} `
      + `time=${(r.elapsedMs / 1000).toFixed(1)}s inputs/s=${(r.inputs / (r.elapsedMs / 1000)).toFixed(0)}\n`);
    return r.violations.length === 0 ? 0 : 1;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then((code) => process.exit(code), (err: Error) => {
  process.stderr.write(`fuzz: ${err.message}\n`);
  process.exit(2);
});
