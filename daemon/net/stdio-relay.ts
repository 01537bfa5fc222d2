// `marsd --stdio`: the remote command of the SSH transport. It does not run a second protocol
// server (that one would lack the /mars lock and the logger's in-memory durable end); it
// connects to the running marsd's peer socket RUN_DIR/peer.sock and copies bytes both ways
// between that socket and its stdin/stdout. The handshake therefore runs end to end between
// the two daemons, inside SSH, and the relay itself never sees the secret. Its two timeouts
// run on an injected Clock and are cancelled when moot.
import net from 'node:net';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { systemClock, type Clock, type Timer } from '../../common/util/clock.js';

export const PEER_SOCKET_NAME = 'peer.sock';
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** After stdin ended, the daemon closes its side at once; this is only a fallback. */
const HALF_CLOSE_GRACE_MS = 5_000;

export function peerSocketPath(runDir: string): string {
  return join(runDir, PEER_SOCKET_NAME);
}

export class RelayError extends Error {
  override name = 'RelayError';
  constructor(message: string, readonly code?: string) {
    super(message);
  }
}

/** Connect to a marsd's peer socket; a missing or stale socket says that marsd is not running. */
export function connectPeerSocket(path: string, timeoutMs = DEFAULT_CONNECT_TIMEOUT_MS, clock: Clock = systemClock): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    const timer = clock.setTimeout(() => {
      socket.destroy();
      reject(new RelayError(`connecting to ${path} timed out after ${timeoutMs} ms`, 'ETIMEDOUT'));
    }, timeoutMs);
    socket.once('error', (err: NodeJS.ErrnoException) => {
      timer.cancel();
      const why =
        err.code === 'ENOENT' ? `marsd is not running here, or serves no peers: ${path} does not exist`
          : err.code === 'ECONNREFUSED' ? `marsd is not running here: ${path} is a stale socket nobody listens on`
            : err.code === 'EACCES' ? `permission denied on ${path}: run as the user marsd runs as`
              : `cannot connect to ${path}: ${err.message}`;
      reject(new RelayError(why, err.code));
    });
    socket.once('connect', () => {
      timer.cancel();
      socket.removeAllListeners('error');
      resolve(socket);
    });
  });
}

/**
 * Copy input -> socket and socket -> output until either side ends: stdin's end is passed on
 * as a half-close (the daemon then closes the connection), the daemon's close ends the relay.
 * Backpressure holds both ways (pipe). Resolves with why it ended; never rejects.
 */
export function relay(socket: net.Socket, input: Readable, output: Writable, clock: Clock = systemClock): Promise<string> {
  return new Promise((resolve) => {
    let done = false;
    let grace: Timer | undefined;
    const finish = (reason: string) => {
      if (done) return;
      done = true;
      grace?.cancel();
      input.unpipe(socket);
      socket.unpipe(output);
      input.pause();
      socket.destroy();
      resolve(reason);
    };
    socket.on('error', (err) => finish(`peer socket: ${err.message}`));
    socket.once('close', () => finish('marsd closed the connection'));
    output.on('error', (err) => finish(`output: ${err.message}`));
    input.on('error', (err) => finish(`input: ${err.message}`));
    input.once('end', () => {
      grace = clock.setTimeout(() => finish('input ended'), HALF_CLOSE_GRACE_MS);
    });
    socket.pipe(output, { end: false }); // stdout stays ours to flush before exiting
    input.pipe(socket); // ends the socket's writing side when input ends
  });
}

/** Resolves once everything written to `output` has been handed to the OS (or it failed). */
export function flushed(output: Writable): Promise<void> {
  return new Promise((resolve) => {
    if (output.writableLength === 0 || output.destroyed) {
      resolve();
      return;
    }
    const done = () => {
      output.off('drain', done);
      output.off('error', done);
      output.off('close', done);
      resolve();
    };
    output.once('drain', done);
    output.once('error', done);
    output.once('close', done);
  });
}

/** Run the relay for `marsd --stdio`; throws RelayError when the daemon cannot be reached. */
export async function runStdioRelay(opts: { runDir: string; input: Readable; output: Writable; connectTimeoutMs?: number; clock?: Clock }): Promise<string> {
  const clock = opts.clock ?? systemClock;
  const socket = await connectPeerSocket(peerSocketPath(opts.runDir), opts.connectTimeoutMs, clock);
  const reason = await relay(socket, opts.input, opts.output, clock);
  await flushed(opts.output);
  return reason;
}
