// Replication end to end: real marsd processes, real TCP between them, real NBD writes on
// the primary; every secondary must end with the primary's disk content.
import t, { type Test } from 'tap';
import { fileDigest, startCluster, type TestCluster, waitWritebackDone } from '../helpers/multi-host.js';
import { writeRandomBlocks } from '../helpers/replicate.js';

const RES = 'r0';
const SIZE = 32 << 20;

function writeRandom(c: TestCluster, count: number, seed = 0): Promise<void> {
  return writeRandomBlocks(c.primary, RES, SIZE, count, seed);
}

async function expectEqualDisks(t: Test, c: TestCluster): Promise<void> {
  for (const s of c.secondaries) await c.waitCaughtUp(s);
  // The primary's own disk holds everything once its writeback is through.
  await waitWritebackDone(c.primary, RES);
  const want = fileDigest(c.primary.dataPath, SIZE);
  for (const s of c.secondaries) t.equal(fileDigest(s.dataPath, SIZE), want, `${s.name}'s disk equals the primary's`);
}

t.test('two hosts: join with full sync, replicate a write workload, equal checksums', async (t) => {
  const c = await startCluster(t, { hosts: ['alpha', 'beta'], sizeBytes: SIZE, res: RES });
  await writeRandom(c, 400);
  await expectEqualDisks(t, c);
  t.equal(c.host('beta').actual(RES, 'is-primary'), '0');
  t.match(await c.host('beta').view('replstate', RES), /Replaying|Replay/i);
});

t.test('three hosts: both secondaries replicate, across a log rotation', async (t) => {
  const c = await startCluster(t, { hosts: ['alpha', 'beta', 'gamma'], sizeBytes: SIZE, res: RES });
  await writeRandom(c, 200, 1);
  await c.primary.marsadmOk(['log-rotate', RES]);
  await writeRandom(c, 200, 2);
  await expectEqualDisks(t, c);
});
