// The scale bench's offline tree generator (test_suite/bench/scale-tree.ts): a small tree must
// be one marsd would have written. Every logfile decodes with the scanner, each versionlink is
// the chain function's value over the host's own copy of the logfile, the two hosts' chains
// agree (no divergence by the split-brain check), the replay links stand at the end of the
// last logfile on both hosts, and each data file holds what replaying the logfiles gives.
import t from 'tap';
import { lstatSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_SCALE_TREE, generateScaleTrees, scaleResourceNames, type ScaleTreeSpec } from '../bench/scale-tree.js';
import { tempDir } from '../helpers/tmp.js';
import { TreeStore } from '../../common/tree/store.js';
import { resPaths } from '../../common/tree/paths.js';
import { initialVersionLinks, nextVersionLink, parseReplayLink } from '../../common/log/links.js';
import { contentDigestOf } from '../../common/log/content-digest.js';
import { scanBuffer } from '../../common/log/scanner.js';
import { chainsFrom, findDivergence } from '../../common/resource/split-brain.js';
import { VERSION_NAME } from '../../common/tree/log-names.js';

const R = 2;
const L = 5;
const spec = (dir: string, over: Partial<ScaleTreeSpec> = {}): ScaleTreeSpec => ({
  ...DEFAULT_SCALE_TREE, recordsPerLogfile: 3, dir,
  addresses: new Map([['h1', '127.0.0.2:7001'], ['h2', '127.0.0.3:7002']]),
  resources: R, logfilesPerResource: L, ...over,
});

/** The first logfile number whose versionlink on `host` is not the chain function's value over that host's copy; 0 if all are. */
function firstBadLink(tree: TreeStore, res: string, host: string, origin: string, count: number): number {
  let prev = tree.value(resPaths.version(res, 0, origin)) ?? '';
  for (let seq = 1; seq <= count; seq++) {
    const bytes = readFileSync(tree.abs(resPaths.log(res, seq, origin)));
    const want = nextVersionLink(prev, seq, origin, bytes.length, contentDigestOf(bytes));
    const have = tree.value(resPaths.version(res, seq, host));
    if (have !== want) return seq;
    prev = want;
  }
  return 0;
}

