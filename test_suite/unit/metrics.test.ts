// marsd's Prometheus metrics (daemon/metrics): the exposition parsed by a real Prometheus text
// parser, values read from a real tree, counters monotonic; the alerting rules and the Grafana
// dashboard in docs/ only use metrics that exist (schema check: promtool is not installed here).
import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { TreeStore } from '../../common/tree/store.js';
import { globalPaths, resPaths, resourceDir } from '../../common/tree/paths.js';
import { formatStamp } from '../../common/tree/lamport.js';
import { MarsMetrics } from '../../daemon/metrics/registry.js';
import { MetricsServer, parseListenAddress } from '../../daemon/metrics/metrics-server.js';
import { newResourceCounters } from '../../common/util/metrics-recorder.js';
import { PeerTraffic } from '../../daemon/net/peer-traffic.js';
import { tempDir } from '../helpers/tmp.js';

interface Family { name: string; type: string; metrics: { value?: string; count?: string; labels?: Record<string, string>; buckets?: Record<string, string> }[] }
const parse = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => Family[];
// Tests run from the repository root (tap's working directory).
const docs = (name: string) => join(process.cwd(), 'docs', name);

function setup(t: Test) {
  const tree = new TreeStore(tempDir(t));
  tree.ensureDir(resourceDir('db'));
  tree.ensureDir(resPaths.actualDir('db', 'beta'));
  tree.ensureDir(globalPaths.actualDir('alpha'));
  tree.ensureDir(globalPaths.actualDir('beta'));
  tree.write(resPaths.primary('db'), 'alpha');
  tree.write(resPaths.size('db'), String(1 << 20));
  tree.write(resPaths.syncstatus('db', 'beta'), String(1 << 20));
  tree.write(resPaths.actual('db', 'beta', 'is-primary'), '0');
  tree.write(resPaths.actual('db', 'beta', 'split-brain'), '0');
  tree.write(globalPaths.actual('beta', 'emergency'), '2');
  tree.write(globalPaths.actual('alpha', 'time'), formatStamp(Date.now() * 1000));
  // The primary rotated to logfile 3 and logged 4096 bytes there; nothing of it is here.
  tree.write(resPaths.replay('db', 'beta'), 'log-000000003-alpha,0,0');
  tree.write(resPaths.version('db', 3, 'alpha'), `${'0'.repeat(32)},log-000000003-alpha,4096:`);
  const counters = newResourceCounters();
  const traffic = new PeerTraffic();
  const metrics = new MarsMetrics({
    tree, host: 'beta', windowS: 60, nowMs: () => Date.now(), resources: () => ['db'], counters: () => counters,
    peers: () => [{ peer: 'alpha', connected: false }], peerTraffic: () => traffic.totals(), logfileCount: () => 0,
  });
  return { tree, counters, metrics, traffic };
}

function value(families: Family[], name: string, labels: Record<string, string> = {}): number {
  const f = families.find((x) => x.name === name);
  if (!f) throw new Error(`no metric ${name}`);
  const m = f.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
  return Number(m?.value);
}

t.test('the exposition parses and carries the state of the tree', async (t) => {
  const { metrics, counters } = setup(t);
  counters.fetchedBytes = 1000;
  metrics.nbd.request('db', 'write', 0.002, false);
  metrics.nbd.request('db', 'read', 0.0004, true);
  const families = parse(await metrics.registry.metrics());
  t.equal(value(families, 'mars_resource_is_primary', { resource: 'db' }), 0);
  t.equal(value(families, 'mars_resource_role', { resource: 'db', role: 'secondary' }), 1);
  t.equal(value(families, 'mars_resource_consistent', { resource: 'db' }), 1);
  t.equal(value(families, 'mars_resource_fetch_rest_bytes', { resource: 'db' }), 4096, 'measured against the primary\'s newest logfile');
  t.equal(value(families, 'mars_resource_replay_rest_bytes', { resource: 'db' }), 4096);
  t.equal(value(families, 'mars_space_level'), 2);
  t.equal(value(families, 'mars_peer_up', { peer: 'alpha' }), 0);
  t.equal(value(families, 'mars_fetched_bytes_total', { resource: 'db' }), 1000);
  t.equal(value(families, 'mars_nbd_requests_total', { resource: 'db', type: 'read', result: 'error' }), 1);
  const hist = families.find((f) => f.name === 'mars_nbd_request_duration_seconds')!;
  t.equal(hist.type, 'HISTOGRAM');
  t.equal(families.find((f) => f.name === 'mars_control_round_duration_seconds')?.type, 'HISTOGRAM', 'control rounds');
  t.ok(families.some((f) => f.name === 'mars_process_resident_memory_bytes'), 'process RSS');
  t.ok(families.some((f) => f.name === 'mars_nodejs_eventloop_lag_seconds'), 'event-loop delay');
  for (const f of families) if (f.type === 'COUNTER') t.match(f.name, /_total$/, `${f.name}: counters end in _total`);
});

t.test('control rounds: one histogram sample per round, in the bucket of its duration', async (t) => {
  const { metrics } = setup(t);
  metrics.controlRound(0.003);
  metrics.controlRound(0.2);
  const f = parse(await metrics.registry.metrics()).find((x) => x.name === 'mars_control_round_duration_seconds')!;
  const m = f.metrics[0]!;
  t.equal(Number(m.count), 2);
  t.equal(Number(m.buckets!['0.0025']), 0);
  t.equal(Number(m.buckets!['0.005']), 1, '3 ms');
  t.equal(Number(m.buckets!['0.1']), 1);
  t.equal(Number(m.buckets!['0.25']), 2, '200 ms');
});

