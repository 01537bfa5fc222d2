// Peer link state and bytes in /metrics on real daemons (issue 13, docs/monitoring.md):
// mars_peer_bytes_total{peer,direction} counts what crosses each link. While the primary
// writes, what the secondary receives from it covers the bytes it fetched, and what one end
// sends matches what the other receives; a dead peer shows as mars_peer_up 0 while its byte
// counters hold (monotonic), and they grow again once it is back. With the primary's state
// older than --metrics-window, /metrics says the rests and lags are stale (lower bounds), as
// view-fetch-lag does on stderr. Also on these states: view-MACRO all, view --json carrying
// every macro, and marsadm check's exit codes 0/1/2/3.
import t from 'tap';
import { createRequire } from 'node:module';
import { readdirSync } from 'node:fs';
import { startCluster, writeWorkload } from '../helpers/multi-host.js';
import { freePort } from '../helpers/cluster.js';
import { waitFor } from '../helpers/wait.js';
import { MACROS } from '../../marsadm/status/macros.js';

const RES = 'r0';
const SIZE = 16 << 20;
type Family = { name: string; type: string; metrics: { value?: string; labels?: Record<string, string> }[] };
const parse = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => Family[];

async function scrape(port: number): Promise<Family[]> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (res.status !== 200) throw new Error(`GET /metrics: ${res.status}`);
  return parse(await res.text());
}

function value(families: Family[], name: string, labels: Record<string, string>): number {
  const m = families.find((f) => f.name === name)?.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
  if (m === undefined) throw new Error(`no ${name}${JSON.stringify(labels)} in /metrics`);
  return Number(m.value);
}

const bytes = (f: Family[], peer: string, direction: 'sent' | 'received') => value(f, 'mars_peer_bytes_total', { peer, direction });

