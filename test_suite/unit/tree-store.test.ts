import t from 'tap';
import { lstatSync, mkdirSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore, TOMBSTONE } from '../../common/tree/store.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { NameError, validHost, validResource, validTreePath } from '../../common/tree/names.js';
import { resPaths } from '../../common/tree/paths.js';
import { tempDir } from '../helpers/tmp.js';

t.test('write is atomic: value and stamp land together, no temporary links remain', async (t) => {
  const dir = tempDir(t);
  const tree = new TreeStore(dir);
  const stamp = 1_700_000_000_123_456;
  t.equal(tree.write('primary', 'alpha', { stampUs: stamp }), true);
  t.equal(readlinkSync(join(dir, 'primary')), 'alpha');
  t.same(tree.read('primary'), { value: 'alpha', stampUs: stamp }, 'microsecond stamp survives the mtime round trip');
  t.same(readdirSync(dir).filter((n) => n.startsWith('.tmp')), []);
  t.ok(lstatSync(join(dir, 'primary')).isSymbolicLink());
});

t.test('ordered writes: an older stamp never overwrites a newer one', async (t) => {
  const tree = new TreeStore(tempDir(t));
  tree.write('size', '100', { stampUs: 2_000_000 });
  t.equal(tree.write('size', '50', { stampUs: 1_000_000 }), false, 'older write refused');
  t.equal(tree.value('size'), '100');
  t.equal(tree.write('size', '50', { stampUs: 2_000_000 }), false, 'equal stamp refused');
  t.equal(tree.write('size', '200', { stampUs: 3_000_000 }), true, 'newer write accepted');
  t.equal(tree.value('size'), '200');
});

t.test('a local write without a stamp always gets a newer one (Lamport clock)', async (t) => {
  const clock = new LamportClock(() => 1_000_000); // a real clock stuck in the past
  const tree = new TreeStore(tempDir(t), clock);
  tree.write('primary', 'beta', { stampUs: 5_000_000_000 }); // from a peer far ahead
  t.equal(tree.write('primary', 'alpha'), true);
  const entry = tree.read('primary')!;
  t.equal(entry.value, 'alpha');
  t.ok(entry.stampUs > 5_000_000_000, 'the clock moved past the observed stamp');
});

t.test('onlyIfChanged skips rewriting the same value', async (t) => {
  const tree = new TreeStore(tempDir(t));
  tree.write('x', '1');
  const before = tree.read('x')!.stampUs;
  t.equal(tree.write('x', '1', { onlyIfChanged: true }), false);
  t.equal(tree.read('x')!.stampUs, before);
  t.equal(tree.write('x', '2', { onlyIfChanged: true }), true);
});

t.test('tombstones: delete reads as absent, keeps a newer stamp, replaces regular files', async (t) => {
  const dir = tempDir(t);
  const tree = new TreeStore(dir);
  tree.write('primary', 'alpha');
  t.equal(tree.remove('primary'), true);
  t.equal(tree.read('primary'), undefined);
  t.equal(tree.readRaw('primary')?.deleted, true);
  t.equal(readlinkSync(join(dir, 'primary')), TOMBSTONE);
  t.equal(tree.remove('primary'), false, 'deleting twice changes nothing');
  t.equal(tree.remove('never-existed'), false);
  mkdirSync(join(dir, 'resource-r0'));
  writeFileSync(join(dir, 'resource-r0', 'log-000000001-alpha'), 'data');
  t.equal(tree.remove('resource-r0/log-000000001-alpha'), true, 'a logfile is replaced by its tombstone');
  t.ok(lstatSync(join(dir, 'resource-r0', 'log-000000001-alpha')).isSymbolicLink());
  const stamp = tree.readRaw('primary')!.stampUs;
  t.equal(tree.write('primary', 'old', { stampUs: stamp - 1 }), false, 'an older value cannot resurrect a deleted link');
});

