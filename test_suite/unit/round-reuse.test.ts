// The control round of an unchanged resource does less (issue 11): the runner's snapshot
// reader hands out the same snapshot, an unchanged snapshot nudges neither fetcher nor
// replayer, and the round's status update (a safety net: state changes publish themselves)
// runs only every STATUS_REFRESH_ROUNDS-th quiet round. A tree change brings all of it back at
// the next round. A real ResourceRunner, primary alone, on real files; simulated clock.
import t from 'tap';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { DirWatch } from '../../common/disk/dir-watch.js';
import { resPaths } from '../../common/tree/paths.js';
import { writeLonePrimary } from '../helpers/lone-primary.js';
import { ResourceRunner, STATUS_REFRESH_ROUNDS } from '../../daemon/control/resource-runner.js';
import type { SecondaryPeers } from '../../daemon/control/secondary-runner.js';
import { tempDir } from '../helpers/tmp.js';
import { SimClock } from '../helpers/sim-clock.js';

const RES = 'r0';
const HOST = 'alpha';
const SIZE = 1 << 20;

t.test('an unchanged resource: the same snapshot, no nudge, a status update every few rounds', async (t) => {
  const dir = tempDir(t, 'mars-round-reuse-');
  // With the inotify watches marsd uses (without, a directory changed in the last 2 s is read
  // again at every round: dir-cache.ts).
  const watch = DirWatch.open('entries');
  const contents = DirWatch.open('contents');
  t.ok(watch && contents, 'inotify watches open (native helper)');
  const tree = new TreeStore(join(dir, 'mars'), undefined, { watch: watch!, contents: contents! });
  t.teardown(() => tree.close());
  writeLonePrimary(tree, RES, HOST, join(dir, 'disk.img'), SIZE);

  const nbd = { addExport: async () => undefined, stopListening: () => undefined, removeExport: async () => undefined };
  const peers: SecondaryPeers = { listings: () => [], logRead: () => Promise.reject(new Error('no peers')), connection: () => undefined };
  const clock = new SimClock();
  const runner = new ResourceRunner(RES, {
    tree, host: HOST, runDir: dir, nbd, memLimitBytes: 16 << 20, logRotateBytes: 0, clock,
    log: () => undefined, requestTick: () => undefined, peers, fetchRateBytesPerS: 0,
  });
  t.teardown(() => runner.shutdown());
  let publishes = 0;
  let nudges = 0;
  const publish = runner.publish.bind(runner);
  runner.publish = (force: boolean) => { publishes++; publish(force); };
  const nudge = runner.secondary.nudge.bind(runner.secondary);
  runner.secondary.nudge = () => { nudges++; nudge(); };
  // One control round as daemon.ts runs it; the clock moves a second, as the scan interval does.
  const round = async () => {
    const { snapshot } = runner.snapshots.get();
    await runner.round(snapshot, { present: true, spaceLevel: 0 }).done;
    await clock.advance(1000);
    return snapshot;
  };

  await round();
  t.equal(runner.phase, 'primary', 'started');
  // Starting wrote links (the tree changed): rounds until it is quiet.
  let last = await round();
  for (let i = 0; i < 5; i++) {
    const next = await round();
    if (next === last) break;
    last = next;
  }
  t.equal(await round(), last, 'quiet: the same snapshot object');
  publishes = 0;
  nudges = 0;
  const quietRounds = 3 * STATUS_REFRESH_ROUNDS;
  for (let i = 0; i < quietRounds; i++) t.equal(await round(), last, `round ${i}: the same snapshot`);
  t.equal(nudges, 0, 'no nudge while nothing changed');
  t.equal(publishes, quietRounds / STATUS_REFRESH_ROUNDS, `a status update every ${STATUS_REFRESH_ROUNDS} rounds`);

  // A change (marsadm writes a link of the resource): a new snapshot, a nudge, a status update.
  publishes = 0;
  tree.write(resPaths.todo(RES, HOST, 'connect'), '0');
  const changed = await round();
  t.not(changed, last, 'a new snapshot');
  t.equal(changed.todo.connect, false);
  t.equal(nudges, 1, 'fetcher and replayer nudged');
  t.equal(publishes, 1, 'status updated at once');
});
