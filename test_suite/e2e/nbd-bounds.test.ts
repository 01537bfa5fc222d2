// Issue 17 item 7 against a real marsd (primary of one resource, started under umask 000) and
// raw clients on its export socket, the attacks test_suite/integration/nbd-limits.test.ts makes
// against a fixture server process, with marsd's own limits (docs/nbd.md "Resource limits"):
//   - the export socket is 0600 from the moment it exists and user nobody cannot connect;
//   - 300 connections: at most 128 are held (the others are closed at once, with one log line);
//   - 40 clients leaving 2 x 32 MiB reads unread: marsd answers only what the 256 MiB total
//     budget holds and its RSS (from /proc) stays bounded;
//   - a client that sends DISC behind unread replies loses its connection after the 30 s stall
//     deadline (marsd has no option to shorten it: the real deadline, waited for with a deadline).
// After each attack marsd is the same process, still primary, nothing was written, and a normal
// client gets the data written before the attacks.
import t, { type Test } from 'tap';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, readdirSync, statSync, watch } from 'node:fs';
import { dirname, join } from 'node:path';
import { freePort, startHost, type MarsHost } from '../helpers/cluster.js';
import { waitFor, withDeadline } from '../helpers/wait.js';
import { MIB, connectAsNobody, discRequest, idleConnection, rawClient, read32, rssBytes } from '../helpers/nbd-raw-client.js';
import { clientHandshake } from '../../kernel-shim/nbd-client-handshake.js';
import { NbdClient } from '../../kernel-shim/nbd-client.js';

const SIZE = 256 * MIB; // read32 reads anywhere in the first 256 MiB
const CAP = 128; // docs/nbd.md: maxConnections
const BUDGET = 256 * MIB; // docs/nbd.md: maxTotalBufferedBytes
const STALL_MS = 30_000; // docs/nbd.md: replyStallMs
const PATTERN_AT = [0, 100 * MIB, 224 * MIB];

const mode = (p: string) => statSync(p).mode & 0o777;

/** marsd's log from byte `from` on, as lines. */
function logSince(h: MarsHost, from: number): string[] {
  return readFileSync(h.logPath).subarray(from).toString('utf8').split('\n').filter((l) => l !== '');
}

/** mars_nbd_requests_total of answered reads of r0 (marsd --metrics). */
async function readsAnswered(port: number): Promise<number> {
  const text = await withDeadline(fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text()), 10_000, 'GET /metrics');
  const m = /^mars_nbd_requests_total\{[^}]*resource="r0"[^}]*type="read"[^}]*result="ok"[^}]*\} (\d+)/m.exec(text)
    ?? /^mars_nbd_requests_total\{[^}]*type="read"[^}]*resource="r0"[^}]*result="ok"[^}]*\} (\d+)/m.exec(text);
  return m ? Number(m[1]) : 0;
}

