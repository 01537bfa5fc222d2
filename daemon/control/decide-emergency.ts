// Space levels of /mars and emergency mode (the MARS user manual: space levels and emergency mode), as pure functions: tests
// drive them round by round without a filesystem.
//
// A host computes one level 0..4 from the free space of its /mars filesystem. Level n starts
// when the free bytes fall below threshold n (thresholds decrease: level 1 warns early, level 4
// means /mars is about to be full). What each level does:
//   >= 1  a warning (actual-HOST/emergency, marsd log, marsadm view);
//   >= 2  secondaries delete their copies of foreign logfiles they have completely replayed;
//   >= 3  secondaries stop fetching (what is fetched is still replayed);
//   == 4  every resource this host is primary for enters emergency mode: logging stops, writes
//         go straight to the data disk, a hole in the logfile numbering makes every secondary
//         stop at a consistent point.
// The level rises at once but falls by only one step per round (MARS's hysteresis), and
// emergency mode is left only at level 0, so a primary does not flap in and out of emergency
// (each entry costs every secondary a re-sync).

import type { SecondaryPlan } from './decide-secondary.js';
import type { LoggingMode } from '../logger/emergency-backend.js';

export const MAX_SPACE_LEVEL = 4;

/** One threshold as given by the admin: absolute bytes or a percentage of the filesystem. */
export type ThresholdSpec = { kind: 'bytes'; bytes: number } | { kind: 'percent'; percent: number };

/** MARS's reserves (2 GiB per level) as cumulative thresholds for levels 1..4. */
const DEFAULT_THRESHOLD_BYTES = [8, 6, 4, 2].map((g) => g * 1024 ** 3);
/**
 * ... but never more than this share of the filesystem, so a small /mars (tests, a VM) is not
 * permanently at level 4: a 100 GiB /mars gets MARS's values, a 64 MiB one 5/3.8/2.6/1.3 MiB.
 */
const DEFAULT_THRESHOLD_PERCENT = [8, 6, 4, 2];

/**
 * Parse `--space-levels FREE1,FREE2,FREE3,FREE4`: each a size (`512M`, `2G`, bytes) or a
 * percentage of the /mars filesystem (`5%`), strictly decreasing once resolved.
 */
export function parseSpaceLevels(text: string, parseSize: (s: string) => number): ThresholdSpec[] {
  const parts = text.split(',').map((s) => s.trim());
  if (parts.length !== MAX_SPACE_LEVEL) {
    throw new Error(`--space-levels needs ${MAX_SPACE_LEVEL} comma-separated values (free space below which levels 1..4 start), got ${parts.length}`);
  }
  return parts.map((p) => {
    const pct = /^(\d+(?:\.\d+)?)%$/.exec(p);
    if (pct) {
      const percent = Number(pct[1]);
      if (!(percent >= 0 && percent < 100)) throw new Error(`--space-levels: ${p} is not a percentage below 100`);
      return { kind: 'percent', percent };
    }
    return { kind: 'bytes', bytes: parseSize(p) };
  });
}

/**
 * Thresholds in bytes for levels 1..4 on a filesystem of totalBytes. Without a spec: MARS's
 * values capped by a share of the filesystem. Each level's threshold is kept at or below the
 * previous one, so the levels stay ordered whatever mix of sizes and percentages was given.
 */
export function resolveThresholdsBytes(spec: readonly ThresholdSpec[] | undefined, totalBytes: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < MAX_SPACE_LEVEL; i++) {
    const s = spec?.[i];
    const bytes = s === undefined
      ? Math.min(DEFAULT_THRESHOLD_BYTES[i]!, Math.floor((totalBytes * DEFAULT_THRESHOLD_PERCENT[i]!) / 100))
      : s.kind === 'bytes' ? s.bytes : Math.floor((totalBytes * s.percent) / 100);
    out.push(i === 0 ? bytes : Math.min(bytes, out[i - 1]!));
  }
  return out;
}

