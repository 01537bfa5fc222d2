// The invariant policy in the NBD server (common/util/assert.ts): an InvariantError thrown by a
// backend while a request is handled is not an answer for the client. It must not be turned
// into an NBD error reply (EIO, EPERM) and logged: the connection ends without a reply and the
// error reaches the process's uncaught-exception path (in marsd: exit 70 naming it). Ordinary
// backend errors keep being answered (nbd-garbage.test.ts covers those).
import t from 'tap';
import { join } from 'node:path';
import { InvariantError } from '../../common/util/assert.js';
import type { BlockBackend } from '../../kernel-shim/backend.js';
import { NbdClient, NbdConnectionClosed, NbdError } from '../../kernel-shim/nbd-client.js';
import { NbdServer } from '../../kernel-shim/nbd-server.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { escalations } from '../helpers/escalations.js';

const MiB = 1024 * 1024;

/** A backend whose reads work and whose chosen operation breaks an invariant. */
function brokenBackend(broken: 'write-rejects' | 'write-throws' | 'isWritable-throws'): BlockBackend {
  const fail = () => {
    throw new InvariantError(`test invariant broken in ${broken}`);
  };
  return {
    sizeBytes: MiB,
    isWritable: () => (broken === 'isWritable-throws' ? fail() : true),
    read: async (_o, l) => Buffer.alloc(l, 0x5a),
    write: broken === 'write-rejects' ? async () => fail() : broken === 'write-throws' ? () => fail() : async () => undefined,
    writeZeroes: async () => undefined,
    trim: async () => undefined,
    flush: async () => undefined,
  };
}

async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'acknowledged';
  } catch (err) {
    if (err instanceof NbdError) return `error reply ${err.code}`;
    if (err instanceof NbdConnectionClosed) return 'connection closed';
    return `other: ${String(err)}`;
  }
}

for (const broken of ['write-rejects', 'write-throws', 'isWritable-throws'] as const) {
  t.test(`an InvariantError from the backend (${broken}) is escalated, not answered`, async (t) => {
    const seen = escalations(t);
    const logs: string[] = [];
    const server = new NbdServer({ log: (level, msg) => logs.push(`${level} ${msg}`) });
    t.teardown(() => server.close());
    const socketPath = join(tempDir(t, 'mars-nbd-invariant-'), 'r.sock');
    await server.addExport('r', brokenBackend(broken), { socketPath });

    const client = await NbdClient.connect(socketPath, 'r');
    t.teardown(() => client.destroy());
    t.same(await client.read(0, 4096), Buffer.alloc(4096, 0x5a), 'reads are served before the failure');
    const write = await outcome(client.write(0, Buffer.alloc(4096, 1)));

    t.equal(write, 'connection closed', 'no reply for the request: the client sees the connection end');
    await waitFor('the error to reach the uncaught-exception path', () => seen.length > 0, 5_000);
    t.ok(seen[0] instanceof InvariantError, 'the InvariantError itself is rethrown outside every catch');
    t.match(String((seen[0] as Error).message), `test invariant broken in ${broken}`, 'it names the invariant');
    t.same(logs.filter((l) => /replying E(IO|PERM)/.test(l)), [], 'it was not served as EIO or EPERM');
    t.equal(logs.filter((l) => l.startsWith('error') && l.includes('InvariantError')).length, 1, 'one error line on the way out');
  });
}

t.test('every connection that meets the broken invariant escalates it', async (t) => {
  // Two clients: the second one's write after the first one's failure goes to the backend
  // again and is escalated again; nothing about the first failure is remembered as "handled".
  const seen = escalations(t);
  const server = new NbdServer({ log: () => undefined });
  t.teardown(() => server.close());
  const socketPath = join(tempDir(t, 'mars-nbd-invariant-'), 'r.sock');
  await server.addExport('r', brokenBackend('write-rejects'), { socketPath });
  const a = await NbdClient.connect(socketPath, 'r');
  const b = await NbdClient.connect(socketPath, 'r');
  t.teardown(() => { a.destroy(); b.destroy(); });
  t.equal(await outcome(a.write(0, Buffer.alloc(512))), 'connection closed');
  t.equal(await outcome(b.write(512, Buffer.alloc(512))), 'connection closed');
  await waitFor('both failures escalated', () => seen.length >= 2, 5_000);
  t.ok(seen.every((e) => e instanceof InvariantError), 'each one is escalated');
});
