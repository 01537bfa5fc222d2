// `npm run bench -- --suite reliability`: the long runs of the reliability tools (issue 16), each
// the same command a developer runs by hand, with the budgets of the bench instead of CI's:
//   torture            npm run torture, 60 minutes, 3 hosts
//   powerloss          test_suite/e2e/powerloss.test.ts with 200 power cuts (the primary's disk)
//   powerloss-secondary  test_suite/e2e/powerloss-secondary.test.ts with 200 cuts (a secondary's), when present
//   fuzz-nbd           npm run fuzz -- --target nbd, 1,000,000 inputs
//   fuzz-peer          npm run fuzz -- --target peer, 1,000,000 inputs
//   sim                npm run sim, 100,000 seeds
// Each part runs as a child process; its output goes to $BENCHDIR/PART.log and its summary line
// (the tools' last lines, documented in docs/reliability.md) is parsed into figures. Parts can
// run separately (--parts): each run merges its parts into docs/reliability.json, and the table
// between the markers in docs/reliability.md is rendered from that file, so a part not run keeps
// its last figures with their date and commit.
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { describeMachine } from './machine.js';
import { BENCH_DIR_PREFIX, DOCS_DIR, REPO_ROOT } from './paths.js';

export const PARTS = ['torture', 'powerloss', 'powerloss-secondary', 'fuzz-nbd', 'fuzz-peer', 'sim'] as const;
export type Part = (typeof PARTS)[number];

export interface ReliabilityOptions {
  parts: Part[];
  tortureMinutes: number;
  tortureHosts: number;
  tortureSeed: number;
  cuts: number;
  fuzzInputs: number;
  fuzzSeed: number;
  simSeeds: number;
  simSeed: number;
  simChaosMs: number;
  /** a time limit for the fuzzers and the simulation (their --minutes): they stop early and say how far they got */
  budgetMinutes: number | undefined;
  writeDocs: boolean;
  parent: string;
}

/** One part's outcome as kept in docs/reliability.json. */
export interface PartRecord {
  part: Part;
  /** the command as a developer types it from the checkout's root */
  command: string;
  startedAt: string;
  durationS: number;
  exitCode: number;
  /** key=value figures of the summary line (or of the power-loss totals) */
  figures: Record<string, string>;
  /** further lines worth showing (torture's faults by kind) */
  detail: string[];
  machine: { cpuModel: string; cores: number; gitCommit: string; loadAvgAtStart: number[]; loadAvgAtEnd: number[] };
}

interface Command { display: string; argv: string[]; env: Record<string, string>; timeoutMs: number }

const POWERLOSS_FILES: Partial<Record<Part, string>> = {
  powerloss: 'test_suite/e2e/powerloss.test.ts',
  'powerloss-secondary': 'test_suite/e2e/powerloss-secondary.test.ts',
};

const budget = (o: ReliabilityOptions): string[] => (o.budgetMinutes === undefined ? [] : ['--minutes', String(o.budgetMinutes)]);

