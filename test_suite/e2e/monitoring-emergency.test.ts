// The view macros of emergency mode and of the orphan it leaves (issue 13, docs/monitoring.md),
// on real daemons: the primary restarted with space levels above the free space of /mars
// (level 4 at once: emergency mode by the space level alone, as in emergency.test.ts) logs
// nothing; restarted with the default levels it logs again, and the secondary stops at the
// hole (Orphan, replay-code -61). Expected values in tables, MARS semantics.
import t from 'tap';
import { createRequire } from 'node:module';
import { startCluster, writeWorkload } from '../helpers/multi-host.js';
import { freePort } from '../helpers/cluster.js';
import { expectMacros, positive } from '../helpers/macro-table.js';

const RES = 'r0';
const SIZE = 16 << 20;
const ALWAYS_LEVEL_4 = ['--space-levels', '99%,99%,99%,99%'];
const parse = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => { name: string; metrics: { value?: string; labels?: Record<string, string> }[] }[];

async function metric(port: number, name: string, labels: Record<string, string> = {}): Promise<number> {
  const families = parse(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
  const m = families.find((f) => f.name === name)?.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
  if (m === undefined) throw new Error(`no ${name}${JSON.stringify(labels)} in /metrics`);
  return Number(m.value);
}

t.test('emergency mode and the orphan it leaves, in the macros and /metrics', { timeout: 120_000 }, async (t) => {
  const port = await freePort();
  const c = await startCluster(t, { hosts: ['alpha', 'beta'], sizeBytes: SIZE, res: RES, hostArgs: (h) => (h.name === 'alpha' ? ['--metrics', `127.0.0.1:${port}`] : []) });
  const [alpha, beta] = [c.host('alpha'), c.host('beta')];
  await writeWorkload(alpha, RES, SIZE, 40, 1, 4);
  await c.waitCaughtUp(beta);

  alpha.extraArgs.push(...ALWAYS_LEVEL_4);
  await alpha.restart();
  await alpha.waitPrimary(RES);
  await alpha.until('alpha in emergency mode', () => alpha.actual(RES, 'is-emergency') === '1', 30_000, 50);
  await writeWorkload(alpha, RES, SIZE, 40, 2, 4);
  await expectMacros(t, alpha, RES, 'emergency (primary)', {
    diskstate: 'EmergencyMode', replstate: 'EmergencyMode', role: 'Primary', 'is-primary': '1',
    'is-emergency': '1', 'has-emergency': '1', 'emergency-level': '4', 'rest-space-bytes': positive, 'total-space-bytes': positive,
    'msg-err': /emergency: .*space level 4/,
  });
  await expectMacros(t, beta, RES, 'emergency (secondary)', {
    'is-emergency': '1', 'has-emergency': '0', 'emergency-level': '0', role: 'Secondary',
  });
  t.equal(await metric(port, 'mars_resource_emergency', { resource: RES }), 1, '/metrics: emergency');
  t.equal(await metric(port, 'mars_space_level'), 4, '/metrics: space level 4');

  alpha.extraArgs.splice(alpha.extraArgs.indexOf(ALWAYS_LEVEL_4[0]!), ALWAYS_LEVEL_4.length);
  await alpha.restart();
  await alpha.waitPrimary(RES);
  await alpha.until('alpha logging again', () => alpha.actual(RES, 'has-emergency') === '0', 30_000, 50);
  await writeWorkload(alpha, RES, SIZE, 20, 3, 4);
  await expectMacros(t, alpha, RES, 'emergency over (primary)', {
    diskstate: 'UpToDate', replstate: 'Replicating', 'is-emergency': '0', 'has-emergency': '0', 'emergency-level': '0',
  });
  await expectMacros(t, beta, RES, 'orphan (secondary at the hole)', {
    diskstate: 'Orphan', replstate: 'Orphan', 'is-orphan': '1', 'replay-code': '-61', 'is-emergency': '0', 'is-consistent': '1',
  }, { timeoutMs: 60_000 });
  t.equal(await metric(port, 'mars_resource_emergency', { resource: RES }), 0, '/metrics: emergency over');
});
