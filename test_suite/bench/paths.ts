// Where the repository is, both when run from source (tsx) and from dist/ (npm run bench), and
// how the reports name paths: nothing a report records may show where the build machine keeps
// its checkout or its temporary files. Commands are shown as they run from the root of the
// checkout (`node bin/marsadm.js ...`), and the run's temporary directory as $BENCHDIR.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'mars-userspace') return dir;
      } catch { /* not ours */ }
    }
    const up = dirname(dir);
    if (up === dir) return resolve(dirname(fileURLToPath(import.meta.url)), '../..');
    dir = up;
  }
}

export const REPO_ROOT = findRepoRoot();
/** The entry points relative to the checkout, as the reports show them. */
export const MARSD_REL = 'bin/marsd.js';
export const MARSADM_REL = 'bin/marsadm.js';
/** The entry points as the bench runs them. */
export const MARSD_BIN = join(REPO_ROOT, MARSD_REL);
export const MARSADM_BIN = join(REPO_ROOT, MARSADM_REL);
export const DOCS_DIR = join(REPO_ROOT, 'docs');
/** The metrics scrape-cost section (scrape-cost.ts writes it; run.ts appends it to docs/benchmarks.md). */
export const SCRAPE_SECTION_FILE = 'benchmarks-scrape.md';

/** mkdtemp's prefix of a run's temporary directory. */
export const BENCH_DIR_PREFIX = 'mars-bench-';
/** How reports name the run's temporary directory. */
export const BENCHDIR = '$BENCHDIR';
/** How a report shows where $BENCHDIR was when the data records no template (older runs). */
export const DEFAULT_BENCH_DIR_TEMPLATE = `/tmp/${BENCH_DIR_PREFIX}XXXXXX`;

const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** REPO_ROOT followed by '/', or REPO_ROOT ending a path (not the start of a longer name). */
const ROOT_SLASH = new RegExp(`${escapeRegExp(REPO_ROOT)}/`, 'g');
const ROOT_ALONE = new RegExp(`${escapeRegExp(REPO_ROOT)}(?![\\w.-])`, 'g');

/** text with every path inside the checkout made relative to its root ('.' for the root itself). */
export function checkoutRelative(text: string): string {
  return text.replace(ROOT_SLASH, '').replace(ROOT_ALONE, '.');
}

/** text with the run's temporary directory written as $BENCHDIR and checkout paths relative. */
export function reportPath(text: string, benchDir?: string): string {
  const t = benchDir ? text.split(benchDir).join(BENCHDIR) : text;
  return checkoutRelative(t);
}

/** The mkdtemp template a run's directory came from, e.g. /tmp/mars-bench-XXXXXX. */
export function benchDirTemplate(benchDir: string): string {
  return checkoutRelative(join(dirname(benchDir), `${BENCH_DIR_PREFIX}XXXXXX`));
}

/**
 * A copy of a report's data (plain JSON values) with reportPath applied to every string: the
 * last line of defence before anything is written to docs/ or printed as a command.
 */
export function scrubPaths<T>(value: T, benchDir?: string): T {
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return reportPath(v, benchDir);
    if (Array.isArray(v)) return v.map(walk);
    if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return walk(value) as T;
}
