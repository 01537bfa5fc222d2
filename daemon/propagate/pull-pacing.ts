// How long a peer link waits before its next regular pull of the peer's tree (issue 11: an
// idle pair of daemons pulled each other's whole listing every second, a fifth of their idle
// CPU at 100 resources). A pull is a safety net: the peer tells us of its changes (notify,
// which pulls at once), and a follow brings new log bytes without any pull. What comes only by
// pulls is what the peer changes without telling: its status links (replay and sync progress)
// and heartbeat. So the interval stays --pull-interval-ms while pulls bring news, and
// stretches while they bring none, step by step up to MAX_QUIET_FACTOR times, so a quiet
// peer's status and heartbeat reach us at most that much later; the first pull that brings
// news, a notification or a new connection starts over at the interval.

/** quiet pulls (no news) before the interval grows by one more interval */
export const QUIET_PULLS_PER_STEP = 3;
/** the longest wait between two pulls, in pull intervals */
export const MAX_QUIET_FACTOR = 4;

/** The wait before the next regular pull after `quietPulls` pulls in a row without news. */
export function pullDelayMs(intervalMs: number, quietPulls: number): number {
  return intervalMs * Math.min(MAX_QUIET_FACTOR, 1 + Math.floor(Math.max(0, quietPulls) / QUIET_PULLS_PER_STEP));
}
