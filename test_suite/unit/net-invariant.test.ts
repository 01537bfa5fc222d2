// The invariant policy on the peer connection (common/util/assert.ts): a request handler that
// throws an InvariantError must stop marsd, not become an `error` reply the peer retries around
// while the daemon carries on. Each case runs a server in a child process (a broken invariant
// ends the process) behind its stdin/stdout with marsd's uncaught-exception rule (exit 70,
// naming the invariant), and checks from outside that the request got no reply at all.
import t, { type Test } from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { connectOverDuplex, spawnDuplex } from '../../daemon/net/dial.js';
import { ConnectionClosedError, type PeerConnection } from '../../daemon/net/connection.js';
import { EXIT_INVARIANT } from '../../common/util/assert.js';
import { withDeadline } from '../helpers/wait.js';
import { tempDir } from '../helpers/tmp.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const TSX = import.meta.resolve('tsx');
const SECRET = randomBytes(32);
const UUID = 'alpha_1700000000.000000001';

/** A server whose handler for `mode` breaks an invariant; every other handler works. */
function writeServer(dir: string): string {
  const path = join(dir, 'invariant-server.mts');
  writeFileSync(path, `
import { PeerServer } from ${JSON.stringify(join(REPO, 'daemon/net/server.ts'))};
import { duplexFromPair } from ${JSON.stringify(join(REPO, 'daemon/net/dial.ts'))};
import { assert, EXIT_INVARIANT, InvariantError } from ${JSON.stringify(join(REPO, 'common/util/assert.ts'))};
const [secret, uuid, mode] = process.argv.slice(2);
// As daemon/main.ts: a broken invariant names itself and ends the process with EXIT_INVARIANT.
process.on('uncaughtException', (err) => {
  process.stderr.write((err instanceof InvariantError ? 'invariant violated: ' : 'uncaught: ') + err.message + '\\n');
  process.exit(err instanceof InvariantError ? EXIT_INVARIANT : 1);
});
const server = new PeerServer({
  host: 'alpha', uuid, secret,
  log: (level, msg) => process.stderr.write(level + ': ' + msg + '\\n'),
  handlers: {
    async getents() {
      assert(mode !== 'getents', 'the test invariant of getents');
      return { clockUs: 1, entries: [], logs: [] };
    },
    async logRead(_peer, req, sink) {
      // Sending at the wrong position breaks the sink's contract: our bug, not the peer's.
      await sink.send(req.fromPos + 1, Buffer.alloc(10));
      return { pos: req.fromPos + 11, durableEnd: req.fromPos + 11 };
    },
    async syncDigests() { return { digests: Buffer.alloc(0), algorithm: 'md5' as const }; },
    async syncRead(_peer, req) { return Buffer.alloc(req.lengthBytes); },
    async position() { return { seq: 1, origin: 'alpha', pos: 0 }; },
    async pushLink() {},
    notify() { assert(mode !== 'notify', 'the test invariant of notify'); },
  },
});
const conn = await server.serveDuplex(duplexFromPair(process.stdin, process.stdout), 'stdio');
process.stderr.write('closed: ' + (await conn.closed) + '\\n');
process.exit(0);
`);
  return path;
}

async function startServer(t: Test, mode: string): Promise<{ conn: PeerConnection; exited: Promise<{ code: number | null }>; stderr: () => string }> {
  const script = writeServer(tempDir(t));
  const spawned = spawnDuplex(process.execPath, ['--import', TSX, script, SECRET.toString('hex'), UUID, mode]);
  t.teardown(() => spawned.duplex.destroy());
  const conn = await connectOverDuplex(spawned.duplex, 'child', { host: 'beta', uuid: UUID, secret: SECRET, timeoutMs: 20_000 });
  t.teardown(() => conn.close('test done'));
  return { conn, exited: spawned.exited, stderr: spawned.stderrText };
}

/** The request must fail because the server went away, never with an error reply. */
async function failsWithoutReply(t: Test, request: Promise<unknown>, what: string): Promise<void> {
  const outcome = await withDeadline(request.then(() => 'a reply', (err: Error) => err), 20_000, what);
  t.ok(outcome instanceof ConnectionClosedError, `${what}: the connection closed without a reply (got ${outcome instanceof Error ? `${outcome.name}: ${outcome.message}` : outcome})`);
}

t.test('a request handler that breaks an invariant stops the server; the peer gets no error reply', async (t) => {
  const s = await startServer(t, 'getents');
  await s.conn.ping(); // the connection works
  await failsWithoutReply(t, s.conn.getents(), 'getents');
  const exit = await withDeadline(s.exited, 20_000, 'the server process to end');
  t.equal(exit.code, EXIT_INVARIANT, 'the server process ended with EXIT_INVARIANT');
  t.match(s.stderr(), /invariant violated: the test invariant of getents/, 'naming the invariant');
  t.notMatch(s.stderr(), /getents from beta .* failed/, 'not logged as a failed request');
});

t.test('a log-read handler misusing its sink stops the server instead of an EIO reply', async (t) => {
  const s = await startServer(t, 'log-read');
  let frames = 0;
  const read = s.conn.stream({ t: 'log-read', res: 'r1', name: 'log-000000001-alpha', fromPos: 0, follow: false, waitMs: 0, rateBytesPerS: 0 }, () => void (frames += 1));
  await failsWithoutReply(t, read, 'log-read');
  t.equal(frames, 0, 'no data was sent');
  const exit = await withDeadline(s.exited, 20_000, 'the server process to end');
  t.equal(exit.code, EXIT_INVARIANT);
  t.match(s.stderr(), /invariant violated: log-read sink\.send at 1, the stream is at 0/);
});

t.test('a notify handler that breaks an invariant stops the server instead of a log line', async (t) => {
  const s = await startServer(t, 'notify');
  s.conn.notify();
  const reason = await withDeadline(s.conn.closed, 20_000, 'the server to go away after the notify');
  t.pass(`the server went away: ${reason}`);
  const exit = await withDeadline(s.exited, 20_000, 'the server process to end');
  t.equal(exit.code, EXIT_INVARIANT);
  t.match(s.stderr(), /invariant violated: the test invariant of notify/);
});
