// An interrupted full sync (daemon/sync/sync-worker.ts) resumes where it stopped: real disk
// files, a real peer connection (in memory) to a server that reads the "primary's" disk, and
// a connection that drops in the middle of the sync.
import t from 'tap';
import { PassThrough } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, ftruncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { resPaths, resourceDir } from '../../common/tree/paths.js';
import { DataDisk } from '../../common/disk/data-disk.js';
import { SyncWorker } from '../../daemon/sync/sync-worker.js';
import { blockDigests, diskDigests, keyedDigestAvailable } from '../../daemon/sync/digests.js';
import { KEYED_DIGEST } from '../../common/resource/sync-blocks.js';
import { duplexFromPair } from '../../daemon/net/dial.js';
import { FrameDecoder } from '../../daemon/net/frame.js';
import { PeerConnection, type PeerHandlers } from '../../daemon/net/connection.js';
import { systemClock } from '../../common/util/clock.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

const MiB = 1 << 20;
const SIZE = 40 * MiB;

function makeFile(path: string, pieces: [number, Buffer][]): void {
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, SIZE);
    for (const [pos, data] of pieces) writeSync(fd, data, 0, data.length, pos);
  } finally { closeSync(fd); }
}

t.test('a sync whose connection dropped resumes at the verified position, not at 0', async (t) => {
  const dir = tempDir(t);
  const tree = new TreeStore(join(dir, 'mars'), new LamportClock(() => Date.now() * 1000));
  tree.ensureDir(resourceDir('r1'));
  // The primary's disk differs from ours in three places; the one at 36 MiB (third 16 MiB chunk)
  // is where the connection drops the first time it is asked for.
  const pieces: [number, Buffer][] = [[1 * MiB, randomBytes(MiB)], [20 * MiB, randomBytes(MiB)], [36 * MiB, randomBytes(MiB)]];
  makeFile(join(dir, 'primary.img'), pieces);
  makeFile(join(dir, 'replica.img'), []);
  const source = await DataDisk.open(join(dir, 'primary.img'));
  const disk = await DataDisk.open(join(dir, 'replica.img'));
  t.teardown(async () => { await source.close(); await disk.close(); });

  let dropped = false;
  const keysSeen = new Set<string>();
  const readsAt: number[] = [];
  const conns: PeerConnection[] = [];
  const handlers: PeerHandlers = {
    async getents() { return { clockUs: 1, entries: [], logs: [] }; },
    async logRead(_p, req) { return { pos: req.fromPos, durableEnd: req.fromPos }; },
    async syncDigests(_p, req) {
      // As the primary's PeerService: the keyed digest where it can make it.
      if (req.key !== undefined && keyedDigestAvailable()) {
        keysSeen.add(req.key);
        return { digests: await diskDigests(source.fd, source, req.fromPos, req.lengthBytes, KEYED_DIGEST, Buffer.from(req.key, 'hex')), algorithm: KEYED_DIGEST };
      }
      const algorithm = req.digest ?? 'md5';
      return { digests: await blockDigests(source, req.fromPos, req.lengthBytes, algorithm), algorithm };
    },
    async syncRead(_p, req) {
      if (req.fromPos >= 36 * MiB && !dropped) {
        dropped = true;
        for (const c of conns) c.close('link dropped by the test');
        throw new Error('dropped');
      }
      readsAt.push(req.fromPos);
      const b = Buffer.alloc(req.lengthBytes);
      await source.read(b, req.fromPos);
      return b;
    },
    async position() { return { seq: 1, origin: 'h1', pos: 0 }; },
    async pushLink() {},
    notify() {},
  };
  let client: PeerConnection | undefined;
  const connection = () => {
    if (!client || client.isClosed) {
      const toServer = new PassThrough();
      const toClient = new PassThrough();
      client = new PeerConnection({ peerUuid: 'u', stream: duplexFromPair(toClient, toServer), decoder: new FrameDecoder(), role: 'client', peerHost: 'h1' });
      conns.push(client, new PeerConnection({ peerUuid: 'u', stream: duplexFromPair(toServer, toClient), decoder: new FrameDecoder(), role: 'server', peerHost: 'h2', handlers }));
    }
    return client;
  };
  t.teardown(() => { for (const c of conns) c.close('done'); });
  const warnings: string[] = [];
  const worker = new SyncWorker({
    tree, res: 'r1', host: 'h2', primary: 'h1', disk, sizeBytes: SIZE, peers: { connection },
    log: (level, msg) => { if (level === 'warn') warnings.push(msg); }, clock: systemClock, onProgress: () => undefined,
  });
  worker.start();
  t.teardown(() => worker.stop());
  await waitFor('the sync to finish', () => worker.done, 30_000).catch((err) => { throw new Error(`${(err as Error).message}: ${worker.state}; ${warnings.join(' / ')}`); });
  t.ok(dropped, 'the connection dropped during the sync');
  t.equal(warnings.length, 1, 'one interruption');
  t.match(warnings[0], /resuming at 33554432 bytes/, 'it resumes after the two chunks already verified');
  t.notMatch(warnings.join('\n'), /resuming at 0 bytes/);
  t.same(readsAt.filter((p) => p < 32 * MiB).sort((a, b) => a - b), [1 * MiB, 20 * MiB], 'blocks copied before the drop are not read again');
  t.ok(readFileSync(join(dir, 'replica.img')).equals(readFileSync(join(dir, 'primary.img'))), 'the copy is byte-equal');
  t.equal(tree.value(resPaths.syncstatus('r1', 'h2')), String(SIZE));
  // With the native helper the blocks were compared by keyed digests, under a new key after the drop.
  t.equal(keysSeen.size, keyedDigestAvailable() ? 2 : 0, 'one digest key per run of the sync');
});
