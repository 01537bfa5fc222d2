// An idle resource's status update writes nothing and reads only cached listings (issue 11):
// the status publisher (daemon/control/status-publisher.ts) compares with actual-HOST's cached
// listing, and a running primary's replay link and versionlink (daemon/control/
// primary-links.ts) are neither written nor computed again while unchanged. Each change, also
// one made behind marsd's back, is written at the next update. Real files in a temp dir; time
// is a simulated clock.
import t, { type Test } from 'tap';
import { appendFileSync, lstatSync, mkdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { RACY_WINDOW_MS } from '../../common/tree/dir-cache.js';
import { resPaths } from '../../common/tree/paths.js';
import { logName } from '../../common/tree/log-names.js';
import { formatReplayLink, nextVersionLink } from '../../common/log/links.js';
import { logDigests } from '../../common/log/content-digest.js';
import { StatusPublisher } from '../../daemon/control/status-publisher.js';
import { PrimaryLinks } from '../../daemon/control/primary-links.js';
import { SimClock } from '../helpers/sim-clock.js';
import { tempDir } from '../helpers/tmp.js';

function age(dir: string): void {
  const seconds = (Date.now() - 10 * RACY_WINDOW_MS) / 1000;
  utimesSync(dir, seconds, seconds);
}

/** The stamp (mtime) of a link: changes with every write. */
const stamp = (tree: TreeStore, rel: string) => lstatSync(tree.abs(rel), { bigint: true }).mtimeNs;

function setup(t: Test) {
  const root = tempDir(t);
  const tree = new TreeStore(root);
  mkdirSync(join(root, 'resource-r0'));
  tree.write(resPaths.size('r0'), '1048576');
  return { root, tree };
}

t.test('status publisher: an unchanged state writes nothing; a change, also behind our back, is written at the next update', async (t) => {
  const { root, tree } = setup(t);
  const clock = new SimClock();
  let links: Record<string, string> = { 'is-primary': '0', 'replay-code': '0' };
  let alsoCalls = 0;
  const warnings: string[] = [];
  const pub = new StatusPublisher({
    tree, res: 'r0', host: 'h1', clock, log: (_l, m) => warnings.push(m),
    links: () => links, also: () => { alsoCalls++; }, actsizeBytes: () => 4096,
  });
  pub.publish(true);
  t.equal(tree.value(resPaths.actual('r0', 'h1', 'is-primary')), '0');
  t.equal(tree.value(resPaths.actsize('r0', 'h1')), '4096');
  const actualDir = join(root, 'resource-r0', 'actual-h1');
  age(actualDir);
  age(join(root, 'resource-r0'));
  tree.changed('resource-r0/actual-h1');
  tree.changed('resource-r0');
  const stamps = () => [stamp(tree, resPaths.actual('r0', 'h1', 'is-primary')), stamp(tree, resPaths.actual('r0', 'h1', 'replay-code')), stamp(tree, resPaths.actsize('r0', 'h1'))];
  const before = stamps();
  pub.publish(true);
  const checks = tree.listingChecks;
  pub.publish(true);
  t.same(stamps(), before, 'nothing written');
  t.ok(tree.listingChecks - checks <= 2, `one check per directory (${tree.listingChecks - checks}: actual-h1 and the resource directory)`);
  t.equal(alsoCalls, 3, 'the primary\'s links are asked every time');

  links = { 'is-primary': '1', 'replay-code': '0' };
  pub.publish(true);
  t.equal(tree.value(resPaths.actual('r0', 'h1', 'is-primary')), '1', 'a changed value is written');
  t.equal(stamp(tree, resPaths.actual('r0', 'h1', 'replay-code')), before[1], 'the unchanged one is not');

  // Behind marsd's back: another value, the link removed, the directory removed.
  const other = new TreeStore(root);
  other.write(resPaths.actual('r0', 'h1', 'replay-code'), '-5');
  pub.publish(true);
  t.equal(tree.value(resPaths.actual('r0', 'h1', 'replay-code')), '0', 'a value changed by someone else is put back');
  other.remove(resPaths.actual('r0', 'h1', 'is-primary'));
  pub.publish(true);
  t.equal(tree.value(resPaths.actual('r0', 'h1', 'is-primary')), '1', 'a deleted link is written again');
  rmSync(actualDir, { recursive: true });
  pub.publish(true);
  t.equal(tree.value(resPaths.actual('r0', 'h1', 'is-primary')), '1', 'a removed directory is made again');
  t.same(warnings, []);
});

t.test('primary links: unchanged, neither written nor computed again; a grown logfile and a link changed behind our back are written', async (t) => {
  const { root, tree } = setup(t);
  const log = join(root, 'resource-r0', logName(1, 'h1'));
  writeFileSync(log, Buffer.alloc(100, 1));
  const links = new PrimaryLinks(tree, 'r0', 'h1');
  const expected = (logPos: number) => nextVersionLink('', 1, 'h1', logPos, logDigests.digestAt(log, logPos));
  links.publish({ seq: 1, minPos: 100, lenBytes: 0 }, 1, 100, false);
  t.equal(tree.value(resPaths.version('r0', 1, 'h1')), expected(100));
  t.equal(tree.value(resPaths.replay('r0', 'h1')), formatReplayLink({ seq: 1, origin: 'h1', minPos: 100, len: 0 }));
  t.equal(links.computed, 1);
  const stamps = () => [stamp(tree, resPaths.version('r0', 1, 'h1')), stamp(tree, resPaths.replay('r0', 'h1'))];
  const before = stamps();
  for (let i = 0; i < 5; i++) links.publish({ seq: 1, minPos: 100, lenBytes: 0 }, 1, 100, false);
  t.equal(links.computed, 1, 'not computed again');
  t.same(stamps(), before, 'nothing written');

  appendFileSync(log, Buffer.alloc(50, 2));
  links.publish({ seq: 1, minPos: 100, lenBytes: 50 }, 1, 150, false);
  t.equal(tree.value(resPaths.version('r0', 1, 'h1')), expected(150), 'the new LOGPOS');
  t.equal(tree.value(resPaths.replay('r0', 'h1')), formatReplayLink({ seq: 1, origin: 'h1', minPos: 100, len: 50 }));

  const other = new TreeStore(root);
  other.write(resPaths.version('r0', 1, 'h1'), expected(100));
  other.write(resPaths.replay('r0', 'h1'), formatReplayLink({ seq: 1, origin: 'h1', minPos: 0, len: 0 }));
  links.publish({ seq: 1, minPos: 100, lenBytes: 50 }, 1, 150, false);
  t.equal(tree.value(resPaths.version('r0', 1, 'h1')), expected(150), 'a versionlink changed by someone else is written again');
  t.equal(tree.value(resPaths.replay('r0', 'h1')), formatReplayLink({ seq: 1, origin: 'h1', minPos: 100, len: 50 }), 'so is the replay link');

  // A previous versionlink that changed changes this one's value (it chains over it).
  const prev = nextVersionLink('', 0, 'h1', 0, '0'.repeat(64));
  other.write(resPaths.version('r0', 0, 'h1'), prev);
  links.publish({ seq: 1, minPos: 100, lenBytes: 50 }, 1, 150, false);
  t.equal(tree.value(resPaths.version('r0', 1, 'h1')), nextVersionLink(prev, 1, 'h1', 150, logDigests.digestAt(log, 150)));
});
