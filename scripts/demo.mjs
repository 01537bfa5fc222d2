// npm run demo: three MARS hosts on one machine. alpha creates the cluster and the resource,
// beta and gamma join with the cluster secret and sync, alpha writes through its NBD export and
// the secondaries follow, alpha survives kill -9, then gamma's network link is cut while alpha
// keeps writing, healed, and gamma catches up. At the end the sha256 of the three data disks
// must be equal (exit code 1 otherwise); then beta takes over with a planned handover, writes,
// and the disks are compared again. Each step prints the commands it runs and their output.
//
// Every host has its own /mars, run directory, data disk, marsd and peer address on 127.0.0.1.
// The peer address in ips/ip-HOST is a small TCP proxy inside this script and marsd listens
// behind it (--bind), so the script can cut and heal the links between hosts.
//
// Everything lives in one temporary directory, removed at the end (--keep keeps it). Every
// process the script starts is stopped by its pid, also on errors and on Ctrl-C. --times adds
// the elapsed time to each step's title (the demo should stay well under a minute).
//
// Adding a step: write an async function (the hosts are `alpha`, `beta`, `gamma` and `hosts`,
// the links `network`) and append it to STEPS at the bottom.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync, closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync,
  readSync, rmSync, statSync, truncateSync, writeFileSync, writeSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
if (!existsSync(join(root, 'dist', 'daemon', 'main.js'))) {
  console.error('dist/ is missing: run "npm install" (it builds the project) first');
  process.exit(1);
}
const { NbdClient, nbdGreets } = await import(join(root, 'dist', 'kernel-shim', 'nbd-client.js'));

const keep = process.argv.includes('--keep');
const times = process.argv.includes('--times');
const dir = mkdtempSync(join(tmpdir(), 'mars-demo-'));
const RES = 'demo';
const MiB = 1 << 20;
/** Each host's data disk, a sparse file (the sync reports progress every 64 MiB). */
const DISK_BYTES = 128 * MiB;
/** What alpha's disk holds before the resource exists: the full sync copies it. */
const PRELOAD_BYTES = 32 * MiB;
/** The background writer while gamma is cut off, bytes per second. */
const WRITER_RATE = 4 * MiB;
/** No single wait takes longer unless something is broken. */
const WAIT_MS = 30_000;
const t0 = Date.now();

