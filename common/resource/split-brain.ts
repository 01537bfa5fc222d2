// Split-brain detection from the versionlinks alone (the MARS user manual: the replay link and versionlink formats; split brain), as a pure
// function, shared by marsd (status, invalidate) and marsadm (view).
//
// Every host H describes the history on its disk by its chain version-N-H (N ascending): the
// logfile it applied for number N, how far, and a digest over everything before. Two hosts'
// histories are compatible when one is a prefix of the other: compared at the numbers both
// have, the first link that differs must name the same logfile, and the host with the shorter
// LOGPOS there must not have gone on to a later number (it is merely behind). Anything else is
// a split brain: the histories share everything before the first difference (the common
// point) and diverge after it.
import { parseVersionLink, type VersionLink } from '../log/links.js';
import { logName } from '../tree/log-names.js';

/** One host's versionlinks by logfile number. */
export type Chain = ReadonlyMap<number, VersionLink & { raw: string }>;

export interface HistoryPoint {
  seq: number;
  origin: string;
  pos: number;
}

export interface Divergence {
  common: HistoryPoint;
  /** the two hosts compared, each with what its chain holds beyond the common point */
  a: { host: string; bytesSince: number; tip: HistoryPoint };
  b: { host: string; bytesSince: number; tip: HistoryPoint };
}

/** Build chains from `version-SEQ-HOST` entries (malformed values are left out). */
export function chainsFrom(entries: readonly { seq: number; host: string; value: string }[]): Map<string, Map<number, VersionLink & { raw: string }>> {
  const chains = new Map<string, Map<number, VersionLink & { raw: string }>>();
  for (const e of entries) {
    const link = parseVersionLink(e.value);
    if (!link || link.seq !== e.seq) continue;
    let chain = chains.get(e.host);
    if (!chain) chains.set(e.host, (chain = new Map()));
    chain.set(e.seq, { ...link, raw: e.value });
  }
  return chains;
}

function tipOf(chain: Chain): HistoryPoint | undefined {
  let best: (VersionLink & { raw: string }) | undefined;
  for (const l of chain.values()) if (!best || l.seq > best.seq) best = l;
  return best ? { seq: best.seq, origin: best.origin, pos: best.logPos } : undefined;
}

export interface LogPart {
  seq: number;
  origin: string;
  fromPos: number;
  toPos: number;
}

/** The logfile ranges a chain holds after `common`: the rest of the common logfile, then every later one. */
export function partsAfter(chain: Chain, common: HistoryPoint): LogPart[] {
  const parts: LogPart[] = [];
  for (const l of [...chain.values()].sort((x, y) => x.seq - y.seq)) {
    if (l.seq < common.seq) continue;
    const inCommonFile = l.seq === common.seq && l.origin === common.origin;
    if (inCommonFile && l.logPos <= common.pos) continue;
    parts.push({ seq: l.seq, origin: l.origin, fromPos: inCommonFile ? common.pos : 0, toPos: l.logPos });
  }
  return parts;
}

/** Logged bytes a chain holds after `common`. */
export function bytesSince(chain: Chain, common: HistoryPoint): number {
  return partsAfter(chain, common).reduce((n, p) => n + p.toPos - p.fromPos, 0);
}

function hasLater(chain: Chain, seq: number): boolean {
  for (const s of chain.keys()) if (s > seq) return true;
  return false;
}

/** The common point of two diverged histories, or undefined when one is a prefix of the other. */
export function commonPoint(a: Chain, b: Chain): HistoryPoint | undefined {
  const shared = [...a.keys()].filter((s) => b.has(s)).sort((x, y) => x - y);
  for (const seq of shared) {
    const la = a.get(seq)!;
    const lb = b.get(seq)!;
    if (la.raw === lb.raw) continue;
    if (la.origin !== lb.origin || la.logPos === lb.logPos) {
      // Different logfiles for one number (or the same length with different pasts): the
      // histories part at the end of the previous logfile, as the PREV fields describe it.
      const prev = la.prev !== '' ? parseVersionLink(`${la.prev}:`) : undefined;
      return prev ? { seq: prev.seq, origin: prev.origin, pos: prev.logPos } : { seq: seq - 1, origin: la.origin, pos: 0 };
    }
    const shorter = la.logPos < lb.logPos ? a : b;
    const pos = Math.min(la.logPos, lb.logPos);
    return hasLater(shorter, seq) ? { seq, origin: la.origin, pos } : undefined;
  }
  return undefined;
}

/**
 * The first pair of hosts (in name order) whose histories diverged, or undefined. `hosts`
 * limits the comparison to the resource's members.
 */
export function findDivergence(chains: ReadonlyMap<string, Chain>, hosts: readonly string[]): Divergence | undefined {
  const names = [...hosts].filter((h) => chains.has(h)).sort();
  for (let i = 0; i < names.length; i++) {
    for (let j = i + 1; j < names.length; j++) {
      const a = chains.get(names[i]!)!;
      const b = chains.get(names[j]!)!;
      const common = commonPoint(a, b);
      if (!common) continue;
      return {
        common,
        a: { host: names[i]!, bytesSince: bytesSince(a, common), tip: tipOf(a)! },
        b: { host: names[j]!, bytesSince: bytesSince(b, common), tip: tipOf(b)! },
      };
    }
  }
  return undefined;
}

/** Which hosts share a side's history: compatible with that side's host. */
export function sideOf(chains: ReadonlyMap<string, Chain>, hosts: readonly string[], host: string): string[] {
  const mine = chains.get(host);
  if (!mine) return [host];
  return [...hosts].filter((h) => h === host || (chains.has(h) && commonPoint(mine, chains.get(h)!) === undefined)).sort();
}

export function formatPoint(p: HistoryPoint): string {
  return `${logName(p.seq, p.origin)} at ${p.pos} bytes`;
}
