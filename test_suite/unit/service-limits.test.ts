// The pure parts of issue 14's limits: cron's rotation thresholds (thresh-logfiles /
// thresh-logsize), the sync bandwidth throttle, and the --dry-run tree that prints changes and
// makes none (on a real tree in a temporary directory).
import t from 'tap';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { rotationWorthwhile } from '../../marsadm/commands/logs.js';
import { throttleWaitMs, readSyncLimit } from '../../daemon/sync/sync-limit.js';
import { dryRunTree } from '../../marsadm/context.js';
import { TreeStore } from '../../common/tree/store.js';
import { tempDir } from '../helpers/tmp.js';

const th = { logfiles: 10, logsizeBytes: 5 << 20 };

t.test('cron rotates only when worthwhile', async (t) => {
  t.match(rotationWorthwhile(1, 0, th), /empty/, 'never an empty logfile');
  t.equal(rotationWorthwhile(3, 100, th), undefined, 'few logfiles: rotate');
  t.equal(rotationWorthwhile(9, 100, th), undefined, 'one below thresh-logfiles: rotate');
  t.match(rotationWorthwhile(10, 100, th), /thresh-logfiles 10.*thresh-logsize/, 'many small logfiles: not');
  t.equal(rotationWorthwhile(10, 5 << 20, th), undefined, 'many, but the current one is large: rotate');
  t.equal(rotationWorthwhile(50, 1, { logfiles: 0, logsizeBytes: 0 }), undefined, 'thresholds 0: always (but never empty)');
});

t.test('the sync throttle keeps the average at or below the limit', async (t) => {
  t.equal(throttleWaitMs(100 << 20, 10, 0), 0, '0 = unlimited');
  t.equal(throttleWaitMs(16 << 20, 0, 16 << 20), 1000, 'one second of data at once: wait a second');
  t.equal(throttleWaitMs(16 << 20, 1500, 16 << 20), 0, 'slower than the limit: no wait');
  t.equal(throttleWaitMs(32 << 20, 500, 8 << 20), 3500);
  for (let done = 1; done < 1e9; done *= 7) {
    const wait = throttleWaitMs(done, 100, 1 << 20);
    t.ok(done / ((100 + wait) / 1000) <= (1 << 20) * 1.0001, `rate after the wait within the limit (${done} bytes)`);
  }
});

t.test('readSyncLimit: missing or malformed is unlimited', async (t) => {
  const tree = new TreeStore(tempDir(t));
  t.equal(readSyncLimit(tree, 'alpha'), 0);
  tree.ensureDir('defaults-alpha');
  tree.write('defaults-alpha/sync-limit', 'lots');
  t.equal(readSyncLimit(tree, 'alpha'), 0);
  tree.write('defaults-alpha/sync-limit', '-5');
  t.equal(readSyncLimit(tree, 'alpha'), 0);
  tree.write('defaults-alpha/sync-limit', '1048576');
  t.equal(readSyncLimit(tree, 'alpha'), 1048576);
});

t.test('the dry-run tree prints every change and makes none', async (t) => {
  const dir = tempDir(t);
  const real = new TreeStore(dir);
  real.ensureDir('resource-r0');
  real.write('resource-r0/primary', 'alpha');
  const lines: string[] = [];
  const dry = dryRunTree(real, (l) => lines.push(l));
  const before = readdirSync(join(dir, 'resource-r0')).sort();
  t.equal(dry.value('resource-r0/primary'), 'alpha', 'reads go to the real tree');
  t.equal(dry.write('resource-r0/primary', '(none)'), true, 'a write that would change reports a change');
  t.equal(dry.remove('resource-r0/primary'), true);
  dry.ensureDir('resource-r9');
  dry.purge('resource-r0/x');
  dry.fsyncDir('resource-r0');
  t.same(lines, ['write resource-r0/primary -> (none) (now alpha)', 'remove resource-r0/primary', 'create directory resource-r9', 'purge resource-r0/x']);
  t.equal(real.value('resource-r0/primary'), 'alpha', 'nothing changed');
  t.same(readdirSync(join(dir, 'resource-r0')).sort(), before);
  t.notOk(real.exists('resource-r9'));
});
