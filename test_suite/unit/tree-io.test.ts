// The listing a host offers its peers (propagate/tree-io.ts collectEntries) must always be
// sendable: a link made by hand in /mars with a value no peer accepts is left out, instead of
// failing the listing (which, with invariant failures fatal, would stop marsd on every pull).
import t from 'tap';
import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { collectEntries } from '../../daemon/propagate/tree-io.js';
import { encodeEntsPayload } from '../../daemon/net/messages.js';
import { tempDir } from '../helpers/tmp.js';

t.test('a hand-made link with a value over the wire limit is not offered; the listing encodes', async (t) => {
  const dir = tempDir(t);
  const tree = new TreeStore(dir, new LamportClock());
  tree.write('uuid', 'alpha_1.0');
  mkdirSync(join(dir, 'resource-r0'));
  tree.write('resource-r0/size', '4096');
  symlinkSync('x'.repeat(2000), join(dir, 'resource-r0', 'primary'));
  const { entries, logs } = collectEntries(tree, (_res, _name, bytes) => bytes);
  t.same(entries.map((e) => e.p).sort(), ['resource-r0/size', 'uuid']);
  t.doesNotThrow(() => encodeEntsPayload({ entries, logs }));
});
