// Publishes what this host knows about a split brain of one resource (split-brain.ts decides
// from the versionlinks): `actual-HOST/split-brain` is `0`, or
// `SEQ,ORIGIN,POS,BYTES,RECORDS`: the common point of the diverged histories and how many
// logged bytes and records this host's own history holds after it (RECORDS is counted in the
// local logfiles; `?` when one of them is not here). marsadm view combines the hosts' values.
// When to check is the plan's decision (plan.ts checkSplitBrain: at most once per second, never
// two at a time); this shell reports when it last began and whether one runs.
//
// Idle cost (docs/design.md, cost model): everything the check reads (versionlinks, data-HOST
// links) is a link in the resource directory. The tree's cached listing of that directory is
// the same object for as long as the directory is unchanged (TreeStore.listing: the cache
// checks it by inotify in marsd, by its mtime elsewhere), so a check first looks whether the
// listing is the one the last checks saw, O(1), and reads the L versionlinks only when not.
// As when this was the directory's mtime, a listing counts as settled only once two checks in
// a row saw it: only then is the check skipped.
import { existsSync } from 'node:fs';
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths, resourceDir } from '../../common/tree/paths.js';
import { readSplitBrainView } from '../../common/resource/split-brain-view.js';
import { readLogBatches } from '../../common/log/scanner.js';
import { bytesSince, findDivergence, partsAfter, type Chain, type HistoryPoint } from '../../common/resource/split-brain.js';
import type { LogFn } from '../../common/util/log.js';
import { logName } from '../../common/tree/log-names.js';
import type { Clock } from '../../common/util/clock.js';
import { failStopOnInvariant } from '../../common/util/assert.js';

export class SplitBrainMonitor {
  /** when the last check began (the clock's ms); never: -Infinity */
  lastCheckMs = Number.NEGATIVE_INFINITY;
  /** a check is running */
  checking = false;
  private cache: { key: string; records: string } | undefined;
  /** the resource directory's listing at the start of the last successful check (weakly: an
   *  old listing of a large directory must not stay in memory for this) */
  private lastDirKey: WeakRef<object> | undefined;
  /** a listing two successful checks in a row began with: nothing changed since */
  private settledDirKey: WeakRef<object> | undefined;
  /** checks that read the versionlinks (for tests and the cost model) */
  fullChecks = 0;

  constructor(private readonly tree: TreeStore, private readonly res: string, private readonly host: string,
    private readonly log: LogFn, private readonly clock: Clock) {}

  /** Start a check in the background (the plan said it is time). */
  check(): void {
    if (this.checking) return;
    this.lastCheckMs = this.clock.nowMs();
    const key = this.dirKey();
    if (key !== undefined && key === this.settledDirKey?.deref()) return; // nothing changed
    this.checking = true;
    this.fullChecks++;
    this.publish().then(() => {
      if (key !== undefined && key === this.lastDirKey?.deref()) this.settledDirKey = new WeakRef(key);
      this.lastDirKey = key === undefined ? undefined : new WeakRef(key);
    }, (err) => {
      failStopOnInvariant(err);
      this.lastDirKey = undefined;
      this.log('warn', `${this.res}: split-brain check failed: ${(err as Error).message}`);
    }).finally(() => { this.checking = false; });
  }

  /** The resource directory's cached listing (another object once anything in it changed). */
  private dirKey(): object | undefined {
    try {
      return this.tree.listing(resourceDir(this.res));
    } catch {
      return undefined; // unreadable: check the slow way, which says what is wrong
    }
  }

  private async publish(): Promise<void> {
    const view = readSplitBrainView(this.tree, this.res);
    const path = resPaths.actual(this.res, this.host, 'split-brain');
    // A resource's first round may check before its status publisher made actual-HOST/.
    this.tree.ensureDir(resPaths.actualDir(this.res, this.host));
    const d = findDivergence(view.chains, view.members);
    if (!d || !view.chains.has(this.host)) {
      if (this.tree.value(path) !== undefined && this.tree.value(path) !== '0') this.log('info', `${this.res}: no split brain (any more)`);
      this.tree.write(path, '0', { onlyIfChanged: true });
      return;
    }
    const mine = view.chains.get(this.host)!;
    // A host still behind the split point holds nothing after it: 0 bytes, 0 records.
    const bytes = bytesSince(mine, d.common);
    const records = await this.countRecords(mine, d.common);
    const value = `${d.common.seq},${d.common.origin},${d.common.pos},${bytes},${records}`;
    if (this.tree.value(path) !== value) {
      this.log('warn', `${this.res}: SPLIT BRAIN: histories of ${d.a.host} and ${d.b.host} diverge after ${logName(d.common.seq, d.common.origin)} at ${d.common.pos} bytes; this host holds ${bytes} bytes (${records} records) after it`);
    }
    this.tree.write(path, value, { onlyIfChanged: true });
  }

  /** Records of this host's own history after the common point, counted in local logfiles. */
  private async countRecords(chain: Chain, common: HistoryPoint): Promise<string> {
    const parts = partsAfter(chain, common);
    const key = JSON.stringify([common, parts]);
    if (this.cache?.key === key) return this.cache.records;
    let records = 0;
    for (const p of parts) {
      const path = this.tree.abs(resPaths.log(this.res, p.seq, p.origin));
      if (!existsSync(path)) return '?';
      try {
        for await (const item of readLogBatches(path, p.fromPos, { endPos: p.toPos })) {
          if (item.type === 'batch') records += item.records.length;
        }
      } catch (err) {
        failStopOnInvariant(err);
        return '?';
      }
    }
    this.cache = { key, records: String(records) };
    return this.cache.records;
  }
}