t.test(`a generated ${R} x ${L} tree is what marsd would have written`, async (t) => {
  const dir = tempDir(t, 'mars-scale-tree-');
  const s = spec(dir);
  const out = generateScaleTrees(s);
  t.same(out.resources, scaleResourceNames(R));
  t.equal(out.hosts.length, 2);
  const trees = out.hosts.map((h) => new TreeStore(h.marsDir));
  for (const [i, tree] of trees.entries()) {
    const host = out.hosts[i]!.name;
    t.equal(tree.value('userspace/host'), host, `${host}'s tree says whose it is`);
    for (const res of out.resources) {
      // The chain starts at create-resource's fake link 0.
      t.equal(tree.value(resPaths.version(res, 0, 'h1')), initialVersionLinks(1, 'h1').previous.value, `${host} ${res}: chain start`);
      t.equal(firstBadLink(tree, res, 'h1', 'h1', L), 0, `${host} ${res}: h1's versionlinks verify over ${host}'s logfiles`);
      t.equal(firstBadLink(tree, res, 'h2', 'h1', L), 0, `${host} ${res}: h2's versionlinks verify over ${host}'s logfiles`);
      const entries = tree.list(resPaths.dir(res)).flatMap((n) => {
        const m = VERSION_NAME.exec(n);
        return m ? [{ seq: Number(m[1]), host: m[2]!, value: tree.value(`${resPaths.dir(res)}/${n}`)! }] : [];
      });
      t.equal(entries.filter((e) => e.host === 'h2').length, L, `${host} ${res}: h2 has a versionlink per logfile`);
      t.equal(findDivergence(chainsFrom(entries), ['h1', 'h2']), undefined, `${host} ${res}: the split-brain check finds no divergence`);

      // Every logfile decodes to the expected records and ends cleanly.
      const image = Buffer.alloc(s.deviceSizeBytes);
      let lastBytes = 0;
      for (let seq = 1; seq <= L; seq++) {
        const bytes = readFileSync(tree.abs(resPaths.log(res, seq, 'h1')));
        const scan = scanBuffer(bytes, 0, { atEof: true, expectedSeqNr: 1 });
        if (scan.stop.kind !== 'clean-end' || scan.records.length !== s.recordsPerLogfile) {
          t.fail(`${host} ${res} log ${seq}: ${scan.records.length} records, stop ${scan.stop.kind} ${scan.stop.detail}`);
        }
        for (const r of scan.records) r.payload.copy(image, r.devicePos);
        lastBytes = bytes.length;
      }
      t.pass(`${host} ${res}: ${L} logfiles scanned`);
      t.same(parseReplayLink(tree.value(resPaths.replay(res, host))!), { seq: L, origin: 'h1', minPos: lastBytes, len: 0 }, `${host} ${res}: own replay link at the end of the last logfile`);
      t.equal(tree.value(resPaths.syncstatus(res, 'h2')), String(s.deviceSizeBytes), `${host} ${res}: h2's sync is complete`);
      t.equal(tree.value(resPaths.primary(res)), 'h1');
      const data = readFileSync(out.hosts[i]!.dataPath(res));
      t.equal(data.length, s.deviceSizeBytes, `${host} ${res}: data file has the device size`);
      t.ok(data.equals(image), `${host} ${res}: data file equals the replay of the logfiles`);
    }
  }
  // A propagated link carries the same stamp in both trees (a pull finds nothing newer).
  const rel = resPaths.version(out.resources[1]!, 3, 'h2');
  t.equal(lstatSync(trees[0]!.abs(rel)).mtimeMs, lstatSync(trees[1]!.abs(rel)).mtimeMs, 'the same stamp on both hosts');
});

t.test('the chain check sees one changed byte in a logfile copy', async (t) => {
  const dir = tempDir(t, 'mars-scale-tree-');
  const out = generateScaleTrees(spec(dir, { resources: 1, logfilesPerResource: 4 }));
  const tree = new TreeStore(out.hosts[1]!.marsDir);
  t.equal(firstBadLink(tree, 'r0', 'h2', 'h1', 4), 0, 'intact before');
  const path = tree.abs(resPaths.log('r0', 3, 'h1'));
  const bytes = readFileSync(path);
  bytes[60]! ^= 0xff;
  writeFileSync(path, bytes);
  t.equal(firstBadLink(tree, 'r0', 'h2', 'h1', 4), 3, 'logfile 3 no longer matches its versionlink');
  const scan = scanBuffer(bytes, 0, { atEof: true, expectedSeqNr: 1 });
  t.ok(scan.stop.defect, `the scanner reports a defect (${scan.stop.kind})`);
});

t.test('the generator refuses bad specs and non-empty directories', async (t) => {
  const dir = tempDir(t, 'mars-scale-tree-');
  t.throws(() => generateScaleTrees(spec(join(dir, 'a'), { resources: 0 })), /resources must be an integer from 1/);
  t.throws(() => generateScaleTrees(spec(join(dir, 'b'), { payloadBytes: 5000 })), /record payload bytes/);
  t.throws(() => generateScaleTrees(spec(join(dir, 'c'), { deviceSizeBytes: 100_000 })), /device size/);
  t.throws(() => generateScaleTrees(spec(join(dir, 'd'), { addresses: new Map([['h1', '127.0.0.2:1']]) })), /no address for host h2/);
  generateScaleTrees(spec(join(dir, 'e'), { resources: 1, logfilesPerResource: 1 }));
  t.throws(() => generateScaleTrees(spec(join(dir, 'e'), { resources: 1, logfilesPerResource: 1 })), /not empty/);
  t.same(readdirSync(join(dir, 'e')).sort(), ['h1', 'h2']);
});
