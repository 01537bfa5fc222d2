// The /mars space monitor: levels from measured free space, the hysteresis paced in time, ENOSPC
// reports, the links it publishes; a secondary's deletion of replayed logfile copies; the links
// of the emergency hole.
import t from 'tap';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { LEVEL_FALL_INTERVAL_MS, restSpaceMoved, SpaceMonitor } from '../../daemon/control/space-monitor.js';
import { deleteReplayedCopies } from '../../daemon/control/space-reclaim.js';
import { parseSpaceLevels } from '../../daemon/control/decide-emergency.js';
import { planHole, writeHole } from '../../daemon/control/emergency-hole.js';
import { parseSize } from '../../common/config.js';
import { tempDir } from '../helpers/tmp.js';
import { systemClock } from '../../common/util/clock.js';

const MiB = 1024 ** 2;

t.test('rest-space-bytes moves in steps of 0.1 % of the total, so an idle host does not rewrite it every round', async (t) => {
  const tree = new TreeStore(tempDir(t));
  const total = 1024 * MiB;
  let free = 500 * MiB;
  const m = new SpaceMonitor({ tree, host: 'alpha', spec: undefined, log: () => undefined, measure: () => ({ freeBytes: free, totalBytes: total }), clock: systemClock });
  const writes = () => tree.read('actual-alpha/rest-space-bytes')?.stampUs;
  m.check(1_000);
  t.equal(tree.value('actual-alpha/rest-space-bytes'), String(500 * MiB));
  const first = writes();
  for (const delta of [4096, -8192, 512 * 1024, -(1024 * 1024 - 1)]) {
    free = 500 * MiB + delta;
    m.check(2_000);
  }
  t.equal(tree.value('actual-alpha/rest-space-bytes'), String(500 * MiB), 'moves below 1 MiB (0.1 % of 1 GiB) are not written');
  t.equal(writes(), first, 'the link was not rewritten');
  free = 499 * MiB;
  m.check(3_000);
  t.equal(tree.value('actual-alpha/rest-space-bytes'), String(499 * MiB), 'a move of 1 MiB is');
  t.equal(m.current.freeBytes, 499 * MiB);
  tree.remove('actual-alpha/rest-space-bytes');
  free = 499 * MiB + 4096;
  m.check(4_000);
  t.equal(tree.value('actual-alpha/rest-space-bytes'), String(499 * MiB + 4096), 'a removed link is written again at once');
  t.equal(restSpaceMoved(0, 64 * MiB, 1024 * 1024 * MiB), true, 'on a large filesystem the step is at most 64 MiB');
  t.equal(restSpaceMoved(0, 64 * MiB - 1, 1024 * 1024 * MiB), false);
});

t.test('levels, hysteresis and the published links', async (t) => {
  const tree = new TreeStore(tempDir(t));
  let free = 100 * MiB;
  const logs: string[] = [];
  const m = new SpaceMonitor({
    tree, host: 'alpha', spec: parseSpaceLevels('16M,12M,8M,4M', (s) => parseSize(s, 'x')),
    log: (_l, msg) => logs.push(msg), measure: () => ({ freeBytes: free, totalBytes: 128 * MiB }), clock: systemClock,
  });
  let now = 1_000_000;
  t.equal(m.check(now).level, 0);
  t.equal(tree.value('actual-alpha/emergency'), '0');
  t.equal(tree.value('actual-alpha/rest-space-bytes'), String(100 * MiB));
  t.equal(tree.value('actual-alpha/total-space-bytes'), String(128 * MiB));
  t.equal(tree.value('actual-alpha/space-thresholds'), [16, 12, 8, 4].map((x) => x * MiB).join(','));
  t.equal(tree.value('actual-alpha/rest-space'), '0', 'GiB, rounded down as MARS');
  free = 3 * MiB;
  t.equal(m.check(now += 10).level, 4, 'rises at once');
  t.equal(tree.value('actual-alpha/emergency'), '4');
  t.match(logs.at(-1), /level 0 -> 4.*emergency mode/);
  free = 100 * MiB;
  t.equal(m.check(now += 10).level, 4, 'no fall within the same round');
  const levels: number[] = [];
  for (let i = 0; i < 5; i++) levels.push(m.check(now += LEVEL_FALL_INTERVAL_MS).level);
  t.same(levels, [3, 2, 1, 0, 0], 'falls one step per round');
  m.reportFull(now += 10);
  t.equal(m.current.level, 4, 'ENOSPC means level 4 whatever the last measurement said');
  t.equal(tree.value('actual-alpha/emergency'), '4');
});