t.test('durable writes fsync the directory (and still work)', async (t) => {
  const tree = new TreeStore(tempDir(t));
  t.equal(tree.write('uuid', 'alpha_1', { durable: true }), true);
  t.equal(tree.value('uuid'), 'alpha_1');
});

t.test('names: traversal, separators, empty and over-long names are rejected', async (t) => {
  for (const bad of ['../x', 'a/b', '', '.', '..', '-lead', 'x'.repeat(64), 'a b', 'a\0b', 'ä']) {
    t.throws(() => validHost(bad), NameError, `host ${JSON.stringify(bad)}`);
    t.throws(() => validResource(bad), NameError, `resource ${JSON.stringify(bad)}`);
  }
  for (const good of ['alpha', 'a', 'host-1', 'DB_2', 'x'.repeat(63)]) {
    t.equal(validHost(good), good);
  }
  t.throws(() => resPaths.replay('../etc', 'alpha'), NameError);
  t.throws(() => resPaths.data('r0', 'a/b'), NameError);
  for (const bad of ['../x', 'a/../../b', '/abs', 'a//b', 'a/b/c/d', '.tmp']) {
    t.throws(() => validTreePath(bad), NameError, `path ${JSON.stringify(bad)}`);
  }
  const tree = new TreeStore(tempDir(t));
  t.throws(() => tree.write('../escape', 'x'), NameError, 'the store refuses escaping paths');
  t.throws(() => tree.write('ok', ''), /invalid value/, 'empty values are refused');
});

t.test('regression: a stamp reads back exactly as written, so a propagated link is written once', async (t) => {
  // lutimes went through a double of seconds that libuv truncates to the microsecond: about
  // half of all stamps read back 1 µs lower, so every pull found the peer's stamp newer and
  // rewrote the link (idle daemons rewrote thousands of links a minute).
  const dir = tempDir(t);
  const writer = new TreeStore(dir);
  const base = 1_796_526_525_888_001; // a stamp that read back as ...888000
  const wrong: string[] = [];
  for (let i = 0; i < 500; i++) {
    const stampUs = base + i * 1_000_003;
    writer.write(`r${i}`, 'v', { stampUs });
    const back = Number((lstatSync(join(dir, `r${i}`), { bigint: true }).mtimeNs + 500n) / 1000n);
    if (back !== stampUs) wrong.push(`${stampUs} read back as ${back}`);
  }
  t.same(wrong.slice(0, 5), [], `every stamp reads back as written (${wrong.length} of 500 did not)`);
  const fresh = new TreeStore(dir);
  t.equal(fresh.read('r0')?.stampUs, base, 'through the store too');
  t.equal(fresh.write('r0', 'v', { stampUs: base }), false, 'the same value with the same stamp again is no write');
});

t.test('readBatch: each directory is checked once, and the batch sees its own writes', async (t) => {
  const tree = new TreeStore(tempDir(t));
  tree.ensureDir('d');
  for (let i = 0; i < 20; i++) tree.write(`d/l${i}`, `v${i}`);
  tree.value('d/l0'); // listing loaded
  const before = tree.listingChecks;
  for (let i = 0; i < 20; i++) tree.value(`d/l${i}`);
  t.equal(tree.listingChecks - before, 20, 'outside a batch every read checks the directory');
  const inBatch = tree.listingChecks;
  const seen = tree.readBatch(() => {
    const values = Array.from({ length: 20 }, (_, i) => tree.value(`d/l${i}`));
    tree.write('d/l3', 'changed');
    values.push(tree.value('d/l3'));
    return values;
  });
  t.equal(seen[19], 'v19');
  t.equal(seen[20], 'changed', 'a write inside the batch is read back');
  t.equal(tree.listingChecks - inBatch, 2, 'one check, and one more after the write');
  tree.value('d/l0');
  t.equal(tree.listingChecks - inBatch, 3, 'after the batch reads check again');
});
