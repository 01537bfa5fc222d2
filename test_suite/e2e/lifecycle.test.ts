// A resource's life on one host, driven by marsadm against a real marsd: status links and
// view, log rotation and deletion, refusals while the device is open, a defective logfile
// refused at recovery and repaired with log-truncate, detach/attach, delete-resource.
import t from 'tap';
import { openSync, readSync, writeSync, closeSync, readdirSync, statSync, existsSync, readlinkSync, symlinkSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startHost } from '../helpers/cluster.js';
import { waitWritebackDone } from '../helpers/multi-host.js';
import { NbdClient, NbdError } from '../../kernel-shim/nbd-client.js';
import { TreeStore } from '../../common/tree/store.js';

const SIZE = 16 << 20;

t.test('resource lifecycle with marsadm', async (t) => {
  const h = await startHost(t, { host: 'alpha', sizeBytes: SIZE });
  await h.createResource('r0');
  await h.waitPrimary('r0');
  const resDir = join(h.marsDir, 'resource-r0');

  // Status as monitoring reads it.
  t.equal(h.actual('r0', 'is-primary'), '1');
  t.equal(h.actual('r0', 'socket'), h.socketPath('r0'));
  t.match(await h.marsadmOk(['view', 'r0']), /^r0 \[1\/1\] UpToDate Replicating DCASFR Primary alpha/);
  t.equal(await h.view('role', 'r0'), 'Primary');
  t.equal(await h.view('is-primary', 'r0'), '1');
  const json = JSON.parse(await h.marsadmOk(['view', 'r0', '--json']));
  t.match(json, { resource: 'r0', role: 'Primary', diskstate: 'UpToDate', isPrimary: true, size: SIZE });

  // Writes through NBD; the device stays open while we try the refused commands.
  const nbd = await NbdClient.connect(h.socketPath('r0'), 'r0');
  t.teardown(() => nbd.destroy());
  const data = randomBytes(1 << 20);
  await nbd.write(0, data);
  await nbd.flush();
  await h.until('open-count shows the connection', () => h.actual('r0', 'open-count') === '1', 10_000);
  for (const cmd of ['secondary', 'detach', 'down', 'delete-resource']) {
    const r = await h.marsadm([cmd, 'r0']);
    t.not(r.code, 0, `${cmd} refused while the device is open`);
    t.match(r.stderr, /in use .*unmount/, `${cmd}: ${r.stderr.trim()}`);
  }
  t.equal(h.actual('r0', 'is-primary'), '1', 'still primary after the refusals');

  // Rotation: a new logfile, the old one's final versionlink.
  const before = readdirSync(resDir).filter((n) => /^log-/.test(n)).sort();
  t.match(await h.marsadmOk(['log-rotate', 'r0']), /rotated from (log-\d{9}-alpha) to (log-\d{9}-alpha)/);
  const after = readdirSync(resDir).filter((n) => /^log-/.test(n)).sort();
  t.equal(after.length, before.length + 1);
  const oldName = before[before.length - 1]!;
  const oldSeq = oldName.slice(4, 13);
  const version = readlinkSync(join(resDir, `version-${oldSeq}-alpha`));
  t.match(version, new RegExp(`^[0-9a-f]{32},${oldName},${statSync(join(resDir, oldName)).size}:`), 'final versionlink carries the logfile length');
  t.match(await h.marsadmOk(['log-rotate', 'r0']), /is empty; nothing to rotate/);

  // Everything written back -> the old logfiles can go.
  await nbd.write(1 << 20, randomBytes(65536), { fua: true });
  await waitWritebackDone(h, 'r0', 20_000); // the file itself: the writeback-rest link may still read 0 from before
  await h.until('replay link on the newest logfile', () => (h.link('resource-r0/replay-alpha') ?? '').startsWith(after[after.length - 1]!), 20_000);
  const del = await h.marsadmOk(['log-delete', 'r0', '--force']);
  t.match(del, /deleted .*log-/);
  t.equal(h.link(`resource-r0/${oldName}`), '.deleted', 'the logfile became a tombstone');

  // secondary --force: the open connection gets EPERM for writes, never a silent discard.
  await h.marsadmOk(['secondary', 'r0', '--force']);
  t.equal(h.actual('r0', 'is-primary'), '0');
  let writeError: unknown;
  try {
    await nbd.write(0, randomBytes(4096));
  } catch (err) {
    writeError = err;
  }
  t.ok(writeError instanceof NbdError && writeError.errno === 1, `a write after stepping down fails with EPERM (${String(writeError)})`);
  t.same(await nbd.read(0, 4096), data.subarray(0, 4096), 'the open connection still reads the data');
  t.match(await h.view('role', 'r0'), /^RemainsPrimary$/, 'role while a client keeps the device open');
  nbd.destroy();
  await h.until('the last connection closed', () => h.actual('r0', 'open-count') === '0' && h.actual('r0', 'is-attached') === '0', 10_000);
  t.notOk(existsSync(h.socketPath('r0')), 'no export while not primary');
  t.match(await h.marsadmOk(['view', 'r0']), /Secondary \(none\)/);

  await h.marsadmOk(['primary', 'r0']);
  const again = await NbdClient.connect(h.socketPath('r0'), 'r0');
  t.same(await again.read(0, data.length), data, 'data survived the role changes');
  await again.disconnect();

  // detach / attach
  await h.until('connection gone', () => h.actual('r0', 'open-count') === '0', 10_000);
  await h.marsadmOk(['detach', 'r0']);
  t.equal(h.actual('r0', 'is-attached'), '0');
  t.match(await h.view('diskstate', 'r0'), /^Detached$/);
  await h.marsadmOk(['attach', 'r0']);
  await h.waitPrimary('r0');

  // delete-resource: the tree forgets the resource, the data device keeps its content.
  await h.marsadmOk(['delete-resource', 'r0']);
  t.equal(h.link('resource-r0/size'), '.deleted');
  t.match(await h.marsadmOk(['view']), /no resources/);
  t.equal(h.link('resource-r0/maxnr') !== undefined, true, 'maxnr is kept');
});

