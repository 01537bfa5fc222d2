// The dependency rule (.dependency-cruiser.cjs, docs/design.md §2): the production code has no
// import that runs upward or in a circle, and the rule itself catches one that does.
import t from 'tap';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { tempDir } from '../helpers/tmp.js';

const run = promisify(execFile);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DEPCRUISE = join(ROOT, 'node_modules', '.bin', 'depcruise');

interface CruiseSummary { violations: { rule: { name: string }; from: string; to: string }[]; totalCruised: number }

async function cruise(cwd: string, folders: string[]): Promise<CruiseSummary> {
  // depcruise exits non-zero on violations; the JSON on stdout tells which.
  const r = await run(DEPCRUISE, [...folders, '--config', join(ROOT, '.dependency-cruiser.cjs'), '--output-type', 'json'], { cwd, maxBuffer: 64 << 20 })
    .catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }));
  return (JSON.parse(r.stdout) as { summary: CruiseSummary }).summary;
}

t.test('production code follows the layers', async (t) => {
  const s = await cruise(ROOT, ['common', 'kernel-shim', 'daemon', 'marsadm']);
  t.ok(s.totalCruised > 100, `cruised ${s.totalCruised} modules`);
  t.same(s.violations.map((v) => `${v.rule.name}: ${v.from} -> ${v.to}`), []);
});

t.test('the rule catches an upward import, a marsadm shortcut into the daemon and a cycle', async (t) => {
  const dir = tempDir(t);
  copyFileSync(join(ROOT, 'tsconfig.json'), join(dir, 'tsconfig.json'));
  const files: Record<string, string> = {
    'daemon/net/frame.ts': "import { x } from '../control/decide.js';\nexport const y = x;\n",
    'daemon/control/decide.ts': 'export const x = 1;\n',
    'daemon/daemon.ts': 'export const d = 1;\n',
    'marsadm/main.ts': "import { d } from '../daemon/daemon.js';\nexport const m = d;\n",
    'common/tree/a.ts': "import { b } from './b.js';\nexport const a = b;\n",
    'common/tree/b.ts': "import { a } from './a.js';\nexport const b = () => a;\n",
  };
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  const s = await cruise(dir, ['common', 'daemon', 'marsadm']);
  const rules = new Set(s.violations.map((v) => v.rule.name));
  t.ok(rules.has('daemon-net-imports-upward'), 'net -> control refused');
  t.ok(rules.has('marsadm-talks-through-the-client'), 'marsadm -> daemon/daemon.ts refused');
  t.ok(rules.has('no-circular'), 'cycle refused');
});
