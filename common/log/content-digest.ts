// The content digest of a logfile prefix: SHA-256 over its bytes [0, POS). Every versionlink
// covers it (common/log/links.ts nextVersionLink), so two hosts whose copies of a logfile
// differ in one byte get different versionlinks at the same LOGPOS (docs/tree.md "History
// chain").
//
// A versionlink is written often (the primary's with every status update, a secondary's after
// every applied batch), so the hash runs along the file: each logfile keeps the hash state of
// the bytes hashed so far, and the next digest reads only the bytes appended since. After a
// restart the state is empty and the first digest re-hashes the file from offset 0: the cost
// is bounded by one read of one logfile (the rotation size), at the speed in docs/tree.md.
//
// The state is only valid while the file's bytes before its position stay the same. Logfiles
// are append-only, except a re-fetch (truncated to 0 and written again in place) and
// invalidate/log-truncate (cut back): those call forget(); a file that shrank below the
// position, was replaced (other inode) or is asked for a shorter prefix is re-hashed from 0.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { createHash, type Hash } from 'node:crypto';
import { assert } from '../util/assert.js';

export const CONTENT_DIGEST_HEX_CHARS = 64;
const READ_CHUNK_BYTES = 1 << 20;
/** Logfiles whose hash state is kept: the current one of each resource and a few more. */
const MAX_FILES = 64;

/** SHA-256 (lowercase hex) of the given bytes; the digest of an empty prefix is contentDigestOf(empty). */
export function contentDigestOf(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export const EMPTY_CONTENT_DIGEST = contentDigestOf(new Uint8Array(0));

export function isContentDigest(text: string): boolean {
  return /^[0-9a-f]{64}$/.test(text);
}

interface FileState {
  ino: number;
  pos: number;
  hash: Hash;
}

export class LogDigester {
  private readonly files = new Map<string, FileState>();
  /** bytes read and hashed (for tests and diagnostics) */
  hashedBytes = 0;

  /**
   * Digest of the bytes [0, pos) of the file at absPath. Throws when the file is missing or
   * shorter than pos: a versionlink must not claim bytes this host does not have.
   */
  digestAt(absPath: string, pos: number): string {
    assert(Number.isSafeInteger(pos) && pos >= 0, `content digest position ${pos} is not a non-negative safe integer`);
    if (pos === 0) return EMPTY_CONTENT_DIGEST;
    const fd = openSync(absPath, 'r');
    try {
      const st = fstatSync(fd);
      if (st.size < pos) throw new Error(`cannot hash ${absPath} up to byte ${pos}: the file has ${st.size} bytes`);
      let state = this.files.get(absPath);
      if (!state || state.ino !== st.ino || state.pos > pos || st.size < state.pos) {
        state = { ino: st.ino, pos: 0, hash: createHash('sha256') };
      }
      this.files.delete(absPath); // re-inserted last: the map's order is the eviction order
      this.files.set(absPath, state);
      if (this.files.size > MAX_FILES) this.files.delete(this.files.keys().next().value!);
      this.extend(fd, state, pos);
      return state.hash.copy().digest('hex');
    } finally {
      closeSync(fd);
    }
  }

  /** The file's bytes may have changed in place (re-fetch, truncation): hash it again from 0 next time. */
  forget(absPath: string): void {
    this.files.delete(absPath);
  }

  private extend(fd: number, state: FileState, pos: number): void {
    const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, pos - state.pos));
    while (state.pos < pos) {
      const want = Math.min(buf.length, pos - state.pos);
      const got = readSync(fd, buf, 0, want, state.pos);
      if (got <= 0) throw new Error(`unexpected end of file while hashing at byte ${state.pos} of ${pos}`);
      state.hash.update(buf.subarray(0, got));
      state.pos += got;
      this.hashedBytes += got;
    }
  }
}

/** The one digester of this process: the logger's, the replayer's and invalidate's links share it. */
export const logDigests = new LogDigester();
