// A real OpenSSH server for one test: on a loopback address and a free port, with its own host key,
// an authorized_keys holding one generated client key (a second key is generated but not
// authorized), a known_hosts file for the client, and its log in the test's directory.
// Key login only (`UsePAM=no`, `StrictModes=no` since the files live in /tmp).
//
// Cleanup: the listening sshd and every process below it (the per-connection sshd processes
// and the commands they run) are ended by pid in the teardown, found through /proc.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { freePort } from './cluster.js';
import { waitFor } from './wait.js';

export const SSHD_BIN = '/usr/sbin/sshd';

export interface Sshd {
  /** the loopback address sshd listens on */
  address: string;
  port: number;
  /** the login user (the one running the tests) */
  user: string;
  /** private key authorized to log in */
  identity: string;
  /** private key sshd does not know */
  wrongIdentity: string;
  /** known_hosts naming this sshd's host key for [address]:port */
  knownHosts: string;
  logPath: string;
  log(): string;
  stop(): Promise<void>;
}

function commandExists(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Why an sshd test cannot run here, or null. */
export function sshdUnavailable(): string | null {
  if (!existsSync(SSHD_BIN)) return `${SSHD_BIN} is not installed (Debian package openssh-server)`;
  for (const tool of ['ssh', 'ssh-keygen']) if (!commandExists(tool)) return `${tool} is not installed (Debian package openssh-client)`;
  if (process.getuid?.() !== 0) return 'sshd needs root to accept logins (run the tests as root, as CI does)';
  return null;
}

function keygen(path: string, comment: string): void {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', path], { stdio: 'ignore' });
}

/** pids of every process below `root` (children first found, then theirs). */
export function descendants(root: number): number[] {
  const parentOf = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parentOf.set(Number(name), ppid);
    } catch { /* exited meanwhile */ }
  }
  const found: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const parent = queue.shift()!;
    for (const [pid, ppid] of parentOf) {
      if (ppid === parent && !found.includes(pid)) {
        found.push(pid);
        queue.push(pid);
      }
    }
  }
  return found;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Does something on the port greet like an SSH server? */
function greets(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: address, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(2_000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('data', (chunk: Buffer) => done(chunk.toString('latin1').startsWith('SSH-')));
  });
}

/** sshd on `address` (a loopback address, 127.0.0.1 by default) and a free port. */
export async function startSshd(t: Test, dir: string, address = '127.0.0.1'): Promise<Sshd> {
  mkdirSync(dir, { recursive: true });
  // sshd's privilege separation directory; it must exist (root-owned, not group/world writable).
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const hostKey = join(dir, 'ssh_host_ed25519_key');
  const identity = join(dir, 'id_client');
  const wrongIdentity = join(dir, 'id_wrong');
  keygen(hostKey, 'mars-test-host');
  keygen(identity, 'mars-test-client');
  keygen(wrongIdentity, 'mars-test-wrong');
  const authorizedKeys = join(dir, 'authorized_keys');
  writeFileSync(authorizedKeys, readFileSync(`${identity}.pub`), { mode: 0o600 });
  const port = await freePort(address);
  const knownHosts = join(dir, 'known_hosts');
  const [keyType, keyData] = readFileSync(`${hostKey}.pub`, 'utf8').trim().split(/\s+/);
  writeFileSync(knownHosts, `[${address}]:${port} ${keyType} ${keyData}\n`);
  const config = join(dir, 'sshd_config');
  writeFileSync(config, [
    `Port ${port}`,
    `ListenAddress ${address}`,
    `HostKey ${hostKey}`,
    `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${authorizedKeys}`,
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PermitRootLogin prohibit-password',
    'UsePAM no',
    'StrictModes no',
    'X11Forwarding no',
    'AllowTcpForwarding no',
    'PrintMotd no',
    'LogLevel VERBOSE',
    '',
  ].join('\n'));
  const logPath = join(dir, 'sshd.log');
  const fd = openSync(logPath, 'a');
  let child: ChildProcess;
  try {
    // -D: stay in the foreground (its pid is ours); -e: log to stderr (the log file).
    child = spawn(SSHD_BIN, ['-D', '-e', '-f', config, '-o', 'UsePAM=no', '-o', 'StrictModes=no'], { stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd);
  }
  const pid = child.pid!;
  let exited = false;
  const exitedPromise = new Promise<void>((resolve) => child.once('exit', () => { exited = true; resolve(); }));
  const log = () => {
    try { return readFileSync(logPath, 'utf8'); } catch { return '(no sshd log)'; }
  };
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    // The session processes outlive the listener; collect them before it goes.
    const below = descendants(pid);
    if (!exited) child.kill('SIGTERM');
    for (const p of below) {
      try { process.kill(p, 'SIGTERM'); } catch { /* gone */ }
    }
    const deadline = Date.now() + 5_000;
    while ((!exited || below.some(alive)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    for (const p of [pid, ...below]) {
      if (alive(p)) {
        try { process.kill(p, 'SIGKILL'); } catch { /* gone */ }
      }
    }
    await Promise.race([exitedPromise, new Promise((r) => setTimeout(r, 2_000))]);
  };
  t.teardown(stop);
  await waitFor(`sshd on ${address}:${port}`, async () => {
    if (exited) throw new Error(`sshd exited at start; its log:\n${log()}`);
    return greets(address, port);
  }, 20_000, 50).catch((err: Error) => {
    throw new Error(`${err.message}\nsshd log:\n${log()}`);
  });
  return { address, port, user: userInfo().username, identity, wrongIdentity, knownHosts, logPath, log, stop };
}