t.test('NBD attacks against a real marsd are refused or bounded', async (t) => {
  const metricsPort = await freePort();
  const h = await startHost(t, { host: 'alpha', sizeBytes: SIZE, start: false, extraArgs: ['--metrics', `127.0.0.1:${metricsPort}`] });
  // Every directory above the run directory open: only the socket's own mode may refuse nobody.
  for (let d = h.dir; d !== '/'; d = dirname(d)) if ((mode(d) & 0o005) !== 0o005) chmodSync(d, mode(d) | 0o005);
  const oldUmask = process.umask(0); // marsd inherits umask 000
  try {
    await h.start();
  } finally {
    process.umask(oldUmask);
  }
  const pid = h.pid!;
  t.equal(Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/^Umask:\s+(\d+)/m)?.[1] ?? -1), 0, 'marsd runs under umask 000');

  // Every mode the export socket has when it appears (watched from before it exists).
  const seenModes: number[] = [];
  const watcher = watch(h.runDir, (_ev, name) => {
    if (name !== 'r0.sock') return;
    try { seenModes.push(mode(h.socketPath('r0'))); } catch { /* gone again */ }
  });
  t.teardown(() => watcher.close());
  await h.createResource('r0');
  await h.waitPrimary('r0');
  watcher.close();
  const sock = h.socketPath('r0');

  const pattern = randomBytes(4 * MIB);
  {
    const c = await NbdClient.connect(sock, 'r0');
    for (const at of PATTERN_AT) await c.write(at, pattern);
    await c.flush();
    await c.disconnect();
  }
  const resDir = join(h.marsDir, 'resource-r0');
  const logfileSizes = () => readdirSync(resDir).filter((n) => n.startsWith('log-')).sort().map((n) => `${n}:${statSync(join(resDir, n)).size}`).join(' ');
  const logfilesBefore = logfileSizes();
  const openCountZero = (what: string) => h.until(what, () => h.actual('r0', 'open-count') === '0', 30_000);

  /** marsd is the same process, still primary, nothing written, and a normal client reads the pattern. */
  const stillServes = async (t: Test) => {
    t.equal(h.pid, pid, 'marsd is still the same process');
    t.equal(h.actual('r0', 'is-primary'), '1', 'still primary');
    const c = await NbdClient.connect(sock, 'r0');
    try {
      for (const at of PATTERN_AT) t.ok((await c.read(at, pattern.length)).equals(pattern), `a normal client reads the data at ${at / MIB} MiB`);
    } finally {
      await c.disconnect();
    }
    t.equal(logfileSizes(), logfilesBefore, 'no logfile changed');
  };

  t.test('the export socket is 0600 from the start, under umask 000; nobody cannot connect', async (t) => {
    t.ok(seenModes.length > 0, 'the socket was seen appearing');
    t.same([...new Set(seenModes)], [0o600], `modes seen as it appeared: ${seenModes.map((m) => m.toString(8)).join(',')}`);
    t.equal(mode(sock), 0o600, 'the export socket is 0600');
    t.equal(mode(h.runDir) & 0o005, 0o005, 'the run directory is open to others (only the socket mode refuses)');
    // Control: a 0666 socket next to it is reachable for nobody, so the refusal is the mode's.
    const control = net.createServer((s) => s.destroy());
    const controlPath = join(h.runDir, 'control.sock');
    await new Promise<void>((r) => control.listen(controlPath, r));
    t.teardown(() => new Promise<void>((r) => control.close(() => r())));
    chmodSync(controlPath, 0o666);
    const ok = connectAsNobody(controlPath);
    t.equal(ok.result, 'CONNECTED', 'nobody reaches a 0666 socket in the run directory', { output: ok.out });
    const r = connectAsNobody(sock);
    t.equal(r.result, 'EACCES', 'nobody is refused', { output: r.out });
    await stillServes(t);
  });

  t.test(`total connection cap: of 300 connections at most ${CAP} are held, the rest closed at once`, async (t) => {
    await openCountZero('no connection open before the attack');
    const logFrom = statSync(h.logPath).size;
    const startMs = Date.now();
    // Each attacker completes the handshake if it gets a greeting, so the handshake timeout
    // (10 s) cannot be what closes it: it holds its connection until the test lets go.
    const attackers = await Promise.all(Array.from({ length: 300 }, () => idleConnection(t, sock)));
    const outcome = attackers.map(({ s, closed }) => Promise.race([
      clientHandshake(s, 'r0', false).then(() => 'held' as const, () => 'refused' as const),
      closed.then(() => 'refused' as const),
    ]));
    const results = await withDeadline(Promise.all(outcome), 20_000, '300 connections held or refused');
    const held = results.filter((r) => r === 'held').length;
    const refusedMs = Date.now() - startMs;
    t.comment(`${held} held, ${300 - held} refused, in ${refusedMs} ms`);
    t.ok(held <= CAP, `at most the cap is held (${held})`);
    t.equal(held, CAP, 'the cap, not fewer: no connection was open before');
    t.ok(refusedMs < 10_000, 'the others were closed at once (before any handshake timeout)');
    await h.until(`open-count ${CAP}`, () => h.actual('r0', 'open-count') === String(CAP), 20_000);
    await t.rejects(NbdClient.connect(sock, 'r0', { timeoutMs: 10_000 }), 'a client over the cap is refused too');
    for (const a of attackers) a.s.destroy();
    await openCountZero('every attacker gone');
    const lines = logSince(h, logFrom);
    t.comment(`marsd logged ${lines.length} lines for the attack`);
    const refusals = lines.filter((l) => /connections open \(limit 128\); refused \d+ connection/.test(l));
    t.ok(refusals.length >= 1 && refusals.length <= 2, `the refusals logged in one line per 10 s: ${refusals.join(' | ')}`);
    t.ok(lines.length <= 10, `marsd logged a bounded number of lines (${lines.length}) for ${300 - CAP} refusals`);
    await stillServes(t);
  });

  t.test('total reply budget: 40 clients with unread 32 MiB reads keep marsd small', async (t) => {
    await openCountZero('no connection open before the attack');
    const baseline = rssBytes(pid);
    const answeredBefore = await readsAnswered(metricsPort);
    const clients = await Promise.all(Array.from({ length: 40 }, () => rawClient(t, sock, 'r0')));
    clients.forEach((c, i) => { c.write(Buffer.concat([read32(2 * i), read32(2 * i + 1)])); });
    // The budget holds 8 replies of 32 MiB; then no connection reads requests.
    await waitFor('the budget filled with unread replies', async () => (await readsAnswered(metricsPort)) - answeredBefore >= BUDGET / (32 * MIB), 30_000);
    let peak = 0;
    const windowEnd = Date.now() + 3000; // measure over a window: the budget must hold, not only once
    await waitFor('a 3 s measuring window', () => { peak = Math.max(peak, rssBytes(pid)); return Date.now() > windowEnd; }, 10_000, 50);
    const answered = (await readsAnswered(metricsPort)) - answeredBefore;
    t.comment(`RSS baseline ${Math.round(baseline / MIB)} MiB, peak ${Math.round(peak / MIB)} MiB; ${answered} of 80 reads answered`);
    t.ok(answered <= BUDGET / (32 * MIB) + 2, `only what the budget holds is answered (${answered}; 40 without the total budget)`);
    t.ok(peak - baseline < 400 * MIB, `RSS grew by ${Math.round((peak - baseline) / MIB)} MiB (40 x 32 MiB = 1280 MiB without the total budget)`);
    t.equal(h.actual('r0', 'open-count'), '40', 'every attacker is still connected (within the stall deadline)');
    for (const c of clients) c.destroy();
    await openCountZero('every attacker gone');
    await stillServes(t);
  });

  t.test('DISC behind unread replies: the connection goes after the 30 s stall deadline', async (t) => {
    await openCountZero('no connection open before the attack');
    const logFrom = statSync(h.logPath).size;
    const c = await rawClient(t, sock, 'r0');
    const sentMs = Date.now();
    c.write(Buffer.concat([read32(1), read32(2), read32(3), discRequest()]));
    await h.until('the staller in transmission', () => h.actual('r0', 'open-count') === '1', 20_000);
    // Meanwhile other clients are served: one staller holds 32 MiB, far from the total budget.
    const other = await NbdClient.connect(sock, 'r0');
    t.ok((await withDeadline(other.read(PATTERN_AT[1]!, pattern.length), 20_000, 'a read beside the staller')).equals(pattern), 'a normal client is served beside the staller');
    await other.disconnect();
    const stallLine = /read none of its \d+ bytes of replies for 30000 ms/;
    await h.until('marsd closes the staller', () => logSince(h, logFrom).some((l) => stallLine.test(l)) && h.actual('r0', 'open-count') === '0', STALL_MS + 30_000, 250);
    const closedAfter = Date.now() - sentMs;
    t.comment(`closed ${closedAfter} ms after the requests and DISC were sent`);
    t.ok(closedAfter >= STALL_MS - 1000, `not before the stall deadline (${closedAfter} ms)`);
    t.ok(closedAfter <= STALL_MS + 25_000, `soon after it (${closedAfter} ms; the watchdog checks every 15 s)`);
    t.equal(logSince(h, logFrom).filter((l) => stallLine.test(l)).length, 1, 'one log line names the reason');
    // The client sees its connection end once it reads what the kernel had taken.
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    c.resume();
    await withDeadline(closed, 10_000, 'the staller sees the connection closed');
    t.pass('the staller\'s connection is closed');
    await stillServes(t);
  });
});
