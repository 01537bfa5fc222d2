// The listing a host offers its peers (PeerService.getents) must always be sendable: a link
// made by hand in /mars with a value no peer accepts is left out and reported once, instead of
// failing the listing (which, with invariant failures fatal, would stop marsd on every pull).
import t from 'tap';
import { mkdirSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { PeerService } from '../../daemon/serve/peer-service.js';
import { encodeEntsPayload, parseEntsPayload } from '../../daemon/net/messages.js';
import { tempDir } from '../helpers/tmp.js';

t.test('a hand-made link with a value over the wire limit is not offered, said once; the listing encodes', async (t) => {
  const dir = tempDir(t);
  const tree = new TreeStore(dir, new LamportClock());
  tree.write('uuid', 'alpha_1.0');
  mkdirSync(join(dir, 'resource-r0'));
  tree.write('resource-r0/size', '4096');
  symlinkSync('x'.repeat(2000), join(dir, 'resource-r0', 'primary'));
  const warnings: string[] = [];
  const service = new PeerService({
    tree, host: 'alpha',
    activeLogEnd: () => undefined, primaryPosition: () => undefined,
    onTreeChanged: () => undefined, onNotify: () => undefined,
    log: (level, msg) => { if (level === 'warn') warnings.push(msg); },
  });
  for (let pull = 0; pull < 2; pull++) {
    const { entries, logs } = await service.getents('beta');
    t.same(entries.map((e) => e.p).sort(), ['resource-r0/size', 'uuid'], `pull ${pull + 1}: the valid links`);
    t.doesNotThrow(() => parseEntsPayload(encodeEntsPayload({ entries, logs }, 'each-checked-with-entrySchema'), entries.length), `pull ${pull + 1}: sendable, a peer accepts it`);
  }
  t.equal(warnings.length, 1, 'reported once');
  // A link offered before, then changed by hand to a value no peer accepts: checked again.
  unlinkSync(join(dir, 'resource-r0', 'size'));
  symlinkSync('y'.repeat(1500), join(dir, 'resource-r0', 'size'));
  tree.changed('resource-r0');
  const { entries, logs } = await service.getents('beta');
  t.same(entries.map((e) => e.p).sort(), ['uuid'], 'a changed value is checked again, not taken from the last listing');
  t.doesNotThrow(() => parseEntsPayload(encodeEntsPayload({ entries, logs }, 'each-checked-with-entrySchema'), entries.length));
  t.match(warnings[0] ?? '', /resource-r0\/primary is not offered to peers/);
});

t.test('names that are no tree path (lost+found of an ext4 /mars) are left out of the listing', async (t) => {
  const dir = tempDir(t);
  const tree = new TreeStore(dir, new LamportClock());
  tree.write('uuid', 'alpha_1.0');
  mkdirSync(join(dir, 'lost+found'));
  mkdirSync(join(dir, 'resource-r0'));
  tree.write('resource-r0/size', '4096');
  symlinkSync('junk', join(dir, 'resource-r0', 'a b'));
  const service = new PeerService({
    tree, host: 'alpha',
    activeLogEnd: () => undefined, primaryPosition: () => undefined,
    onTreeChanged: () => undefined, onNotify: () => undefined,
    log: () => undefined,
  });
  // A directory named like a resource but with a name no resource may have, holding a logfile.
  const oddRes = `resource-${'x'.repeat(70)}`;
  mkdirSync(join(dir, oddRes));
  writeFileSync(join(dir, oddRes, 'log-000000001-alpha'), 'x');
  writeFileSync(join(dir, 'resource-r0', 'log-000000001-alpha'), 'abc');
  const { entries, logs } = await service.getents('beta');
  t.same(entries.map((e) => e.p).sort(), ['resource-r0/size', 'uuid']);
  t.same(logs, [{ res: 'r0', name: 'log-000000001-alpha', sizeBytes: 0 }], 'only the logfile of a valid resource (no versionlink yet: 0 bytes offered)');
  t.doesNotThrow(() => parseEntsPayload(encodeEntsPayload({ entries, logs }, 'each-checked-with-entrySchema'), entries.length), 'the listing encodes');
});
