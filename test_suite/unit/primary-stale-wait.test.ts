// `marsadm primary` waits until this host's marsd has started the resource. When that marsd
// stops during the wait (the torture runner's kill-during-handover kills it), its last status
// link `primary-wait` ("OK") stays behind; the timeout message quoted it ("... but not yet
// active: OK.") where it must say that marsd is not running.
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Adm, AdmError } from '../../marsadm/context.js';
import { primary } from '../../marsadm/commands/role.js';
import { acquireDaemonLock } from '../../common/lock.js';
import { resPaths } from '../../common/tree/paths.js';
import { waitFor } from '../helpers/wait.js';

t.test('marsd stopped while primary --force waited: the timeout names the stopped marsd, not its stale "OK"', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'primary-stale-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const marsDir = join(dir, 'mars');
  mkdirSync(marsDir, { mode: 0o700 });
  const adm = new Adm({ marsDir, host: 'beta', force: true, timeout: '3' }, () => undefined);
  const { tree } = adm;
  tree.write('uuid', 'u-1');
  tree.ensureDir('ips');
  for (const h of ['alpha', 'beta']) tree.write(`ips/ip-${h}`, '127.0.0.1:7000');
  tree.ensureDir('resource-r0');
  tree.write(resPaths.size('r0'), String(1 << 20));
  tree.write(resPaths.primary('r0'), 'alpha');
  for (const h of ['alpha', 'beta']) tree.write(resPaths.data('r0', h), join(dir, 'disk'));
  tree.write(resPaths.syncstatus('r0', 'beta'), String(1 << 20));
  tree.ensureDir(resPaths.todoDir('r0', 'beta'));
  tree.ensureDir(resPaths.actualDir('r0', 'beta'));
  tree.write(resPaths.actual('r0', 'beta', 'is-primary'), '0');
  tree.write(resPaths.actual('r0', 'beta', 'primary-wait'), 'OK');

  // "marsd" holds the lock until the command has moved the role, then stops.
  const lock = acquireDaemonLock(marsDir);
  let released = false;
  const stopDaemon = waitFor('the role moved', () => tree.value(resPaths.primary('r0')) === 'beta', 10_000)
    .then(() => { lock.release(); released = true; });
  t.teardown(() => { if (!released) lock.release(); });

  const err = await primary(adm, 'r0').then(() => undefined, (e: unknown) => e);
  await stopDaemon;
  t.ok(err instanceof AdmError, 'the command fails: the resource never became active');
  const message = (err as Error).message;
  t.match(message, /marsd is not running on beta/, 'the message says marsd is not running here');
  t.notMatch(message, /not yet active: OK/, 'no stale "OK" from the stopped marsd');
  t.equal(tree.value(resPaths.primary('r0')), 'beta', 'the role moved (it takes effect when marsd runs again)');
});
