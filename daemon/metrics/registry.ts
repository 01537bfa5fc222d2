// The Prometheus metrics of one marsd (prom-client): gauges read from the tree and the runners
// when scraped (collect callbacks: nothing runs between scrapes), counters mirrored from the
// plain byte counters the write, fetch and replay paths increment (common/util/metrics-recorder.ts),
// and NBD request histograms observed synchronously by the NBD server. docs/monitoring.md lists
// every metric. Names follow Prometheus conventions: mars_ prefix, base units, _total counters.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { TreeStore } from '../../common/tree/store.js';
import { globalPaths, resPaths } from '../../common/tree/paths.js';
import { readProgressFacts } from '../../common/resource/read-progress.js';
import { progress } from '../../common/resource/replication-progress.js';
import { inconsistency } from '../../common/resource/consistency.js';
import type { NbdRecorder, NbdRequestType, ResourceCounters } from '../../common/util/metrics-recorder.js';
import type { PeerBytes } from '../net/peer-traffic.js';

/**
 * How often the event loop's lag is sampled (mars_nodejs_eventloop_lag_seconds): not at
 * prom-client's default of every 10 ms, a timer of its own and 100 wake-ups a second in every
 * marsd (issue 11: about a tenth of an idle daemon's CPU). A stall still shows: it delays the
 * next sample.
 */
export const EVENT_LOOP_SAMPLE_MS = 1000;

export interface MetricsSource {
  tree: TreeStore;
  host: string;
  /** --window of the rests: older knowledge of the primary counts as stale */
  windowS: number;
  nowMs: () => number;
  resources: () => string[];
  counters: (res: string) => ResourceCounters | undefined;
  peers: () => { peer: string; connected: boolean }[];
  /** frame bytes sent to and received from each peer since marsd started (net/peer-traffic.ts) */
  peerTraffic: () => ReadonlyMap<string, PeerBytes>;
  logfileCount: (res: string) => number;
}

const ROLES = ['primary', 'secondary'] as const;

function num(text: string | undefined): number {
  return text !== undefined && /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : 0;
}

export class MarsMetrics {
  readonly registry = new Registry();
  private readonly nbdSeconds: Histogram<'resource' | 'type'>;
  private readonly nbdRequests: Counter<'resource' | 'type' | 'result'>;
  private readonly controlRoundSeconds: Histogram;

