// Bad input gets a clear error, a non-zero exit code, and changes nothing.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.js';
import { treeState } from '../helpers/tree-state.js';
import { waitFor } from '../helpers/wait.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const MARSADM = join(ROOT, 'bin/marsadm.js');
const MARSD = join(ROOT, 'bin/marsd.js');

function run(env: NodeJS.ProcessEnv, args: string[]) {
  const r = spawnSync(process.execPath, [MARSADM, ...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('marsadm refuses bad input with a clear message and no change', async (t) => {
  const dir = tempDir(t);
  const env = { MARS_DIR: join(dir, 'mars'), MARS_HOST: 'alpha', MARS_RUN_DIR: join(dir, 'run') };
  const disk = join(dir, 'disk.img');
  writeFileSync(disk, Buffer.alloc(1 << 20));

  let r = run(env, ['view']);
  t.not(r.code, 0);
  t.match(r.stderr, /no cluster.*create-cluster/);

  r = run({ ...env, MARS_HOST: '../evil' }, ['create-cluster']);
  t.equal(r.code, 2);
  t.match(r.stderr, /invalid host name/);
  t.notOk(existsSync(join(dir, 'mars')), 'nothing was created');

  r = run(env, ['create-cluster', '--listen', 'not-an-address']);
  t.equal(r.code, 2);
  t.match(r.stderr, /invalid --listen/);

  r = run(env, ['create-cluster', '--listen', '127.0.0.1:7777']);
  t.equal(r.code, 0, r.stderr);
  const state0 = treeState(env.MARS_DIR);

  r = run(env, ['create-cluster', '--listen', '127.0.0.1:7777']);
  t.not(r.code, 0);
  t.match(r.stderr, /already belongs to cluster/);

  for (const bad of ['../x', 'a/b', '', 'x'.repeat(64), '-r']) {
    r = run(env, ['create-resource', '--', bad, disk]);
    t.not(r.code, 0, `resource name ${JSON.stringify(bad)}`);
    t.match(r.stderr, /invalid resource name|missing required argument/, `resource name ${JSON.stringify(bad)}: ${r.stderr.trim()}`);
  }
  r = run(env, ['create-resource', 'r0', disk, '--size', '2M']);
  t.not(r.code, 0);
  t.match(r.stderr, /smaller than the requested size/);
  r = run(env, ['create-resource', 'r0', join(dir, 'missing.img')]);
  t.match(r.stderr, /does not exist/);
  r = run(env, ['create-resource', 'r0', 'relative.img']);
  t.match(r.stderr, /absolute path/);
  r = run(env, ['create-resource', 'r0', disk, '--size', '1000']);
  t.match(r.stderr, /multiple of 4096/);
  r = run(env, ['create-resource', 'r0', disk, '--size', 'lots']);
  t.match(r.stderr, /invalid --size/);
  r = run(env, ['primary', 'nosuch']);
  t.match(r.stderr, /does not exist/);
  r = run(env, ['log-rotate', 'nosuch']);
  t.not(r.code, 0);
  r = run(env, ['view-nosuchmacro', 'r0']);
  t.not(r.code, 0);
  t.equal(treeState(env.MARS_DIR), state0, 'the tree is unchanged after all refused commands');
});

t.test('a second marsd on the same /mars gets a clear error naming the running pid', async (t) => {
  const dir = tempDir(t);
  const env = { ...process.env, MARS_DIR: join(dir, 'mars'), MARS_HOST: 'alpha', MARS_RUN_DIR: join(dir, 'run') };
  t.equal(run(env, ['create-cluster', '--listen', '127.0.0.1:7777']).code, 0);
  const first = spawn(process.execPath, [MARSD], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  t.teardown(() => { if (first.exitCode === null) first.kill('SIGKILL'); });
  await waitFor('the first marsd holds the lock', () => existsSync(join(dir, 'mars', '.marsd.lock')) && readFileSync(join(dir, 'mars', '.marsd.lock'), 'utf8').trim() === String(first.pid));
  const second = spawnSync(process.execPath, [MARSD], { env, encoding: 'utf8', timeout: 30_000 });
  t.not(second.status, 0);
  t.match(second.stderr, new RegExp(`another marsd \\(pid ${first.pid}\\) is already running`));
  t.equal(first.exitCode, null, 'the first one keeps running');
  first.kill('SIGTERM');
  const code = await new Promise((resolve) => first.on('exit', (c) => resolve(c)));
  t.equal(code, 0, 'SIGTERM stops marsd cleanly');
});

t.test('marsd without a cluster says what to do', async (t) => {
  const dir = tempDir(t);
  const env = { ...process.env, MARS_DIR: dir, MARS_HOST: 'alpha', MARS_RUN_DIR: join(dir, 'run') };
  const r = spawnSync(process.execPath, [MARSD], { env, encoding: 'utf8', timeout: 30_000 });
  t.not(r.status, 0);
  t.match(r.stderr, /create-cluster/);
});