let step = 0;
const mib = (n) => `${(n / MiB).toFixed(1)} MiB`;
const say = (title) => console.log(`\n[${++step}] ${title}${times ? ` (at ${seconds()})` : ''}`);
/** Output writes $D for the temporary directory, to keep the lines short. */
const info = (text) => console.log(`    ${text.split(dir).join('$D')}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Like sleep, but does not keep the process alive (bounds on waits in the cleanup). */
const bound = (ms) => new Promise((r) => setTimeout(r, ms).unref());
const seconds = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

/** Polls probe() every intervalMs until it returns true; throws after ms, naming `what`. */
async function until(what, probe, ms = WAIT_MS, intervalMs = 50) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await probe()) return;
    for (const h of hosts) h.checkAlive();
    if (Date.now() > deadline) throw new Error(`timed out after ${ms / 1000} s waiting until ${what}`);
    await sleep(intervalMs);
  }
}

// ---------------------------------------------------------------------------------------------
// The network: a proxy in front of each host. A proxy learns which host dials it from the
// `host` field of the client's first frame (the `auth` message of the peer handshake,
// docs/protocol.md), so the link between two hosts can be cut in both directions while every
// other link keeps working.

class Network {
  constructor() {
    /** 'a|b' (sorted) for every cut link */
    this.cutLinks = new Set();
    /** open proxied connections: { client, target, from, to } */
    this.conns = new Set();
    this.servers = [];
  }

  static key(a, b) {
    return [a, b].sort().join('|');
  }

  isCut(a, b) {
    return a !== undefined && this.cutLinks.has(Network.key(a, b));
  }

  /** Starts a proxy on 127.0.0.1 in front of host `to` (listening on targetPort); its address. */
  async proxy(to, targetPort) {
    const server = net.createServer((client) => this.accept(client, to, targetPort));
    await new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    this.servers.push(server);
    return `127.0.0.1:${server.address().port}`;
  }

  accept(client, to, targetPort) {
    const target = net.connect({ host: '127.0.0.1', port: targetPort });
    const c = { client, target, from: undefined, to };
    this.conns.add(c);
    for (const s of [client, target]) {
      s.on('error', () => this.drop(c));
      s.on('close', () => this.drop(c));
    }
    target.pipe(client); // the server speaks first (hello)
    // Hold the client's bytes until its first frame is complete: u32 header length, u32
    // payload length, JSON header.
    let held = Buffer.alloc(0);
    const onData = (chunk) => {
      held = Buffer.concat([held, chunk]);
      if (held.length < 8) return;
      const headerBytes = held.readUInt32BE(0);
      if (headerBytes <= 4096 && held.length < 8 + headerBytes) return;
      try {
        const { host } = JSON.parse(held.subarray(8, 8 + headerBytes).toString('utf8'));
        if (typeof host === 'string') c.from = host;
      } catch { /* not a handshake: pass it on, the daemon refuses it */ }
      client.off('data', onData);
      if (this.isCut(c.from, to)) return this.drop(c, true);
      target.write(held);
      client.pipe(target);
    };
    client.on('data', onData);
  }

  drop(c, reset = false) {
    if (!this.conns.delete(c)) return;
    for (const s of [c.client, c.target]) {
      if (reset && !s.connecting && !s.destroyed) s.resetAndDestroy();
      else s.destroy();
    }
  }

  /** Cuts the link between hosts a and b: open connections are reset, new ones refused. */
  cut(a, b) {
    this.cutLinks.add(Network.key(a, b));
    for (const c of [...this.conns]) if (this.isCut(c.from, c.to)) this.drop(c, true);
    info(`network: link ${a}-${b} cut`);
  }

  heal(a, b) {
    this.cutLinks.delete(Network.key(a, b));
    info(`network: link ${a}-${b} healed`);
  }

  close() {
    for (const c of [...this.conns]) this.drop(c);
    for (const s of this.servers) s.close();
  }
}

// ---------------------------------------------------------------------------------------------
// A host: its directories and data disk, its marsd, and marsadm with its options.

/** Every child process that has not exited yet, for the cleanup. */
const children = new Set();

class Host {
  constructor(name) {
    this.name = name;
    this.dir = join(dir, name);
    this.marsDir = join(this.dir, 'mars');
    this.runDir = join(this.dir, 'run');
    this.disk = join(this.dir, 'disk.img');
    this.logPath = join(this.dir, 'marsd.log');
    this.marsd = undefined;
    /** true while marsd is meant to be down (an exit is no error then) */
    this.stopping = false;
    /** the address peers dial (the proxy), and where marsd really listens */
    this.address = undefined;
    this.bind = undefined;
  }

  /** Its directory and an empty sparse data disk; a peer address behind a proxy of `network`. */
  async prepare(network) {
    mkdirSync(this.dir, { recursive: true });
    writeFileSync(this.disk, '');
    truncateSync(this.disk, DISK_BYTES);
    const port = await freePort();
    this.bind = `127.0.0.1:${port}`;
    this.address = await network.proxy(this.name, port);
  }

  /** Options that give each host its own tree; left out when commands are printed. */
  get common() {
    return ['--mars-dir', this.marsDir, '--host', this.name, '--run-dir', this.runDir];
  }

  get socket() {
    return join(this.runDir, `${RES}.sock`);
  }

  get marsdRunning() {
    return this.marsd !== undefined && this.marsd.exitCode === null && this.marsd.signalCode === null;
  }

  /** Runs marsadm on this host and prints the command and its output; throws if it fails. */
  async adm(...args) {
    const r = await this.admQuiet(...args);
    info(`${this.name}$ marsadm ${args.join(' ')}`);
    for (const line of `${r.stdout}${r.stderr}`.trimEnd().split('\n').filter(Boolean)) info(`  ${line}`);
    if (r.code !== 0) throw new Error(`marsadm ${args[0]} on ${this.name} failed (exit ${r.code})`);
    return r.stdout.trim();
  }

  /** Runs marsadm without printing anything. (Asynchronously: the proxies run in this process.) */
  admQuiet(...args) {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [join(root, 'bin', 'marsadm.js'), ...this.common, ...args], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
      children.add(child);
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (s) => (stdout += s));
      child.stderr.setEncoding('utf8').on('data', (s) => (stderr += s));
      child.once('error', reject);
      child.once('close', (code, signal) => {
        children.delete(child);
        resolve({ code: code ?? signal, stdout, stderr });
      });
    });
  }

  view() {
    return this.adm('view', RES);
  }

  /** Runs `marsadm view` on several hosts at once and prints the results in order. */
  static async views(hs) {
    const results = await Promise.all(hs.map((h) => h.admQuiet('view', RES)));
    hs.forEach((h, i) => {
      info(`${h.name}$ marsadm view ${RES}`);
      for (const line of `${results[i].stdout}${results[i].stderr}`.trimEnd().split('\n').filter(Boolean)) info(`  ${line}`);
    });
  }

  async startMarsd() {
    const args = ['--bind', this.bind];
    const fd = openSync(this.logPath, 'a');
    let child;
    try {
      child = spawn(process.execPath, [join(root, 'bin', 'marsd.js'), ...this.common, ...args], { env: cleanEnv(), stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    this.marsd = child;
    this.stopping = false;
    children.add(child);
    child.once('exit', () => children.delete(child));
    info(`${this.name}$ marsd ${args.join(' ')} &`);
    await until(`marsd of ${this.name} runs`, () => this.link(`actual-${this.name}/pid`) === String(child.pid), 20_000, 25);
    info(`  marsd of ${this.name} is running, pid ${child.pid}, log in ${this.logPath}`);
  }

  /** Sends `signal` to marsd and waits for its exit (SIGKILL if SIGTERM takes over 20 s). */
  async stopMarsd(signal = 'SIGTERM') {
    const child = this.marsd;
    if (!this.marsdRunning) return child?.exitCode ?? child?.signalCode;
    this.stopping = true;
    const exited = new Promise((r) => child.once('exit', (code, sig) => r(code ?? sig)));
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    try {
      return await exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** A marsd that exited by itself stops the demo. */
  checkAlive() {
    if (this.marsd && !this.stopping && !this.marsdRunning) {
      this.stopping = true;
      throw new Error(`marsd of ${this.name} exited (${this.marsd.exitCode ?? this.marsd.signalCode})`);
    }
  }

  logTail(lines = 12) {
    try {
      // Without the "refused entry" warnings, which a three-host cluster logs on every pull
      // (peers offer third hosts' links too, and the receiver says it ignores them).
      return readFileSync(this.logPath, 'utf8').trimEnd().split('\n').filter((l) => !l.includes(': refused entry '))
        .slice(-lines).map((l) => `      ${l}`).join('\n');
    } catch {
      return '      (no log)';
    }
  }

  /** A symlink's value in this host's /mars (path relative to it); '' if there is none. */
  link(rel) {
    try {
      return readlinkSync(join(this.marsDir, rel));
    } catch {
      return '';
    }
  }

  /** resource-RES/actual-HOST/KEY */
  actual(key) {
    return this.link(`resource-${RES}/actual-${this.name}/${key}`);
  }

  /**
   * After a restart: this marsd finished its recovery (last-recovery differs from `before`, the
   * value its predecessor left), is primary and answers on the export. Status links of a killed
   * marsd stay until the new one overwrites them, so is-primary alone would not do.
   */
  async waitPrimary(before) {
    await until(`${this.name} is primary again`, async () => {
      const recovery = this.actual('last-recovery');
      return recovery !== '' && recovery !== before && this.actual('is-primary') === '1' && nbdGreets(this.socket, 2_000);
    });
  }

  sha256() {
    const h = createHash('sha256');
    const fd = openSync(this.disk, 'r');
    try {
      const buf = Buffer.alloc(4 * MiB);
      for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0;) h.update(buf.subarray(0, n));
    } finally {
      closeSync(fd);
    }
    return h.digest('hex');
  }
}

function cleanEnv() {
  const env = { ...process.env };
  for (const k of ['MARS_DIR', 'MARS_HOST', 'MARS_RUN_DIR']) delete env[k];
  return env;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Replication state, read from the trees (the links `marsadm view` reads).

/** The logfiles (not deleted) of origin p in p's tree: [{ name, bytes }] in order. */
function logfiles(p) {
  const resDir = join(p.marsDir, `resource-${RES}`);
  const own = new RegExp(`^log-\\d{9}-${p.name}$`);
  return readdirSync(resDir).filter((n) => own.test(n) && p.link(`resource-${RES}/${n}`) === '').sort()
    .map((name) => ({ name, bytes: statSync(join(resDir, name)).size }));
}

/**
 * h has replayed everything primary p logged: p's versionlink of its newest logfile covers the
 * whole file, and h has the same versionlink (equal versionlinks mean equal history). Holds
 * once the writes were flushed and replicated.
 */
function caughtUp(p, h) {
  const newest = logfiles(p).pop();
  if (!newest) return false;
  const seq = newest.name.slice(4, 13);
  const version = p.link(`resource-${RES}/version-${seq}-${p.name}`);
  return version !== '' && Number(version.split(':')[0].split(',')[2]) === newest.bytes
    && h.link(`resource-${RES}/version-${seq}-${h.name}`) === version;
}

/** Bytes primary p logged after h's replay position (p's logfiles from h's replay link on). */
function behindBytes(p, h) {
  const [name, minPos] = h.link(`resource-${RES}/replay-${h.name}`).split(',');
  return Math.max(0, logfiles(p).filter((l) => l.name >= name).reduce((sum, l) => sum + l.bytes, -Number(minPos)));
}

/** Prints the secondaries' fetch-rest and replay-rest whenever they change, until they caught up. */
async function watchCatchUp(p, secondaries) {
  let last = '';
  await until('the secondaries caught up', () => {
    const now = secondaries.map((h) => `${h.name}: fetch-rest ${mib(Number(h.actual('fetch-rest') || 0))}, replay-rest ${mib(Number(h.actual('replay-rest') || 0))}`).join('   ');
    if (now !== last) info(`  ${now}`);
    last = now;
    return secondaries.every((h) => caughtUp(p, h));
  }, WAIT_MS, 100);
}

// ---------------------------------------------------------------------------------------------
// Writing and reading through the primary's NBD export (kernel-shim/nbd-client, as nbd-client
// or qemu would).

async function writeThrough(p, offset, data, opts = {}) {
  const nbd = await NbdClient.connect(p.socket, RES);
  try {
    const writes = [];
    for (let off = 0; off < data.length; off += MiB) writes.push(nbd.write(offset + off, data.subarray(off, off + MiB), opts));
    await Promise.all(writes);
    if (!opts.fua) await nbd.flush();
  } finally {
    await nbd.disconnect();
  }
}

async function readThrough(p, offset, bytes) {
  const nbd = await NbdClient.connect(p.socket, RES);
  try {
    return await nbd.readRange(offset, bytes);
  } finally {
    await nbd.disconnect();
  }
}

/**
 * Keeps writing on the primary in the background, about WRITER_RATE bytes per second: 256 KiB
 * at a time at random 4 KiB-aligned offsets, a FLUSH after each 1 MiB, until stop().
 * `written` counts flushed bytes.
 */
function startWriter(p) {
  const w = { written: 0, stopped: false, error: undefined };
  w.done = (async () => {
    const nbd = await NbdClient.connect(p.socket, RES);
    try {
      let next = Date.now();
      while (!w.stopped) {
        for (let i = 0; i < 4; i++) {
          const chunk = randomBytes(256 << 10);
          await nbd.write(Math.floor(Math.random() * ((DISK_BYTES - chunk.length) / 4096)) * 4096, chunk);
        }
        await nbd.flush();
        w.written += MiB;
        next += (1000 * MiB) / WRITER_RATE;
        await sleep(Math.max(0, next - Date.now()));
      }
    } finally {
      await nbd.disconnect();
    }
  })().catch((err) => { w.error = err; });
  w.stop = async () => {
    w.stopped = true;
    await w.done;
    if (w.error) throw w.error;
  };
  return w;
}

// ---------------------------------------------------------------------------------------------
// The steps.

const network = new Network();
const hosts = ['alpha', 'beta', 'gamma'].map((n) => new Host(n));
const [alpha, beta, gamma] = hosts;
const secondaries = [beta, gamma];
/** the primary: alpha until the handover */
let current = alpha;
/** the background writer of the cut-link steps */
let writer;
let writtenWhileCut = 0;

async function stepHosts() {
  say('Three hosts on this machine: alpha, beta and gamma');
  for (const h of hosts) await h.prepare(network);
  const fd = openSync(alpha.disk, 'r+');
  for (let off = 0; off < PRELOAD_BYTES; off += 4 * MiB) writeSync(fd, randomBytes(4 * MiB), 0, 4 * MiB, off);
  closeSync(fd);
  for (const h of hosts) info(`${h.name}: /mars is ${h.marsDir}, data disk ${h.disk} (${mib(DISK_BYTES)}), peer address ${h.address}`);
  info(`alpha's disk already holds ${mib(PRELOAD_BYTES)} of data (an existing filesystem, say); the other disks are empty`);
  info('each peer address is a TCP proxy in this script with marsd listening behind it (--bind), so links can be cut');
  info('marsadm and marsd run with --mars-dir, --host and --run-dir of their host, left out below');
}

