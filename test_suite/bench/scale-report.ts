// The scale suite's record (docs/benchmarks-scale.json) and its section of docs/benchmarks.md.
// Each run of `--suite scale` adds a session; a configuration measured again replaces its older
// figures, the others keep theirs with their date and commit (as docs/reliability.json keeps
// parts), so 30x200 and 100x1000 can be measured in separate runs.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DOCS_DIR } from './paths.js';
import type { ScaleConfig, ScaleRun } from './scale.js';
import type { ScaleJoinRun } from './scale-join.js';

export const SCALE_JSON_FILE = 'benchmarks-scale.json';

/** The issue's targets for each idle marsd. */
export const SCALE_TARGETS = { cpuPct: 2, rssBytes: 300 * 2 ** 20, viewAllS: 1, roundP99Ms: 100 } as const;

export interface ScaleSession {
  startedAt: string;
  finishedAt: string;
  invocation: string;
  machine: { cpuModel: string; cores: number; ramBytes: number; gitCommit: string; node: string };
  options: { windowS: number; graceS: number; handover: boolean };
  runs: ScaleRun[];
  /** the join part, when it ran (--scale-join N) */
  join?: ScaleJoinRun;
}

export interface ScaleData {
  format: 1;
  sessions: ScaleSession[];
}

const key = (c: ScaleConfig): string => `${c.resources}x${c.logfiles}`;

export function readScaleData(path = join(DOCS_DIR, SCALE_JSON_FILE)): ScaleData {
  if (!existsSync(path)) return { format: 1, sessions: [] };
  const d = JSON.parse(readFileSync(path, 'utf8')) as ScaleData;
  if (d.format !== 1 || !Array.isArray(d.sessions)) throw new Error(`${path}: not a scale record of format 1`);
  return d;
}

/** The record with `session` added: older sessions lose the configurations (and the join part) it measured again. */
export function mergeScaleSession(d: ScaleData, session: ScaleSession): ScaleData {
  const fresh = new Set(session.runs.map((r) => key(r.config)));
  const older = d.sessions
    .map((s) => {
      const kept: ScaleSession = { ...s, runs: s.runs.filter((r) => !fresh.has(key(r.config))) };
      if (session.join !== undefined) delete kept.join;
      return kept;
    })
    .filter((s) => s.runs.length > 0 || s.join !== undefined);
  return { format: 1, sessions: [...older, session] };
}

export function writeScaleData(d: ScaleData, path = join(DOCS_DIR, SCALE_JSON_FILE)): void {
  writeFileSync(path, `${JSON.stringify(d, null, 2)}\n`);
}

const mib = (b: number): string => (Number.isFinite(b) ? (b / 2 ** 20).toFixed(0) : '-');
const mark = (ok: boolean): string => (ok ? 'met' : '**missed**');

/** A p99 bound: undefined (no samples) '-', null (above the largest bucket, JSON has no Infinity) '> 2500'. */
export const boundText = (ms: number | null | undefined): string => (ms === undefined ? '-' : ms === null || !Number.isFinite(ms) ? '> 2500' : `<= ${ms}`);

function roundCell(h: ScaleRun['hosts'][number]): string {
  if (h.roundP99WindowMs === undefined) return 'not measured';
  return `${boundText(h.roundP99WindowMs)} (${mark(h.roundP99WindowMs !== null && h.roundP99WindowMs < SCALE_TARGETS.roundP99Ms)}); since start ${boundText(h.roundP99AllMs)}`;
}

/** One line per target and host: "met" or "missed", for the summary. */
export function scaleVerdicts(run: ScaleRun): { met: string[]; missed: string[] } {
  const met: string[] = [];
  const missed: string[] = [];
  const name = key(run.config);
  for (const h of run.hosts) {
    const checks: [boolean, string][] = [
      [h.cpuPct <= SCALE_TARGETS.cpuPct, `${name} ${h.name} idle CPU ${h.cpuPct} % <= ${SCALE_TARGETS.cpuPct} %`],
      [h.maxRssBytes <= SCALE_TARGETS.rssBytes, `${name} ${h.name} RSS ${mib(h.maxRssBytes)} MiB <= 300 MiB`],
      [h.viewAllMedianS < SCALE_TARGETS.viewAllS, `${name} ${h.name} view all ${h.viewAllMedianS} s < 1 s`],
    ];
    // Runs before the histogram existed have no figure: no verdict.
    // Judged in the window (a steady state of ~1 round/s); since start, with the start-up's
    // few long rounds among a hundred or so, p99 is nearly the maximum: shown, not judged.
    if (h.roundP99WindowMs !== undefined) {
      checks.push([h.roundP99WindowMs !== null && h.roundP99WindowMs < SCALE_TARGETS.roundP99Ms, `${name} ${h.name} control round p99 in the window ${boundText(h.roundP99WindowMs)} ms < ${SCALE_TARGETS.roundP99Ms} ms`]);
    }
    for (const [ok, what] of checks) (ok ? met : missed).push(what);
  }
  return { met, missed };
}