t.test('per-peer bytes and link state in /metrics', { timeout: 240_000 }, async (t) => {
  const c = await startCluster(t, { hosts: ['alpha', 'beta'], sizeBytes: SIZE, res: RES });
  const [alpha, beta] = [c.primary, c.secondaries[0]!];
  const alphaPort = await freePort();
  const betaPort = await freePort();
  alpha.extraArgs.push('--metrics', `127.0.0.1:${alphaPort}`);
  // A short window: the primary's state known here turns stale 2 s after alpha dies.
  beta.extraArgs.push('--metrics', `127.0.0.1:${betaPort}`, '--metrics-window', '2');
  await alpha.restart();
  await beta.restart();
  await alpha.waitPrimary(RES);
  await waitFor('beta\'s link to alpha is up', async () => value(await scrape(betaPort), 'mars_peer_up', { peer: 'alpha' }) === 1, 30_000);

  const family = (await scrape(betaPort)).find((f) => f.name === 'mars_peer_bytes_total');
  t.equal(family?.type, 'COUNTER', 'a counter');
  const [a0, b0] = [await scrape(alphaPort), await scrape(betaPort)];
  const fetched0 = value(b0, 'mars_fetched_bytes_total', { resource: RES });
  await writeWorkload(alpha, RES, SIZE, 300, 7);
  await c.waitCaughtUp(beta);
  const [a1, b1] = [await scrape(alphaPort), await scrape(betaPort)];
  const fetched = value(b1, 'mars_fetched_bytes_total', { resource: RES }) - fetched0;
  const received = bytes(b1, 'alpha', 'received') - bytes(b0, 'alpha', 'received');
  const sent = bytes(a1, 'beta', 'sent') - bytes(a0, 'beta', 'sent');
  t.ok(fetched > 300 * 4096, `beta fetched the writes (${fetched} bytes)`);
  t.ok(received >= fetched, `beta received from alpha (${received}) at least what it fetched (${fetched})`);
  t.ok(received < fetched * 1.5 + (1 << 20), `and not far more (${received} for ${fetched} fetched)`);
  // The same wire bytes counted at both ends; the pulls and pings between the two scrapes differ.
  t.ok(Math.abs(sent - received) <= (64 << 10) + fetched * 0.02, `alpha sent to beta ${sent}, beta received from alpha ${received}`);
  const betaSent = bytes(b1, 'alpha', 'sent') - bytes(b0, 'alpha', 'sent');
  t.ok(betaSent < received, `the fetch direction dominates: beta sent ${betaSent} to alpha`);
  t.equal(value(b1, 'mars_resource_progress_stale', { resource: RES }), 0, 'alpha heard from: rests and lags are measurements');

  const logfiles = (h: typeof alpha) => readdirSync(`${h.marsDir}/resource-${RES}`).filter((n) => /^log-\d{9}-/.test(n)).length;
  const n0 = logfiles(alpha);
  t.equal(value(a1, 'mars_resource_logfiles', { resource: RES }), n0, `/metrics: the logfiles in alpha's /mars (${n0})`);
  await alpha.marsadmOk(['log-rotate', RES]);
  await writeWorkload(alpha, RES, SIZE, 10, 8);
  t.equal(logfiles(alpha), n0 + 1, 'log-rotate and a write made a logfile');
  t.equal(value(await scrape(alphaPort), 'mars_resource_logfiles', { resource: RES }), n0 + 1, '/metrics counts it');
  await c.waitCaughtUp(beta);

  // The macros for scripts and Nagios on the same state: view-MACRO all, view --json, check.
  t.match(await beta.marsadmOk(['view-replay-lag', 'all']), /^r0 0\.0$/m, 'view-MACRO all: RESOURCE VALUE lines');
  const json = JSON.parse(await beta.marsadmOk(['view', RES, '--json'])) as { macros: Record<string, string> };
  t.same(Object.keys(MACROS).filter((k) => !(k in json.macros)), [], 'view --json carries every macro');
  const ok = await beta.marsadm(['check', RES]);
  t.equal(ok.code, 0, `check: OK (${ok.stdout.trim()})`);
  t.match(ok.stdout, /^MARS OK - r0/);
  t.equal(ok.stdout.trim().split('\n').length, 1, 'one status line');
  await beta.marsadmOk(['pause-replay', RES]);
  const warn = await beta.marsadm(['check', RES]);
  t.equal(warn.code, 1, `check with replay paused: WARNING (${warn.stdout.trim()})`);
  t.match(warn.stdout, /^MARS WARNING - r0/);
  await beta.marsadmOk(['resume-replay', RES]);
  const unknown = await beta.marsadm(['check', 'nosuch']);
  t.equal(unknown.code, 3, `check of an unknown resource: UNKNOWN (${unknown.stdout.trim()})`);
  t.match(unknown.stdout, /^MARS UNKNOWN - /);

  alpha.kill('SIGKILL');
  await alpha.waitExit();
  await waitFor('beta sees the link to alpha down', async () => value(await scrape(betaPort), 'mars_peer_up', { peer: 'alpha' }) === 0, 30_000);
  await waitFor('beta marks its rests and lags stale', async () => value(await scrape(betaPort), 'mars_resource_progress_stale', { resource: RES }) === 1, 30_000);
  const b2 = await scrape(betaPort);
  t.ok(value(b2, 'mars_resource_primary_state_age_seconds', { resource: RES }) > 2, 'the primary\'s state known here is older than the window');
  t.equal(value(b2, 'mars_resource_fetch_lag_seconds', { resource: RES }), 0, 'fetch lag: only a lower bound now (nothing known is missing)');
  const lag = await beta.marsadm(['--window', '2', 'view-fetch-lag', RES]);
  t.equal(lag.stdout.trim(), '0.0', 'view-fetch-lag prints the number');
  t.match(lag.stderr, /view-fetch-lag is a lower bound/, 'and says on stderr that it is a lower bound');
  const crit = await beta.marsadm(['--window', '2', 'check', RES]);
  t.equal(crit.code, 2, `check with the primary unreachable: CRITICAL (${crit.stdout.trim()})`);
  t.match(crit.stdout, /^MARS CRITICAL - r0/);
  for (const dir of ['sent', 'received'] as const) {
    t.ok(bytes(b2, 'alpha', dir) >= bytes(b1, 'alpha', dir), `${dir}: the closed connections still count (${bytes(b1, 'alpha', dir)} -> ${bytes(b2, 'alpha', dir)})`);
  }
  await alpha.start();
  await waitFor('link up again and bytes flowing on the new connection', async () => {
    const f = await scrape(betaPort);
    return value(f, 'mars_peer_up', { peer: 'alpha' }) === 1 && bytes(f, 'alpha', 'received') > bytes(b2, 'alpha', 'received')
      && value(f, 'mars_resource_progress_stale', { resource: RES }) === 0;
  }, 30_000);
  const a3 = await scrape(alphaPort);
  t.ok(bytes(a3, 'beta', 'sent') < bytes(a1, 'beta', 'sent'), 'a restarted marsd counts from 0 again (a counter reset)');
});
