// Network resource bounds of a real marsd (docs/security.md, "Network"; issue 17 item 5):
// 300 idle unauthenticated sockets from one address neither block a member's connection nor
// grow the log one line each, and an authenticated member that sends 64 x 1 MiB sync-reads on
// each of 32 connections without reading a reply keeps the daemon's RSS bounded (its
// connections stop being read: backpressure). Every wait has a deadline.
import t from 'tap';
import net from 'node:net';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster } from '../helpers/multi-host.js';
import { waitFor } from '../helpers/wait.js';
import { dialPeer } from '../../daemon/net/dial.js';
import { clientHandshake } from '../../daemon/net/handshake.js';
import { encodeFrame } from '../../daemon/net/frame.js';
import type { MarsHost } from '../helpers/cluster.js';

const RES = 'r0';
const SIZE = 16 << 20;
const MiB = 1 << 20;
const RSS_BOUND_BYTES = 400 * MiB;

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

const logLines = (h: MarsHost) => readFileSync(h.logPath, 'utf8').split('\n').length;

function splitAddress(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  return { host: address.slice(0, i), port: Number(address.slice(i + 1)) };
}

t.test('idle unauthenticated sockets do not lock members out; an unread-replies flood keeps RSS bounded', async (t) => {
  const c = await startCluster(t, { hosts: ['alpha', 'beta'], sizeBytes: SIZE, res: RES });
  const alpha = c.primary;
  const pid = alpha.pid!;
  const address = alpha.link('ips/ip-alpha')!;
  const { host, port } = splitAddress(address);
  const secret = readFileSync(join(alpha.marsDir, 'cluster-secret'), 'utf8');
  const uuid = alpha.link('uuid')!;
  const sockets: net.Socket[] = [];
  t.teardown(() => sockets.forEach((s) => s.destroy()));

  // 1. 300 idle sockets from another loopback address, as an attacker's.
  const linesBefore = logLines(alpha);
  for (let i = 0; i < 300; i++) {
    const s = net.connect({ host, port, localAddress: '127.0.0.77' });
    s.on('error', () => undefined);
    sockets.push(s);
  }
  await Promise.all(sockets.map((s) => (s.connecting ? once(s, 'connect').catch(() => undefined) : undefined)));
  const member = await dialPeer({ address, host: 'beta', uuid, secret, expectHost: 'alpha', timeoutMs: 5000 });
  const ents = await member.getents();
  t.ok(ents.entries.length > 0, 'a member connects and is served while 300 idle sockets are open');
  member.close('test done');
  await waitFor('the idle sockets are refused or dropped', () => sockets.filter((s) => !s.destroyed && !s.closed).length <= 4, 20_000);
  const grown = logLines(alpha) - linesBefore;
  t.ok(grown <= 6, `300 refused or dropped sockets added ${grown} log line(s)`);
  sockets.forEach((s) => s.destroy());

  // 2. 32 authenticated connections, 64 x 1 MiB sync-reads each, replies never read.
  const rssBefore = rssBytes(pid);
  const floods: net.Socket[] = [];
  t.teardown(() => floods.forEach((s) => s.destroy()));
  for (let i = 0; i < 32; i++) {
    const socket = net.connect({ host, port });
    socket.on('error', () => undefined);
    floods.push(socket);
    await once(socket, 'connect');
    const { sealer } = await clientHandshake(socket, { host: 'beta', uuid, secret: Buffer.from(secret.trim(), 'hex') });
    socket.pause(); // never read a reply
    for (let id = 1; id <= 64; id++) {
      const fromPos = ((i * 64 + id) % (SIZE / MiB)) * MiB;
      for (const b of sealer.seal(encodeFrame({ t: 'sync-read', id, res: RES, fromPos, lengthBytes: MiB }))) socket.write(b);
    }
  }
  let peakBytes = rssBefore;
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    peakBytes = Math.max(peakBytes, rssBytes(pid));
    await new Promise((resolve) => setTimeout(resolve, 100)); // sampling period of the RSS probe
  }
  t.ok(peakBytes < RSS_BOUND_BYTES, `RSS of marsd went from ${(rssBefore / MiB).toFixed(0)} to at most ${(peakBytes / MiB).toFixed(0)} MiB (bound ${RSS_BOUND_BYTES / MiB} MiB) under 32 x 64 unread 1 MiB replies`);
  floods.forEach((s) => s.destroy());

  // Still serving afterwards.
  const again = await dialPeer({ address, host: 'beta', uuid, secret, expectHost: 'alpha', timeoutMs: 5000 });
  await again.ping();
  again.close('test done');
  t.ok(alpha.running, 'marsd of alpha kept running');
});
