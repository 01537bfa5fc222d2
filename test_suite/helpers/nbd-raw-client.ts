// Raw NBD clients for the resource-limit attacks (issue 17 item 7), shared by the test against
// a fixture server process (test_suite/integration/nbd-limits.test.ts) and the one against a
// real marsd (test_suite/e2e/nbd-bounds.test.ts): connections that do nothing, clients that
// complete the handshake and then only write what the test tells them to (never reading a
// reply), request encoders, a process's RSS from /proc, and a connection attempt as `nobody`.
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Test } from 'tap';
import { withDeadline } from './wait.js';
import { clientHandshake } from '../../kernel-shim/nbd-client-handshake.js';
import * as P from '../../kernel-shim/nbd-protocol.js';

export const MIB = 1024 * 1024;

/** A connected socket that sends nothing; `closed` settles when the server (or anybody) closes it. */
export interface IdleConnection {
  s: net.Socket;
  closed: Promise<void>;
}

/** Connects to socketPath and does nothing else (no handshake); destroyed in teardown. */
export function idleConnection(t: Test, socketPath: string, timeoutMs = 10_000): Promise<IdleConnection> {
  const s = net.connect(socketPath);
  s.on('error', () => undefined);
  t.teardown(() => s.destroy());
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  return withDeadline(new Promise<IdleConnection>((resolve, reject) => {
    s.once('connect', () => resolve({ s, closed }));
    void closed.then(() => reject(new Error(`${socketPath}: closed before connecting`)));
  }), timeoutMs, `connect to ${socketPath}`);
}

/** A client that completes the handshake, then only writes what it is told to (it never reads a reply). */
export async function rawClient(t: Test, socketPath: string, exportName: string): Promise<net.Socket> {
  const s = net.connect(socketPath);
  t.teardown(() => s.destroy());
  s.on('error', () => undefined);
  await withDeadline(new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('close', () => reject(new Error('closed before connecting'))); }), 10_000, 'connect');
  await withDeadline(clientHandshake(s, exportName, false), 10_000, 'handshake');
  s.pause(); // never read a reply
  return s;
}

/** A READ request of `length` bytes at `offset` with handle `handle`. */
export const readRequest = (handle: number, offset: number, length: number): Buffer =>
  P.encodeRequestHeader({ type: P.NBD_CMD_READ, handleLo: handle, offset, length });

/** The i-th 32 MiB READ (the largest request allowed): offsets cycle through the first 256 MiB. */
export const read32 = (i: number): Buffer => readRequest(i, (i % 8) * 32 * MIB, 32 * MIB);

/** NBD_CMD_DISC. */
export const discRequest = (): Buffer => P.encodeRequestHeader({ type: P.NBD_CMD_DISC });

/** VmRSS of process `pid` in bytes, from /proc. */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/**
 * Tries to connect to the Unix socket `path` as user nobody (setpriv, clean environment): the
 * first line the attempt printed, CONNECTED or the error code (EACCES, ...), and all output.
 */
export function connectAsNobody(path: string): { result: string; out: string } {
  const r = spawnSync('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, '-e',
    `require('net').connect(${JSON.stringify(path)}).on('connect',()=>{console.log('CONNECTED');process.exit(0)}).on('error',(e)=>{console.log(e.code);process.exit(1)})`],
  { encoding: 'utf8', timeout: 20_000, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  return { result: (r.stdout ?? '').trim().split('\n')[0] ?? '', out };
}
