// The geometry of a sync: the disk is compared in blocks of SYNC_BLOCK_BYTES, each by a digest
// of DIGEST_BYTES (docs/protocol.md, sync-digests). One definition for the peer protocol, the
// sync worker and the ranges of an incremental resync.
export const SYNC_BLOCK_BYTES = 4096;
export const DIGEST_BYTES = 16;
/**
 * How a block's digest is made: MD5 as in MARS (and what a peer that does not name one uses),
 * or the first 16 bytes of SHA-1, which CPUs with SHA extensions compute about 4x faster (the
 * digests decide only what to copy between members that trust each other; 128 bits make an
 * accidental match of two different blocks negligible either way).
 */
export const DIGEST_ALGORITHMS = ['md5', 'sha1'] as const;
export type DigestAlgorithm = (typeof DIGEST_ALGORITHMS)[number];
/** what a syncing member asks for; the primary answers with what it used */
export const PREFERRED_DIGEST: DigestAlgorithm = 'sha1';
