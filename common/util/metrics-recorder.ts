// What the write, fetch, replay and sync paths and the NBD server count for the metrics
// (daemon/metrics/): plain numbers and one narrow interface, so those layers record with a
// counter increment and never see prom-client. The metrics endpoint reads them when scraped.
//
// Counters start at 0 when marsd starts (Prometheus counter semantics: a restart is a reset,
// which rate() and increase() handle); they never go down while marsd runs, across log rotation
// and role changes.

/** Bytes moved for one resource since marsd started. */
export interface ResourceCounters {
  /** bytes of writes appended to the transaction log (primary) */
  loggedBytes: number;
  /** bytes of logfiles copied from peers (secondary) */
  fetchedBytes: number;
  /** bytes of logfiles applied to the data disk (secondary) */
  replayedBytes: number;
  /** bytes of the data disk synced from the primary (secondary) */
  syncedBytes: number;
}

export function newResourceCounters(): ResourceCounters {
  return { loggedBytes: 0, fetchedBytes: 0, replayedBytes: 0, syncedBytes: 0 };
}

/** NBD request types as the metrics name them. */
export type NbdRequestType = 'read' | 'write' | 'flush' | 'trim' | 'write_zeroes';

/** The NBD server reports each answered request (synchronously; must not throw or await). */
export interface NbdRecorder {
  request(exportName: string, type: NbdRequestType, durationS: number, failed: boolean): void;
}
