// Scale in CI (issue 11): two marsd on a tree of 40 resources with 200 logfiles each, as after
// a long run (generated offline by the scale bench's generator, test_suite/bench/scale-tree.ts,
// with the project's own codecs), then new writes on some resources on top. Neither daemon may
// log a warning or an error after both settled (the kinds many resources used to cause:
// request refusals, false split brain, rotation races, restarted syncs, dropped connections);
// every replica ends byte-equal to its primary; the idle CPU of each marsd and its control
// round's p99 are printed (the figures with targets are the bench's: npm run bench -- --suite
// scale). MARS_SCALE_TREE=RxL changes the size (e.g. 10x50 on a slow machine).
import t from 'tap';
import { readFileSync, statSync } from 'node:fs';
import { freePort, MarsHost } from '../helpers/cluster.js';
import { fileDigest, TestCluster, writeWorkload } from '../helpers/multi-host.js';
import { tempDir } from '../helpers/tmp.js';
import { DEFAULT_SCALE_TREE, generateScaleTrees, scaleResourceNames } from '../bench/scale-tree.js';
import { settledResources } from '../bench/scale.js';
import { CONTROL_ROUND_METRIC, histogramOf, histogramSince, quantileBound } from '../bench/round-quantile.js';

const SPEC = /^(\d+)x(\d+)$/.exec(process.env['MARS_SCALE_TREE'] ?? '40x200');
if (!SPEC) throw new Error('MARS_SCALE_TREE must look like 40x200 (resources x logfiles)');
const RESOURCES = Number(SPEC[1]);
const LOGFILES = Number(SPEC[2]);
/** resources that get new writes on top of the generated history */
const WRITTEN = Math.min(4, RESOURCES);
const SIZE = DEFAULT_SCALE_TREE.deviceSizeBytes;
const PROBLEM = / (warn|error): /;

/** CPU seconds (user + system) of a process so far, from /proc/PID/stat. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

async function rounds(metricsAddress: string) {
  const res = await fetch(`http://${metricsAddress}/metrics`, { signal: AbortSignal.timeout(30_000) });
  return histogramOf(await res.text(), CONTROL_ROUND_METRIC);
}

t.test(`${RESOURCES} resources x ${LOGFILES} logfiles on two hosts: settled without warnings, new writes replicated, replicas equal`, { timeout: 600_000 }, async (t) => {
  const dir = tempDir(t, 'mars-scale-tree-');
  const addresses = new Map([['h1', `127.0.0.2:${await freePort('127.0.0.2')}`], ['h2', `127.0.0.3:${await freePort('127.0.0.3')}`]]);
  const metricsAt = new Map([['h1', `127.0.0.2:${await freePort('127.0.0.2')}`], ['h2', `127.0.0.3:${await freePort('127.0.0.3')}`]]);
  const gen = generateScaleTrees({ ...DEFAULT_SCALE_TREE, dir, addresses, resources: RESOURCES, logfilesPerResource: LOGFILES });
  t.comment(`trees: ${gen.filesWritten} files and ${gen.linksWritten} links in ${(gen.elapsedMs / 1000).toFixed(1)} s`);
  const [h1, h2] = gen.hosts.map((p) => new MarsHost({
    host: p.name, dir: p.dir, sizeBytes: 0,
    extraArgs: ['--bind', addresses.get(p.name)!, '--metrics', metricsAt.get(p.name)!, '--log-rotate-size', '64k'],
  })) as [MarsHost, MarsHost];
  t.teardown(() => Promise.all([h1.cleanup(), h2.cleanup()]));
  const names = scaleResourceNames(RESOURCES);
  const dataOf = (h: MarsHost, res: string) => gen.hosts.find((p) => p.name === h.name)!.dataPath(res);

  const startedMs = Date.now();
  await Promise.all([h1.start(60_000), h2.start(60_000)]);
  const view = async (h: MarsHost) => JSON.parse(await h.marsadmOk(['view', 'all', '--json'], { timeoutMs: 120_000 })) as Parameters<typeof settledResources>[0];
  await h1.until('every resource UpToDate and replicated on both hosts', async () =>
    settledResources(await view(h1), true) === RESOURCES && settledResources(await view(h2), false) === RESOURCES, 300_000, 2000);
  t.comment(`both settled ${((Date.now() - startedMs) / 1000).toFixed(1)} s after the start`);
  const logFrom = [statSync(h1.logPath).size, statSync(h2.logPath).size];

  // New writes on top of the history: several rotations each at 64 KiB.
  const written = names.slice(0, WRITTEN);
  await Promise.all(written.map((res, i) => writeWorkload(h1, res, SIZE, 32, i + 1)));
  for (const res of written) await new TestCluster([h1, h2], new Map(), res).waitCaughtUp(h2, 120_000);
  // h2's replicas equal h1's disks (h1's own disk gets the last writes by its writeback).
  const unequal = (): string[] => names.filter((res) => fileDigest(dataOf(h2, res), SIZE) !== fileDigest(dataOf(h1, res), SIZE));
  await h1.until('every replica equal to its primary', () => unequal().length === 0, 120_000, 250).catch((err: Error) => {
    t.fail(`replicas differ: ${unequal().join(', ')}`);
    throw err;
  });
  t.pass(`all ${RESOURCES} replicas equal, ${WRITTEN} of them with new writes`);

  // Idle: a measuring window, not a wait for a state.
  const windowMs = 10_000;
  const before = await Promise.all([h1, h2].map((h) => rounds(metricsAt.get(h.name)!)));
  const cpu0 = [cpuSeconds(h1.pid!), cpuSeconds(h2.pid!)];
  await new Promise((r) => setTimeout(r, windowMs));
  const cpu1 = [cpuSeconds(h1.pid!), cpuSeconds(h2.pid!)];
  const after = await Promise.all([h1, h2].map((h) => rounds(metricsAt.get(h.name)!)));
  const pct = cpu1.map((c, i) => ((c - cpu0[i]!) / (windowMs / 1000)) * 100);
  const p99 = after.map((a, i) => quantileBound(histogramSince(before[i]!, a), 0.99));
  t.comment(`idle over ${windowMs / 1000} s with ${RESOURCES} x ${LOGFILES}: CPU h1 ${pct[0]!.toFixed(1)} %, h2 ${pct[1]!.toFixed(1)} % of a core; control round p99 <= ${p99.map((s) => (s === undefined ? '-' : `${s * 1000} ms`)).join(' / ')}`);

  for (const [i, h] of [h1, h2].entries()) {
    t.ok(h.running, `marsd of ${h.name} still runs`);
    const lines = readFileSync(h.logPath).subarray(logFrom[i]!).toString('utf8').split('\n').filter((l) => PROBLEM.test(l));
    t.same(lines.slice(0, 10), [], `${h.name}: no warning or error line after settling (${lines.length})`);
  }
});
