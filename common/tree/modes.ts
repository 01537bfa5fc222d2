// Permissions of the /mars tree (issue 17, local users): logfiles hold replicated data and the
// tree names every device, so nothing in it is for other local users. Everything is created
// with an explicit mode (directories 0700, files 0600; symlinks have no mode of their own), and
// marsd tightens a tree created by older versions (0755 directories, 0644 logfiles) at start.
import { chmodSync, lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

export const TREE_DIR_MODE = 0o700;
export const TREE_FILE_MODE = 0o600;

/** The tree is three levels deep (docs/tree.md); deeper entries are not ours to walk. */
const MAX_DEPTH = 3;

/**
 * Remove group and other permissions from the root, its directories and regular files (the
 * owner's bits are kept). Returns how many entries changed. Symlinks and sockets are skipped:
 * link values are no secret behind a 0700 root, and sockets are made 0600 when bound.
 */
export function tightenTreeModes(root: string): number {
  let changed = 0;
  const visit = (path: string, depth: number) => {
    let st;
    try {
      st = lstatSync(path);
    } catch {
      return; // vanished meanwhile
    }
    if (!st.isDirectory() && !st.isFile()) return;
    const mode = st.mode & 0o7777;
    if ((mode & 0o077) !== 0) {
      chmodSync(path, mode & ~0o077);
      changed++;
    }
    if (!st.isDirectory() || depth >= MAX_DEPTH) return;
    for (const name of readdirSync(path)) visit(join(path, name), depth + 1);
  };
  visit(root, 0);
  return changed;
}
