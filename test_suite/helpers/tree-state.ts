// A listing of a /mars tree (names, link values, file sizes; link stamps on request) for tests
// that prove a refused command changed nothing: compare the listing before and after.
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

export function treeState(dir: string, o: { stamps?: boolean } = {}): string {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const n of readdirSync(join(dir, rel)).sort()) {
      if (n === '.marsd.lock') continue;
      const p = join(dir, rel, n);
      const st = lstatSync(p);
      if (st.isDirectory()) walk(join(rel, n));
      else if (st.isSymbolicLink()) out.push(`${join(rel, n)} -> ${readlinkSync(p)}${o.stamps === true ? ` @${st.mtimeMs}` : ''}`);
      else out.push(`${join(rel, n)} ${st.size} bytes`);
    }
  };
  walk('');
  return out.join('\n');
}
