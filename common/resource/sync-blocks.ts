// The geometry of a sync: the disk is compared in blocks of SYNC_BLOCK_BYTES, each by an MD5
// digest of DIGEST_BYTES (docs/protocol.md, sync-digests). One definition for the peer
// protocol, the sync worker and the ranges of an incremental resync.
export const SYNC_BLOCK_BYTES = 4096;
export const DIGEST_BYTES = 16; // MD5
