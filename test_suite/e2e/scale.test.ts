// Scale, scaled down for CI (issue 11): two marsd hosts, many resources with a small rotation
// size, all replicated. Neither daemon may log the warnings that many resources used to cause
// (request refusals, false split brain, rotation race, restarted syncs, the split-brain
// monitor's ENOENT); every replica ends byte-equal; the idle CPU of each marsd is printed
// (the figures with targets, at 100 resources x 1000 logfiles, are in the bench:
// npm run bench -- --suite scale, test_suite/bench/scale.ts).
import t from 'tap';
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileDigest, startCluster, TestCluster, writeWorkload } from '../helpers/multi-host.js';
import type { MarsHost } from '../helpers/cluster.js';

const RESOURCES = Number(process.env['MARS_SCALE_RESOURCES'] ?? 8);
const SIZE = 4 << 20;
const BAD = /more than \d+ requests at once|rotate failed|InvariantError|split-brain check failed|resuming at 0 bytes|its origin \S+ offers|fetch stopped|SPLIT BRAIN/;

function dataFile(h: MarsHost, res: string): string {
  return res === 'r0' ? h.dataPath : join(h.dir, `data-${res}.img`);
}

/** CPU seconds (user + system) of a process so far, from /proc/PID/stat. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

t.test(`${RESOURCES} resources on two hosts: replicated, consistent, no warnings of the scale kinds`, { timeout: 420_000 }, async (t) => {
  const c = await startCluster(t, { hosts: ['h1', 'h2'], sizeBytes: SIZE, res: 'r0', extraArgs: ['--log-rotate-size', '64k'] });
  const [h1, h2] = [c.primary, c.secondaries[0]!];
  const names = Array.from({ length: RESOURCES }, (_, i) => `r${i}`);
  for (const res of names.slice(1)) {
    for (const h of [h1, h2]) { writeFileSync(dataFile(h, res), ''); truncateSync(dataFile(h, res), SIZE); }
    await h1.createResource(res, { device: dataFile(h1, res) });
  }
  for (const res of names.slice(1)) {
    await h1.waitPrimary(res);
    await h2.until(`h2 learned ${res}`, () => {
      const replay = h2.link(`resource-${res}/replay-h1`);
      return replay !== undefined && h2.link(`resource-${res}/version-${replay.slice(4, 13)}-h1`) !== undefined;
    }, 60_000);
    await h2.marsadmOk(['join-resource', res, dataFile(h2, res)]);
  }
  // 48 writes of 1..8 blocks: about 10 rotations of each resource at 64 KiB
  await Promise.all(names.map((res, i) => writeWorkload(h1, res, SIZE, 48, i + 1)));
  for (const res of names) {
    await h2.until(`h2 synced ${res}`, () => h2.link(`resource-${res}/syncstatus-h2`) === String(SIZE), 120_000, 100);
    await new TestCluster([h1, h2], new Map(), res).waitCaughtUp(h2, 120_000);
    // h1's own disk gets the last writes by its writeback; equal once that is through.
    const equal = await h1.until(`${res}: h2's disk equal to h1's`, () => fileDigest(dataFile(h2, res), SIZE) === fileDigest(dataFile(h1, res), SIZE), 120_000, 200)
      .then(() => true, (err: Error) => { t.comment(err.message.split('\n')[0]!); return false; });
    t.ok(equal, `${res}: h2's disk equals h1's`);
  }
  // Idle: a measuring window, not a wait for a state.
  const before = [cpuSeconds(h1.pid!), cpuSeconds(h2.pid!)];
  const windowMs = 10_000;
  await new Promise((r) => setTimeout(r, windowMs));
  const after = [cpuSeconds(h1.pid!), cpuSeconds(h2.pid!)];
  const pct = after.map((a, i) => ((a - before[i]!) / (windowMs / 1000)) * 100);
  t.comment(`idle CPU over ${windowMs / 1000} s with ${RESOURCES} resources: h1 ${pct[0]!.toFixed(1)} %, h2 ${pct[1]!.toFixed(1)} % of a core`);
  for (const h of [h1, h2]) {
    const bad = readFileSync(h.logPath, 'utf8').split('\n').filter((l) => BAD.test(l));
    t.same(bad.slice(0, 10), [], `${h.name}'s log has none of the scale warnings (${bad.length})`);
  }
  // A clean stop, so that a profiling run (MARS_MARSD_NODE_ARGS=--cpu-prof) writes its profiles.
  for (const h of [h1, h2]) t.match(await h.stop(), { code: 0 }, `${h.name}'s marsd stops cleanly on SIGTERM`);
});
