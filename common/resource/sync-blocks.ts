// The geometry of a sync: the disk is compared in blocks of SYNC_BLOCK_BYTES, each by a digest
// of DIGEST_BYTES (docs/protocol.md, sync-digests). One definition for the peer protocol, the
// sync worker and the ranges of an incremental resync.
export const SYNC_BLOCK_BYTES = 4096;
export const DIGEST_BYTES = 16;
/**
 * How a block's digest is made (docs/protocol.md, sync-digests):
 * - md5 as in MARS, and what a peer that names none uses;
 * - sha1 cut to 16 bytes, about 2x faster than md5;
 * - gmac-aes128: the AES-128-GCM tag of the block (as additional data; the IV holds the block
 *   number) under a random key the syncing member makes for each sync run and sends with its
 *   requests. About 3x faster than sha1 with AES-NI, and a keyed universal hash: two different
 *   blocks get the same tag with probability below 2^-118 whatever their content, while an
 *   unkeyed hash lets content crafted before the sync collide (MD5 collisions are cheap). Writes
 *   made after the key exists are in the primary's log and reach the copy by replay anyway.
 */
export const DIGEST_ALGORITHMS = ['md5', 'sha1', 'gmac-aes128'] as const;
export type DigestAlgorithm = (typeof DIGEST_ALGORITHMS)[number];
/** the algorithms a request may name in `digest`; the keyed one is asked for with `keyed` and `key` */
export const UNKEYED_DIGESTS = ['md5', 'sha1'] as const;
export type UnkeyedDigest = (typeof UNKEYED_DIGESTS)[number];
export const KEYED_DIGEST = 'gmac-aes128' as const;
export const DIGEST_KEY_BYTES = 16;
/** what a syncing member asks for without a key; the primary answers with what it used */
export const PREFERRED_DIGEST: UnkeyedDigest = 'sha1';
