// Every view macro against scripted states on real daemons (issue 13, docs/monitoring.md),
// with the expected values in tables, MARS semantics: sync running (held by a sync limit; also
// `view --watch` in a pipe), caught up, fetch paused (with a log-rotate: /metrics counters
// stay monotonic), replay paused, link cut (PrimaryUnreachable with a short --window), forced
// primary and split brain. Emergency mode and the orphan it leaves are in
// monitoring-emergency.test.ts.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { startCluster, writeWorkload, type TestCluster } from '../helpers/multi-host.js';
import { freePort, MARSADM_BIN, type MarsHost } from '../helpers/cluster.js';
import { waitFor } from '../helpers/wait.js';
import { atLeast, between, expectMacros, positive, type Expect } from '../helpers/macro-table.js';

const RES = 'r0';
const SIZE = 48 << 20;
/** The sync worker copies 16 MiB chunks; 4 MiB/s holds a 48 MiB sync for about 8 s after the first. */
const CHUNK = 16 << 20;
const SYNC_LIMIT = 4 << 20;
const parse = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => { name: string; metrics: { value?: string; labels?: Record<string, string> }[] }[];

async function metric(port: number, name: string, labels: Record<string, string>): Promise<number> {
  const families = parse(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
  const m = families.find((f) => f.name === name)?.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
  if (m === undefined) throw new Error(`no ${name}${JSON.stringify(labels)} in /metrics`);
  return Number(m.value);
}

/** What every healthy, caught-up secondary shows. */
const CAUGHT_UP: Record<string, Expect> = {
  diskstate: 'UpToDate', replstate: 'Replaying', flags: 'dCASFR', role: 'Secondary', 'get-primary': 'alpha', commstate: '',
  'is-primary': '0', 'is-attach': '1', 'is-sync': '0', 'is-fetch': '1', 'is-replay': '1', 'is-consistent': '1', 'is-alive': '1',
  'is-split-brain': '0', 'is-emergency': '0', 'emergency-level': '0',
  'fetch-rest': '0', 'replay-rest': '0', 'work-rest': '0', 'sync-rest': '0',
  'fetch-lag': '0.0', 'replay-lag': '0.0', 'work-lag': '0.0', 'sync-lag': '0.0',
  'fetch-percent': '100', 'replay-percent': '100', 'sync-percent': '100', 'work-percent': '100',
  'fetch-reached': '1', 'replay-reached': '1', 'sync-reached': '1', 'fetch-remain': '0', 'replay-remain': '0', 'sync-remain': '0',
  'sync-pos': String(SIZE), 'sync-size': String(SIZE), 'resource-size': String(SIZE),
};

const PRIMARY: Record<string, Expect> = {
  diskstate: 'UpToDate', replstate: 'Replicating', flags: 'DCASFR', role: 'Primary', 'get-primary': 'alpha', commstate: '',
  'is-primary': '1', 'todo-primary': '1', 'is-consistent': '1', 'is-alive': '1', 'is-local-alive': '1', 'alive-age': between(0, 10),
  'fetch-rest': '0', 'replay-rest': '0', 'replay-lag': '0.0', 'fetch-lag': '0.0', 'is-split-brain': '0', 'is-emergency': '0',
};

/** `marsadm view --watch 0.5` on a pipe: refreshes until SIGINT; output and how it ended. */
async function watchSync(t: Test, beta: MarsHost): Promise<void> {
  const child = spawn(process.execPath, [MARSADM_BIN, ...beta.commonArgs(), 'view', '--watch', '0.5', RES], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (out += s));
  const closed = new Promise<[number | null, NodeJS.Signals | null]>((r) => child.once('close', (code, signal) => r([code, signal])));
  const syncLine = /sync\s+(\d+) % \[[#-]{20}\] [\d.]+ (?:B|KiB|MiB) of 48\.0 MiB, ([\d.]+) (B|KiB|MiB)\/s, ETA (\d+ s|\d+ min)/;
  await waitFor('view --watch refreshed three times, one with a sync rate and an ETA', () => {
    const headers = out.match(/^every 0\.5 s on beta: /gm)?.length ?? 0;
    return headers >= 3 && out.split('\n').some((l) => { const m = syncLine.exec(l); return m !== null && Number(m[2]) > 0; });
  }, 30_000).catch((err: Error) => { throw new Error(`${err.message}; view --watch printed:\n${out.split('\n').slice(0, 50).join('\n')}`); });
  child.kill('SIGINT');
  const [code, signal] = await closed;
  t.equal(code, 0, 'view --watch ends cleanly on SIGINT (exit 0)');
  t.equal(signal, null, 'not killed by the signal');
  t.notMatch(out, /\x1b\[/, 'no cursor control on a pipe: each refresh is appended');
  t.match(out, /^r0 \[2\/2\] Syncing\[\d+%\] Syncing dcAsFR Secondary alpha$/m, 'the view line in each refresh');
  t.notMatch(out, /error|Error/, 'no errors');
}

async function syncRunning(t: Test, c: TestCluster, metricsPort: Record<string, number>): Promise<void> {
  const [alpha, beta] = [c.host('alpha'), c.host('beta')];
  await beta.marsadmOk(['set-sync-limit-value', String(SYNC_LIMIT)]);
  await beta.until('beta learned r0', () => beta.link(`resource-${RES}/replay-alpha`) !== undefined, 30_000);
  // Watching from before the join: a node start under load must not eat the sync's window.
  const watching = watchSync(t, beta);
  await beta.marsadmOk(['join-resource', RES, beta.dataPath]);
  await expectMacros(t, beta, RES, 'sync running', {
    diskstate: /^Syncing\[(3[3-9]|[4-9]\d)%\]$/, replstate: 'Syncing', flags: 'dcAsFR', role: 'Secondary', 'get-primary': 'alpha',
    'is-sync': '1', 'is-syncing': '1', 'is-attach': '1', 'is-attached': '1', 'is-primary': '0', 'is-consistent': '0', 'todo-sync': '1',
    'sync-size': String(SIZE), 'sync-pos': between(CHUNK, SIZE - 1), 'sync-percent': between(33, 99), 'sync-rest': between(1, SIZE - CHUNK),
    'sync-rate': between(SYNC_LIMIT / 2, SYNC_LIMIT * 2), 'sync-remain': between(1, 30), 'sync-reached': '0', 'sync-age': between(0, 60),
    commstate: '', 'is-alive': '1',
  });
  t.ok((await metric(metricsPort.beta!, 'mars_resource_sync_rest_bytes', { resource: RES })) < SIZE, '/metrics: the running sync\'s position counts');
  // syncstatus moves every 64 MiB only (here: at the end); the counter follows the worker's position.
  const syncing = await metric(metricsPort.beta!, 'mars_synced_bytes_total', { resource: RES });
  t.ok(syncing >= CHUNK && syncing < SIZE, `/metrics: synced bytes move while the sync runs (${syncing} of ${SIZE})`);
  await expectMacros(t, alpha, RES, 'sync running', PRIMARY);
  await watching;
  await beta.marsadmOk(['set-sync-limit-value', '0']);
  await beta.until('beta synced', () => beta.link(`resource-${RES}/syncstatus-beta`) === String(SIZE), 60_000, 50);
  t.ok((await metric(metricsPort.beta!, 'mars_synced_bytes_total', { resource: RES })) >= SIZE, '/metrics: the whole disk counted once synced');
}

async function fetchPaused(t: Test, c: TestCluster, ports: Record<string, number>): Promise<void> {
  const [alpha, beta] = [c.host('alpha'), c.host('beta')];
  await beta.marsadmOk(['pause-fetch', RES]);
  const logged0 = await metric(ports.alpha!, 'mars_logged_bytes_total', { resource: RES });
  const fetched0 = await metric(ports.beta!, 'mars_fetched_bytes_total', { resource: RES });
  await writeWorkload(alpha, RES, SIZE, 40, 2, 4);
  await alpha.marsadmOk(['log-rotate', RES]);
  await writeWorkload(alpha, RES, SIZE, 40, 3, 4);
  const logged1 = await metric(ports.alpha!, 'mars_logged_bytes_total', { resource: RES });
  t.ok(logged1 >= logged0 + 80 * 4096, `logged bytes counted across the log-rotate: ${logged0} -> ${logged1}`);
  await expectMacros(t, beta, RES, 'fetch paused', {
    diskstate: 'Outdated[FR]', replstate: 'PausedFetch', flags: 'dCAS-R', role: 'Secondary', 'is-consistent': '1',
    'todo-fetch': '0', 'is-fetch': '0', 'fetch-rest': positive, 'replay-rest': positive, 'work-rest': '0',
    'fetch-reached': '0', 'replay-reached': '0', 'fetch-rate': '0', 'fetch-remain': '-1', 'fetch-lag': positive, 'replay-lag': positive,
    'fetch-percent': between(0, 99), 'replay-percent': between(0, 99), commstate: '', 'is-alive': '1',
  });
  await beta.marsadmOk(['resume-fetch', RES]);
  await c.waitCaughtUp(beta);
  await expectMacros(t, beta, RES, 'fetch resumed, caught up', CAUGHT_UP);
  const fetched1 = await metric(ports.beta!, 'mars_fetched_bytes_total', { resource: RES });
  t.ok(fetched1 >= fetched0 + 80 * 4096, `fetched bytes counted across the rotation: ${fetched0} -> ${fetched1}`);
  t.ok((await metric(ports.alpha!, 'mars_logged_bytes_total', { resource: RES })) >= logged1, 'logged bytes never decrease');
}

async function replayPaused(t: Test, c: TestCluster): Promise<void> {
  const [alpha, beta] = [c.host('alpha'), c.host('beta')];
  await beta.marsadmOk(['pause-replay', RES]);
  await beta.until('replay paused', () => beta.actual(RES, 'is-replaying') === '0', 30_000);
  await writeWorkload(alpha, RES, SIZE, 40, 4, 4);
  const m = await expectMacros(t, beta, RES, 'replay paused', {
    diskstate: 'Outdated[R]', replstate: 'PausedReplay', flags: 'dCASF-', 'is-consistent': '1',
    'todo-replay': '0', 'is-replay': '0', 'fetch-rest': '0', 'replay-rest': positive, 'work-rest': positive,
    'fetch-reached': '1', 'replay-reached': '0', 'replay-rate': '0', 'replay-remain': '-1', 'work-remain': '-1',
    'fetch-lag': '0.0', 'replay-lag': positive, 'work-lag': positive, 'fetch-percent': '100', 'replay-percent': between(0, 99),
    'work-percent': between(0, 99),
  });
  t.equal(m['work-rest'], m['replay-rest'], 'everything not replayed is here: work-rest = replay-rest');
  await beta.marsadmOk(['resume-replay', RES]);
  await c.waitCaughtUp(beta);
  await expectMacros(t, beta, RES, 'replay resumed, caught up', CAUGHT_UP);
}

async function linkCutForcedSplit(t: Test, c: TestCluster, ports: Record<string, number>): Promise<void> {
  const [alpha, beta] = [c.host('alpha'), c.host('beta')];
  for (const p of c.proxies.values()) p.cut();
  await beta.until('beta lost alpha', () => (beta.link(`actual-beta/peer-alpha`) ?? '').startsWith('down'), 30_000);
  await writeWorkload(alpha, RES, SIZE, 20, 5, 4);
  // --window 2: the primary's state known here is older than 2 s soon after the cut.
  await expectMacros(t, beta, RES, 'link cut', {
    replstate: 'PrimaryUnreachable', commstate: /^PrimaryUnreachable\[\d+s\]$/, comminfo: /link to alpha: down/,
    'is-alive': '0', 'is-local-alive': '1', 'primary-age': atLeast(2), role: 'Secondary', 'get-primary': 'alpha',
  }, { windowS: 2 });
  await expectMacros(t, alpha, RES, 'link cut', { role: 'Primary', replstate: 'Replicating', commstate: '', 'is-alive': '1' }, { windowS: 2 });
  t.equal(await metric(ports.beta!, 'mars_peer_up', { peer: 'alpha' }), 0, '/metrics: beta\'s peer alpha is down');

  const forced = await beta.marsadm(['primary', RES, '--force', '--timeout', '60']);
  t.equal(forced.code, 0, `primary --force on beta${forced.code ? `: ${forced.stderr}` : ''}`);
  // Two actual primaries: beta, and alpha as beta last heard of it (MARS: ForcedPrimary).
  await expectMacros(t, beta, RES, 'forced primary', {
    role: 'ForcedPrimary', 'is-primary': '1', 'get-primary': 'beta', 'todo-primary': '1', replstate: 'Replicating', commstate: '',
  });
  await writeWorkload(beta, RES, SIZE, 20, 6, 4);
  for (const p of c.proxies.values()) p.heal();
  // ForcedPrimary means more than one actual primary (MARS): once alpha has learned that beta
  // is the designated primary and stepped down, beta is the only one left.
  await expectMacros(t, alpha, RES, 'split brain', { 'is-split-brain': '1', 'get-primary': 'beta', 'is-primary': '0', role: 'Secondary' }, { timeoutMs: 60_000 });
  await expectMacros(t, beta, RES, 'split brain', { 'is-split-brain': '1', 'get-primary': 'beta', role: 'Primary' }, { timeoutMs: 60_000 });
  // The view decides from the versionlinks when it runs; the metric shows what each marsd's
  // split-brain monitor published, at its next check (at most 1/s, then counting records):
  // wait for it with a deadline instead of reading it once.
  for (const h of ['alpha', 'beta']) {
    const seen = await waitFor(`/metrics of ${h} to show the split brain`, async () => (await metric(ports[h]!, 'mars_resource_split_brain', { resource: RES })) === 1, 30_000, 200)
      .then(() => 1, () => 0);
    t.equal(seen, 1, `/metrics: split brain on ${h}`);
  }
}

t.test('view macros across scripted states on real daemons', { timeout: 170_000 }, async (t) => {
  const ports: Record<string, number> = { alpha: await freePort(), beta: await freePort() };
  const c = await startCluster(t, {
    hosts: ['alpha', 'beta'], sizeBytes: SIZE, res: RES, proxied: true, joinResource: false,
    hostArgs: (h) => ['--metrics', `127.0.0.1:${ports[h.name]!}`],
  });
  await syncRunning(t, c, ports);
  await writeWorkload(c.primary, RES, SIZE, 40, 1, 4);
  await c.waitCaughtUp(c.host('beta'));
  await expectMacros(t, c.host('beta'), RES, 'caught up', CAUGHT_UP);
  await expectMacros(t, c.primary, RES, 'caught up', PRIMARY);
  await fetchPaused(t, c, ports);
  await replayPaused(t, c);
  await linkCutForcedSplit(t, c, ports);
});