/** The command of a part; the timeout is generous: a part that hangs must still end the bench. */
export function commandOf(part: Part, o: ReliabilityOptions): Command {
  const node = (script: string, args: string[]): Command['argv'] => [process.execPath, join(REPO_ROOT, 'dist/test_suite', script), ...args];
  switch (part) {
    case 'torture': {
      const args = ['--minutes', String(o.tortureMinutes), '--seed', String(o.tortureSeed), '--hosts', String(o.tortureHosts)];
      return { display: `npm run torture -- ${args.join(' ')}`, argv: node('torture/run.js', args), env: {}, timeoutMs: (o.tortureMinutes + 30) * 60_000 };
    }
    case 'fuzz-nbd':
    case 'fuzz-peer': {
      const args = ['--target', part.slice(5), '--inputs', String(o.fuzzInputs), '--seed', String(o.fuzzSeed), ...budget(o)];
      return { display: `npm run fuzz -- ${args.join(' ')}`, argv: node('fuzz/run.js', args), env: {}, timeoutMs: 6 * 3600_000 };
    }
    case 'sim': {
      const args = ['--seeds', String(o.simSeeds), '--seed', String(o.simSeed), '--chaos-ms', String(o.simChaosMs), ...budget(o)];
      return { display: `npm run sim -- ${args.join(' ')}`, argv: node('sim/run.js', args), env: {}, timeoutMs: 6 * 3600_000 };
    }
    case 'powerloss':
    case 'powerloss-secondary': {
      // About 10 s per cut on an idle machine; the budget allows a loaded one three times that.
      const budgetMin = Math.max(8, Math.ceil((o.cuts * 30) / 60));
      const timeoutS = (budgetMin + 5) * 60;
      const env = {
        [part === 'powerloss' ? 'MARS_POWERLOSS_CUTS' : 'MARS_POWERLOSS_SECONDARY_CUTS']: String(o.cuts),
        MARS_POWERLOSS_BUDGET_MIN: String(budgetMin),
      };
      const file = POWERLOSS_FILES[part]!;
      const envText = Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ');
      return {
        display: `${envText} npx tap --reporter=tap --timeout=${timeoutS} ${file}`,
        argv: [join(REPO_ROOT, 'node_modules/.bin/tap'), '--reporter=tap', `--timeout=${timeoutS}`, '--disable-coverage', file],
        env, timeoutMs: (timeoutS + 120) * 1000,
      };
    }
  }
}

