// Logfile names, replay links and the versionlink hash chain (docs/logfile-format.md §6).
// Expected digests were computed independently with the shell, e.g.
//   C=$(head -c 4180 /dev/zero | sha256sum | cut -c1-64); printf '%s' "1,alpha,4180,$C:" | md5sum
// (the content digests below are those of N zero bytes).
import t from 'tap';
import { compareReplayLinks, formatReplayLink, formatVersionLink, initialVersionLinks, nextVersionLink, parseReplayLink, parseVersionLink, tryParseReplayLink, versionChainPrefix, versionDigest } from '../../common/log/links.js';
import { logName, parseLogName } from '../../common/tree/log-names.js';
import { InvariantError } from '../../common/util/assert.js';
import { contentDigestOf, EMPTY_CONTENT_DIGEST } from '../../common/log/content-digest.js';

const Z = '0'.repeat(32);
const V1 = '3b68c62c08226f518dc22ee43ebbf7f2,log-000000001-alpha,4180:';
const V2 = 'f38467f1ff92fea850714e0d2a90b740,log-000000002-alpha,123456:3b68c62c08226f518dc22ee43ebbf7f2,log-000000001-alpha,4180';
const V3 = '39b68030141c1c0b9b007c92fdc79cdf,log-000000003-beta,0:f38467f1ff92fea850714e0d2a90b740,log-000000002-alpha,123456';
/** content digest of n zero bytes */
const zeros = (n: number) => contentDigestOf(Buffer.alloc(n));