async function stepCreateCluster() {
  say(`alpha creates the cluster and the resource "${RES}"; alpha is its primary`);
  await alpha.adm('create-cluster', '--listen', alpha.address);
  await alpha.startMarsd();
  await alpha.adm('create-resource', RES, alpha.disk);
  await alpha.view();
}

async function stepJoinCluster() {
  say('beta and gamma join the cluster with a copy of the cluster secret');
  for (const h of secondaries) {
    const secret = join(h.dir, 'cluster-secret.copy');
    copyFileSync(join(alpha.marsDir, 'cluster-secret'), secret);
    chmodSync(secret, 0o600);
    info(`$ cp ${join(alpha.marsDir, 'cluster-secret')} ${secret}; chmod 600 ${secret}   # between machines: scp`);
    await h.adm('join-cluster', alpha.address, '--listen', h.address, '--secret-file', secret);
    await h.startMarsd();
  }
  for (const h of secondaries) await h.adm('wait-cluster');
}

async function stepJoinResource() {
  say(`beta and gamma join "${RES}": a fast full sync from alpha, then they replay alpha's logfiles`);
  for (const h of secondaries) {
    // The resource's links reach h by tree propagation from alpha (marsadm says so if not yet).
    await until(`${h.name} has alpha's replay link and versionlink`, () => {
      const replay = h.link(`resource-${RES}/replay-alpha`);
      return replay !== '' && h.link(`resource-${RES}/version-${replay.slice(4, 13)}-alpha`) !== '';
    });
    await h.adm('join-resource', RES, h.disk);
  }
  info('sync progress (syncstatus-HOST, the Syncing[NN%] of `marsadm view`):');
  const done = (h) => Number(h.link(`resource-${RES}/syncstatus-${h.name}`) || 0);
  let last = '';
  await until('beta and gamma are synced', () => {
    const now = secondaries.map((h) => `${h.name}: ${String(Math.floor((100 * done(h)) / DISK_BYTES)).padStart(3)} % (${mib(done(h))})`).join('   ');
    if (now !== last) info(`  ${now}`);
    last = now;
    return secondaries.every((h) => done(h) >= DISK_BYTES);
  }, WAIT_MS, 100);
  await until('beta and gamma are consistent', async () => {
    const answers = await Promise.all(secondaries.map((h) => h.admQuiet('view-is-consistent', RES)));
    return answers.every((r) => r.stdout.trim() === '1');
  });
  for (const h of secondaries) {
    const [same, differing] = h.actual('verifystatus').split(',').map(Number);
    info(`${h.name}: compared ${same + differing} blocks of 4 KiB by MD5 digest, copied the ${differing} that differed (${mib(differing * 4096)})`);
  }
  await Host.views(hosts);
}