/** The join part's verdicts: no lost connection, no refusal, no restarted sync. */
export function joinVerdicts(j: ScaleJoinRun): { met: string[]; missed: string[] } {
  const met: string[] = [];
  const missed: string[] = [];
  if (j.error) return { met, missed: [`join of ${j.resources}: ${j.error}`] };
  const checks: [boolean, string][] = [
    [j.connectionsLost === 0, `join of ${j.resources}: ${j.connectionsLost} peer connections lost (target 0)`],
    [j.busyRefusals === 0, `join of ${j.resources}: ${j.busyRefusals} requests refused as too many (target 0)`],
    [j.syncRestarts === 0, `join of ${j.resources}: ${j.syncRestarts} syncs restarted (target 0)`],
  ];
  for (const [ok, what] of checks) (ok ? met : missed).push(what);
  return { met, missed };
}

function renderJoin(s: ScaleSession, j: ScaleJoinRun): string[] {
  const when = `${s.startedAt.slice(0, 16).replace('T', ' ')} UTC, \`${s.invocation}\`, commit ${s.machine.gitCommit}`;
  if (j.error) return [`- **join of ${j.resources} resources** (${when}): failed: ${j.error.split('\n')[0]}`];
  return [
    `- **join of ${j.resources} resources of ${(j.deviceBytes / 2 ** 20).toFixed(0)} MiB** (${when}): load average ${j.loadAvgStart.join(' ')} at the start, ${j.loadAvgEnd.join(' ')} at the end.`,
    `  create-resource of ${j.resources - 1} more on h1 ${j.createS.toFixed(1)} s; join-resource of all ${j.resources} on h2 ${j.joinS.toFixed(1)} s; every full sync complete ${j.syncAfterJoinS.toFixed(1)} s after the last join.`,
    `  Peer connections lost: **${j.connectionsLost}** (target 0); requests refused as too many: ${j.busyRefusals}; syncs restarted: ${j.syncRestarts}; warning / error lines: ${j.warnLines} / ${j.errorLines}`
      + (j.sampleLines.length > 0 ? `; first: ${j.sampleLines.map((l) => `\`${l.replace(/`/g, "'").slice(0, 160)}\``).join('; ')}` : '') + '.',
  ];
}

/** The "## Scale" section of docs/benchmarks.md; undefined when nothing was measured yet. */
export function renderScaleSection(d: ScaleData): string | undefined {
  const runs = d.sessions.flatMap((s) => s.runs.map((r) => ({ s, r })));
  const joined = d.sessions.filter((s) => s.join !== undefined).at(-1);
  if (runs.length === 0 && joined === undefined) return undefined;
  const out: string[] = [
    '## Scale: idle cost of many resources and logfiles',
    '',
    'Two marsd on one machine (h1 primary, h2 secondary, loopback addresses) holding R resources with L logfiles each,',
    'every resource UpToDate, replicated and replayed. The trees are generated offline (test_suite/bench/scale-tree.ts:',
    'logfiles of one 512-byte record each written with the logfile codec, versionlinks chained with the project\'s own',
    'chain function, replay links at the end, sync complete), so that 100 x 1000 logfiles do not need hours of writes.',
    'After both daemons show every resource settled and a short grace, each marsd\'s CPU (utime+stime from /proc/PID/stat,',
    '% of one core) and RSS (sampled every second; the table shows the highest sample) are taken over a window; then',
    '`marsadm view all` runs 3 times on each host (median wall time, including node\'s start of marsadm). Warning and',
    'error lines are counted in each daemon\'s log from its start until the measurements ended ("after settling": in',
    'the grace, the window and the view runs); both daemons start at once, so the one that is first may log that its',
    'peer refused a connection. The control round\'s p99 comes from marsd\'s histogram mars_control_round_duration_seconds',
    '(scraped from `--metrics` before and after the window; a histogram gives the upper bound of the bucket the p99 falls',
    'in), judged in the window; from marsd\'s start to the window\'s end (start-up included, so nearly the maximum) it is shown.',
    'Targets (issue 11): idle CPU <= 2 % of a core per marsd, RSS <= 300 MiB, `view all` < 1 s, control round p99 < 100 ms.',
    'Design: docs/design.md §6.1.',
    '',
    '| R x L | host | idle CPU, % of a core (target <= 2) | RSS max, MiB (target <= 300) | view all, s, median of 3 (target < 1) | control round p99, ms, in the window (target < 100); since marsd\'s start | warn / error lines (after settling) | resources settled | run |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const { s, r } of runs) {
    if (r.error) {
      out.push(`| ${r.config.resources} x ${r.config.logfiles} | - | ERROR: ${r.error.replace(/\|/g, '/').split('\n')[0]!.slice(0, 200)} | | | | | | ${s.startedAt.slice(0, 10)} |`);
      continue;
    }
    for (const h of r.hosts) {
      out.push(`| ${r.config.resources} x ${r.config.logfiles} | ${h.name} | ${h.cpuPct.toFixed(1)} (${mark(h.cpuPct <= SCALE_TARGETS.cpuPct)}) | ${mib(h.maxRssBytes)} (${mark(h.maxRssBytes <= SCALE_TARGETS.rssBytes)}) | ${h.viewAllMedianS.toFixed(2)} (${mark(h.viewAllMedianS < SCALE_TARGETS.viewAllS)}) | ${roundCell(h)} | ${h.warnLines} / ${h.errorLines} (${h.warnLinesAfterSettle} / ${h.errorLinesAfterSettle}) | ${h.resourcesOk} / ${r.config.resources} | ${s.startedAt.slice(0, 10)}, ${s.machine.gitCommit} |`);
    }
  }
  out.push('', '### Each run', '');
  for (const { s, r } of runs) {
    const c = `${r.config.resources} x ${r.config.logfiles}`;
    if (r.error) {
      out.push(`- **${c}** (${s.startedAt.slice(0, 16).replace('T', ' ')} UTC, \`${s.invocation}\`): failed: ${r.error.split('\n')[0]}`);
      continue;
    }
    out.push(
      `- **${c}** (${s.startedAt.slice(0, 16).replace('T', ' ')} UTC, \`${s.invocation}\`, commit ${s.machine.gitCommit}): machine ${s.machine.cores} cores (${s.machine.cpuModel}), load average ${r.loadAvgStart.join(' ')} at the window's start and ${r.loadAvgEnd.join(' ')} at its end.`,
      `  Trees: ${r.generation.files} logfiles and data files and ${r.generation.links} links written in ${r.generation.elapsedS} s (logfiles of ${r.generation.logfileBytes} bytes).`,
      `  Both marsd running after ${r.startS} s, every resource settled after ${r.settleS} s; window ${r.windowS} s after ${s.options.graceS} s grace.`
        + ` view all runs: ${r.hosts.map((h) => `${h.name} ${h.viewAllS.join(' / ')} s`).join(', ')}; \`marsadm --version\` alone (node's start): ${r.marsadmStartS} s.`
        + (r.handoverS !== undefined ? ` Planned handover of r0 to h2 (\`marsadm primary r0\`): ${r.handoverS} s.` : ''),
    );
    for (const h of r.hosts) {
      if (h.sampleLines.length > 0) out.push(`  ${h.name}'s first distinct warning/error lines: ${h.sampleLines.map((l) => `\`${l.replace(/`/g, "'").slice(0, 160)}\``).join('; ')}.`);
    }
  }
  if (joined !== undefined) {
    out.push('', '### Joining many resources at once', '',
      'A fresh two-host cluster: h1 creates the resources on data files of random bytes, h2 joins each with `marsadm',
      'join-resource` onto a zero-filled file, and all full syncs run at once (test_suite/bench/scale-join.ts). Both',
      'daemons\' logs are read from their start to the end of the syncs. Target (issue 11): not a single dropped peer',
      'connection.', '', ...renderJoin(joined, joined.join!));
  }
  const last = runs.filter(({ r }) => !r.error).at(-1);
  if (last) {
    out.push('', `Commands of the last run (${last.r.config.resources} x ${last.r.config.logfiles}; $BENCHDIR is the run's temporary directory):`, '', '```sh', ...last.r.commands, '```');
  }
  out.push(
    '',
    'Reproduce (the configurations are measured one after the other; each run replaces only the configurations it measured):',
    '',
    '```sh',
    'npm run bench -- --suite scale                                   # 100 resources x 1000 logfiles, 60 s window',
    'npm run bench -- --suite scale --scale-configs 30x200,1000x10 --scale-window 30',
    'npm run bench -- --suite scale --scale-configs 1x1000,100x1000 --scale-handover   # handover time, 1 resource against 100',
    'npm run bench -- --suite scale --scale-configs 1x10 --scale-join 100              # join-resource of 100 resources, their syncs at once',
    '```',
    '',
  );
  return out.join('\n');
}
