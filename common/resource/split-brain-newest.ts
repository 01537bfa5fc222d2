// Split-brain detection from the newest versionlinks only (issue 11: `marsadm view all` read
// and compared every versionlink of every host, O(resources x logfiles), to find in the common
// case that nothing diverged).
//
// The argument. A versionlink's digest covers its logfile's content and the whole previous
// link's value (common/log/links.ts nextVersionLink), which carries the digest before it, and
// so on: equal links at number S on two hosts mean both chains were built on the same links
// at every number below S (up to an MD5 collision). commonPoint (split-brain.ts) walks the
// numbers both hosts have in ascending order and decides at the first pair that differs; all
// pairs below an equal pair are therefore equal and skipped, so commonPoint over the links
// from that equal pair on gives what it gives over the whole chains. Its decision at a pair
// looks only at the two links there (their PREV fields included) and at whether the shorter
// host has any later link, all of which lie at or above the pair. So: walk the numbers both
// hosts name from the top down, reading links, until a pair is equal (and parses: a malformed
// link is no part of a chain, chainsFrom drops it), and compare from there. In the usual state
// (one history, a secondary at most a logfile or two behind) that is two reads per pair.
//
// The assumption: the links a host's tree holds at lower numbers are the ones its newest link
// was chained onto. Links are written only as the successor of the link below
// (writeVersionLink) and never rewritten below a later one of the same host; old ones are only
// deleted (which both ways of comparing treat alike: a number one host lacks is not compared).
// A tree caught in the middle of receiving a rewritten chain could break it; the newest links
// are then the truer answer anyway.
import { chainsFrom, commonPoint } from './split-brain.js';

/** The value of version-SEQ-HOST (undefined when absent or a tombstone). */
export type LinkAt = (host: string, seq: number) => string | undefined;

/**
 * Whether any two of `hosts` diverged, as findDivergence(chainsFrom(every link), hosts) would
 * say (see the header), reading only the links needed. `seqsByHost`: the numbers of each
 * host's version-SEQ-HOST names, from a directory listing (nothing read yet).
 */
export function divergedFromNewest(seqsByHost: ReadonlyMap<string, readonly number[]>, hosts: readonly string[], linkAt: LinkAt): boolean {
  const names = [...new Set(hosts)].filter((h) => seqsByHost.has(h)).sort();
  for (let i = 0; i < names.length; i++) {
    for (let j = i + 1; j < names.length; j++) {
      if (pairDiverged(names[i]!, names[j]!, seqsByHost, linkAt)) return true;
    }
  }
  return false;
}

function pairDiverged(a: string, b: string, seqsByHost: ReadonlyMap<string, readonly number[]>, linkAt: LinkAt): boolean {
  const aSeqs = seqsByHost.get(a)!;
  const bSeqs = new Set(seqsByHost.get(b)!);
  const shared = [...new Set(aSeqs)].filter((s) => bSeqs.has(s)).sort((x, y) => y - x);
  // No number in common: commonPoint compares nothing.
  if (shared.length === 0) return false;
  let fromSeq = shared[shared.length - 1]!;
  for (const seq of shared) {
    const va = linkAt(a, seq);
    if (va !== undefined && va === linkAt(b, seq) && chainsFrom([{ seq, host: a, value: va }]).size === 1) {
      fromSeq = seq;
      break;
    }
  }
  const suffix = (host: string, seqs: Iterable<number>) => {
    const out: { seq: number; host: string; value: string }[] = [];
    for (const seq of new Set(seqs)) {
      if (seq < fromSeq) continue;
      const value = linkAt(host, seq);
      if (value !== undefined) out.push({ seq, host, value });
    }
    return chainsFrom(out).get(host) ?? new Map();
  };
  return commonPoint(suffix(a, aSeqs), suffix(b, bSeqs)) !== undefined;
}
