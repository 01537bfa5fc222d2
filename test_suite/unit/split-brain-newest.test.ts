// divergedFromNewest (split-brain-newest.ts) must say what findDivergence over every link says,
// on chains built as marsd builds them (hash chains): one history, hosts behind, forks, old
// links deleted, malformed links and tombstones.
import t from 'tap';
import fc from 'fast-check';
import { nextVersionLink } from '../../common/log/links.js';
import { contentDigestOf } from '../../common/log/content-digest.js';
import { chainsFrom, findDivergence } from '../../common/resource/split-brain.js';
import { divergedFromNewest } from '../../common/resource/split-brain-newest.js';

const HOSTS = ['a', 'b', 'c'] as const;
const digest = (tag: string) => contentDigestOf(Buffer.from(tag));

interface HostPlan {
  /** how many trunk links this host has */
  prefix: number;
  /** its last trunk link is shorter (behind inside that logfile): 0 = not */
  shortenBy: number;
  /** links of its own after that (a fork): [origin index, logPos, content tag] */
  fork: [number, number, number][];
  /** links below this number were deleted */
  deletedBelow: number;
  /** numbers whose link is malformed ([seq offset, kind]) */
  broken: [number, number][];
}

const fileArb = fc.tuple(fc.integer({ min: 0, max: 2 }), fc.constantFrom(100, 200, 300), fc.integer({ min: 0, max: 3 }));
const planArb = fc.record({
  prefix: fc.integer({ min: 0, max: 10 }),
  shortenBy: fc.constantFrom(0, 0, 50),
  fork: fc.array(fileArb, { maxLength: 4 }),
  deletedBelow: fc.integer({ min: 0, max: 8 }),
  broken: fc.array(fc.tuple(fc.integer({ min: 0, max: 14 }), fc.integer({ min: 0, max: 3 })), { maxLength: 3 }),
});

/** version links by host and number; undefined = a tombstone (the name is listed, no value). */
function build(trunk: [number, number, number][], plans: HostPlan[]): Map<string, Map<number, string | undefined>> {
  const out = new Map<string, Map<number, string | undefined>>();
  plans.forEach((p, h) => {
    const host = HOSTS[h]!;
    const links = new Map<number, string | undefined>();
    let prev = '';
    const prefix = Math.min(p.prefix, trunk.length);
    for (let i = 0; i < prefix; i++) {
      const [o, pos, c] = trunk[i]!;
      const short = i === prefix - 1 ? Math.min(p.shortenBy, pos) : 0;
      prev = nextVersionLink(prev, i + 1, HOSTS[o]!, pos - short, digest(`trunk-${i}-${c}-${short}`));
      links.set(i + 1, prev);
    }
    p.fork.forEach(([o, pos, c], k) => {
      const seq = prefix + k + 1;
      prev = nextVersionLink(prev, seq, HOSTS[o]!, pos, digest(`fork-${host}-${seq}-${c}`));
      links.set(seq, prev);
    });
    for (const seq of [...links.keys()]) if (seq < p.deletedBelow) links.delete(seq);
    for (const [seq, kind] of p.broken) {
      if (!links.has(seq) && kind !== 3) continue;
      const other = [...links.values()].find((v) => v !== undefined && !v.includes(`log-${String(seq).padStart(9, '0')}-`));
      links.set(seq, [undefined, 'garbage', other ?? 'x:y', links.get(seq)?.slice(0, 20) ?? 'z'][kind]);
    }
    if (links.size > 0) out.set(host, links);
  });
  return out;
}

t.test('the newest links give what the full comparison gives', async (t) => {
  let diverged = 0;
  await fc.assert(fc.asyncProperty(
    fc.array(fileArb, { minLength: 1, maxLength: 10 }),
    fc.array(planArb, { minLength: 2, maxLength: 3 }),
    fc.subarray([...HOSTS], { minLength: 1 }),
    async (trunk, plans, members) => {
      const links = build(trunk, plans);
      const entries = [...links].flatMap(([host, m]) => [...m].flatMap(([seq, value]) => (value === undefined ? [] : [{ seq, host, value }])));
      const full = findDivergence(chainsFrom(entries), members) !== undefined;
      if (full) diverged++;
      const seqs = new Map([...links].map(([host, m]) => [host, [...m.keys()]]));
      const quick = divergedFromNewest(seqs, members, (host, seq) => links.get(host)?.get(seq));
      if (quick !== full) throw new Error(`newest ${quick}, full ${full}: ${JSON.stringify([...links].map(([h, m]) => [h, [...m]]))}`);
    },
  ), { numRuns: Number(process.env['MARS_SPLIT_RUNS'] ?? 2000) });
  t.ok(diverged > 0, `the generator made split brains too (${diverged})`);
});

t.test('one history, a secondary a logfile behind: the newest links read, not the whole chain', async (t) => {
  const trunk: [number, number, number][] = Array.from({ length: 1000 }, () => [0, 100, 0]);
  const links = build(trunk, [
    { prefix: 1000, shortenBy: 0, fork: [], deletedBelow: 0, broken: [] },
    { prefix: 999, shortenBy: 0, fork: [], deletedBelow: 0, broken: [] },
  ]);
  // Distinct links: the tree keeps a link once read (lazy-listing.ts).
  const read = new Set<string>();
  const seqs = new Map([...links].map(([host, m]) => [host, [...m.keys()]]));
  const diverged = divergedFromNewest(seqs, ['a', 'b'], (host, seq) => { read.add(`${host}-${seq}`); return links.get(host)?.get(seq); });
  t.equal(diverged, false);
  t.same([...read].sort(), ['a-1000', 'a-999', 'b-999'], 'the newest shared pair and what lies above it');
});

t.test('a fork below the newest shared number is found', async (t) => {
  const trunk: [number, number, number][] = Array.from({ length: 20 }, () => [0, 100, 0]);
  const links = build(trunk, [
    { prefix: 20, shortenBy: 0, fork: [], deletedBelow: 0, broken: [] },
    { prefix: 10, shortenBy: 0, fork: Array.from({ length: 10 }, () => [1, 100, 1] as [number, number, number]), deletedBelow: 0, broken: [] },
  ]);
  const seqs = new Map([...links].map(([host, m]) => [host, [...m.keys()]]));
  t.equal(divergedFromNewest(seqs, ['a', 'b'], (host, seq) => links.get(host)?.get(seq)), true);
});