async function stepWrite() {
  say('alpha writes 16 MiB through its NBD export, then FLUSH; beta and gamma follow');
  await writeThrough(alpha, 32 * MiB, randomBytes(16 * MiB));
  info(`wrote 16 MiB at offset 32 MiB to ${alpha.socket}; the FLUSH returned`);
  await watchCatchUp(alpha, secondaries);
  await Host.views(hosts);
}

async function stepCrash() {
  say('kill -9 on the primary: alpha writes 8 MiB with FUA, marsd is SIGKILLed at once and restarted');
  const data = randomBytes(8 * MiB);
  await writeThrough(alpha, 96 * MiB, data, { fua: true });
  const before = alpha.actual('last-recovery');
  info(`wrote 8 MiB at offset 96 MiB; every write was acknowledged once durable; $ kill -9 ${alpha.marsd.pid}`);
  await alpha.stopMarsd('SIGKILL');
  info(`alpha: replay-alpha -> ${alpha.link(`resource-${RES}/replay-alpha`)}   (recovery replays from there)`);
  await alpha.startMarsd();
  await alpha.waitPrimary(before);
  info(`alpha: actual-alpha/last-recovery -> ${alpha.actual('last-recovery')}`);
  const same = (await readThrough(alpha, 96 * MiB, data.length)).equals(data);
  info(`read back through the export: ${same ? 'all 8 MiB are there' : 'THE DATA DIFFERS'}`);
  if (!same) throw new Error('acknowledged writes were lost in the crash');
  await watchCatchUp(alpha, secondaries);
  await alpha.view();
}

