// The size rule of docs/design.md §2: no production file over 400 lines, no function over 70
// (scripts/code-shape.mjs measures; this test holds the repository to it and checks that the
// measurement itself finds an oversized file and function).
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { tempDir } from '../helpers/tmp.js';

const run = promisify(execFile);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const SCRIPT = join(ROOT, 'scripts', 'code-shape.mjs');

interface Over { file: string; name?: string; lines: number; limit: number }

async function measure(cwd: string): Promise<{ code: number; over: Over[] }> {
  // The script finds typescript next to itself, whatever directory it measures.
  try {
    const r = await run(process.execPath, [SCRIPT, '--json'], { cwd, maxBuffer: 16 << 20 });
    return { code: 0, over: JSON.parse(r.stdout) as Over[] };
  } catch (err) {
    const e = err as { code?: number; stdout?: string };
    return { code: e.code ?? -1, over: JSON.parse(e.stdout ?? '[]') as Over[] };
  }
}

t.test('no production file over 400 lines, no function over 70', async (t) => {
  const r = await measure(ROOT);
  t.same(r.over.map((o) => (o.name ? `${o.file} ${o.name}: ${o.lines}` : `${o.file}: ${o.lines}`)), []);
  t.equal(r.code, 0);
});

t.test('the measurement finds an oversized file and function', async (t) => {
  const dir = tempDir(t);
  await run('git', ['init', '-q'], { cwd: dir });
  mkdirSync(join(dir, 'daemon'));
  const body = Array.from({ length: 72 }, (_, i) => `  x += ${i};`).join('\n');
  const filler = Array.from({ length: 330 }, (_, i) => `export const c${i} = ${i};`).join('\n');
  writeFileSync(join(dir, 'daemon', 'big.ts'), `export function long(): number {\n  let x = 0;\n${body}\n  return x;\n}\n${filler}\n`);
  const r = await measure(dir);
  t.equal(r.code, 1, 'exit code 1');
  t.ok(r.over.some((o) => o.file === 'daemon/big.ts' && o.name === undefined && o.lines > 400), 'the file');
  t.ok(r.over.some((o) => o.file === 'daemon/big.ts' && o.name === 'long' && o.lines > 70), 'the function');
});