t.test('consistent and sync rest are measured like the view: syncpos not passed, a running sync\'s position', async (t) => {
  const { metrics, tree } = setup(t);
  const families = async () => parse(await metrics.registry.metrics());
  // Sync complete, but replay has not reached the end of the sync: a mixed-age disk.
  tree.write(resPaths.syncpos('db', 'beta'), 'log-000000003-alpha,4096,0');
  t.equal(value(await families(), 'mars_resource_consistent', { resource: 'db' }), 0, 'not consistent before replay passes syncpos');
  tree.write(resPaths.replay('db', 'beta'), 'log-000000003-alpha,4096,0');
  t.equal(value(await families(), 'mars_resource_consistent', { resource: 'db' }), 1, 'consistent once it passed');
  // A running sync: syncstatus (durable, every 64 MiB) still 0, the worker at 768 KiB.
  tree.write(resPaths.syncstatus('db', 'beta'), '0');
  tree.write(resPaths.actual('db', 'beta', 'is-syncing'), '1');
  tree.write(resPaths.actual('db', 'beta', 'sync-pos'), String(768 << 10));
  t.equal(value(await families(), 'mars_resource_sync_rest_bytes', { resource: 'db' }), 256 << 10);
  tree.write(resPaths.actual('db', 'beta', 'is-syncing'), '0');
  t.equal(value(await families(), 'mars_resource_sync_rest_bytes', { resource: 'db' }), 1 << 20, 'a stopped sync\'s last position does not count');
});

t.test('progress stale: the primary\'s state known here older than the window', async (t) => {
  const { metrics, tree } = setup(t);
  const scrape = async () => parse(await metrics.registry.metrics());
  t.equal(value(await scrape(), 'mars_resource_progress_stale', { resource: 'db' }), 0, 'a fresh heartbeat: measured');
  tree.write(globalPaths.actual('alpha', 'time'), formatStamp((Date.now() - 90_000) * 1000));
  const f = await scrape();
  t.equal(value(f, 'mars_resource_progress_stale', { resource: 'db' }), 1, '90 s old with a 60 s window: lower bounds');
  t.ok(value(f, 'mars_resource_primary_state_age_seconds', { resource: 'db' }) >= 89);
});

t.test('counters are monotonic between scrapes', async (t) => {
  const { metrics, counters } = setup(t);
  let last = -1;
  for (let i = 0; i < 5; i++) {
    counters.replayedBytes += 4096 * i;
    const v = value(parse(await metrics.registry.metrics()), 'mars_replayed_bytes_total', { resource: 'db' });
    t.ok(v >= last, `scrape ${i}: ${v} >= ${last}`);
    last = v;
  }
  t.equal(last, 4096 * 10);
});

t.test('the HTTP endpoint serves /metrics and refuses anything else; bad addresses are refused', async (t) => {
  const { metrics } = setup(t);
  const server = new MetricsServer(metrics, () => undefined);
  const { port } = await server.listen('127.0.0.1:0');
  t.teardown(() => server.close());
  const ok = await fetch(`http://127.0.0.1:${port}/metrics`);
  t.equal(ok.status, 200);
  t.ok(parse(await ok.text()).length > 10);
  t.equal((await fetch(`http://127.0.0.1:${port}/other`)).status, 404);
  t.throws(() => parseListenAddress('nonsense'), /expected ADDR:PORT/);
  t.throws(() => parseListenAddress('127.0.0.1:70000'), /expected ADDR:PORT/);
  t.same(parseListenAddress('[::1]:9477'), { host: '::1', port: 9477 });
});

/** Metric names an expression uses (histogram series map to their family). */
function metricNames(expr: string): string[] {
  return [...expr.matchAll(/\bmars_[a-z0-9_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ''));
}

t.test('alerting rules and the Grafana dashboard use only metrics marsd serves', async (t) => {
  const { metrics } = setup(t);
  const known = new Set(parse(await metrics.registry.metrics()).map((f) => f.name));
  const rules = JSON.parse(readFileSync(docs('prometheus-alerts.yml'), 'utf8')) as { groups: { name: string; rules: Record<string, unknown>[] }[] };
  t.ok(rules.groups.length > 0);
  const alerts = new Set<string>();
  for (const g of rules.groups) {
    t.type(g.name, 'string');
    for (const r of g.rules) {
      t.match(r, { alert: /^[A-Z][A-Za-z]+$/, expr: String, labels: { severity: /^(warning|critical)$/ }, annotations: { summary: String } });
      if (r.for !== undefined) t.match(r.for, /^\d+[smh]$/);
      for (const n of metricNames(r.expr as string)) t.ok(known.has(n), `${r.alert as string}: ${n} exists`);
      alerts.add(r.alert as string);
    }
  }
  for (const a of ['MarsReplayLagHigh', 'MarsSplitBrain', 'MarsEmergencyMode', 'MarsPeerDown', 'MarsSpaceFilling']) t.ok(alerts.has(a), a);
  const dash = JSON.parse(readFileSync(docs('grafana-dashboard.json'), 'utf8')) as { uid: string; title: string; schemaVersion: number; panels: { id: number; type: string; title: string; gridPos: object; targets: { refId: string; expr: string }[] }[] };
  t.match(dash, { uid: String, title: String, schemaVersion: Number });
  t.equal(new Set(dash.panels.map((p) => p.id)).size, dash.panels.length, 'panel ids unique');
  for (const p of dash.panels) {
    t.match(p, { type: /^(timeseries|stat|gauge|table)$/, title: String, gridPos: { h: Number, w: Number, x: Number, y: Number } });
    t.ok(p.targets.length > 0, `${p.title} has queries`);
    for (const q of p.targets) for (const n of metricNames(q.expr)) t.ok(known.has(n), `${p.title}: ${n} exists`);
  }
});