t.test('a defective logfile stops recovery with a clear status; log-truncate repairs it', async (t) => {
  const h = await startHost(t, { host: 'alpha', sizeBytes: SIZE });
  await h.createResource('r0');
  await h.waitPrimary('r0');
  const nbd = await NbdClient.connect(h.socketPath('r0'), 'r0');
  const first = randomBytes(256 << 10);
  await nbd.write(0, first, { fua: true });
  const second = randomBytes(256 << 10);
  await nbd.write(1 << 20, second, { fua: true });
  h.kill('SIGKILL');
  await h.waitExit();
  nbd.destroy();

  // Corrupt a payload byte of the last record of the newest logfile.
  const resDir = join(h.marsDir, 'resource-r0');
  const replay = readlinkSync(join(resDir, 'replay-alpha'));
  const logName = replay.split(',')[0]!;
  const logPath = join(resDir, logName);
  const size = statSync(logPath).size;
  t.ok(size > 8192, `the logfile ${logName} holds the writes (${size} bytes)`);
  // Flip the bits of the byte found there: writing a fixed value leaves a random payload
  // unchanged once in 256 runs, and recovery then rightly finds no defect.
  const fd = openSync(logPath, 'r+');
  const byte = Buffer.alloc(1);
  readSync(fd, byte, 0, 1, size - 36 - 100); // inside the last payload
  byte[0] = byte[0]! ^ 0xff;
  writeSync(fd, byte, 0, 1, size - 36 - 100);
  closeSync(fd);
  // Writeback may already have moved MINPOS past the record: point it back to the start of the
  // logfile so recovery must read the damaged record (replaying applied records is idempotent).
  const replayLink = join(resDir, 'replay-alpha');
  symlinkSync(`${logName},0,${size}`, `${replayLink}.new`);
  renameSync(`${replayLink}.new`, replayLink);

  await h.restart();
  await h.until('start refused', () => (h.actual('r0', 'replay-code') ?? '').startsWith('-'), 30_000);
  t.equal(h.actual('r0', 'is-primary'), '0', 'no export on a defective log');
  t.match(await h.view('diskstate', 'r0'), /^DefectiveLog\[code=-74\]$/);
  const err = await h.view('the-err-msg', 'r0');
  t.match(err, new RegExp(`${logName} at offset \\d+: bad-checksum`));
  t.match(err, /log-truncate r0/, 'the status says what to do');
  const view = await h.marsadmOk(['view', 'r0']);
  t.match(view, /ERROR: defective logfile/);
  const dump = await h.marsadm(['log-dump', logPath]);
  t.equal(dump.code, 1, 'log-dump exits 1 on a defect');

  const cut = await h.marsadmOk(['log-truncate', 'r0']);
  t.match(cut, /cut log-\d{9}-alpha at offset \d+ \(bad-checksum/);
  await h.waitPrimary('r0');
  const client = await NbdClient.connect(h.socketPath('r0'), 'r0');
  t.same(await client.read(0, first.length), first, 'records before the defect were applied');
  await client.disconnect();
  t.ok(readdirSync(resDir).some((n) => n.startsWith(`.damaged-${logName}`)), 'the damaged original is kept');
});

t.test('marsd reacts to a tree change at once (watcher), not only at its periodic scan', async (t) => {
  const h = await startHost(t, { host: 'alpha', sizeBytes: SIZE, extraArgs: ['--scan-interval-ms', '60000'] });
  await h.createResource('r0');
  await h.waitPrimary('r0');
  // An admin script flips the switch by hand, without marsadm's trigger.
  const tree = new TreeStore(h.marsDir);
  tree.write('resource-r0/todo-alpha/attach', '0');
  const t0 = Date.now();
  await h.until('detached', () => h.actual('r0', 'is-attached') === '0', 10_000);
  t.ok(Date.now() - t0 < 10_000, `reacted after ${Date.now() - t0} ms with a 60 s scan interval`);
});
