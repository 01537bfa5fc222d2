// sd_notify(3) for marsd under systemd (Type=notify): "READY=1" once the tree is loaded and the
// control loop runs, "STOPPING=1" when a stop begins, "STATUS=..." for `systemctl status`. The
// message is one datagram to the unix socket named by $NOTIFY_SOCKET. Node has no unix datagram
// sockets, so the unix-dgram module sends it; an abstract socket name ("@...", which that module
// cannot address) or a missing module falls back to systemd-notify(1), which needs
// NotifyAccess=all in the unit (marsd.service sets it). Without $NOTIFY_SOCKET nothing is sent.
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { failStopOnInvariant } from '../common/util/assert.js';

interface DgramSocket {
  send(buf: Buffer, offset: number, length: number, path: string, cb: (err?: Error) => void): void;
  close(): void;
  on(event: 'error', fn: (err: Error) => void): void;
}

/** Sends `state` (newline-separated KEY=VALUE lines) to the service manager; never throws. */
export function sdNotify(state: string, env: NodeJS.ProcessEnv = process.env): Promise<'sent' | 'no-socket' | string> {
  const socketPath = env.NOTIFY_SOCKET;
  if (!socketPath) return Promise.resolve('no-socket');
  if (!socketPath.startsWith('/') && !socketPath.startsWith('@')) return Promise.resolve(`NOTIFY_SOCKET ${JSON.stringify(socketPath)} is no socket path`);
  const socket = socketPath.startsWith('/') ? openDgram() : undefined;
  if (!socket) return viaTool(state);
  return new Promise((resolve) => {
    const buf = Buffer.from(state, 'utf8');
    socket.on('error', (err) => resolve(`sd_notify: ${err.message}`));
    socket.send(buf, 0, buf.length, socketPath, (err) => {
      try { socket.close(); } catch (e) { failStopOnInvariant(e); }
      resolve(err ? `sd_notify to ${socketPath}: ${err.message}` : 'sent');
    });
  });
}

function openDgram(): DgramSocket | undefined {
  try {
    const mod = createRequire(import.meta.url)('unix-dgram') as { createSocket(type: 'unix_dgram'): DgramSocket };
    return mod.createSocket('unix_dgram');
  } catch (err) {
    failStopOnInvariant(err);
    return undefined;
  }
}

function viaTool(state: string): Promise<string> {
  const args = [`--pid=${process.pid}`, ...state.split('\n').filter((l) => l.length > 0)];
  return new Promise((resolve) => {
    execFile('systemd-notify', args, { timeout: 10_000 }, (err, _out, stderr) => {
      resolve(err ? `systemd-notify: ${String(stderr).trim() || err.message}` : 'sent');
    });
  });
}
