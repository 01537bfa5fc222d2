// npm run demo: one host, one resource, data through the NBD export, a log rotation, a crash
// (SIGKILL) and recovery, each step printed. Everything lives in a temporary directory that is
// removed at the end (pass --keep to keep it).
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readlinkSync, rmSync, statSync, truncateSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
if (!existsSync(join(root, 'dist', 'daemon', 'main.js'))) {
  console.error('dist/ is missing: run "npm install" (it builds the project) first');
  process.exit(1);
}
const { NbdClient } = await import(join(root, 'dist', 'kernel-shim', 'nbd-client.js'));

const keep = process.argv.includes('--keep');
const dir = mkdtempSync(join(tmpdir(), 'mars-demo-'));
const env = { ...process.env, MARS_DIR: join(dir, 'mars'), MARS_HOST: 'alpha', MARS_RUN_DIR: join(dir, 'run') };
const disk = join(dir, 'disk.img');
const DISK_BYTES = 256 << 20;
const RES = 'demo';
let marsd;
let step = 0;

const mib = (n) => `${(n / (1 << 20)).toFixed(1)} MiB`;
const sha = (b) => createHash('sha256').update(b).digest('hex').slice(0, 16);
const say = (title) => console.log(`\n[${++step}] ${title}`);
const info = (text) => console.log(`    ${text}`);

function marsadm(...args) {
  info(`$ marsadm ${args.join(' ')}`);
  const r = spawnSync(process.execPath, [join(root, 'bin', 'marsadm.js'), ...args], { env, encoding: 'utf8' });
  for (const line of `${r.stdout}${r.stderr}`.trim().split('\n').filter(Boolean)) info(`  ${line}`);
  if (r.status !== 0) throw new Error(`marsadm ${args[0]} failed (exit ${r.status})`);
  return r.stdout.trim();
}

function link(rel) {
  try {
    return readlinkSync(join(env.MARS_DIR, rel));
  } catch {
    return '';
  }
}

async function startMarsd() {
  marsd = spawn(process.execPath, [join(root, 'bin', 'marsd.js'), '--quiet'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  const deadline = Date.now() + 20_000;
  while (link(`actual-alpha/pid`) !== String(marsd.pid)) {
    if (Date.now() > deadline || marsd.exitCode !== null) throw new Error('marsd did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  info(`marsd is running, pid ${marsd.pid}`);
}

function logfiles() {
  const resDir = join(env.MARS_DIR, `resource-${RES}`);
  return readdirSync(resDir).filter((n) => n.startsWith('log-')).sort()
    .map((n) => ({ name: n, size: link(`resource-${RES}/${n}`) === '.deleted' ? null : statSync(join(resDir, n)).size }));
}

async function main() {
  console.log('MARS in userspace: a single-host walk-through with a crash in the middle.');
  console.log(`Everything happens in ${dir}.`);

  say('A data disk and a /mars tree');
  writeFileSync(disk, '');
  truncateSync(disk, DISK_BYTES);
  info(`data disk ${disk}: ${mib(DISK_BYTES)}, a sparse file (a real host would use an LVM volume)`);
  marsadm('create-cluster', '--listen', '127.0.0.1:7777');

  say('Start the daemon, marsd (one per host)');
  await startMarsd();

  say(`Create the resource "${RES}": this host becomes its primary`);
  marsadm('create-resource', RES, disk);
  marsadm('view', RES);

  say('Write 32 MiB of random data through the NBD export, then FLUSH');
  const socket = join(env.MARS_RUN_DIR, `${RES}.sock`);
  let nbd = await NbdClient.connect(socket, RES);
  const first = randomBytes(32 << 20);
  for (let off = 0; off < first.length; off += 1 << 20) await nbd.write(off, first.subarray(off, off + (1 << 20)));
  await nbd.flush();
  info(`wrote ${mib(first.length)} at offset 0 (sha256 ${sha(first)}); the FLUSH returned, so it is durable in the logfile`);

  say('Rotate the transaction logfile');
  marsadm('log-rotate', RES);
  for (const l of logfiles()) info(`  ${l.name}  ${l.size === null ? 'deleted' : mib(l.size)}`);

  say('Write 16 MiB more at offset 64 MiB with FUA, and kill marsd with SIGKILL right away');
  const second = randomBytes(16 << 20);
  const writes = [];
  for (let off = 0; off < second.length; off += 1 << 20) writes.push(nbd.write((64 << 20) + off, second.subarray(off, off + (1 << 20)), { fua: true }));
  await Promise.all(writes);
  marsd.kill('SIGKILL');
  await new Promise((r) => marsd.once('exit', r));
  nbd.destroy();
  info(`wrote ${mib(second.length)} (sha256 ${sha(second)}); every write was acknowledged after it was durable`);
  info('marsd killed with SIGKILL');

  say('Restart marsd: it replays the logfile from the replay link and exports the device again');
  const replay = link(`resource-${RES}/replay-alpha`);
  const [logName, minPos] = replay.split(',');
  info(`the replay link says: ${replay}`);
  info(`  = everything before byte ${minPos} of ${logName} is known to be on the disk; ${mib(statSync(join(env.MARS_DIR, `resource-${RES}`, logName)).size - Number(minPos))} of it must be replayed`);
  await startMarsd();
  marsadm('wait-resource', RES, 'primary');
  info(`recovery: ${link(`resource-${RES}/actual-alpha/last-recovery`)}`);
  marsadm('view', RES);

  say('Read everything back and compare');
  nbd = await NbdClient.connect(socket, RES);
  const back1 = await nbd.readRange(0, first.length);
  const back2 = await nbd.readRange(64 << 20, second.length);
  await nbd.disconnect();
  const ok1 = back1.equals(first);
  const ok2 = back2.equals(second);
  info(`offset 0, 32 MiB:  sha256 ${sha(back1)}  ${ok1 ? 'matches' : 'DIFFERS'}`);
  info(`offset 64 MiB, 16 MiB: sha256 ${sha(back2)}  ${ok2 ? 'matches' : 'DIFFERS'}`);
  if (!ok1 || !ok2) throw new Error('data verification failed');

  say('Housekeeping: delete logfiles that are fully applied');
  marsadm('wait-resource', RES, 'writeback-done');
  marsadm('log-delete', RES, '--force');
  for (const l of logfiles()) info(`  ${l.name}  ${l.size === null ? 'deleted (tombstone)' : mib(l.size)}`);

  say('Stop marsd cleanly (SIGTERM)');
  marsd.kill('SIGTERM');
  const code = await new Promise((r) => marsd.once('exit', (c) => r(c)));
  info(`marsd exited with code ${code}`);
  console.log('\nDone: every acknowledged write survived kill -9.');
}

main().catch((err) => {
  console.error(`\ndemo failed: ${err.message}`);
  process.exitCode = 1;
}).finally(() => {
  if (marsd && marsd.exitCode === null) marsd.kill('SIGKILL');
  if (keep) console.log(`(kept ${dir})`);
  else rmSync(dir, { recursive: true, force: true });
});
