// marsadm run as a process against a tree where no marsd runs (host alpha): for tests of bad
// input and dry runs that must leave the tree as it was.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const MARSADM = join(new URL('../../', import.meta.url).pathname, 'bin/marsadm.js');

export interface MarsadmResult { code: number | null; stdout: string; stderr: string }

/** A runner for marsadm on DIR/mars (run dir DIR/run), and the tree's path. */
export function offlineMarsadm(dir: string): { marsDir: string; run: (args: string[]) => MarsadmResult } {
  const marsDir = join(dir, 'mars');
  const env = { ...process.env, MARS_DIR: marsDir, MARS_HOST: 'alpha', MARS_RUN_DIR: join(dir, 'run') };
  const run = (args: string[]): MarsadmResult => {
    const r = spawnSync(process.execPath, [MARSADM, ...args], { env, encoding: 'utf8', timeout: 60_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  return { marsDir, run };
}
