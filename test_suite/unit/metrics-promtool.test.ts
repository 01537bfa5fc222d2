// The alerting rules and the Grafana dashboard in docs/ checked by Prometheus's own promtool
// (Debian package prometheus, installed by the test prerequisites and .ci/run): the rules
// load, the dashboard's queries are valid PromQL, the metrics marsd serves pass promtool's
// lint, and the main alerts fire (and stay quiet) on scripted series (promtool test rules).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { globalPaths, resPaths, resourceDir } from '../../common/tree/paths.js';
import { MarsMetrics } from '../../daemon/metrics/registry.js';
import { newResourceCounters } from '../../common/util/metrics-recorder.js';
import { tempDir } from '../helpers/tmp.js';

// Tests run from the repository root (tap's working directory).
const RULES = join(process.cwd(), 'docs', 'prometheus-alerts.yml');
const DASHBOARD = join(process.cwd(), 'docs', 'grafana-dashboard.json');

function promtool(args: string[], input?: string): { code: number | null; out: string } {
  const r = spawnSync('promtool', args, { encoding: 'utf8', input, timeout: 60_000 });
  if (r.error) throw new Error(`promtool: ${r.error.message} (Debian package prometheus; scripts/test-prereqs.mjs installs it as root)`);
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

t.test('promtool loads the alerting rules', async (t) => {
  const r = promtool(['check', 'rules', RULES]);
  t.equal(r.code, 0, r.out);
  t.match(r.out, /SUCCESS: \d+ rules found/);
});

t.test('every query of the Grafana dashboard is valid PromQL', async (t) => {
  const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[] };
  // promtool parses expressions only inside rule files: one recording rule per query.
  const rules = dash.panels.flatMap((p, i) => p.targets.map((q, j) => ({ record: `dashboard:panel${i}_${j}`, expr: q.expr })));
  t.ok(rules.length >= 10, `${rules.length} queries`);
  const file = join(tempDir(t), 'dashboard-rules.yml');
  writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
  const r = promtool(['check', 'rules', file]);
  t.equal(r.code, 0, r.out);
  // A broken query is refused (the check can fail).
  writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules: [{ record: 'x:y', expr: 'rate(mars_logged_bytes_total[1m]' }] }] }));
  t.not(promtool(['check', 'rules', file]).code, 0, 'an unbalanced query fails the check');
});

t.test('the exposition marsd serves passes promtool check metrics', async (t) => {
  const tree = new TreeStore(tempDir(t));
  tree.ensureDir(resourceDir('db'));
  tree.ensureDir(resPaths.actualDir('db', 'beta'));
  tree.ensureDir(globalPaths.actualDir('beta'));
  tree.write(resPaths.primary('db'), 'alpha');
  tree.write(resPaths.size('db'), String(1 << 20));
  const metrics = new MarsMetrics({
    tree, host: 'beta', windowS: 60, nowMs: () => Date.now(), resources: () => ['db'], counters: () => newResourceCounters(),
    peers: () => [{ peer: 'alpha', connected: true }], peerTraffic: () => new Map([['alpha', { sentBytes: 1000, receivedBytes: 5000 }]]), logfileCount: () => 1,
  });
  metrics.nbd.request('db', 'write', 0.001, false);
  const r = promtool(['check', 'metrics'], await metrics.registry.metrics());
  // prom-client's own default gauges nodejs_active_*_total break the _total rule; they keep
  // prom-client's names (dashboards for Node.js use them). Every other line is a problem.
  const problems = r.out.split('\n').filter((l) => l.trim() !== '' && !/^mars_nodejs_active_(handles|requests|resources)_total /.test(l));
  t.same(problems, [], 'no lint problems in the mars_ metrics');
});

const INSTANCE = 'beta:9477';

function alert(name: string, evalTime: string, labels: Record<string, string>, summary: string | undefined) {
  const expAlerts = summary === undefined ? [] : [{ exp_labels: { alertname: name, instance: INSTANCE, ...labels }, exp_annotations: { summary } }];
  return { eval_time: evalTime, alertname: name, exp_alerts: expAlerts };
}

t.test('the alerts fire on scripted series and stay quiet otherwise (promtool test rules)', async (t) => {
  const series = (name: string, labels: Record<string, string>, values: string) => ({
    series: `${name}{${Object.entries({ instance: INSTANCE, job: 'mars', ...labels }).map(([k, v]) => `${k}="${v}"`).join(',')}}`,
    values,
  });
  const job = { job: 'mars' };
  const tests = [{
    interval: '1m',
    input_series: [
      series('mars_resource_replay_lag_seconds', { resource: 'r0' }, '0 400x10'),
      series('mars_resource_replay_lag_seconds', { resource: 'r1' }, '0 200x10'),
      series('mars_resource_split_brain', { resource: 'r0' }, '0 0 1 1'),
      series('mars_peer_up', { peer: 'alpha' }, '1 0x5'),
      series('mars_resource_designated_primary', { resource: 'r0' }, '0x5'),
      series('mars_resource_primary_state_age_seconds', { resource: 'r0' }, '1 -1x5'),
    ],
    alert_rule_test: [
      alert('MarsReplayLagHigh', '4m', {}, undefined),
      alert('MarsReplayLagHigh', '7m', { ...job, resource: 'r0', severity: 'warning' }, 'r0 on beta:9477: replay lags 400 s behind the primary'),
      alert('MarsSplitBrain', '1m', {}, undefined),
      alert('MarsSplitBrain', '2m', { ...job, resource: 'r0', severity: 'critical' }, 'r0: split brain seen on beta:9477 (marsadm view shows how to repair)'),
      alert('MarsPeerDown', '1m', {}, undefined),
      alert('MarsPeerDown', '4m', { ...job, peer: 'alpha', severity: 'warning' }, 'beta:9477 has no connection to peer alpha'),
      alert('MarsPrimaryStateStale', '4m', { ...job, resource: 'r0', severity: 'critical' },
        "r0 on beta:9477: the primary's state known here is old: rests and lags are lower bounds"),
    ],
  }];
  const file = join(tempDir(t), 'alerts-test.yml');
  writeFileSync(file, JSON.stringify({ rule_files: [RULES], evaluation_interval: '1m', tests }));
  const r = promtool(['test', 'rules', file]);
  t.equal(r.code, 0, r.out);
  t.match(r.out, /SUCCESS/);
});
