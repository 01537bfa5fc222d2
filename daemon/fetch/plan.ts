// What the fetcher of one resource should copy next (the MARS user manual: fetching logfiles), as a pure
// function. Logfiles are copied one at a time in ascending order, starting at the logfile of
// this host's replay link; a copy resumes at the local length; the origin is the preferred
// source, any other member that holds more of the file will do. A logfile is complete once
// its origin wrote the versionlink of the next number: its final length is the LOGPOS of its
// own versionlink. Two logfiles with the same number stop the fetcher below that number
// (split brain: the replayer reports it). A local copy longer than its origin's final length
// (proven by the origin's versionlinks) stops it too; a listing that offers less of a logfile
// still growing proves nothing (a listing taken during a rotation) and only makes it wait.
// When another host wrote the next logfile (a handover, or a forced failover whose old primary
// is gone), the history goes on from where that host ended logfile SEQ: its own version-SEQ
// link gives the final length, and bytes of the old origin beyond it are not part of it.
import { tryParseLogName } from '../../common/tree/log-names.js';
import { logName } from '../../common/tree/log-names.js';

export interface PeerListing {
  host: string;
  connected: boolean;
  /** log-SEQ-ORIGIN → bytes that peer offers (its durable end) */
  logs: ReadonlyMap<string, number>;
}

export interface FetchInput {
  self: string;
  replaySeq: number;
  /** local logfiles of the resource: name → size in bytes */
  local: ReadonlyMap<string, number>;
  peers: readonly PeerListing[];
  /**
   * Final length of logfile SEQ of `origin` once `successor` wrote the versionlink of SEQ+1:
   * LOGPOS of version-SEQ-successor (the origin's own link when the successor is the origin);
   * undefined while not known.
   */
  finalLength: (seq: number, origin: string, successor: string) => number | undefined;
}

export type FetchPlan =
  | { kind: 'fetch'; name: string; seq: number; origin: string; fromPos: number; source: string; follow: boolean; knownEnd: number }
  | { kind: 'idle'; reason: string }
  | { kind: 'stop'; reason: string };

export function planFetch(i: FetchInput): FetchPlan {
  const bySeq = new Map<number, Set<string>>();
  const note = (name: string) => {
    const parsed = tryParseLogName(name);
    if (!parsed.ok || parsed.value.seq < i.replaySeq) return;
    let origins = bySeq.get(parsed.value.seq);
    if (!origins) bySeq.set(parsed.value.seq, (origins = new Set()));
    origins.add(parsed.value.origin);
  };
  for (const p of i.peers) for (const name of p.logs.keys()) note(name);
  for (const name of i.local.keys()) note(name);
  const seqs = [...bySeq.keys()].sort((a, b) => a - b);
  for (const seq of seqs) {
    const origins = [...bySeq.get(seq)!].sort();
    if (origins.length > 1) return { kind: 'stop', reason: `two logfiles numbered ${seq} (from ${origins.join(' and ')}): split brain; not fetching beyond ${seq - 1}` };
    const origin = origins[0]!;
    if (origin === i.self) continue; // our own logfile: nothing to fetch
    const name = logName(seq, origin);
    const localBytes = i.local.get(name) ?? 0;
    const next = bySeq.get(seq + 1);
    const successor = next?.size === 1 ? [...next][0]! : origin;
    const final = i.finalLength(seq, origin, successor);
    // A logfile finished empty (its origin rotated or handed over before any write) must still
    // exist here: the replayer walks the chain file by file and waits for it. Creating it needs
    // no bytes from anyone (the fetcher creates it without a request).
    if (final === 0 && !i.local.has(name)) return { kind: 'fetch', name, seq, origin, fromPos: 0, source: origin, follow: false, knownEnd: 0 };
    // Another host continued the history from its own end of this logfile: what we hold
    // beyond that is not part of it (the replayer stops if it already applied any of it).
    if (final !== undefined && successor !== origin && localBytes >= final) continue;
    if (final !== undefined && localBytes > final) {
      return { kind: 'stop', reason: `local copy of ${name} has ${localBytes} bytes, more than the ${final} its origin ${origin} finished with: split brain or a damaged copy` };
    }
    if (final !== undefined && localBytes === final) continue; // complete
    // Best source: the origin while it offers anything new, else whoever offers the most.
    let best: { host: string; bytes: number } | undefined;
    for (const p of i.peers) {
      if (!p.connected) continue;
      const bytes = p.logs.get(name);
      if (bytes === undefined) continue;
      const better = !best || bytes > best.bytes || (bytes === best.bytes && p.host === origin);
      if (better) best = { host: p.host, bytes };
    }
    const originPeer = i.peers.find((p) => p.host === origin && p.connected && p.logs.has(name));
    if (originPeer && (best === undefined || (originPeer.logs.get(name) ?? 0) >= best.bytes)) best = { host: origin, bytes: originPeer.logs.get(name)! };
    if (!best) return { kind: 'idle', reason: `waiting for a connection to a member holding ${name}` };
    const growing = final === undefined;
    if (!growing && best.bytes <= localBytes) return { kind: 'idle', reason: `${name}: no connected member has more than ${localBytes} bytes of ${final}` };
    if (growing && best.host === origin && best.bytes < localBytes) {
      // The origin offers less than we hold of a logfile it has not finished (no versionlink
      // of the next number yet): that proves nothing. A listing taken while it rotated, before
      // its final versionlink was written, says so for a moment. A real divergence shows in
      // the versionlink chain (the check above, the split-brain monitor), so this only waits
      // for a fresh listing; asking for the bytes now would be refused.
      return { kind: 'idle', reason: `${name}: its origin ${origin} offers ${best.bytes} bytes, fewer than the ${localBytes} here; waiting for a fresh listing` };
    }
    // A logfile still being written is followed on its origin (it grows there first).
    if (growing && best.host !== origin && best.bytes <= localBytes) return { kind: 'idle', reason: `${name}: waiting for its origin ${origin}` };
    return { kind: 'fetch', name, seq, origin, fromPos: localBytes, source: best.host, follow: growing, knownEnd: final ?? best.bytes };
  }
  return { kind: 'idle', reason: 'all logfiles fetched' };
}
