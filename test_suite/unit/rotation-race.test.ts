// Regression: the rotation race (issue 10). marsd with 100 resources and --log-rotate-size 64k
// logged "rotate failed: InvariantError: rotation must go to the next logfile number (3 -> 3)":
// a control round decided `rotate` while the same rotation, decided one round earlier, was still
// queued on the runner, so it ran twice. Two rounds back to back, as the daemon runs them, must
// rotate exactly once. (On the code before the fix this test failed with exactly that message.)
import t from 'tap';
import { closeSync, constants as fsc, openSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { resPaths } from '../../common/tree/paths.js';
import { writeLonePrimary } from '../helpers/lone-primary.js';
import { readResourceSnapshot } from '../../common/resource/snapshot.js';
import { ResourceRunner } from '../../daemon/control/resource-runner.js';
import type { SecondaryPeers } from '../../daemon/control/secondary-runner.js';
import { tempDir } from '../helpers/tmp.js';
import { SimClock } from '../helpers/sim-clock.js';

const RES = 'r0';
const HOST = 'alpha';
const SIZE = 1 << 20;

t.test('two control rounds while a rotation is queued rotate once', async (t) => {
  const dir = tempDir(t, 'mars-rotation-');
  const tree = new TreeStore(join(dir, 'mars'));
  writeLonePrimary(tree, RES, HOST, join(dir, 'disk.img'), SIZE);

  const logs: string[] = [];
  const nbd = { addExport: async () => undefined, stopListening: () => undefined, removeExport: async () => undefined };
  // A host alone: nobody to fetch from.
  const peers: SecondaryPeers = { listings: () => [], logRead: () => Promise.reject(new Error('no peers')), connection: () => undefined };
  const runner = new ResourceRunner(RES, {
    tree, host: HOST, runDir: dir, nbd, memLimitBytes: 16 << 20, logRotateBytes: 0, clock: new SimClock(),
    log: (level, msg) => logs.push(`${level}: ${msg}`), requestTick: () => undefined, peers, fetchRateBytesPerS: 0,
  });
  t.teardown(() => runner.shutdown());
  // One control round as daemon.ts runs it: the snapshot, then plan and execute.
  const round = () => runner.round(readResourceSnapshot(tree, RES, HOST), { present: true, spaceLevel: 0 }).done;

  await round();
  t.equal(runner.phase, 'primary', 'started');
  t.equal(runner.activeLogger?.currentSeq, 2, 'logs into a fresh logfile after the one of create-resource');
  // `marsadm log-rotate`: an empty next logfile of our own.
  closeSync(openSync(tree.abs(resPaths.log(RES, 3, HOST)), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644));
  // Two rounds before the first rotation had its turn (a tree change and a scan, say).
  await Promise.all([round(), round()]);
  await round();
  t.equal(runner.activeLogger?.currentSeq, 3, 'rotated to the next logfile');
  t.same(logs.filter((l) => l.startsWith('error')), [], 'no action failed');
});
