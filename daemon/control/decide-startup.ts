// The start-up gate (issue 12, zombies): a marsd that starts on a /mars it ran on before does not
// take the primary role from that tree alone. Its tree may be stale: while it was down, a
// survivor may have failed over (a newer `primary` link) or removed it (removal markers,
// common/tree/removal.ts). Both only reach it with a peer's tree, so the primary role waits
// until one pull from a peer succeeded: with the survivors' markers and `primary` link merged,
// the normal deciders (decide.ts: a removed host takes no role; a host that is no longer the
// designated primary stays secondary) keep a zombie from exporting anything.
//
// A host that reaches no peer at all within the grace period cannot learn anything; it acts on
// its tree as it is (a primary that restarts while its secondaries are down must come back).
// Then it is harmless to the others: survivors accept nothing a removed host sends, and an old
// primary that was replaced without removal diverges from the new primary's history, which
// every host reports as split brain until `invalidate` or `leave-resource` (docs/manual.md).
//
// The gate only ever holds back the start of the primary role; once open it stays open (the
// daemon latches it). Pure: the daemon gathers the input and latches the verdict.
import { assert } from '../../common/util/assert.js';

export interface StartupGateInput {
  nowMs: number;
  /** when this marsd started (the clock's time) */
  startedMs: number;
  /** how long the gate waits for a peer at most */
  graceMs: number;
  /** members this host has a peer link to (from ips/) */
  peerCount: number;
  /** peers whose tree was pulled and merged since start */
  pulledFrom: readonly string[];
}

export interface StartupGate {
  open: boolean;
  /** open: why it opened (for the log); closed: what the primary role waits for (primary-wait) */
  why: string;
}

export function decideStartupGate(i: StartupGateInput): StartupGate {
  assert(i.graceMs >= 0 && Number.isFinite(i.startedMs) && Number.isFinite(i.nowMs), `start-up gate: grace ${i.graceMs} ms, start ${i.startedMs}, now ${i.nowMs}`);
  if (i.peerCount === 0) return { open: true, why: 'no peers: this host is alone in its cluster' };
  if (i.pulledFrom.length > 0) return { open: true, why: `the tree of ${[...i.pulledFrom].sort().join(', ')} is merged (removal markers and primary links known)` };
  const waitedMs = i.nowMs - i.startedMs;
  if (waitedMs >= i.graceMs) {
    return { open: true, why: `no peer answered within ${Math.round(i.graceMs / 1000)} s: acting on the tree as it is here (a zombie stays harmless: peers accept nothing of a removed host)` };
  }
  return { open: false, why: `start-up: the primary role waits up to ${Math.ceil((i.graceMs - waitedMs) / 1000)} s more for a peer's tree (was this host replaced or removed while it was down?)` };
}
