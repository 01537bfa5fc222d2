// Read handles of data disks shared by the sync requests in flight (daemon/serve/shared-handles.ts):
// concurrent users of a path get one handle, the last one to end closes it, a failed open
// reaches every waiting user and leaves nothing behind. Real files and descriptors.
import t from 'tap';
import { writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.js';
import { SharedReadHandles } from '../../daemon/serve/shared-handles.js';
import type { FileHandle } from 'node:fs/promises';

const openFds = () => readdirSync('/proc/self/fd').length;

t.test('users in flight share one handle; the last one closes it', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'disk.img');
  writeFileSync(path, 'abcdefgh');
  const handles = new SharedReadHandles();
  const before = openFds();
  const seen: FileHandle[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  const users = [0, 1, 2].map((i) => handles.with(path, async (h) => {
    seen.push(h);
    await gate;
    const b = Buffer.alloc(1);
    await h.read(b, 0, 1, i);
    return b.toString();
  }));
  while (seen.length < 3) await new Promise((r) => setImmediate(r));
  t.equal(new Set(seen).size, 1, 'one handle for the three users');
  t.equal(handles.openCount, 1);
  t.equal(openFds(), before + 1, 'one descriptor open');
  release();
  t.same(await Promise.all(users), ['a', 'b', 'c']);
  t.equal(handles.openCount, 0, 'closed after the last user');
  t.equal(openFds(), before, 'no descriptor left open');
  const again = await handles.with(path, async (h) => h);
  t.not(again, seen[0], 'a later user opens a new handle');
});

t.test('a failed open fails every waiting user and keeps nothing', async (t) => {
  const dir = tempDir(t);
  const handles = new SharedReadHandles();
  const missing = join(dir, 'missing.img');
  let used = 0;
  const results = await Promise.allSettled([0, 1].map(() => handles.with(missing, async () => { used++; })));
  t.same(results.map((r) => r.status), ['rejected', 'rejected']);
  t.match((results[0] as PromiseRejectedResult).reason, { code: 'ENOENT' });
  t.equal(used, 0, 'no user ran');
  t.equal(handles.openCount, 0);
  writeFileSync(missing, 'x');
  t.equal(await handles.with(missing, async () => 'ok'), 'ok', 'the path opens once it exists');
});

t.test('a user that throws still releases the handle', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'disk.img');
  writeFileSync(path, 'x');
  const handles = new SharedReadHandles();
  const before = openFds();
  await t.rejects(handles.with(path, async () => { throw new Error('boom'); }), /boom/);
  t.equal(handles.openCount, 0);
  t.equal(openFds(), before);
});