  constructor(private readonly src: MetricsSource) {
    const r = this.registry;
    const res = ['resource'] as const;
    const self = this;
    const gauge = (name: string, help: string, value: (resName: string) => number) => new Gauge({
      name, help, labelNames: res, registers: [r],
      collect() { this.reset(); for (const n of self.src.resources()) this.set({ resource: n }, value(n)); },
    });
    gauge('mars_resource_is_primary', '1 while this host is the actual primary of the resource', (n) => num(this.actual(n, 'is-primary')));
    gauge('mars_resource_designated_primary', '1 while this host is the designated primary', (n) => Number(src.tree.value(resPaths.primary(n)) === src.host));
    gauge('mars_resource_consistent', '1 while the local disk is consistent (sync complete, replay past the sync point; primary: written back)', (n) => this.consistent(n));
    gauge('mars_resource_split_brain', '1 while a split brain is detected', (n) => Number(((v) => v !== undefined && v !== '0')(this.actual(n, 'split-brain'))));
    gauge('mars_resource_emergency', '1 while the resource is in emergency mode (writes not logged)', (n) => Number(this.actual(n, 'is-emergency') === '1' || this.actual(n, 'has-emergency') === '1'));
    gauge('mars_resource_writeback_rest_bytes', 'logged bytes not yet on the data disk (primary)', (n) => num(this.actual(n, 'writeback-rest')));
    gauge('mars_resource_sync_rest_bytes', 'bytes of the disk not yet synced here', (n) => this.syncRest(n));
    gauge('mars_resource_logfiles', 'logfiles of the resource in /mars on this host', (n) => src.logfileCount(n));
    gauge('mars_resource_nbd_clients', 'NBD clients with the device open', (n) => num(this.actual(n, 'open-count')));
    const prog = (key: 'fetchRest' | 'replayRest' | 'fetchLagS' | 'replayLagS' | 'primaryAgeS' | 'stale') => (n: string) => this.progress(n)[key] ?? -1;
    gauge('mars_resource_fetch_rest_bytes', 'bytes the primary logged (as known here) not yet fetched', prog('fetchRest'));
    gauge('mars_resource_replay_rest_bytes', 'bytes the primary logged (as known here) not yet applied here', prog('replayRest'));
    gauge('mars_resource_fetch_lag_seconds', 'age of the newest write copied here while fetch rest is not 0, 0 when caught up (docs/monitoring.md)', prog('fetchLagS'));
    gauge('mars_resource_replay_lag_seconds', 'age of the oldest write not applied here, 0 when caught up', prog('replayLagS'));
    gauge('mars_resource_progress_stale', '1 while the primary\'s state known here is older than --metrics-window: rests and lags are lower bounds', prog('stale'));
    gauge('mars_resource_primary_state_age_seconds', 'how old the primary\'s state known here is (-1: never seen)', prog('primaryAgeS'));
    new Gauge({
      name: 'mars_resource_role', help: 'actual role of this host (1 for the current role label)', labelNames: ['resource', 'role'], registers: [r],
      collect() {
        this.reset();
        for (const n of self.src.resources()) {
          const primary = self.actual(n, 'is-primary') === '1';
          for (const role of ROLES) this.set({ resource: n, role }, Number((role === 'primary') === primary));
        }
      },
    });
    this.byteCounter('mars_logged_bytes_total', 'bytes of writes appended to the transaction log', 'loggedBytes');
    this.byteCounter('mars_fetched_bytes_total', 'bytes of logfiles fetched from peers', 'fetchedBytes');
    this.byteCounter('mars_replayed_bytes_total', 'bytes of logfiles applied to the data disk', 'replayedBytes');
    this.byteCounter('mars_synced_bytes_total', 'bytes of the data disk synced from the primary', 'syncedBytes');
    new Gauge({
      name: 'mars_space_level', help: 'space level of /mars (0 ok .. 4 emergency)', registers: [r],
      collect() { this.set(num(self.src.tree.value(globalPaths.actual(self.src.host, 'emergency')))); },
    });
    new Gauge({
      name: 'mars_space_free_bytes', help: 'free bytes of /mars', registers: [r],
      collect() { this.set(num(self.src.tree.value(globalPaths.actual(self.src.host, 'rest-space-bytes')))); },
    });
    new Gauge({
      name: 'mars_space_size_bytes', help: 'total bytes of /mars', registers: [r],
      collect() { this.set(num(self.src.tree.value(globalPaths.actual(self.src.host, 'total-space-bytes')))); },
    });
    new Gauge({
      name: 'mars_peer_up', help: '1 while the link to the peer is connected', labelNames: ['peer'], registers: [r],
      collect() { this.reset(); for (const p of self.src.peers()) this.set({ peer: p.peer }, Number(p.connected)); },
    });
    this.peerBytesCounter();
    this.nbdSeconds = new Histogram({
      name: 'mars_nbd_request_duration_seconds', help: 'time from an NBD request to its reply, by type', labelNames: ['resource', 'type'], registers: [r],
      buckets: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    });
    this.nbdRequests = new Counter({ name: 'mars_nbd_requests_total', help: 'NBD requests answered, by type and result', labelNames: ['resource', 'type', 'result'], registers: [r] });
    // One sample per control round (daemon.ts tick: every resource's snapshot, plan and the
    // synchronous part of its actions): the cost model's unit (docs/design.md §6.1).
    this.controlRoundSeconds = new Histogram({
      name: 'mars_control_round_duration_seconds', help: 'wall time of one control round over every resource (its synchronous part)', registers: [r],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    });
    // process_resident_memory_bytes, nodejs_eventloop_lag_seconds and friends, mars_ prefixed.
    collectDefaultMetrics({ register: r, prefix: 'mars_', eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  }

  /** Given to the NBD server: one histogram observation and one counter increment per reply. */
  readonly nbd: NbdRecorder = {
    request: (exportName: string, type: NbdRequestType, durationS: number, failed: boolean) => {
      this.nbdSeconds.observe({ resource: exportName, type }, durationS);
      this.nbdRequests.inc({ resource: exportName, type, result: failed ? 'error' : 'ok' });
    },
  };

  /** One control round took durationS seconds (called by the daemon after each round). */
  controlRound(durationS: number): void {
    this.controlRoundSeconds.observe(durationS);
  }

  private byteCounter(name: string, help: string, key: keyof ResourceCounters): void {
    const self = this;
    new Counter({
      name, help, labelNames: ['resource'], registers: [this.registry],
      // Mirrors the plain counter (monotonic while marsd runs; a restart starts at 0).
      collect() {
        this.reset();
        for (const n of self.src.resources()) this.inc({ resource: n }, self.src.counters(n)?.[key] ?? 0);
      },
    });
  }

  private peerBytesCounter(): void {
    const self = this;
    new Counter({
      name: 'mars_peer_bytes_total', help: 'frame bytes exchanged with the peer over all connections since marsd started, by direction (sent, received)',
      labelNames: ['peer', 'direction'], registers: [this.registry],
      collect() {
        this.reset();
        const traffic = self.src.peerTraffic();
        // Every member has its series from the start (0 before the first connection), so rate() and alerts see it.
        const peers = new Set([...self.src.peers().map((p) => p.peer), ...traffic.keys()]);
        for (const peer of peers) {
          const b = traffic.get(peer);
          this.inc({ peer, direction: 'sent' }, b?.sentBytes ?? 0);
          this.inc({ peer, direction: 'received' }, b?.receivedBytes ?? 0);
        }
      },
    });
  }

  /** As view-sync-rest: the running sync's position counts (syncstatus moves every 64 MiB). */
  private syncRest(res: string): number {
    const { tree, host } = this.src;
    const running = this.actual(res, 'is-syncing') === '1' ? num(this.actual(res, 'sync-pos')) : 0;
    return Math.max(0, num(tree.value(resPaths.size(res))) - Math.max(num(tree.value(resPaths.syncstatus(res, host))), running));
  }

  private actual(res: string, key: string): string | undefined {
    return this.src.tree.value(resPaths.actual(res, this.src.host, key));
  }

  private consistent(res: string): number {
    const { tree, host } = this.src;
    if (tree.value(resPaths.primary(res)) === host) return Number(this.actual(res, 'writeback-rest') === '0' && this.actual(res, 'is-recovering') !== '1');
    // As view-is-consistent: sync complete and replay past the end of the sync (syncpos).
    const sizeBytes = num(tree.value(resPaths.size(res)));
    const syncstatus = tree.value(resPaths.syncstatus(res, host));
    return Number(sizeBytes > 0 && inconsistency({
      sizeBytes, syncstatusBytes: syncstatus === undefined ? undefined : num(syncstatus),
      syncpos: tree.value(resPaths.syncpos(res, host)), replayLink: tree.value(resPaths.replay(res, host)),
    }) === undefined);
  }

  private progress(res: string): Partial<Record<string, number>> {
    try {
      const p = progress(readProgressFacts(this.src.tree, res, this.src.host, this.src.windowS, this.src.nowMs() / 1000));
      return { fetchRest: p.fetchRest, replayRest: p.replayRest, fetchLagS: p.fetchLagS, replayLagS: p.replayLagS, primaryAgeS: p.primaryAgeS ?? -1, stale: Number(p.stale) };
    } catch {
      return {}; // a resource vanishing under the scrape: reported as -1 this time
    }
  }
}
