// Split brain for real: a forced failover while the link is cut, both sides written, the link
// healed. Every host must report SPLIT BRAIN with what each side wrote; `invalidate` on the
// losing side (and leave/join for a third host that followed it) must bring every disk back
// to the primary's content, and the incremental resync must send at most twice the bytes
// written since the split.
import t, { type Test } from 'tap';
import { caughtUpWith as caughtUpWithPrimary, fileDigest, startCluster, writeWorkload, type TestCluster, waitWritebackDone } from '../helpers/multi-host.js';
import type { MarsHost } from '../helpers/cluster.js';
import { RECORD_OVERHEAD_BYTES } from '../../common/log/record.js';

const RES = 'r0';
const SIZE = 32 << 20;
const MAX_BLOCKS = 4;
/** What the split writes on each side (makeSplitBrain): writes and workload seed. */
const OLD_SIDE = { writes: 60, seed: 11 };
const NEW_SIDE = { writes: 40, seed: 12 };

function workload(h: MarsHost, writes: number, seed: number): Promise<void> {
  return writeWorkload(h, RES, SIZE, writes, seed, MAX_BLOCKS);
}

/** 4 KiB blocks `workload(h, writes, seed)` writes (the block count of write i is writeWorkload's rule). */
function blocksWritten(writes: number, seed: number): number {
  let blocks = 0;
  for (let i = 0; i < writes; i++) blocks += 1 + ((i + seed) % MAX_BLOCKS);
  return blocks;
}

function caughtUpWith(h: MarsHost, primary: MarsHost): boolean {
  return caughtUpWithPrimary(h, primary, RES);
}

function totalForwarded(c: TestCluster): number {
  let n = 0;
  for (const p of c.proxies.values()) n += p.bytesForwarded.up + p.bytesForwarded.down;
  return n;
}

interface SplitView { common: { seq: number; origin: string; pos: number }; sides: { hosts: string[]; bytes: number; records: string }[] }

async function splitBrainOf(h: MarsHost): Promise<SplitView | null> {
  const out = await h.marsadmOk(['view', RES, '--json']);
  const parsed = JSON.parse(out) as { splitBrain?: SplitView | null } | { splitBrain?: SplitView | null }[];
  const v = Array.isArray(parsed) ? parsed[0]! : parsed;
  return v.splitBrain ?? null;
}

/** Cut every link, fail over to `to` by force, write on both sides, heal. */
async function makeSplitBrain(c: TestCluster, from: MarsHost, to: MarsHost): Promise<void> {
  for (const p of c.proxies.values()) p.cut();
  await to.until(`${to.name} lost ${from.name}`, () => (to.link(`actual-${to.name}/peer-${from.name}`) ?? '').startsWith('down'), 30_000);
  const forced = await to.marsadm(['primary', RES, '--force', '--timeout', '60']);
  if (forced.code !== 0) throw new Error(`primary --force on ${to.name} failed: ${forced.stderr}`);
  await workload(from, OLD_SIDE.writes, OLD_SIDE.seed);
  await workload(to, NEW_SIDE.writes, NEW_SIDE.seed);
  for (const p of c.proxies.values()) p.heal();
}

async function expectAllEqual(t: Test, c: TestCluster, primary: MarsHost): Promise<void> {
  await workload(primary, 20, 13); // the resynced hosts also follow new writes
  await waitWritebackDone(primary, RES);
  for (const h of c.hosts) {
    if (h === primary) continue;
    await h.until(`${h.name} synced and caught up with ${primary.name}`,
      () => h.link(`resource-${RES}/syncstatus-${h.name}`) === String(SIZE) && caughtUpWith(h, primary), 90_000, 50);
    t.equal(fileDigest(h.dataPath, SIZE), fileDigest(primary.dataPath, SIZE), `${h.name}'s disk equals ${primary.name}'s`);
  }
  for (const h of c.hosts) {
    await h.until(`${h.name} no longer reports a split brain`, async () => (await h.view('is-split-brain', RES)) === '0', 30_000, 200);
  }
}