t.test('versionlink chain: known answers for seq 1..3', async (t) => {
  t.equal(zeros(4180), '39ac11298a8264244e9866060f5aa77812ec9794a284427b8d741bf8178c0752');
  t.equal(EMPTY_CONTENT_DIGEST, 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  t.equal(versionDigest(`1,alpha,4180,${zeros(4180)}:`), '3b68c62c08226f518dc22ee43ebbf7f2');
  const v1 = nextVersionLink('', 1, 'alpha', 4180, zeros(4180));
  t.equal(v1, V1);
  const v2 = nextVersionLink(v1, 2, 'alpha', 123456, zeros(123456));
  t.equal(v2, V2);
  // After a handover the next logfile has another origin; the chain continues.
  const v3 = nextVersionLink(v2, 3, 'beta', 0, EMPTY_CONTENT_DIGEST);
  t.equal(v3, V3);
  // The digest covers the whole previous value: a different history gives another digest.
  t.not(nextVersionLink(nextVersionLink('', 1, 'alpha', 4181, zeros(4181)), 2, 'alpha', 123456, zeros(123456)).slice(0, 32), V2.slice(0, 32));
  t.throws(() => nextVersionLink('', 1, 'alpha', 4180, 'abc'), InvariantError, 'a content digest is 64 hex chars');
});

t.test('versionlink chain from the create-resource fake links', async (t) => {
  const init = initialVersionLinks(1, 'alpha');
  t.same(init, {
    previous: { seq: 0, value: `${Z},log-000000000-alpha,0:` },
    current: { seq: 1, value: `${Z},log-000000001-alpha,0:${Z},log-000000000-alpha,0` },
  });
  t.ok(parseVersionLink(init.previous.value));
  t.ok(parseVersionLink(init.current.value));
  // printf '%s' "2,alpha,8360,<zeros(8360)>:<init.current.value>" | md5sum
  t.equal(nextVersionLink(init.current.value, 2, 'alpha', 8360, zeros(8360)), `0bdee3748c8a212c25f777894af53626,log-000000002-alpha,8360:${Z},log-000000001-alpha,0`);
  const init7 = initialVersionLinks(7, 'h-2');
  t.equal(init7.current.value, `${Z},log-000000007-h-2,0:${Z},log-000000006-h-2,0`);
  t.throws(() => initialVersionLinks(0, 'alpha'), InvariantError);
});

t.test('versionlink parse/format round trip and rejection', async (t) => {
  for (const v of [V1, V2, V3, `${Z},log-000000000-alpha,0:`]) {
    const p = parseVersionLink(v);
    t.ok(p, v);
    t.equal(formatVersionLink(p!), v, 'round trip');
  }
  t.same(parseVersionLink(V2), { digest: 'f38467f1ff92fea850714e0d2a90b740', seq: 2, origin: 'alpha', logPos: 123456, prev: '3b68c62c08226f518dc22ee43ebbf7f2,log-000000001-alpha,4180' });
  t.equal(versionChainPrefix(V2), 'f38467f1ff92fea850714e0d2a90b740,log-000000002-alpha,123456');
  t.equal(versionChainPrefix(V1), '3b68c62c08226f518dc22ee43ebbf7f2,log-000000001-alpha,4180');
  t.throws(() => versionChainPrefix('no colon here'));

  const bad = [
    '',
    V1.slice(0, -1), // no ':'
    V1.toUpperCase(),
    `${Z.slice(1)},log-000000001-alpha,0:`, // 31 hex chars
    `${Z}0,log-000000001-alpha,0:`,
    `${Z},log-00000001-alpha,0:`, // 8 digits
    `${Z},log-000000001-../x,0:`,
    `${Z},log-000000001-alpha,-1:`,
    `${Z},log-000000001-alpha,01:`,
    `${Z},log-000000001-alpha,9007199254740992:`,
    `${Z},log-000000001-alpha:`,
    `${Z},log-000000001-alpha,0,0:`,
    `${Z},log-000000001-alpha,0:garbage`,
    `${Z},log-000000001-alpha,0:${Z},log-000000000-alpha,0:`, // PREV with a ':' tail
    `${Z},log-000000001-alpha,0x10:`,
  ];
  for (const v of bad) t.equal(parseVersionLink(v), undefined, `rejects ${JSON.stringify(v)}`);
  t.throws(() => nextVersionLink('bogus', 2, 'alpha', 0, EMPTY_CONTENT_DIGEST), /cannot extend the version chain/);
  t.throws(() => nextVersionLink(V1, 2, '../etc', 0, EMPTY_CONTENT_DIGEST), InvariantError);
  t.throws(() => formatVersionLink({ digest: 'XYZ', seq: 1, origin: 'a', logPos: 0, prev: '' }), InvariantError);
});

t.test('logName and parseLogName', async (t) => {
  t.equal(logName(1, 'alpha'), 'log-000000001-alpha');
  t.equal(logName(999_999_999, 'A_b-9'), 'log-999999999-A_b-9');
  t.equal(logName(0, 'x'), 'log-000000000-x');
  t.same(parseLogName('log-000000042-host-1'), { seq: 42, origin: 'host-1' });
  t.same(parseLogName(`log-000000042-${'h'.repeat(63)}`), { seq: 42, origin: 'h'.repeat(63) });
  t.throws(() => logName(1_000_000_000, 'alpha'), InvariantError);
  t.throws(() => logName(-1, 'alpha'), InvariantError);
  t.throws(() => logName(1.5, 'alpha'), InvariantError);
  t.throws(() => logName(1, 'a/b'), InvariantError);
  for (const name of [
    'log-00000001-alpha',
    'log-0000000001-alpha',
    'log-00000000a-alpha',
    'log-000000001-',
    'log-000000001-../x',
    'log-000000001-a/b',
    'log-000000001-a.b',
    'log-000000001--lead',
    'log-000000001-a,b',
    'log-000000001-a:b',
    `log-000000001-${'h'.repeat(64)}`,
    'log-000000001-alpha\n',
    'xlog-000000001-alpha',
    'version-000000001-alpha',
  ]) {
    t.equal(parseLogName(name), undefined, `rejects ${JSON.stringify(name)}`);
  }
});

t.test('replay links', async (t) => {
  const v = 'log-000000007-alpha,123456,4180';
  t.same(parseReplayLink(v), { seq: 7, origin: 'alpha', minPos: 123456, len: 4180 });
  t.equal(formatReplayLink({ seq: 7, origin: 'alpha', minPos: 123456, len: 4180 }), v);
  t.equal(formatReplayLink(parseReplayLink('log-000000001-a,0,0')!), 'log-000000001-a,0,0');
  t.same(parseReplayLink(`log-000000001-a,${Number.MAX_SAFE_INTEGER},0`), { seq: 1, origin: 'a', minPos: Number.MAX_SAFE_INTEGER, len: 0 });
  const bad = [
    '',
    'log-000000001-a',
    'log-000000001-a,0',
    'log-000000001-a,0,0,0',
    'log-00000001-a,0,0',
    'log-0000000001-a,0,0',
    'log-00000000x-a,0,0',
    'log-000000001-../x,0,0',
    'log-000000001-,0,0',
    'log-000000001-a,,0',
    'log-000000001-a,0,',
    'log-000000001-a,abc,0',
    'log-000000001-a,1e3,0',
    'log-000000001-a,0x10,0',
    'log-000000001-a,-1,0',
    'log-000000001-a,0,-5',
    'log-000000001-a,+1,0',
    'log-000000001-a, 1,0',
    'log-000000001-a,007,0',
    'log-000000001-a,9007199254740992,0',
    'log-000000001-a,0,99999999999999999999',
    'log-000000001-a,1.5,0',
  ];
  for (const b of bad) t.equal(parseReplayLink(b), undefined, `rejects ${JSON.stringify(b)}`);
  const why = tryParseReplayLink('log-000000001-a,-1,0');
  t.equal(why.ok, false);
  if (!why.ok) t.match(why.reason, /MINPOS/);
  t.throws(() => formatReplayLink({ seq: 1, origin: 'a', minPos: -1, len: 0 }), InvariantError);
  t.throws(() => formatReplayLink({ seq: 1, origin: 'a', minPos: 2 ** 53, len: 0 }), InvariantError);
});

t.test('compareReplayLinks orders by seq, then minPos, numerically', async (t) => {
  const l = (seq: number, minPos: number, origin = 'a') => ({ seq, origin, minPos, len: 0 });
  t.equal(compareReplayLinks(l(1, 100), l(2, 0)), -1);
  t.equal(compareReplayLinks(l(2, 0), l(1, 100)), 1);
  t.equal(compareReplayLinks(l(3, 9), l(3, 10)), -1, 'numeric, not lexicographic (9 < 10)');
  t.equal(compareReplayLinks(l(10, 0), l(9, 0)), 1);
  t.equal(compareReplayLinks(l(3, 10, 'a'), l(3, 10, 'b')), 0, 'origin does not order');
  const sorted = [l(2, 5), l(1, 7), l(2, 1), l(1, 70)].sort(compareReplayLinks);
  t.same(sorted.map((x) => `${x.seq}:${x.minPos}`), ['1:7', '1:70', '2:1', '2:5']);
});
