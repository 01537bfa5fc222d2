// Issue 17 item 7 against a real NBD server process (test_suite/fixtures/nbd-server.mjs) and
// raw clients on its real Unix socket: the total connection cap, the total reply budget (the
// server's RSS, read from /proc, stays bounded while many clients leave 32 MiB reads unread), a
// client that sends DISC behind unread replies loses its connection after the stall deadline,
// and the export socket is 0600 from the start (under umask 000) so an unprivileged user
// cannot connect.
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { tempDir } from '../helpers/tmp.js';
import { waitFor, withDeadline } from '../helpers/wait.js';
import { MIB, connectAsNobody, discRequest, idleConnection, rawClient, read32, rssBytes } from '../helpers/nbd-raw-client.js';

const FIXTURE = join(import.meta.dirname, '..', 'fixtures', 'nbd-server.mjs');

interface Server {
  proc: ChildProcess;
  socketPath: string;
  logs: string[];
  stats(): Promise<{ connections: number; totalBufferedBytes: number; backpressurePauses: number }>;
  rssBytes(): number;
}

async function startServer(t: Test, env: Record<string, string>): Promise<Server> {
  const dir = tempDir(t, 'mars-nbd-limits-');
  chmodSync(dir, 0o755); // so that `nobody` could reach the socket if its mode let it
  const socketPath = join(dir, 'disk.sock');
  const proc = spawn(process.execPath, [FIXTURE], {
    env: { ...process.env, NBD_SOCKET: socketPath, NBD_DISK: join(dir, 'disk.img'), ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  t.teardown(() => { if (proc.exitCode === null) proc.kill('SIGKILL'); });
  const logs: string[] = [];
  createInterface({ input: proc.stderr! }).on('line', (l) => logs.push(l));
  const lines: string[] = [];
  const waiters: ((l: string) => void)[] = [];
  createInterface({ input: proc.stdout! }).on('line', (l) => { const w = waiters.shift(); if (w) w(l); else lines.push(l); });
  const nextLine = () => withDeadline(new Promise<string>((resolve) => { const l = lines.shift(); if (l !== undefined) resolve(l); else waiters.push(resolve); }), 20_000, 'a line from the NBD server');
  t.equal(await nextLine(), 'ready');
  return {
    proc, socketPath, logs,
    async stats() {
      proc.stdin!.write('stats\n');
      return JSON.parse(await nextLine());
    },
    rssBytes: () => rssBytes(proc.pid!),
  };
}

t.test('the export socket is 0600 from the start, even under umask 000; nobody cannot connect', async (t) => {
  const server = await startServer(t, {});
  t.equal(statSync(server.socketPath).mode & 0o777, 0o600);
  const r = connectAsNobody(server.socketPath);
  t.equal(r.result, 'EACCES', `nobody is refused: ${r.out}`);
});

t.test('total connection cap: connections over it are closed at once, with one log line', async (t) => {
  const server = await startServer(t, { maxConnections: '8' });
  const sockets = await Promise.all(Array.from({ length: 30 }, () => idleConnection(t, server.socketPath)));
  let closedCount = 0;
  for (const x of sockets) void x.closed.then(() => closedCount++);
  await waitFor('22 connections refused', () => closedCount === 22, 20_000);
  t.equal((await server.stats()).connections, 8, 'exactly the cap stays open');
  t.equal(server.logs.filter((l) => /limit 8\); refused/.test(l)).length, 1, 'one rate-limited line');
});

t.test('total reply budget: 12 clients with unread 32 MiB reads keep the server small', async (t) => {
  const server = await startServer(t, { maxTotalBufferedBytes: String(64 * MIB), maxBufferedBytes: String(64 * MIB), replyStallMs: '600000' });
  const baseline = server.rssBytes();
  const clients = await Promise.all(Array.from({ length: 12 }, () => rawClient(t, server.socketPath, 'disk')));
  clients.forEach((c, i) => { for (let k = 0; k < 3; k++) c.write(read32(i * 3 + k)); });
  await waitFor('every client paused or served', async () => (await server.stats()).backpressurePauses >= 10, 30_000);
  let peak = 0;
  let lastTotal = 0;
  const windowEnd = Date.now() + 2000; // measure over a window: the budget must hold, not only once
  await waitFor('a 2 s measuring window', async () => {
    peak = Math.max(peak, server.rssBytes());
    lastTotal = (await server.stats()).totalBufferedBytes;
    return Date.now() > windowEnd;
  }, 10_000, 100);
  t.comment(`RSS baseline ${Math.round(baseline / MIB)} MiB, peak ${Math.round(peak / MIB)} MiB; buffered ${Math.round(lastTotal / MIB)} MiB`);
  t.ok(lastTotal <= 64 * MIB + 32 * MIB, 'buffered bytes stay within the budget plus one request');
  t.ok(peak - baseline < 300 * MIB, `RSS grew by ${Math.round((peak - baseline) / MIB)} MiB (12 x 96 MiB without the total budget)`);
});

t.test('DISC behind unread replies: the connection and its memory go after the stall deadline', async (t) => {
  const server = await startServer(t, { replyStallMs: '1000' });
  const c = await rawClient(t, server.socketPath, 'disk');
  c.write(Buffer.concat([read32(1), read32(2), read32(3), discRequest()]));
  await waitFor('replies buffered', async () => (await server.stats()).totalBufferedBytes > 0, 20_000);
  await waitFor('the connection closed by the server', async () => (await server.stats()).connections === 0, 20_000);
  t.equal((await server.stats()).totalBufferedBytes, 0, 'nothing buffered any more');
  t.ok(server.logs.some((l) => /read none of its \d+ bytes of replies for 1000 ms/.test(l)), 'one log line names the reason');
});