/** Figures from a part's output: the last `TOOL: k=v ...` line, or the power-loss totals. */
export function parseFigures(part: Part, output: string): { figures: Record<string, string>; detail: string[] } {
  const figures: Record<string, string> = {};
  const detail: string[] = [];
  if (part === 'powerloss' || part === 'powerloss-secondary') {
    const m = [...output.matchAll(/# totals: (\{.*\}) in (\d+) s/g)].pop();
    if (m) {
      for (const [k, v] of Object.entries(JSON.parse(m[1]!) as Record<string, unknown>)) figures[k] = String(v);
      figures.seconds = m[2]!;
    }
    const fails = [...output.matchAll(/^\s*not ok \d+ - (.*)$/gm)].map((x) => x[1]!);
    if (fails.length) detail.push(...fails.slice(0, 5).map((f) => `not ok: ${f}`));
    return { figures, detail };
  }
  const tool = part.startsWith('fuzz') ? 'fuzz' : part;
  const lines = output.split('\n').filter((l) => l.startsWith(`${tool}: `) && /\w=\S/.test(l));
  const last = lines.pop();
  if (last) for (const m of last.matchAll(/([\w/-]+)=(\S+)/g)) figures[m[1]!] = m[2]!;
  if (part === 'torture') {
    // The faults-by-kind table above the summary line: "kind   count" rows with a count above 0.
    for (const m of output.matchAll(/^([a-z][a-z-]+)\s+(\d+)$/gm)) if (m[2] !== '0') detail.push(`${m[1]} ${m[2]}`);
  }
  for (const l of output.split('\n')) if (/VIOLATION/.test(l)) detail.push(l.trim());
  return { figures, detail };
}

const LOST_KEY = { powerloss: 'flushedLost', 'powerloss-secondary': 'lost' } as const;

/** Violations a part reports, or -1 when its figures do not say (a crash, a missing line). */
export function violationsOf(r: PartRecord): number {
  if (r.part === 'powerloss' || r.part === 'powerloss-secondary') {
    // The primary's test counts flushed writes lost; the secondary's, replicated state lost or
    // torn (its `lost`): each test's own violation count.
    const lost = r.figures[LOST_KEY[r.part]];
    if (lost === undefined) return -1;
    return Number(lost) + (r.exitCode === 0 ? 0 : 1);
  }
  return r.figures.violations === undefined ? -1 : Number(r.figures.violations);
}

function runCommand(cmd: Command, logPath: string): Promise<{ code: number; output: string }> {
  return new Promise((resolveRun) => {
    const log = createWriteStream(logPath);
    let output = '';
    const child = spawn(cmd.argv[0]!, cmd.argv.slice(1), { cwd: REPO_ROOT, env: { ...process.env, ...cmd.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const take = (b: Buffer): void => {
      log.write(b);
      output += b.toString('utf8');
      // Keep the tail only: a long run's progress lines are in the log file.
      if (output.length > 4 << 20) output = output.slice(-(2 << 20));
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    const timer = setTimeout(() => {
      take(Buffer.from(`\nbench: ${cmd.display} ran past ${cmd.timeoutMs / 60_000} min: killed\n`));
      child.kill('SIGKILL');
    }, cmd.timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      log.end();
      resolveRun({ code: code ?? (signal ? 128 : 1), output });
    });
  });
}

export async function runPart(part: Part, o: ReliabilityOptions, benchDir: string, say: (s: string) => void): Promise<PartRecord> {
  const cmd = commandOf(part, o);
  const m = describeMachine(benchDir);
  const startedAt = new Date();
  say(`reliability: ${part}: ${cmd.display}`);
  const { code, output } = await runCommand(cmd, join(benchDir, `${part}.log`));
  const { figures, detail } = parseFigures(part, output);
  const r: PartRecord = {
    part, command: cmd.display, startedAt: startedAt.toISOString(), durationS: Math.round((Date.now() - startedAt.getTime()) / 1000),
    exitCode: code, figures, detail,
    machine: { cpuModel: m.cpuModel, cores: m.cores, gitCommit: m.gitCommit, loadAvgAtStart: m.loadAvgAtStart, loadAvgAtEnd: loadavg().map((x) => Math.round(x * 100) / 100) },
  };
  say(`reliability: ${part}: exit ${code}, violations ${violationsOf(r)}, ${r.durationS} s, ${Object.entries(figures).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  return r;
}

// --- docs ---------------------------------------------------------------------------------------

export const BEGIN_MARK = '<!-- reliability bench: generated by npm run bench -- --suite reliability; do not edit by hand -->';
export const END_MARK = '<!-- end of reliability bench -->';

const FIGURE_KEYS: Record<Part, string[]> = {
  torture: ['faults', 'checks', 'writes'],
  powerloss: ['cuts', 'cutsDroppingBlocks', 'blocksDropped', 'writes', 'acknowledged', 'durable', 'maxRecoveryMs'],
  'powerloss-secondary': ['cuts', 'cutsDroppingBlocks', 'blocksDropped', 'writes', 'acknowledged', 'durable', 'maxRecoveryMs', 'maxCatchUpMs'],
  'fuzz-nbd': ['inputs', 'garbage', 'handshake', 'transmission', 'backend-calls', 'probes', 'inputs/s'],
  'fuzz-peer': ['inputs', 'garbage', 'handshake', 'session', 'tampered', 'handler-calls', 'probes', 'inputs/s'],
  sim: ['seeds', 'hosts', 'steps', 'ops', 'messages', 'lost', 'checks', 'seeds/s'],
};

const num = (v: string): string => (/^\d+$/.test(v) ? Number(v).toLocaleString('en-US') : v);

export function renderSection(records: Partial<Record<Part, PartRecord>>): string {
  const lines = [BEGIN_MARK, '', '| Part | Command | Figures | Violations | Exit | Time | Run on (commit, load at start → end) |', '|---|---|---|---|---|---|---|'];
  for (const part of PARTS) {
    const r = records[part];
    if (!r) continue;
    const figs = FIGURE_KEYS[part].filter((k) => r.figures[k] !== undefined).map((k) => `${k} ${num(r.figures[k]!)}`);
    if (part === 'torture' && r.detail.length) figs.push(`by kind: ${r.detail.filter((d) => !/VIOLATION/.test(d)).join(', ')}`);
    const v = violationsOf(r);
    const load = `${r.machine.loadAvgAtStart[0] ?? '?'} → ${r.machine.loadAvgAtEnd[0] ?? '?'}`;
    lines.push(`| ${part} | \`${r.command}\` | ${figs.join('; ') || '(no summary line)'} | ${v < 0 ? 'unknown' : v} | ${r.exitCode} | ${(r.durationS / 60).toFixed(1)} min | ${r.startedAt.slice(0, 10)}, ${r.machine.gitCommit}, ${r.machine.cores} cores, load ${load} |`);
  }
  const problems = PARTS.map((p) => records[p]).filter((r): r is PartRecord => r !== undefined && (violationsOf(r) !== 0 || r.exitCode !== 0));
  lines.push('');
  for (const r of problems) lines.push(`- **${r.part}**: exit ${r.exitCode}; ${r.detail.join('; ') || 'see its log'}`);
  if (problems.length) lines.push('');
  lines.push(END_MARK);
  return lines.join('\n');
}

/** Replaces the section between the markers (or appends it under a heading). */
export function spliceSection(doc: string, section: string): string {
  const a = doc.indexOf(BEGIN_MARK);
  const b = doc.indexOf(END_MARK);
  if (a >= 0 && b > a) return doc.slice(0, a) + section + doc.slice(b + END_MARK.length);
  return `${doc.trimEnd()}\n\n## Bench figures\n\nThe latest long runs (\`npm run bench -- --suite reliability\`, test_suite/bench/reliability.ts).\n\n${section}\n`;
}

function readRecords(jsonPath: string): Partial<Record<Part, PartRecord>> {
  if (!existsSync(jsonPath)) return {};
  const raw = JSON.parse(readFileSync(jsonPath, 'utf8')) as { format?: number; parts?: Partial<Record<Part, PartRecord>> };
  if (raw.format !== 1 || typeof raw.parts !== 'object' || raw.parts === null) throw new Error(`${jsonPath}: not a reliability bench file (format 1)`);
  return raw.parts;
}

export function writeReliabilityDocs(records: Partial<Record<Part, PartRecord>>): void {
  const jsonPath = join(DOCS_DIR, 'reliability.json');
  const merged = { ...readRecords(jsonPath), ...records };
  writeFileSync(jsonPath, `${JSON.stringify({ format: 1, parts: merged }, null, 2)}\n`);
  const mdPath = join(DOCS_DIR, 'reliability.md');
  writeFileSync(mdPath, spliceSection(readFileSync(mdPath, 'utf8'), renderSection(merged)));
}

// --- command line -------------------------------------------------------------------------------

export function reliabilityUsage(): string {
  return [
    'usage: npm run bench -- --suite reliability [--parts LIST] [--torture-minutes M] [--torture-hosts H] [--torture-seed S]',
    '                        [--cuts N] [--fuzz-inputs N] [--fuzz-seed S] [--sim-seeds N] [--sim-seed S] [--sim-chaos-ms MS]',
    '                        [--quick] [--dir DIR] [--no-write-docs]',
    `  --parts LIST        subset of ${PARTS.join(',')} (default all; powerloss-secondary only where its test exists)`,
    '  --torture-minutes M (60; quick 2)  --torture-hosts H (3)  --torture-seed S (20261206)',
    '  --cuts N            power cuts of each power-loss part (200; quick 4)',
    '  --fuzz-inputs N     inputs of each fuzzer (1000000; quick 2000)  --fuzz-seed S (20261206)',
    '  --sim-seeds N       simulation seeds (100000; quick 200), from --sim-seed (1), --sim-chaos-ms (1500, the CI setting)',
    '  --budget-minutes M  stop each fuzzer and the simulation after M minutes (their --minutes): the table shows how far they got',
    'Figures go to docs/reliability.json and the "Bench figures" table of docs/reliability.md (parts not run keep theirs).',
  ].join('\n');
}

export function parseReliabilityOptions(argv: string[]): ReliabilityOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      suite: { type: 'string' }, parts: { type: 'string' },
      'torture-minutes': { type: 'string' }, 'torture-hosts': { type: 'string' }, 'torture-seed': { type: 'string' },
      cuts: { type: 'string' }, 'fuzz-inputs': { type: 'string' }, 'fuzz-seed': { type: 'string' },
      'sim-seeds': { type: 'string' }, 'sim-seed': { type: 'string' }, 'sim-chaos-ms': { type: 'string' }, 'budget-minutes': { type: 'string' },
      quick: { type: 'boolean', default: false }, dir: { type: 'string' }, 'no-write-docs': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const quick = values.quick ?? false;
  const int = (name: string, v: string | undefined, dflt: number, min: number, max: number): number => {
    if (v === undefined) return dflt;
    const n = Number(v);
    if (v.trim() === '' || !Number.isSafeInteger(n) || n < min || n > max) throw new Error(`--${name} needs an integer from ${min} to ${max}, got ${v}`);
    return n;
  };
  let parts: Part[] = PARTS.filter((p) => p !== 'powerloss-secondary' || existsSync(join(REPO_ROOT, POWERLOSS_FILES[p]!)));
  if (values.parts !== undefined) {
    const want = values.parts.split(',').map((s) => s.trim()).filter((s) => s !== '');
    for (const w of want) if (!(PARTS as readonly string[]).includes(w)) throw new Error(`unknown part ${w} (${PARTS.join(', ')})`);
    if (want.length === 0) throw new Error('--parts needs at least one part');
    parts = PARTS.filter((p) => want.includes(p));
  }
  return {
    parts,
    tortureMinutes: int('torture-minutes', values['torture-minutes'], quick ? 2 : 60, 1, 24 * 60),
    tortureHosts: int('torture-hosts', values['torture-hosts'], 3, 2, 5),
    tortureSeed: int('torture-seed', values['torture-seed'], 20261206, 0, 2 ** 32 - 1),
    cuts: int('cuts', values.cuts, quick ? 4 : 200, 1, 100_000),
    fuzzInputs: int('fuzz-inputs', values['fuzz-inputs'], quick ? 2000 : 1_000_000, 1, 1e9),
    fuzzSeed: int('fuzz-seed', values['fuzz-seed'], 20261206, 0, 2 ** 31),
    simSeeds: int('sim-seeds', values['sim-seeds'], quick ? 200 : 100_000, 1, 1e8),
    simSeed: int('sim-seed', values['sim-seed'], 1, 0, 2 ** 31),
    simChaosMs: int('sim-chaos-ms', values['sim-chaos-ms'], 1500, 100, 600_000),
    budgetMinutes: values['budget-minutes'] === undefined ? undefined : int('budget-minutes', values['budget-minutes'], 0, 1, 24 * 60),
    writeDocs: !values['no-write-docs'],
    parent: resolve(values.dir ?? tmpdir()),
  };
}

/** The suite's entry from run.ts; returns the exit code (1 when a part failed or violated). */
export async function runReliabilitySuite(argv: string[], say: (s: string) => void): Promise<number> {
  const o = parseReliabilityOptions(argv);
  mkdirSync(o.parent, { recursive: true });
  const benchDir = mkdtempSync(join(o.parent, BENCH_DIR_PREFIX));
  say(`reliability: logs in ${benchDir}; parts ${o.parts.join(',')}; ${cpus().length} cores`);
  const records: Partial<Record<Part, PartRecord>> = {};
  let bad = 0;
  for (const part of o.parts) {
    const r = await runPart(part, o, benchDir, say);
    records[part] = r;
    if (r.exitCode !== 0 || violationsOf(r) !== 0) bad++;
    // Written after each part: a long run that is stopped still keeps what it measured.
    if (o.writeDocs) writeReliabilityDocs({ [part]: r });
  }
  say(`reliability: ${o.parts.length - bad} of ${o.parts.length} parts clean`);
  return bad === 0 ? 0 : 1;
}