t.test('two hosts: forced failover during a cut, both written, healed: detected on both, repaired by an incremental invalidate', async (t) => {
  const c = await startCluster(t, { hosts: ['alpha', 'beta'], sizeBytes: SIZE, res: RES, proxied: true });
  const [alpha, beta] = [c.host('alpha'), c.host('beta')];
  await workload(alpha, 50, 1);
  await alpha.until('beta caught up', () => caughtUpWith(beta, alpha), 60_000, 50);

  await makeSplitBrain(c, alpha, beta);
  for (const h of [alpha, beta]) {
    await h.until(`${h.name} reports the split brain`, async () => (await h.view('is-split-brain', RES)) === '1', 30_000, 200);
  }
  let seen: SplitView | null = null;
  await alpha.until('view --json names the split brain with both sides\' record counts', async () => {
    seen = await splitBrainOf(alpha);
    return seen !== null && seen.sides.every((s) => s.records !== '?');
  }, 30_000, 200);
  // The figures the view reports, against what this test wrote on each side: every 4 KiB block
  // is one logged record (its data plus the record's header and trailer).
  for (const [host, side] of [['alpha', OLD_SIDE], ['beta', NEW_SIDE]] as const) {
    const blocks = blocksWritten(side.writes, side.seed);
    const reported = seen!.sides.find((s) => s.hosts.includes(host));
    t.equal(reported?.bytes, blocks * (4096 + RECORD_OVERHEAD_BYTES), `${host}'s side: the ${blocks * 4096} data bytes the test wrote, logged as ${blocks} records`);
    t.equal(reported?.records, String(blocks), `${host}'s side: ${blocks} records`);
  }
  const written = (blocksWritten(OLD_SIDE.writes, OLD_SIDE.seed) + blocksWritten(NEW_SIDE.writes, NEW_SIDE.seed)) * 4096;
  const text = (await alpha.marsadmOk(['view', RES])).split('\n').join(' ');
  t.match(text, /SPLIT BRAIN: the histories diverge after log-\d{9}-alpha at \d+ bytes; since then alpha wrote \d+ bytes in \d+ records; beta wrote \d+ bytes in \d+ records/);
  t.match(await beta.marsadmOk(['view', RES]), /SPLIT BRAIN/, 'the new primary reports it too');
  await alpha.until('alpha stepped down', () => alpha.actual(RES, 'is-primary') === '0', 30_000);

  const before = totalForwarded(c);
  const out = await alpha.marsadmOk(['invalidate', RES]);
  t.match(out, /incremental resync/, 'only the touched blocks are resynced');
  await alpha.until('alpha synced and caught up', () => alpha.link(`resource-${RES}/syncstatus-alpha`) === String(SIZE) && caughtUpWith(alpha, beta), 90_000, 50);
  const sent = totalForwarded(c) - before;
  t.ok(sent <= 2 * written, `the repair sent ${sent} bytes, at most twice the ${written} bytes written since the split`);
  await expectAllEqual(t, c, beta);
});

t.test('three hosts: the third host followed the old primary; invalidate and leave/join restore equal disks', async (t) => {
  const c = await startCluster(t, { hosts: ['alpha', 'beta', 'gamma'], sizeBytes: SIZE, res: RES, proxied: true });
  const [alpha, beta, gamma] = [c.host('alpha'), c.host('beta'), c.host('gamma')];
  await workload(alpha, 50, 2);
  for (const h of [beta, gamma]) await h.until(`${h.name} caught up`, () => caughtUpWith(h, alpha), 60_000, 50);
  await makeSplitBrain(c, alpha, beta);
  for (const h of c.hosts) {
    await h.until(`${h.name} reports the split brain`, async () => (await h.view('is-split-brain', RES)) === '1', 30_000, 200);
  }
  await alpha.until('alpha stepped down', () => alpha.actual(RES, 'is-primary') === '0', 30_000);
  await alpha.marsadmOk(['invalidate', RES]);
  // gamma may have replayed alpha's writes after the split: leave and join again.
  await gamma.marsadmOk(['down', RES]);
  await gamma.marsadmOk(['leave-resource', RES]);
  await gamma.marsadmOk(['join-resource', RES, gamma.dataPath]);
  await expectAllEqual(t, c, beta);
});
