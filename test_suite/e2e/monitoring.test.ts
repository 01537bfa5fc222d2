// Monitoring on real daemons (docs/monitoring.md): replay-lag in seconds grows with wall time
// while replay is paused and the primary writes, and falls below 1 s after resume, in the
// macro and in /metrics; after a log-rotate on the primary and new writes, the secondary does
// not report rest 0 (with knowledge of the primary newer than the writes) before it holds them.
import t from 'tap';
import { readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { startCluster, writeWorkload } from '../helpers/multi-host.js';
import { freePort, type MarsHost } from '../helpers/cluster.js';
import { waitFor } from '../helpers/wait.js';

const RES = 'r0';
const SIZE = 16 << 20;
const parse = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => { name: string; metrics: { value?: string; labels?: Record<string, string> }[] }[];

async function macro(h: MarsHost, name: string): Promise<string> {
  return (await h.marsadmOk([`view-${name}`, RES])).trim();
}

async function scrape(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const f = parse(text).find((x) => x.name === name);
  return Number(f?.metrics.find((m) => m.labels?.resource === RES)?.value);
}

/** The primary's newest logfile and its size now. */
function primaryEnd(p: MarsHost): { seq: number; bytes: number } {
  const dir = `${p.marsDir}/resource-${RES}`;
  const logs = readdirSync(dir).filter((n) => n.startsWith('log-') && n.endsWith(`-${p.name}`)).sort();
  const newest = logs[logs.length - 1]!;
  return { seq: Number(newest.split('-')[1]), bytes: statSync(`${dir}/${newest}`).size };
}

t.test('replay-lag, rests after log-rotate, /metrics', { timeout: 120_000 }, async (t) => {
  const c = await startCluster(t, { hosts: ['alpha', 'beta'], sizeBytes: SIZE, res: RES });
  const [alpha, beta] = [c.primary, c.secondaries[0]!];
  const port = await freePort();
  beta.extraArgs.push('--metrics', `127.0.0.1:${port}`);
  await beta.restart();
  const alphaPort = await freePort();
  alpha.extraArgs.push('--metrics', `127.0.0.1:${alphaPort}`);
  await alpha.restart();
  await alpha.waitPrimary(RES);
  await writeWorkload(alpha, RES, SIZE, 50, 1);
  await c.waitCaughtUp(beta);
  t.equal(await macro(beta, 'replay-lag'), '0.0', 'caught up: no lag');
  t.ok((await scrape(alphaPort, 'mars_logged_bytes_total')) >= 50 * 4096, 'the primary counts logged bytes');
  const nbdText = await (await fetch(`http://127.0.0.1:${alphaPort}/metrics`)).text();
  const writes = parse(nbdText).find((f) => f.name === 'mars_nbd_requests_total')?.metrics.find((m) => m.labels?.type === 'write' && m.labels?.result === 'ok');
  t.ok(Number(writes?.value) >= 50, `NBD writes counted by the server (${writes?.value})`);

  await beta.marsadmOk(['pause-replay', RES]);
  await waitFor('replay paused', () => beta.actual(RES, 'is-replaying') === '0', 30_000);
  const firstWriteMs = Date.now();
  // Write for about 4 s (bounded in count and time), then measure.
  for (let i = 0; i < 40 && Date.now() - firstWriteMs < 4000; i++) await writeWorkload(alpha, RES, SIZE, 20, 100 + i);
  await waitFor('beta fetched the writes', async () => Number(await macro(beta, 'fetch-rest')) === 0 && Number(await macro(beta, 'replay-rest')) > 0, 30_000);
  const lag1 = Number(await macro(beta, 'replay-lag'));
  const paused1 = (Date.now() - firstWriteMs) / 1000;
  t.ok(lag1 >= paused1 - 1, `replay-lag ${lag1} s >= ${paused1.toFixed(1)} - 1 s`);
  t.ok(lag1 <= paused1 + 2, `replay-lag ${lag1} s not far above the pause`);
  const metricLag = await scrape(port, 'mars_resource_replay_lag_seconds');
  t.ok(metricLag >= paused1 - 1, `/metrics replay lag ${metricLag} s >= ${paused1.toFixed(1)} - 1 s`);
  // It grows with wall time while paused.
  await waitFor('a second passes', () => Date.now() - firstWriteMs > paused1 * 1000 + 1500, 5000);
  const lag2 = Number(await macro(beta, 'replay-lag'));
  t.ok(lag2 >= lag1 + 1, `replay-lag grows: ${lag1} -> ${lag2}`);
  t.match(await macro(beta, 'diskstate'), /^Outdated\[R\]$/);
  const countedBefore = await scrape(port, 'mars_replayed_bytes_total');

  await beta.marsadmOk(['resume-replay', RES]);
  await waitFor('replay-lag falls below 1 s', async () => Number(await macro(beta, 'replay-lag')) < 1 && (await macro(beta, 'replay-rest')) === '0', 60_000);
  await waitFor('/metrics lag below 1 s', async () => (await scrape(port, 'mars_resource_replay_lag_seconds')) < 1, 30_000);
  t.ok((await scrape(port, 'mars_replayed_bytes_total')) > countedBefore, 'replayed bytes counted, monotonic');

  // Log-rotate on the primary and new writes; fetch paused so the data is surely missing for a while.
  await beta.marsadmOk(['pause-fetch', RES]);
  await alpha.marsadmOk(['log-rotate', RES]);
  for (let i = 0; i < 5; i++) await writeWorkload(alpha, RES, SIZE, 200, 500 + i);
  const end = primaryEnd(alpha);
  const writesDoneMs = Date.now();
  const holds = () => {
    const link = beta.link(`resource-${RES}/replay-${beta.name}`)?.split(',');
    if (!link) return false;
    const seq = Number(link[0]!.split('-')[1]);
    return seq > end.seq || (seq === end.seq && Number(link[1]) >= end.bytes);
  };
  let falseZeros = 0;
  let freshZeroSeen = false;
  const check = async () => {
    const json = JSON.parse(await beta.marsadmOk(['view', RES, '--json'])) as { macros: Record<string, string> };
    const fresh = Date.now() - Number(json.macros['primary-age']) * 1000 > writesDoneMs;
    if (fresh && json.macros['replay-rest'] === '0' && json.macros['fetch-rest'] === '0') {
      freshZeroSeen = true;
      if (!holds()) falseZeros++;
    }
    return fresh;
  };
  await waitFor('beta knows the primary\'s state after the writes', check, 30_000);
  t.not(await macro(beta, 'fetch-rest'), '0', 'fetch paused after the rotation: rest is not 0');
  await beta.marsadmOk(['resume-fetch', RES]);
  await waitFor('beta reports rest 0 with fresh knowledge', async () => { await check(); return freshZeroSeen; }, 60_000, 50);
  t.equal(falseZeros, 0, 'no rest 0 before the data was held');
  t.ok(holds(), 'beta holds the data written after the rotation');
});
