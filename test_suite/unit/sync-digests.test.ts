// Block digests of the fast sync: md5 (MARS, and what a peer that names none uses) or the first
// 16 bytes of sha1; the client takes the algorithm from the reply, md5 when the reply names none.
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { blockDigests } from '../../daemon/sync/digests.js';
import { syncDigests } from '../../daemon/propagate/peer-calls.js';
import type { PeerConnection } from '../../daemon/net/connection.js';

const data = randomBytes(3 * 4096);
const reader = { async read(into: Buffer, offsetBytes: number) { data.copy(into, 0, offsetBytes, offsetBytes + into.length); } };

t.test('md5 by default, sha1 cut to 16 bytes when asked', async (t) => {
  const md5 = await blockDigests(reader, 4096, 8192);
  const sha1 = await blockDigests(reader, 4096, 8192, 'sha1');
  t.equal(md5.length, 32);
  t.equal(sha1.length, 32);
  for (let i = 0; i < 2; i++) {
    const block = data.subarray(4096 * (i + 1), 4096 * (i + 2));
    t.same(md5.subarray(16 * i, 16 * (i + 1)), createHash('md5').update(block).digest(), `md5 of block ${i}`);
    t.same(sha1.subarray(16 * i, 16 * (i + 1)), createHash('sha1').update(block).digest().subarray(0, 16), `sha1 of block ${i}`);
  }
});

t.test('the client asks for sha1 and believes the reply: no name means md5 (an older primary)', async (t) => {
  const asked: unknown[] = [];
  const fake = (digest: string | undefined) => ({
    async request(m: Record<string, unknown>) {
      asked.push(m.digest);
      return { header: { t: 'digests', id: 1, fromPos: m.fromPos, count: 1, ...(digest ? { digest } : {}) }, payload: Buffer.alloc(16, 7) };
    },
  }) as unknown as PeerConnection;
  const older = await syncDigests(fake(undefined), 'r0', 0, 4096);
  t.equal(older.algorithm, 'md5');
  const newer = await syncDigests(fake('sha1'), 'r0', 0, 4096);
  t.equal(newer.algorithm, 'sha1');
  t.same(asked, ['sha1', 'sha1'], 'sha1 is asked for');
  t.same(newer.digests, Buffer.alloc(16, 7));
});

t.test('with a key the client asks for the keyed digest too, and refuses a keyed reply it did not ask for', async (t) => {
  const asked: Record<string, unknown>[] = [];
  const fake = (digest: string) => ({
    async request(m: Record<string, unknown>) {
      asked.push(m);
      return { header: { t: 'digests', id: 1, fromPos: m.fromPos, count: 1, digest }, payload: Buffer.alloc(16, 9) };
    },
  }) as unknown as PeerConnection;
  const key = Buffer.alloc(16, 0xab);
  const keyed = await syncDigests(fake('gmac-aes128'), 'r0', 0, 4096, key);
  t.equal(keyed.algorithm, 'gmac-aes128');
  t.match(asked[0], { digest: 'sha1', keyed: 'gmac-aes128', key: 'ab'.repeat(16) }, 'the unkeyed fallback is named beside the keyed digest');
  const fallback = await syncDigests(fake('sha1'), 'r0', 0, 4096, key);
  t.equal(fallback.algorithm, 'sha1', 'a primary that cannot make the keyed digest answers sha1');
  await t.rejects(syncDigests(fake('gmac-aes128'), 'r0', 0, 4096), /keyed, but no key was sent/);
  t.notOk('key' in asked[2]!, 'no key field without a key');
});
