// Measures the free space of the /mars filesystem every control round (statfs), turns it into
// the host's space level (decide-emergency.ts) and publishes it in actual-HOST/: `emergency`
// (level 0..4), `rest-space` and `total-space` (GiB, as MARS), and the same figures in bytes
// plus the thresholds, for small filesystems and monitoring scripts. rest-space-bytes moves in
// steps of REST_SPACE_QUANTUM of the total (0.1 %, at most 64 MiB), not with every block.
import { statfsSync } from 'node:fs';
import type { TreeStore } from '../../common/tree/store.js';
import { globalPaths } from '../../common/tree/paths.js';
import {
  gibibytes, MAX_SPACE_LEVEL, nextSpaceLevel, rawSpaceLevel, resolveThresholdsBytes, type ThresholdSpec,
} from './decide-emergency.js';
import type { LogFn } from '../../common/util/log.js';
import type { Clock } from '../../common/util/clock.js';
import { failStopOnInvariant } from '../../common/util/assert.js';

/** A level falls by one step at most this often (MARS: one step per main-loop round). */
export const LEVEL_FALL_INTERVAL_MS = 1000;

export interface SpaceState {
  level: number;
  freeBytes: number;
  totalBytes: number;
  /** free space below which levels 1..4 start */
  thresholdsBytes: number[];
}

export interface SpaceMonitorOptions {
  tree: TreeStore;
  host: string;
  /** thresholds from --space-levels; undefined = defaults */
  spec: ThresholdSpec[] | undefined;
  log: LogFn;
  /** paces the hysteresis (a level falls one step per LEVEL_FALL_INTERVAL_MS at most) */
  clock: Clock;
  /** for tests: the filesystem figures (default statfs of the tree's root) */
  measure?: () => { freeBytes: number; totalBytes: number };
}

/**
 * rest-space-bytes is written again only when the free space moved by this share of the total,
 * at most REST_SPACE_MAX_STEP_BYTES (or the level changed). The free space of a live filesystem
 * moves by a few KiB with every link written, and an exact figure made both hosts of an idle
 * cluster write it, pull it and run a control round over every resource for it once a second,
 * in turn (issue 11).
 */
export const REST_SPACE_QUANTUM = 1 / 1024;
export const REST_SPACE_MAX_STEP_BYTES = 64 * 1024 * 1024;

/** Whether the published free space (undefined: none readable) is worth replacing with freeBytes. */
export function restSpaceMoved(publishedBytes: number | undefined, freeBytes: number, totalBytes: number): boolean {
  const step = Math.min(totalBytes * REST_SPACE_QUANTUM, REST_SPACE_MAX_STEP_BYTES);
  return publishedBytes === undefined || !Number.isFinite(publishedBytes) || Math.abs(freeBytes - publishedBytes) >= step;
}

const MEANING = [
  'enough space',
  'space is getting low (warning)',
  'secondaries delete the logfile copies they have replayed',
  'secondaries stop fetching',
  'primaries enter emergency mode: writes are no longer logged',
];

export class SpaceMonitor {
  private state: SpaceState = { level: 0, freeBytes: 0, totalBytes: 0, thresholdsBytes: [0, 0, 0, 0] };
  private lastChangeMs = 0;
  private measureFailed = false;
  /** the level when rest-space-bytes was last written */
  private publishedLevel: number | undefined;

  constructor(private readonly o: SpaceMonitorOptions) {}

  get current(): SpaceState {
    return this.state;
  }

  private measure(): { freeBytes: number; totalBytes: number } {
    if (this.o.measure) return this.o.measure();
    const st = statfsSync(this.o.tree.root);
    // bavail, not bfree: the blocks reserved for root stay a cushion for the tree's own links
    // (the hole, the replay link) when the logfiles have taken the rest.
    return { freeBytes: st.bavail * st.bsize, totalBytes: st.blocks * st.bsize };
  }

  /** One control round: measure, apply the hysteresis, publish. */
  check(nowMs = this.o.clock.nowMs()): SpaceState {
    let figures: { freeBytes: number; totalBytes: number };
    try {
      figures = this.measure();
      this.measureFailed = false;
    } catch (err) {
      failStopOnInvariant(err);
      if (!this.measureFailed) this.o.log('warn', `cannot measure the free space of /mars: ${(err as Error).message}`);
      this.measureFailed = true;
      return this.state;
    }
    const thresholdsBytes = resolveThresholdsBytes(this.o.spec, figures.totalBytes);
    const raw = rawSpaceLevel(figures.freeBytes, thresholdsBytes);
    const level = nextSpaceLevel(this.state.level, raw, nowMs - this.lastChangeMs >= LEVEL_FALL_INTERVAL_MS);
    this.setLevel(level, `${figures.freeBytes} bytes free of ${figures.totalBytes}`, nowMs);
    this.state = { ...this.state, ...figures, thresholdsBytes };
    this.publish();
    return this.state;
  }

  /** A log append hit ENOSPC: /mars is full, whatever the last measurement said. */
  reportFull(nowMs = this.o.clock.nowMs()): void {
    this.setLevel(MAX_SPACE_LEVEL, 'a logfile append failed with ENOSPC', nowMs);
    this.publish();
  }

  private setLevel(level: number, why: string, nowMs: number): void {
    const old = this.state.level;
    if (level === old) return;
    this.state = { ...this.state, level };
    this.lastChangeMs = nowMs;
    const text = `/mars space level ${old} -> ${level} (${why}): ${MEANING[level]}`;
    this.o.log(level > old ? 'warn' : 'info', text);
  }

  private publish(): void {
    const { tree, host } = this.o;
    const s = this.state;
    const set = (key: string, value: string) => tree.write(globalPaths.actual(host, key), value, { onlyIfChanged: true });
    try {
      tree.ensureDir(globalPaths.actualDir(host));
      set('emergency', String(s.level));
      set('rest-space', String(gibibytes(s.freeBytes)));
      set('total-space', String(gibibytes(s.totalBytes)));
      // Compared with the tree, not a copy: a link removed or a directory made anew is written again.
      const published = tree.value(globalPaths.actual(host, 'rest-space-bytes'));
      if (s.level !== this.publishedLevel || restSpaceMoved(published === undefined ? undefined : Number(published), s.freeBytes, s.totalBytes)) {
        set('rest-space-bytes', String(s.freeBytes));
        this.publishedLevel = s.level;
      }
      set('total-space-bytes', String(s.totalBytes));
      set('space-thresholds', s.thresholdsBytes.join(','));
    } catch (err) {
      failStopOnInvariant(err);
      // With /mars completely full even a link may not fit; the next round tries again.
      this.o.log('warn', `cannot publish the space level: ${(err as Error).message}`);
    }
  }
}