async function stepCut() {
  say('Cut gamma off the network while alpha keeps writing');
  writer = startWriter(alpha);
  info(`alpha writes in the background, ${mib(WRITER_RATE)}/s with a FLUSH after each MiB`);
  // Both of gamma's links: with beta reachable, gamma would fetch alpha's logfiles from beta.
  network.cut('alpha', 'gamma');
  network.cut('beta', 'gamma');
  await until('gamma sees alpha and beta down', () => ['alpha', 'beta'].every((p) => gamma.link(`actual-gamma/peer-${p}`).startsWith('down')));
  await until('alpha wrote 8 MiB during the cut', () => writer.written >= 8 * MiB);
  await alpha.adm('log-rotate', RES);
  await until('alpha wrote 12 MiB during the cut', () => writer.written >= 12 * MiB);
  await Host.views(hosts);
  info('the peer links in the trees (actual-HOST/peer-PEER) say what is wrong:');
  for (const [h, peer] of [[gamma, 'alpha'], [gamma, 'beta'], [alpha, 'gamma'], [alpha, 'beta']]) {
    info(`  ${h.name}: peer-${peer} -> ${h.link(`actual-${h.name}/peer-${peer}`)}`);
  }
  const newest = logfiles(alpha).pop();
  info(`alpha has written ${mib(writer.written)} since the cut and logged up to byte ${newest.bytes} of ${newest.name}; replay links:`);
  for (const h of secondaries) info(`  ${h.name}: replay-${h.name} -> ${h.link(`resource-${RES}/replay-${h.name}`)}   (${mib(behindBytes(alpha, h))} behind alpha)`);
  info('beta keeps up; gamma falls behind, and its own view cannot show it: gamma learns what it misses when it reaches alpha again');
}

