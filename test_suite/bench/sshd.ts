// A throwaway sshd on 127.0.0.1 for the rsync baseline of the fast-sync benchmark: its own
// host key, one authorized client key, no PAM, no system configuration (-f /dev/null), in the
// foreground as a tracked child that is stopped by its pid. Everything lives in one directory
// that the caller removes.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { freePortOn } from './cluster.js';
import { runCommand, sleep, toolEnv, trackChild } from './proc.js';
import { hasTool } from '../helpers/prereqs.js';

export const SSHD_BIN = '/usr/sbin/sshd';

/** Why the rsync baseline cannot run here, or undefined if it can. */
export function sshMissing(): string | undefined {
  const missing = ['rsync', 'ssh', 'ssh-keygen'].filter((t) => !hasTool(t));
  if (!existsSync(SSHD_BIN)) missing.push('sshd');
  return missing.length ? `missing ${missing.join(', ')} (Debian packages rsync, openssh-client, openssh-server)` : undefined;
}

/** Is any sshd process running (its per-connection children included)? */
function otherSshdRuns(): boolean {
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sshd') return true;
    } catch { /* gone */ }
  }
  return false;
}

export interface RsyncResult {
  wallS: number;
  sentBytes?: number;
  receivedBytes?: number;
  literalBytes?: number;
  matchedBytes?: number;
  command: string[];
}

export class TempSshd {
  readonly port: number;
  readonly commands: string[] = [];
  private child: ChildProcess | undefined;
  /** /run/sshd was created by us (sshd needs it as its privilege separation directory) */
  createdRunDir = false;

  private constructor(readonly dir: string, port: number) {
    this.port = port;
  }

  get sshArgs(): string[] {
    return ['ssh', '-F', '/dev/null', '-p', String(this.port), '-i', join(this.dir, 'client_key'),
      '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR'];
  }

  static async start(dir: string): Promise<TempSshd> {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const s = new TempSshd(dir, await freePortOn('127.0.0.1'));
    for (const key of ['host_key', 'client_key']) {
      const args = ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, key)];
      const r = spawnSync('ssh-keygen', args, { env: toolEnv(), stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
      if (r.status !== 0) throw new Error(`ssh-keygen failed: ${String(r.stderr).trim() || String(r.stdout).trim() || `exit ${r.status ?? r.signal}`}`);
      s.commands.push(`ssh-keygen ${args.map((a) => (a === '' ? "''" : a)).join(' ')}`);
    }
    copyFileSync(join(dir, 'client_key.pub'), join(dir, 'authorized_keys'));
    chmodSync(join(dir, 'authorized_keys'), 0o600);
    s.commands.push(`cp ${join(dir, 'client_key.pub')} ${join(dir, 'authorized_keys')}`);
    if (!existsSync('/run/sshd')) {
      mkdirSync('/run/sshd', { mode: 0o755 });
      s.createdRunDir = true;
      s.commands.push('mkdir -p /run/sshd');
    }
    const args = ['-D', '-e', '-f', '/dev/null',
      '-o', `ListenAddress=127.0.0.1:${s.port}`, '-o', `HostKey=${join(dir, 'host_key')}`,
      '-o', `AuthorizedKeysFile=${join(dir, 'authorized_keys')}`, '-o', `PidFile=${join(dir, 'sshd.pid')}`,
      '-o', 'UsePAM=no', '-o', 'StrictModes=no', '-o', 'PasswordAuthentication=no', '-o', 'PermitRootLogin=prohibit-password',
      '-o', 'LogLevel=ERROR'];
    const fd = openSync(join(dir, 'sshd.log'), 'a');
    try {
      s.child = spawn(SSHD_BIN, args, { env: toolEnv(), stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    trackChild(s.child);
    s.child.once('error', () => undefined);
    s.commands.push(`${SSHD_BIN} ${args.join(' ')} &`);
    // Ready when a login runs a command (bounded: 100 tries, 20 s).
    const deadline = Date.now() + 20_000;
    for (let i = 0; i < 100 && Date.now() < deadline; i++) {
      if (!s.alive) throw new Error(`sshd exited: ${s.logTail()}`);
      const r = await runCommand(s.sshArgs[0]!, [...s.sshArgs.slice(1), 'root@127.0.0.1', 'true'], 10_000);
      if (r.code === 0) return s;
      await sleep(200);
    }
    await s.stop();
    throw new Error(`cannot log in to the temporary sshd on 127.0.0.1:${s.port}: ${s.logTail()}`);
  }

  get alive(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  logTail(): string {
    try {
      return readFileSync(join(this.dir, 'sshd.log'), 'utf8').trim().split('\n').slice(-5).join(' | ');
    } catch {
      return '(no sshd log)';
    }
  }

  /** rsync SRC to DST on "the other host" (through this sshd), delta transfer in place. */
  async rsync(src: string, dst: string, timeoutMs: number): Promise<RsyncResult> {
    const e = this.sshArgs.map((a) => (/\s/.test(a) ? `'${a}'` : a)).join(' ');
    const cmd = ['rsync', '--inplace', '--no-whole-file', '--ignore-times', '--stats', '-e', e, src, `root@127.0.0.1:${dst}`];
    const r = await runCommand(cmd[0]!, cmd.slice(1), timeoutMs);
    if (r.timedOut) throw new Error(`rsync did not finish within ${timeoutMs / 1000} s (killed)`);
    if (r.code !== 0) throw new Error(`rsync exited ${r.code ?? r.signal}: ${(r.stderr.trim() || r.stdout.trim()).split('\n').slice(-3).join(' | ')}`);
    const num = (label: string) => {
      const m = new RegExp(`^${label}: ([\\d,]+)`, 'm').exec(r.stdout);
      return m ? Number(m[1]!.replace(/,/g, '')) : undefined;
    };
    return {
      wallS: r.wallS,
      sentBytes: num('Total bytes sent'),
      receivedBytes: num('Total bytes received'),
      literalBytes: num('Literal data'),
      matchedBytes: num('Matched data'),
      command: cmd,
    };
  }

  /**
   * SIGTERM by pid (SIGKILL after 5 s). /run/sshd goes too if we created it, it is empty and no
   * other sshd runs (another one would need it).
   */
  async stop(): Promise<void> {
    const child = this.child;
    if (child && this.alive) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const t = setTimeout(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } }, 5_000);
      await exited;
      clearTimeout(t);
    }
    if (this.createdRunDir && !otherSshdRuns()) {
      try { rmdirSync('/run/sshd'); } catch { /* not empty or gone */ }
      this.createdRunDir = false;
    }
  }
}
