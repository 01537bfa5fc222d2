// The connecting side of the peer protocol and its transports: TCP, TLS, and SSH (the peer
// runs `marsd --stdio` as the remote command and the protocol flows over the child's
// stdout/stdin). Whatever the transport, the mutual handshake runs on top, so TLS and SSH add
// confidentiality and their own authentication but never replace ours. Deadlines and grace
// periods run on the injected Clock (DialAuthOptions.clock), and every timer is cancelled once
// it is moot, so a finished dial keeps nothing alive.
import net from 'node:net';
import tls from 'node:tls';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Duplex, type Readable, type Writable } from 'node:stream';
import { assert, rethrowInvariant } from '../../common/util/assert.js';
import { systemClock, type Clock, type Timer } from '../../common/util/clock.js';
import { normalizeSecret } from './auth.js';
import { PeerConnection } from './connection.js';
import type { LogLevel } from '../../common/util/log.js';
import { clientHandshake, DEFAULT_HANDSHAKE_TIMEOUT_MS, HandshakeError } from './handshake.js';

export const DEFAULT_DIAL_TIMEOUT_MS = 10_000;
/** How much of an SSH child's stderr is kept for error messages. */
const MAX_STDERR_BYTES = 8 * 1024;
/** After close, an SSH child that ignores SIGTERM is killed this much later. */
const CHILD_KILL_GRACE_MS = 2_000;
/** How long a failed dial waits for ssh to exit, so that its complaint on stderr is complete. */
const SSH_STDERR_GRACE_MS = 1_000;

export class AddressError extends Error {
  override name = 'AddressError';
}

// ---- addresses ----------------------------------------------------------------------------------

const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$/;

/**
 * Parse `ADDR:PORT` as written in ips/ip-HOST: an IPv4 address, `[IPv6]`, or (when allowed) a
 * DNS name, then a decimal port.
 */
export function parseAddress(text: string, opts: { allowPortZero?: boolean; allowHostName?: boolean } = {}): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):([0-9]{1,5})$/.exec(text);
  if (!m) throw new AddressError(`invalid address ${JSON.stringify(text)}: expected ADDR:PORT, or [IPv6]:PORT`);
  const port = Number(m[3]);
  if (port > 65535 || (port === 0 && !opts.allowPortZero)) throw new AddressError(`invalid port in ${JSON.stringify(text)}`);
  if (m[1] !== undefined) {
    if (net.isIPv6(m[1])) return { host: m[1], port };
    throw new AddressError(`invalid address ${JSON.stringify(text)}: ${JSON.stringify(m[1])} is not an IPv6 address`);
  }
  const host = m[2]!;
  if (net.isIPv4(host)) return { host, port };
  if (opts.allowHostName && HOST_NAME.test(host)) return { host, port };
  throw new AddressError(`invalid address ${JSON.stringify(text)}: ${JSON.stringify(host)} is not an IPv4 address${opts.allowHostName ? ' or host name' : ''} (write IPv6 as [ADDR]:PORT)`);
}