async function stepHeal() {
  say('Heal the links: gamma reconnects and catches up while alpha goes on writing');
  writtenWhileCut = writer.written;
  network.heal('alpha', 'gamma');
  network.heal('beta', 'gamma');
  await until('gamma reconnected to alpha', () => gamma.link('actual-gamma/peer-alpha').startsWith('connected'));
  info(`gamma: peer-alpha -> ${gamma.link('actual-gamma/peer-alpha')}`);
  await gamma.view();
  await until('gamma replays alpha\'s current logfile', () => {
    const newest = logfiles(alpha).pop();
    return newest !== undefined && gamma.link(`resource-${RES}/replay-gamma`).split(',')[0] === newest.name;
  });
  await writer.stop();
  info(`gamma has reached alpha's current logfile; alpha stops writing (${mib(writer.written)} since the cut)`);
  await watchCatchUp(alpha, secondaries);
  await Host.views(hosts);
}

async function stepHandover() {
  say('Planned handover: beta becomes the primary with one command; alpha and gamma follow beta');
  await beta.adm('primary', RES);
  current = beta;
  await until('alpha left the primary role', () => alpha.actual('is-primary') === '0');
  await Host.views(hosts);
  await writeThrough(beta, 64 * MiB, randomBytes(8 * MiB));
  info(`beta wrote 8 MiB at offset 64 MiB through its own export ${beta.socket}`);
  await watchCatchUp(beta, [alpha, gamma]);
  await Host.views(hosts);
}

