// resize on the primary's write path, with real files and a real NBD server and client: the
// export (EmergencyBackend over TransactionLogger, as marsd runs it) follows a grown size link
// only once the data disk is large enough (a refusal is logged once), never shrinks, refuses
// writes beyond its size before the growth and takes them after it; a connection made before
// keeps the size it was told, a new one sees the new size; in emergency mode (writes straight
// to the disk) the growth holds as well.
import t from 'tap';
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DataDisk } from '../../common/disk/data-disk.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { LogWriter } from '../../daemon/logger/log-writer.js';
import { TransactionLogger } from '../../daemon/logger/transaction-logger.js';
import { EmergencyBackend } from '../../daemon/logger/emergency-backend.js';
import { ExportGrowth } from '../../daemon/control/export-growth.js';
import { NbdServer } from '../../kernel-shim/nbd-server.js';
import { NbdClient } from '../../kernel-shim/nbd-client.js';
import { tempDir } from '../helpers/tmp.js';

const MiB = 1 << 20;

t.test('the export grows with the size link, within the disk, for new connections', async (t) => {
  const dir = tempDir(t);
  const diskPath = join(dir, 'disk.img');
  writeFileSync(diskPath, Buffer.alloc(MiB));
  const disk = await DataDisk.open(diskPath);
  const logger = new TransactionLogger({
    disk, sizeBytes: MiB, clock: new LamportClock(), memLimitBytes: MiB, onFatal: (e) => t.fail(e.message),
    writer: await LogWriter.openFresh(join(dir, 'log-000000001-alpha'), 1),
  });
  const backend = new EmergencyBackend({ disk, logger, log: () => undefined, onEnter: async () => undefined });
  const server = new NbdServer({ log: () => undefined });
  const socketPath = join(dir, 'r0.sock');
  await server.addExport('r0', backend, { socketPath });
  const logs: string[] = [];
  const growth = new ExportGrowth('r0', (level, msg) => logs.push(`${level} ${msg}`));
  const before = await NbdClient.connect(socketPath, 'r0');
  t.teardown(async () => {
    await before.disconnect().catch(() => undefined);
    await server.close();
    await backend.stop().catch(() => undefined);
    await disk.close();
  });
  const block = Buffer.alloc(4096, 7);

  await t.rejects(backend.write(MiB + 4096, block, false), /outside the device of 1048576 bytes/, 'beyond the export: refused before the growth');
  t.equal(growth.follow(backend, disk, 2 * MiB), false, 'the disk is too small: no growth');
  t.equal(growth.follow(backend, disk, 2 * MiB), false);
  t.equal(backend.sizeBytes, MiB);
  t.equal(logs.filter((l) => l.startsWith('error') && /only 1048576/.test(l)).length, 1, 'the refusal is logged once');

  truncateSync(diskPath, 2 * MiB); // the admin grew the disk
  t.equal(growth.follow(backend, disk, 2 * MiB), true, 'grown');
  t.equal(backend.sizeBytes, 2 * MiB);
  t.equal(logger.sizeBytes, 2 * MiB, 'the logger\'s bound grew too');
  t.equal(growth.follow(backend, disk, MiB), false, 'a smaller size link never shrinks the export');
  t.equal(backend.sizeBytes, 2 * MiB);

  const after = await NbdClient.connect(socketPath, 'r0');
  t.equal(after.sizeBytes, 2 * MiB, 'a new connection sees the new size');
  t.equal(before.sizeBytes, MiB, 'a connection made before keeps the size it was told');
  await after.write(MiB + 4096, block);
  await after.flush();
  t.ok((await after.read(MiB + 4096, 4096)).equals(block), 'a write into the new area reads back');
  await after.disconnect();

  await backend.enter('test: emergency');
  t.equal(backend.mode !== 'logging', true, 'emergency mode');
  truncateSync(diskPath, 3 * MiB);
  t.equal(growth.follow(backend, disk, 3 * MiB), true, 'grows in emergency mode too');
  await backend.write(2 * MiB + 8192, block, true);
  await t.rejects(backend.write(3 * MiB, block, false), /outside the device of 3145728 bytes/, 'beyond the grown export: refused');
});
