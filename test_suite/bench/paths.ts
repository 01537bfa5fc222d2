// Where the repository is, both when run from source (tsx) and from dist/ (npm run bench).
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
export const MARSD_BIN = join(REPO_ROOT, 'bin', 'marsd.js');
export const MARSADM_BIN = join(REPO_ROOT, 'bin', 'marsadm.js');
export const DOCS_DIR = join(REPO_ROOT, 'docs');