async function stepVerify() {
  say(`Compare the data disks (primary: ${current.name})`);
  await current.adm('wait-resource', RES, 'writeback-done');
  const sums = hosts.map((h) => h.sha256());
  hosts.forEach((h, i) => info(`sha256 of ${h.name}'s disk: ${sums[i]}`));
  const same = sums.every((s) => s === sums[0]);
  info(same ? 'all three disks are identical' : 'THE DISKS DIFFER');
  if (!same) throw new Error('the data disks differ');
}

async function stepStop() {
  say('Stop marsd on every host (SIGTERM)');
  for (const h of hosts) info(`${h.name}: marsd exited with ${await h.stopMarsd()}`);
}

const STEPS = [stepHosts, stepCreateCluster, stepJoinCluster, stepJoinResource, stepWrite, stepCrash, stepCut, stepHeal, stepVerify, stepHandover, stepVerify, stepStop];

// ---------------------------------------------------------------------------------------------

let cleanedUp;
function cleanup() {
  cleanedUp ??= (async () => {
    for (const h of hosts) h.stopping = true;
    if (writer) await Promise.race([writer.stop().catch(() => undefined), bound(2_000)]);
    const exits = [...children].map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', r))));
    for (const c of children) {
      try { c.kill('SIGKILL'); } catch { /* gone */ }
    }
    await Promise.race([Promise.all(exits), bound(5_000)]);
    network.close();
    if (keep) console.log(`(kept ${dir})`);
    else rmSync(dir, { recursive: true, force: true });
  })();
  return cleanedUp;
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    interrupted = true;
    console.error(`\n${sig}: stopping the demo`);
    void cleanup().finally(() => process.exit(130));
  });
}

console.log('MARS in userspace: three hosts on one machine, replication, kill -9, a cut link and catching up, a handover.');
console.log(`Everything happens in D=${dir} ($D below).`);
try {
  for (const s of STEPS) await s();
  console.log(`\nDone in ${seconds()}: all disks are equal; gamma missed ${mib(writtenWhileCut)} while cut off and caught up; beta took over with one "marsadm primary".`);
} catch (err) {
  if (interrupted) await new Promise(() => {}); // the signal handler cleans up and exits
  console.error(`\ndemo failed after ${seconds()}: ${err.message}`);
  for (const h of hosts) if (existsSync(h.logPath)) console.error(`  marsd log of ${h.name}, last lines:\n${h.logTail()}`);
  process.exitCode = 1;
} finally {
  await cleanup();
}
