// What /metrics scraping costs the write path (issue 13: "scraping never slows the write path
// measurably"): one marsd with --metrics, fio job J1 (4k random write, iodepth 32) run in turn
// without scraping, with a scrape every second (15 times Prometheus's default rate) and with a
// back-to-back scrape loop (the worst case), in the same run on the same machine; the median
// IOPS of each and the ratios. The scraper runs in this process, on the same cores as marsd and
// fio, so its own CPU counts against the write path too.
//   npx tsc -p tsconfig.json && node dist/test_suite/bench/scrape-cost.js [--runtime S] [--rounds N]
//        [--size BYTES] [--dir DIR] [--no-write-docs]
// writes docs/benchmarks-scrape.md, which `npm run bench` appends to docs/benchmarks.md.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fioCommand, JOBS, runFio } from './fio.js';
import { killAllTracked } from './proc.js';
import { freePort, MarsdTarget } from './targets.js';
import { median } from './report.js';
import { DOCS_DIR, SCRAPE_SECTION_FILE } from './paths.js';

/** Scrape interval of a mode: undefined = no scraping, 0 = back to back. */
const MODES = [
  { name: 'no scraping', intervalMs: undefined },
  { name: 'one scrape per second', intervalMs: 1000 },
  { name: 'back-to-back scrapes', intervalMs: 0 },
] as const;
type Mode = (typeof MODES)[number];

interface Sample { mode: string; iops: number; scrapes: number; runtimeS: number }

/** GET /metrics every intervalMs (0: as soon as the last answer is in) until stopped; how many answered. */
function scrapeLoop(url: string, intervalMs: number): { stop: () => Promise<number> } {
  let running = true;
  let count = 0;
  let wake: (() => void) | undefined;
  const done = (async () => {
    while (running) {
      const res = await fetch(url);
      if (res.status !== 200) throw new Error(`GET ${url}: ${res.status}`);
      await res.text();
      count++;
      if (intervalMs > 0 && running) await new Promise<void>((r) => { wake = r; setTimeout(r, intervalMs); });
    }
  })();
  return { stop: async () => { running = false; wake?.(); await done; return count; } };
}

async function oneRun(target: MarsdTarget, url: string, mode: Mode, sizeBytes: number, runtimeS: number): Promise<Sample> {
  target.beforeLoad();
  const loop = mode.intervalMs === undefined ? undefined : scrapeLoop(url, mode.intervalMs);
  const outcome = await runFio(fioCommand(JOBS.J1, target.uri, sizeBytes, runtimeS), runtimeS);
  const scrapes = loop ? await loop.stop() : 0;
  if (outcome.error || outcome.metrics.writeIops === undefined) throw new Error(`fio J1: ${outcome.error ?? 'no write IOPS'}`);
  const after = await target.afterLoad({ diskRateBps: 100e6 });
  if (after.error) throw new Error(after.error);
  return { mode: mode.name, iops: outcome.metrics.writeIops, scrapes, runtimeS };
}

function med(xs: number[]): number {
  const m = median(xs);
  if (m === undefined) throw new Error('no samples');
  return m;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runtime: { type: 'string' }, rounds: { type: 'string' }, size: { type: 'string' }, dir: { type: 'string' }, 'no-write-docs': { type: 'boolean' } } });
  const runtimeS = Number(values.runtime ?? '10');
  const rounds = Number(values.rounds ?? '3');
  const sizeBytes = Number(values.size ?? String(256 << 20));
  if (!(runtimeS >= 1 && runtimeS <= 600) || !(rounds >= 1 && rounds <= 20) || !(sizeBytes >= 1 << 20)) {
    throw new Error('--runtime 1..600 s, --rounds 1..20, --size at least 1 MiB (bytes)');
  }
  const dir = mkdtempSync(join(values.dir ?? tmpdir(), 'mars-scrape-bench-'));
  const port = await freePort();
  const target = new MarsdTarget(join(dir, 'marsd'), sizeBytes, ['--metrics', `127.0.0.1:${port}`]);
  const url = `http://127.0.0.1:${port}/metrics`;
  const samples: Sample[] = [];
  try {
    await target.start();
    // The order rotates by round, so a drift of the machine hits every mode alike.
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < MODES.length; i++) {
        const mode = MODES[(i + r) % MODES.length]!;
        const s = await oneRun(target, url, mode, sizeBytes, runtimeS);
        samples.push(s);
        console.error(`round ${r + 1}: J1 with ${mode.name}: ${Math.round(s.iops)} IOPS, ${(s.scrapes / runtimeS).toFixed(1)} scrapes/s`);
      }
    }
  } finally {
    await target.stop().catch(() => undefined);
    killAllTracked();
    rmSync(dir, { recursive: true, force: true });
  }
  const rows = MODES.map((m) => {
    const mine = samples.filter((s) => s.mode === m.name);
    const iops = mine.map((s) => Math.round(s.iops));
    return { mode: m.name, iops: Math.round(med(iops)), minIops: Math.min(...iops), maxIops: Math.max(...iops), scrapesPerS: Math.round(med(mine.map((s) => s.scrapes / s.runtimeS)) * 10) / 10 };
  });
  const base = rows[0]!.iops;
  const result = { job: 'J1', runtimeS, rounds, sizeBytes, cores: cpus().length, date: new Date().toISOString().slice(0, 10), rows: rows.map((r) => ({ ...r, ratio: Math.round((r.iops / base) * 100) / 100 })), samples };
  console.log(JSON.stringify(result, null, 2));
  if (!values['no-write-docs']) writeFileSync(join(DOCS_DIR, SCRAPE_SECTION_FILE), renderSection(result));
}

function renderSection(r: { runtimeS: number; rounds: number; sizeBytes: number; cores: number; date: string; rows: { mode: string; iops: number; minIops: number; maxIops: number; scrapesPerS: number; ratio: number }[] }): string {
  return [
    '## Metrics scrape cost: the write path while /metrics is scraped',
    '',
    `Run on ${r.date} on a machine with ${r.cores} cores (shared with other work), one marsd with \`--metrics\`, fio job J1`,
    `(4k random write, iodepth 32) for ${r.runtimeS} s on a ${r.sizeBytes >> 20} MiB device, ${r.rounds} rounds, the modes in turn.`,
    'The scraper runs on the same cores as marsd and fio (its own CPU counts against the write path). Prometheus scrapes',
    'once every 15 s by default.',
    '',
    '| J1 write | scrapes/s | IOPS (median) | rounds: min..max | ratio to no scraping |',
    '|---|---|---|---|---|',
    ...r.rows.map((x) => `| ${x.mode} | ${x.scrapesPerS} | ${x.iops} | ${x.minIops}..${x.maxIops} | ${x.ratio.toFixed(2)} |`),
    '',
    'Reading: a ratio within the min..max spread of the rounds, or above 1, means no measurable cost (a figure above 1 is',
    'the load of the shared machine varying between runs, not a gain). Back-to-back scraping (hundreds of times what any',
    'Prometheus does) takes CPU from the write path on a small machine: each scrape costs marsd a few milliseconds of CPU.',
    '',
    `Reproduce: \`npx tsc -p tsconfig.json && node dist/test_suite/bench/scrape-cost.js --runtime ${r.runtimeS} --rounds ${r.rounds}\``,
    '(writes this section; `npm run bench` keeps it at the end of docs/benchmarks.md).',
    '',
  ].join('\n');
}

main().catch((err: Error) => { console.error(`scrape-cost: ${err.message}`); killAllTracked(); process.exitCode = 1; });
