// Writes one resource's status links (status-links.ts computes them) and, through `also`, the
// links a running primary keeps current (its replay link and versionlink). Rate-limited by the
// injected clock: progress reports (writeback, fetch, replay) come many times a second, and
// every link write is a symlink replacement in /mars; a suppressed update is made once the
// interval is over, so the last state is always published. Forced updates (role changes,
// failures) are written at once. It also keeps actsize-HOST (this host's disk size) current:
// a disk grown underneath shows there at the next update, and marsadm resize reads it.
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths } from '../../common/tree/paths.js';
import type { Clock, Timer } from '../../common/util/clock.js';
import { failStopOnInvariant } from '../../common/util/assert.js';
import type { LogFn } from '../../common/util/log.js';

export const PUBLISH_MIN_INTERVAL_MS = 200;

export interface StatusPublisherOptions {
  tree: TreeStore;
  res: string;
  host: string;
  clock: Clock;
  log: LogFn;
  /** the links to publish now (a pure function of the runners' state) */
  links: () => Record<string, string>;
  /** written with every update: the primary's replay link and versionlink while it logs */
  also: () => void;
  /** this host's data disk size for actsize-HOST (resize checks it), undefined: not a member / unknown */
  actsizeBytes?: () => number | undefined;
}

export class StatusPublisher {
  private lastMs = Number.NEGATIVE_INFINITY;
  private timer: Timer | undefined;

  constructor(private readonly o: StatusPublisherOptions) {}

  /** Publish now when forced or the interval is over; otherwise once it is. */
  publish(force: boolean): void {
    const now = this.o.clock.nowMs();
    if (!force && now - this.lastMs < PUBLISH_MIN_INTERVAL_MS) {
      this.timer ??= this.o.clock.setTimeout(() => { this.timer = undefined; this.publish(true); }, PUBLISH_MIN_INTERVAL_MS);
      return;
    }
    this.lastMs = now;
    const { tree, res } = this.o;
    try {
      // Every directory's cached listing is checked once for the whole update (a write drops
      // the listing it changed, so a read after it sees it).
      tree.readBatch(() => this.update());
    } catch (err) {
      // A full /mars may refuse even a link; the next update tries again.
      failStopOnInvariant(err);
      this.o.log('warn', `${res}: status update failed: ${(err as Error).message}`);
    }
  }

  /**
   * Write what differs from the tree. Issue 11: an idle resource is published every round, and
   * nearly always nothing differs, so the comparison costs one look at the cached listing of
   * actual-HOST (no path per link, no mkdir, no lstat and readlink per link written unchanged).
   */
  private update(): void {
    const { tree, res, host } = this.o;
    const links = this.o.links();
    const dir = resPaths.actualDir(res, host);
    let actual = tree.listing(dir);
    if (actual === undefined) {
      tree.ensureDir(dir);
      actual = new Map();
    }
    for (const key in links) {
      const value = links[key]!;
      const e = actual.get(key);
      if (e?.kind === 'link' && e.value === value) {
        tree.clock.observe(e.stampUs); // as tree.value would
        continue;
      }
      tree.write(resPaths.actual(res, host, key), value, { onlyIfChanged: true });
    }
    this.o.also();
    const actsize = this.o.actsizeBytes?.();
    if (actsize !== undefined && tree.value(resPaths.actsize(res, host)) !== String(actsize)) {
      tree.write(resPaths.actsize(res, host), String(actsize), { onlyIfChanged: true });
    }
  }

  /** No delayed update after this (shutdown). */
  cancel(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }
}