/** The level the free space alone gives: the highest n whose threshold is above freeBytes. */
export function rawSpaceLevel(freeBytes: number, thresholdsBytes: readonly number[]): number {
  let level = 0;
  for (let i = 0; i < thresholdsBytes.length; i++) if (freeBytes < thresholdsBytes[i]!) level = i + 1;
  return level;
}

/**
 * One round of hysteresis: rise at once, fall one step per round (`canFall`: a round is over;
 * the caller paces rounds in time, since control rounds also run on every tree change).
 */
export function nextSpaceLevel(previous: number, raw: number, canFall = true): number {
  if (raw >= previous) return raw;
  return canFall ? previous - 1 : previous;
}


export type EmergencyAction = 'enter' | 'leave' | 'none';

/** What a resource this host is actual primary for should do at this space level. */
export function decidePrimaryEmergency(level: number, mode: LoggingMode): EmergencyAction {
  if (mode === 'logging') return level >= MAX_SPACE_LEVEL ? 'enter' : 'none';
  // Leave only when the space is back completely (level 0 after the hysteresis), not at the
  // first free megabyte: a new emergency would cost every secondary another re-sync.
  if (mode === 'direct' && level === 0) return 'leave';
  return 'none';
}

/**
 * MARS's per-resource emergency limit: a resource whose logfiles take at least `limitPercent` of
 * the /mars filesystem enters emergency mode on its own, before the whole of /mars is short
 * (so one busy resource cannot push every other resource into emergency mode). 0 = off.
 */
export function emergencyLimitReached(limitPercent: number, logBytes: number, totalBytes: number): boolean {
  return limitPercent > 0 && totalBytes > 0 && logBytes * 100 >= limitPercent * totalBytes;
}

/** What a secondary does at this space level (its own copies only; never the primary's logs). */
export function secondarySpaceLimits(level: number): { deleteReplayedCopies: boolean; pauseFetch: boolean } {
  return { deleteReplayedCopies: level >= 2, pauseFetch: level >= 3 };
}

/**
 * The secondary plan at this space level: fetching pauses from level 3 on (replay goes on with
 * what is fetched, so the disk stays a consistent, if older, state); the reason is shown.
 */
export function limitSecondaryPlan(plan: SecondaryPlan, level: number): SecondaryPlan {
  if (!plan.fetch || !secondarySpaceLimits(level).pauseFetch) return plan;
  const why = `fetch paused: /mars space level ${level} (free space low; see "marsadm view")`;
  return { ...plan, fetch: false, why: plan.why ? `${plan.why}; ${why}` : why };
}

export interface LocalCopy {
  seq: number;
  origin: string;
  name: string;
}

/**
 * Local logfiles this host may delete to free space: copies of other hosts' logfiles numbered
 * below the logfile its replay link is in, so everything in them is on the disk and replay
 * never reads them again (the fetcher does not copy below the replay link either). Logfiles
 * this host wrote itself are kept: it may be their only source for another member. Deleting a
 * copy is local (no tombstone): the origin and every other member keep theirs.
 */
export function replayedCopies(host: string, replaySeq: number | undefined, copies: readonly LocalCopy[]): LocalCopy[] {
  if (replaySeq === undefined) return [];
  return copies.filter((c) => c.origin !== host && c.seq < replaySeq);
}

/** The number of the empty versionlink that marks the hole, and of the logfile after it. */
export function holeNumbers(currentSeq: number, highestSeq: number): { holeSeq: number; nextSeq: number } {
  // As MARS: the gap is 10 numbers wide, so nobody can take it for a lost logfile.
  const holeSeq = Math.max(currentSeq, highestSeq) + 10;
  return { holeSeq, nextSeq: holeSeq + 1 };
}

/** Space figures in the unit MARS publishes them: GiB, rounded down. */
export function gibibytes(bytes: number): number {
  return Math.floor(bytes / 1024 ** 3);
}