export function formatAddress(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

// ---- authentication options shared by all transports ------------------------------------------

export interface DialAuthOptions {
  /** Our host name. */
  host: string;
  /** Our cluster uuid, or ANY_UUID while joining. */
  uuid: string;
  /** The secret to prove, or where to get the current one (it changes during a rotation). */
  secret: Buffer | string | (() => Buffer);
  /** Refuse the peer unless it says it is this host. */
  expectHost?: string;
  /** Deadline for connecting plus the handshake. */
  timeoutMs?: number;
  /** Encrypt every frame (transport spec `tcp,encrypt`); otherwise frames are authenticated only. */
  encrypt?: boolean;
  keepaliveMs?: number;
  idleTimeoutMs?: number;
  maxBufferedStreamBytes?: number;
  log?: (level: LogLevel, msg: string) => void;
  /** Deadlines, the handshake and the connection's keepalive (default: the system clock). */
  clock?: Clock;
}

/**
 * Run the client handshake over a connected duplex and wrap it in a client PeerConnection.
 * The duplex is destroyed when the handshake fails.
 */
export async function connectOverDuplex(duplex: Duplex, label: string, opts: DialAuthOptions): Promise<PeerConnection> {
  const result = await clientHandshake(duplex, {
    host: opts.host,
    uuid: opts.uuid,
    secret: normalizeSecret(typeof opts.secret === 'function' ? opts.secret() : opts.secret),
    expectHost: opts.expectHost,
    ...(opts.encrypt ? { encrypt: true } : {}),
    handshakeTimeoutMs: opts.timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
    ...(opts.clock !== undefined ? { clock: opts.clock } : {}),
  });
  return new PeerConnection({
    stream: duplex,
    decoder: result.decoder,
    sealer: result.sealer,
    role: 'client',
    peerHost: result.peerHost,
    peerUuid: result.peerUuid,
    label,
    log: opts.log,
    keepaliveMs: opts.keepaliveMs,
    idleTimeoutMs: opts.idleTimeoutMs,
    maxBufferedStreamBytes: opts.maxBufferedStreamBytes,
    ...(opts.clock !== undefined ? { clock: opts.clock } : {}),
  });
}

// ---- TCP and TLS --------------------------------------------------------------------------------

export interface DialOptions extends DialAuthOptions {
  /** `ADDR:PORT` of the peer (ips/ip-HOST). */
  address: string;
  /** Wrap the connection in TLS. Without caFile the system CAs verify the server. */
  tls?: { caFile?: string; rejectUnauthorized?: boolean; servername?: string };
}

export async function dialPeer(opts: DialOptions): Promise<PeerConnection> {
  const { host, port } = parseAddress(opts.address, { allowHostName: true });
  const timeoutMs = opts.timeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS;
  const clock = opts.clock ?? systemClock;
  const deadlineMs = clock.nowMs() + timeoutMs;
  const socket = await connectSocket(host, port, opts, timeoutMs, clock);
  socket.setNoDelay(true);
  const remainingMs = Math.max(1, deadlineMs - clock.nowMs());
  return connectOverDuplex(socket, opts.address, { ...opts, timeoutMs: remainingMs });
}

function connectSocket(host: string, port: number, opts: DialOptions, timeoutMs: number, clock: Clock): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    let socket: net.Socket;
    const readyEvent = opts.tls ? 'secureConnect' : 'connect';
    if (opts.tls) {
      socket = tls.connect({
        host,
        port,
        ca: opts.tls.caFile ? readFileSync(opts.tls.caFile) : undefined,
        rejectUnauthorized: opts.tls.rejectUnauthorized ?? true,
        servername: opts.tls.servername,
        minVersion: 'TLSv1.2',
      });
    } else {
      socket = net.connect({ host, port });
    }
    const timer = clock.setTimeout(() => {
      socket.destroy();
      reject(new Error(`connecting to ${opts.address} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    const onError = (err: Error) => {
      timer.cancel();
      socket.destroy();
      reject(new Error(`cannot connect to ${opts.address}: ${err.message}`));
    };
    socket.once('error', onError);
    socket.once(readyEvent, () => {
      timer.cancel();
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

// ---- duplexes from stream pairs and child processes ----------------------------------------------

/**
 * One Duplex from a readable and a writable stream: process.stdin/stdout of `marsd --stdio`,
 * or a child's stdout/stdin. Backpressure passes through both ways; onDestroy runs once when
 * the duplex is destroyed (kill the child, for instance).
 */
export function duplexFromPair(readable: Readable, writable: Writable, onDestroy?: () => void): Duplex {
  return new PairDuplex(readable, writable, onDestroy);
}

class PairDuplex extends Duplex {
  private ended = false;

  constructor(
    private readonly input: Readable,
    private readonly output: Writable,
    private readonly onDestroy: (() => void) | undefined,
  ) {
    super();
    input.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) input.pause();
    });
    input.on('end', () => this.finishReading());
    input.on('close', () => this.finishReading());
    input.on('error', (err) => this.destroy(err));
    output.on('error', (err) => this.destroy(err));
    input.pause(); // flows once someone reads (_read)
  }

  override _read(): void {
    this.input.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.output.write(chunk)) {
      callback();
      return;
    }
    const done = (err?: Error) => {
      this.output.off('drain', onDrain);
      this.output.off('close', onClose);
      callback(err);
    };
    const onDrain = () => done();
    const onClose = () => done(new Error('the output stream closed'));
    this.output.once('drain', onDrain);
    this.output.once('close', onClose);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.output.end(() => callback());
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.input.destroy();
    this.output.destroy();
    this.onDestroy?.();
    callback(err);
  }

  private finishReading(): void {
    if (this.ended) return;
    this.ended = true;
    this.push(null);
  }
}

export interface ChildDuplex {
  duplex: Duplex;
  child: ChildProcess;
  /** The end of what the child wrote to stderr (for error messages). */
  stderrText(): string;
  /** Resolves when the child has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Spawn a command whose stdin/stdout carry the protocol (ssh, or any local stand-in for tests)
 * and wrap them in a Duplex; destroying the duplex terminates the child.
 */
export function spawnDuplex(command: string, args: string[], opts: { env?: NodeJS.ProcessEnv; clock?: Clock } = {}): ChildDuplex {
  const clock = opts.clock ?? systemClock;
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env });
  let stderr = Buffer.alloc(0);
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr = Buffer.concat([stderr, chunk]);
    if (stderr.length > MAX_STDERR_BYTES) stderr = stderr.subarray(stderr.length - MAX_STDERR_BYTES);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: null, signal: null })); // could not be spawned
  });
  const terminate = () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const killTimer = clock.setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }, CHILD_KILL_GRACE_MS);
    void exited.then(() => killTimer.cancel()); // a child that obeys SIGTERM leaves no timer behind
  };
  const duplex = duplexFromPair(child.stdout!, child.stdin!, terminate);
  child.once('error', (err) => duplex.destroy(new Error(`cannot run ${command}: ${err.message}`)));
  return { duplex, child, stderrText: () => stderr.toString('utf8').trim(), exited };
}

// ---- SSH ----------------------------------------------------------------------------------------

export interface SshDialOptions extends DialAuthOptions {
  /** `user@host` or `host`. */
  target: string;
  port?: number;
  identityFile?: string;
  /** Extra ssh arguments before the target, e.g. ['-o', 'StrictHostKeyChecking=yes']. */
  sshOptions?: string[];
  /** The command the remote side runs, e.g. ['marsd', '--stdio', '--mars-dir', '/mars', '--host', 'b']. */
  remoteCommand: string[];
  /** The ssh binary (default "ssh"); tests substitute a local stand-in. */
  sshCommand?: string;
}

// A host name, or an IPv6 address bare (as ssh wants it) or bracketed; never starting with '-'.
const SSH_TARGET = /^(?:[A-Za-z0-9_][-A-Za-z0-9_.]{0,63}@)?(?:[A-Za-z0-9](?:[-A-Za-z0-9.]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f]*:[0-9A-Fa-f:.]+)$/;

/** Quote one word for the remote shell: ssh joins its command arguments with spaces. */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_@%+:,./-]+$/.test(word)) return word; // no '=': a leading NAME=value would be an assignment
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The argument vector of the ssh invocation (exported for tests). */
export function sshArgs(opts: Pick<SshDialOptions, 'target' | 'port' | 'identityFile' | 'sshOptions' | 'remoteCommand'>): string[] {
  // A target starting with '-' would be read as an option.
  if (!SSH_TARGET.test(opts.target)) throw new AddressError(`invalid ssh target ${JSON.stringify(opts.target)}: expected host or user@host`);
  assert(opts.remoteCommand.length > 0, 'dialSsh needs a remote command');
  const args = ['-o', 'BatchMode=yes', '-T'];
  if (opts.port !== undefined) {
    assert(Number.isInteger(opts.port) && opts.port > 0 && opts.port <= 65535, `invalid ssh port ${opts.port}`);
    args.push('-p', String(opts.port));
  }
  if (opts.identityFile !== undefined) args.push('-i', opts.identityFile);
  args.push(...(opts.sshOptions ?? []));
  // '--' ends ssh's options: nothing in the remote command can be taken for one.
  args.push(opts.target, '--', ...opts.remoteCommand.map(shellQuote));
  return args;
}

export async function dialSsh(opts: SshDialOptions): Promise<PeerConnection> {
  const command = opts.sshCommand ?? 'ssh';
  const clock = opts.clock ?? systemClock;
  const spawned = spawnDuplex(command, sshArgs(opts), { clock });
  const label = `ssh ${opts.target}`;
  try {
    return await connectOverDuplex(spawned.duplex, label, { ...opts, timeoutMs: opts.timeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS });
  } catch (err) {
    spawned.duplex.destroy();
    rethrowInvariant(err);
    // ssh's own complaint (host key, permission denied, command not found) is the useful part.
    let grace: Timer | undefined;
    await Promise.race([spawned.exited, new Promise((resolve) => (grace = clock.setTimeout(() => resolve(undefined), SSH_STDERR_GRACE_MS)))]);
    grace?.cancel();
    const stderr = spawned.stderrText();
    const message = `${label}: ${(err as Error).message}${stderr ? `; ${command} said: ${stderr}` : ''}`;
    throw err instanceof HandshakeError ? new HandshakeError(message, err.refusal) : new Error(message);
  }
}