t.test('a measurement that fails keeps the last state', async (t) => {
  const tree = new TreeStore(tempDir(t));
  const m = new SpaceMonitor({ tree, host: 'alpha', spec: undefined, log: () => undefined, clock: systemClock, measure: () => { throw new Error('gone'); } });
  t.equal(m.check().level, 0);
  const real = new SpaceMonitor({ tree, host: 'alpha', spec: undefined, log: () => undefined, clock: systemClock });
  t.ok(real.check().totalBytes > 0, 'statfs of the tree\'s filesystem');
});

t.test('a secondary deletes only its replayed copies of foreign logfiles', async (t) => {
  const dir = tempDir(t);
  const tree = new TreeStore(dir);
  tree.ensureDir('resource-r0');
  for (const n of ['log-000000003-alpha', 'log-000000004-beta', 'log-000000005-alpha', 'log-000000006-alpha']) {
    writeFileSync(join(dir, 'resource-r0', n), 'x');
  }
  tree.write('resource-r0/replay-beta', 'log-000000006-alpha,0,0');
  const deleted = deleteReplayedCopies(tree, 'r0', 'beta', () => undefined);
  t.same(deleted, ['log-000000003-alpha', 'log-000000005-alpha']);
  t.notOk(existsSync(join(dir, 'resource-r0', 'log-000000003-alpha')));
  t.ok(existsSync(join(dir, 'resource-r0', 'log-000000004-beta')), 'own logfile kept (others may fetch it from here)');
  t.ok(existsSync(join(dir, 'resource-r0', 'log-000000006-alpha')), 'the one being replayed kept');
  t.notOk(existsSync(join(dir, 'resource-r0', '.deleted')), 'no tombstone');
  t.equal(tree.read('resource-r0/log-000000003-alpha'), undefined);
});

t.test('the emergency hole: links, the logfile after it, a stray empty logfile removed; idempotent', async (t) => {
  const dir = tempDir(t);
  const tree = new TreeStore(dir);
  tree.ensureDir('resource-r0');
  writeFileSync(join(dir, 'resource-r0', 'log-000000005-alpha'), Buffer.alloc(100));
  writeFileSync(join(dir, 'resource-r0', 'log-000000006-alpha'), ''); // log-rotate just before
  tree.write('resource-r0/maxnr', '6');
  tree.write('resource-r0/version-000000004-alpha', `${'0'.repeat(32)},log-000000004-alpha,0:`);
  const hole = planHole(tree, 'r0', { seq: 5, endPos: 100 });
  t.same(hole, { endedSeq: 5, endPos: 100, holeSeq: 16, nextSeq: 17 });
  writeHole(tree, 'r0', 'alpha', hole);
  const snapshot = () => Object.fromEntries(readdirSync(join(dir, 'resource-r0')).filter((n) => !n.startsWith('.')).sort().map((n) => [n, tree.readRaw(`resource-r0/${n}`)?.value ?? 'FILE']));
  const first = snapshot();
  t.equal(first['replay-alpha'], 'log-000000017-alpha,0,0', 'the replay link is past the hole');
  t.match(first['version-000000005-alpha'], /^[0-9a-f]{32},log-000000005-alpha,100:/, 'the ended logfile\'s final versionlink');
  t.equal(first['version-000000016-alpha'], `${'0'.repeat(32)},log-000000016-alpha,0:`, 'the zero versionlink of the hole');
  t.equal(first['log-000000016-alpha'], undefined, 'no logfile 16');
  t.equal(first['log-000000017-alpha'], 'FILE', 'the empty logfile after the hole');
  t.match(first['version-000000017-alpha'], new RegExp(`^[0-9a-f]{32},log-000000017-alpha,0:${'0'.repeat(32)},log-000000016-alpha,0$`), 'the chain goes on from the zero link');
  t.equal(first['log-000000006-alpha'], '.deleted', 'the stray empty logfile is tombstoned (so secondaries drop their copy too)');
  t.equal(first['maxnr'], '17');
  writeHole(tree, 'r0', 'alpha', hole);
  t.same(snapshot(), first, 'writing it again changes nothing');
});
