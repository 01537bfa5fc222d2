// The logfiles a listing offers (daemon/serve/served-logs.ts) are kept from one walk to the
// next while the resource directory and the logfiles' sizes are unchanged; the one thing that
// moves without any change on disk, the logger's durable end in memory, must still be offered
// as it is now, and a delta must carry it (listing-delta.ts). Real files, a real PeerService.
import t from 'tap';
import { mkdirSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { PeerService } from '../../daemon/serve/peer-service.js';
import { tempDir } from '../helpers/tmp.js';

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

for (const withSeqs of [true, false]) {
  t.test(`the logger's durable end moves with no change on disk (${withSeqs ? 'with' : 'without'} activeLogSeqs)`, async (t) => {
    const dir = tempDir(t);
    const tree = new TreeStore(dir, new LamportClock());
    mkdirSync(join(dir, 'resource-r0'));
    tree.write('resource-r0/size', '4096');
    for (let seq = 1; seq <= 5; seq++) writeFileSync(join(dir, 'resource-r0', `log-00000000${seq}-alpha`), Buffer.alloc(100));
    for (let seq = 1; seq <= 4; seq++) tree.write(`resource-r0/version-00000000${seq}-alpha`, `d,log-00000000${seq}-alpha,100,`);
    const past = new Date(Date.now() - 10_000);
    utimesSync(join(dir, 'resource-r0'), past, past);
    utimesSync(dir, past, past);
    tree.changed('resource-r0');
    tree.changed('');
    // The logger writes logfile 5; 3 was just rotated away from (its final versionlink not used).
    const logger = new Map<number, number>([[5, 10], [3, 60]]);
    const svc = new PeerService({
      tree, host: 'alpha',
      activeLogEnd: (_res, seq) => logger.get(seq),
      ...(withSeqs ? { activeLogSeqs: () => [...logger.keys()] } : {}),
      primaryPosition: () => undefined, onTreeChanged: () => undefined, onNotify: () => undefined, log: () => undefined,
    });
    const sizes = async () => Object.fromEntries((await svc.getents('beta')).logs.map((l) => [l.name.slice(4, 13), l.sizeBytes]));
    const first = await svc.getents('beta');
    t.same(Object.fromEntries(first.logs.map((l) => [l.name.slice(4, 13), l.sizeBytes])),
      { '000000001': 0, '000000002': 0, '000000003': 60, '000000004': 0, '000000005': 10 }, 'the logger\'s ends, else the versionlinks\' (unparsable: 0)');
    const held = { epoch: first.listing!.epoch, generation: first.listing!.generation };
    await nextTurn();
    const computedBefore = svc.servedLogs.computed;
    t.same((await svc.getents('beta', held)).listing?.changed, [], 'nothing changed: no directory resent');
    if (withSeqs) t.equal(svc.servedLogs.computed - computedBefore, 2, 'only the logger\'s logfiles were worked out again');
    // The durable end moves in memory only (the data was written before, fsync'ed now).
    logger.set(5, 70);
    await nextTurn();
    const moved = await svc.getents('beta', held);
    t.same(moved.listing?.changed, ['resource-r0'], 'the directory is in the delta');
    t.equal(moved.logs.find((l) => l.name === 'log-000000005-alpha')?.sizeBytes, 70);
    // Logfile 3 is written back: the logger forgets it, its versionlink (unchanged) counts.
    logger.delete(3);
    await nextTurn();
    t.equal((await sizes())['000000003'], 0, 'no longer the logger\'s end once it forgot the logfile');
    // The logger takes up logfile 2 again (no change on disk at all).
    logger.set(2, 42);
    await nextTurn();
    t.equal((await sizes())['000000002'], 42, 'a logfile the logger now knows gets its end');
  });
}

t.test('a copy truncated in place at or after the replay link is offered with its new size at once', async (t) => {
  // A re-fetch truncates the copy it replays in place; that changes no directory, and the
  // logfile is below the two newest, whose sizes alone are stat'ed at every walk.
  const dir = tempDir(t);
  const tree = new TreeStore(dir, new LamportClock());
  mkdirSync(join(dir, 'resource-r0'));
  tree.write('resource-r0/size', '4096');
  for (let seq = 1; seq <= 5; seq++) writeFileSync(join(dir, 'resource-r0', `log-00000000${seq}-alpha`), Buffer.alloc(100));
  tree.write('resource-r0/replay-beta', 'log-000000002-alpha,50,3');
  const past = new Date(Date.now() - 10_000);
  utimesSync(join(dir, 'resource-r0'), past, past);
  utimesSync(dir, past, past);
  tree.changed('resource-r0');
  tree.changed('');
  const svc = new PeerService({
    tree, host: 'beta', activeLogEnd: () => undefined, activeLogSeqs: () => [],
    primaryPosition: () => undefined, onTreeChanged: () => undefined, onNotify: () => undefined, log: () => undefined,
  });
  const sizeOf = async (seq: number) => (await svc.getents('alpha')).logs.find((l) => l.name === `log-00000000${seq}-alpha`)?.sizeBytes;
  t.equal(await sizeOf(2), 100);
  truncateSync(join(dir, 'resource-r0', 'log-000000002-alpha'), 30);
  truncateSync(join(dir, 'resource-r0', 'log-000000001-alpha'), 20);
  await nextTurn();
  t.equal(await sizeOf(2), 30, 'the replayed copy: stat\'ed at every walk');
  t.equal(await sizeOf(1), 100, 'an older one, which nothing truncates: its cached size until the rotation comes to it');
});
