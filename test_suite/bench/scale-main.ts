// The shell of `npm run bench -- --suite scale`: the run's temporary directory, signals and
// cleanup, the suite (scale.ts), and the record (scale-report.ts). run.ts renders
// docs/benchmarks.md afterwards, with the scale section from docs/benchmarks-scale.json.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describeMachine, freeBytes } from './machine.js';
import { BENCH_DIR_PREFIX, reportPath, scrubPaths } from './paths.js';
import { killAllTracked } from './proc.js';
import { ScaleSuite } from './scale.js';
import { parseScaleOptions } from './scale-options.js';
import { joinVerdicts, mergeScaleSession, readScaleData, scaleVerdicts, writeScaleData, type ScaleSession } from './scale-report.js';

/** Bytes one configuration needs on disk, generously: logfiles take a block each on both hosts, data files up to the device. */
function spaceNeeded(resources: number, logfiles: number): number {
  return 2 * resources * (logfiles * 8192 + (1 << 20)) + (256 << 20);
}

/** Runs the suite; true when every configuration produced figures (missed targets are figures, not failures). */
export async function runScaleSuite(argv: string[], say: (line: string) => void): Promise<{ ok: boolean; wroteJson: boolean }> {
  const o = parseScaleOptions(argv);
  mkdirSync(o.parent, { recursive: true });
  const need = Math.max(...o.configs.map((c) => spaceNeeded(c.resources, c.logfiles)));
  const free = freeBytes(o.parent);
  if (free < need) throw new Error(`not enough free space in ${o.parent}: ${(free / 2 ** 30).toFixed(1)} GiB free, the largest configuration needs about ${(need / 2 ** 30).toFixed(1)} GiB`);
  const benchDir = mkdtempSync(join(o.parent, BENCH_DIR_PREFIX));
  say(`bench directory: BENCHDIR=${benchDir}`);
  const log = (msg: string) => say(`${new Date().toISOString().slice(11, 19)} ${reportPath(msg, benchDir)}`);
  const suite = new ScaleSuite({ ...o, dir: benchDir }, log);
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    await suite.cleanup().catch(() => undefined);
    killAllTracked();
    rmSync(benchDir, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: stopping marsd and removing $BENCHDIR`);
    void cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('SIGHUP', onSignal);
  try {
    const machine = describeMachine(benchDir);
    const startedAt = new Date().toISOString();
    log(`scale suite: ${o.configs.map((c) => `${c.resources} x ${c.logfiles}`).join(', ')}; window ${o.windowS} s; ${machine.cores} cores`);
    await suite.run();
    const session: ScaleSession = {
      startedAt, finishedAt: new Date().toISOString(),
      invocation: `npm run bench -- ${argv.join(' ')}`,
      machine: { cpuModel: machine.cpuModel, cores: machine.cores, ramBytes: machine.ramBytes, gitCommit: machine.gitCommit, node: machine.node },
      options: { windowS: o.windowS, graceS: o.graceS, handover: o.handover },
      runs: suite.runs,
      ...(suite.join !== undefined ? { join: suite.join } : {}),
    };
    for (const r of suite.runs) {
      const v = scaleVerdicts(r);
      for (const m of v.missed) say(`  missed: ${m}`);
      if (r.error) say(`  error: ${r.config.resources} x ${r.config.logfiles}: ${reportPath(r.error, benchDir)}`);
    }
    if (suite.join !== undefined) for (const m of joinVerdicts(suite.join).missed) say(`  missed: ${m}`);
    const ok = suite.runs.every((r) => !r.error) && suite.join?.error === undefined;
    if (o.writeDocs) writeScaleData(mergeScaleSession(readScaleData(), scrubPaths(session, benchDir)));
    return { ok, wroteJson: o.writeDocs };
  } finally {
    await cleanup();
  }
}
