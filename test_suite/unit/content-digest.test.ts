// The content digest of a logfile prefix and the versionlinks over it (common/log/content-digest.ts,
// docs/tree.md "History chain"): real files in a real tree, hashed incrementally.
import t, { type Test } from 'tap';
import { appendFileSync, mkdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { contentDigestOf, EMPTY_CONTENT_DIGEST, LogDigester, logDigests } from '../../common/log/content-digest.js';
import { initialVersionLinks, parseVersionLink } from '../../common/log/links.js';
import { writeVersionLink } from '../../common/resource/links.js';
import { TreeStore } from '../../common/tree/store.js';
import { resPaths } from '../../common/tree/paths.js';
import { tempDir } from '../helpers/tmp.js';

const RES = 'r0';

function treeWithLog(t: Test, host: string, bytes: Buffer): TreeStore {
  const root = join(tempDir(t, 'mars-digest-'), 'mars');
  mkdirSync(root);
  const tree = new TreeStore(root);
  tree.ensureDir(resPaths.dir(RES));
  tree.write(resPaths.version(RES, 0, host), initialVersionLinks(1, 'alpha').previous.value);
  writeFileSync(tree.abs(resPaths.log(RES, 1, 'alpha')), bytes);
  return tree;
}

t.test('equal positions, one differing byte: different versionlinks', async (t) => {
  const bytes = randomBytes(300_000);
  const forged = Buffer.from(bytes);
  forged[123_456] ^= 0x01;
  const primary = treeWithLog(t, 'alpha', bytes);
  const copy = treeWithLog(t, 'beta', bytes);
  const bad = treeWithLog(t, 'beta', forged);
  const a = writeVersionLink(primary, RES, 'alpha', 1, 'alpha', bytes.length, false);
  const b = writeVersionLink(copy, RES, 'beta', 1, 'alpha', bytes.length, false);
  const c = writeVersionLink(bad, RES, 'beta', 1, 'alpha', bytes.length, false);
  t.equal(b, a, 'an identical copy gives the primary\'s versionlink');
  t.not(c, a, 'a copy with one other byte gives another versionlink');
  t.same({ ...parseVersionLink(c)!, digest: '' }, { ...parseVersionLink(a)!, digest: '' }, 'only DIGEST differs: same logfile, LOGPOS and PREV');
  // Before the differing byte the prefixes are equal again.
  t.equal(writeVersionLink(bad, RES, 'beta', 1, 'alpha', 123_456, false), writeVersionLink(primary, RES, 'alpha', 1, 'alpha', 123_456, false));
});

t.test('the running digest equals a one-shot hash at every position, across appends and restarts', async (t) => {
  const dir = tempDir(t, 'mars-digest-');
  const path = join(dir, 'log');
  const all = randomBytes(3 << 20);
  writeFileSync(path, all.subarray(0, 1000));
  const d = new LogDigester();
  t.equal(d.digestAt(path, 0), EMPTY_CONTENT_DIGEST);
  t.equal(d.digestAt(path, 1000), contentDigestOf(all.subarray(0, 1000)));
  appendFileSync(path, all.subarray(1000));
  const before = d.hashedBytes;
  t.equal(d.digestAt(path, all.length), createHash('sha256').update(all).digest('hex'));
  t.equal(d.hashedBytes - before, all.length - 1000, 'only the appended bytes are read');
  t.equal(d.digestAt(path, 5000), contentDigestOf(all.subarray(0, 5000)), 'a shorter prefix: hashed again from 0');
  // A restart: a new digester re-hashes the file from disk (bounded by its size).
  const fresh = new LogDigester();
  t.equal(fresh.digestAt(path, all.length), d.digestAt(path, all.length));
  t.equal(fresh.hashedBytes, all.length);
});

t.test('a file rewritten in place (re-fetch) or replaced is hashed again', async (t) => {
  const dir = tempDir(t, 'mars-digest-');
  const path = join(dir, 'log');
  const first = randomBytes(10_000);
  const second = randomBytes(20_000);
  writeFileSync(path, first);
  const d = new LogDigester();
  d.digestAt(path, first.length);
  truncateSync(path, 0); // the fetcher's re-fetch: truncated to 0, then written again
  writeFileSync(path, second);
  t.not(d.digestAt(path, second.length), contentDigestOf(second), 'without forget() the old state would be extended: why the re-fetch calls it');
  d.forget(path);
  t.equal(d.digestAt(path, second.length), contentDigestOf(second), 'after forget(): the new bytes');
  rmSync(path);
  writeFileSync(path, first.subarray(0, 5000)); // replaced and shorter than the state
  t.equal(d.digestAt(path, 5000), contentDigestOf(first.subarray(0, 5000)));
});

t.test('a prefix the file does not have is refused', async (t) => {
  const dir = tempDir(t, 'mars-digest-');
  const path = join(dir, 'log');
  writeFileSync(path, randomBytes(100));
  t.throws(() => logDigests.digestAt(path, 101), /cannot hash .* up to byte 101: the file has 100 bytes/);
  t.throws(() => logDigests.digestAt(join(dir, 'missing'), 1), /ENOENT/);
  t.equal(logDigests.digestAt(join(dir, 'missing'), 0), EMPTY_CONTENT_DIGEST, 'an empty prefix needs no file (a new logfile\'s first link)');
});
