// A handover is one command when the application on top has start/stop hooks: `marsadm
// primary` on the new host makes the old primary stop its application (which closes the
// device cleanly, no write fails), moves the role, and the new primary starts the application.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileDigest, startCluster, waitWritebackDone } from '../helpers/multi-host.js';
import type { MarsHost } from '../helpers/cluster.js';

const RES = 'r0';
const SIZE = 8 << 20;
const APP = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'app.mjs');

const pidFile = (h: MarsHost) => join(h.dir, 'app.pid');
const appLog = (h: MarsHost) => join(h.dir, 'app.log');

function appPid(h: MarsHost): number | undefined {
  if (!existsSync(pidFile(h))) return undefined;
  const pid = Number(readFileSync(pidFile(h), 'utf8').trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try { process.kill(pid, 0); return true; } catch { return false; }
}

function hooks(h: MarsHost): { start: string; stop: string } {
  return {
    start: `nohup ${process.execPath} ${APP} >> ${appLog(h)} 2>&1 < /dev/null & echo $! > ${pidFile(h)}`,
    stop: `p=$(cat ${pidFile(h)}) && kill $p && while kill -0 $p 2>/dev/null; do sleep 0.05; done`,
  };
}

t.test('one command hands over a resource with its application', async (t) => {
  const c = await startCluster(t, { hosts: ['alpha', 'beta'], sizeBytes: SIZE, res: RES });
  const [alpha, beta] = [c.host('alpha'), c.host('beta')];
  t.teardown(() => {
    for (const h of c.hosts) { const pid = appPid(h); if (alive(pid)) process.kill(pid!, 'SIGKILL'); }
  });
  for (const h of c.hosts) {
    const { start, stop } = hooks(h);
    await h.marsadmOk(['set-app-hooks', RES, '--start', start, '--stop', stop]);
  }
  // The application runs on alpha (started the way the start hook does it).
  const fd = openSync(appLog(alpha), 'a');
  const app = spawn(process.execPath, [APP], { env: { ...process.env, MARS_SOCKET: alpha.socketPath(RES), MARS_RESOURCE: RES }, stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  app.unref();
  writeFileSync(pidFile(alpha), `${app.pid}\n`);
  await alpha.until('the application has the device open on alpha', () => alpha.actual(RES, 'open-count') === '1', 20_000);
  await beta.until('beta knows alpha can stop its application', () => beta.link(`resource-${RES}/actual-alpha/has-app-stop`) === '1', 20_000);

  const out = await beta.marsadm(['primary', RES, '--timeout', '60']);
  t.equal(out.code, 0, `marsadm primary on beta succeeds${out.code !== 0 ? `: ${out.stderr}` : ''}`);
  t.match(out.stderr, /asking alpha to stop the application/);
  t.match(readFileSync(appLog(alpha), 'utf8'), /clean exit after \d+ writes/, 'alpha\'s application stopped cleanly');
  t.notMatch(readFileSync(appLog(alpha), 'utf8'), /ERROR/, 'no write of the application failed');
  await beta.until('beta started the application', () => beta.actual(RES, 'open-count') === '1' && alive(appPid(beta)), 30_000);
  t.match(beta.actual(RES, 'app-state') ?? '', /start hook done/);

  // And back: alpha's start hook, beta's stop hook.
  const back = await alpha.marsadm(['primary', RES, '--timeout', '60']);
  t.equal(back.code, 0, `marsadm primary on alpha succeeds${back.code !== 0 ? `: ${back.stderr}` : ''}`);
  await alpha.until('alpha runs the application again', () => alpha.actual(RES, 'open-count') === '1' && alive(appPid(alpha)), 30_000);
  t.match(readFileSync(appLog(beta), 'utf8'), /clean exit after \d+ writes/, 'beta\'s application stopped cleanly');
  t.notMatch(readFileSync(appLog(beta), 'utf8') + readFileSync(appLog(alpha), 'utf8'), /ERROR/, 'no write failed anywhere');

  // Stop the application with its hook; the disks end equal.
  await alpha.marsadmOk(['set-app-hooks', RES, '--start', '']);
  const pid = appPid(alpha)!;
  process.kill(pid, 'SIGTERM');
  await alpha.until('the application exited', () => !alive(pid) && alpha.actual(RES, 'open-count') === '0', 20_000);
  await waitWritebackDone(alpha, RES);
  await c.waitCaughtUp(beta);
  t.equal(fileDigest(beta.dataPath, SIZE), fileDigest(alpha.dataPath, SIZE), 'equal disks');
});
