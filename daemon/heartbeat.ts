// This host's heartbeat in the tree: actual-HOST/alive (1 while marsd runs) and actual-HOST/time
// (when it last ran a control round). Rounds run far more often than anybody needs the time:
// its readers (view's ages, is-alive, metrics) count in seconds against a 60 s window, and each
// write is pulled by every peer. So the time is renewed at most once per HEARTBEAT_INTERVAL_MS;
// a change of alive is written at once, with the time.
import type { TreeStore } from '../common/tree/store.js';
import { globalPaths } from '../common/tree/paths.js';
import { formatStamp } from '../common/tree/lamport.js';
import type { Clock } from '../common/util/clock.js';

export const HEARTBEAT_INTERVAL_MS = 1000;

export class Heartbeat {
  private lastMs = Number.NEGATIVE_INFINITY;

  constructor(private readonly tree: TreeStore, private readonly host: string, private readonly clock: Clock) {}

  beat(alive: boolean): void {
    const nowMs = this.clock.monotonicMs();
    const aliveChanged = this.tree.write(globalPaths.actual(this.host, 'alive'), alive ? '1' : '0', { onlyIfChanged: true });
    if (!aliveChanged && nowMs - this.lastMs < HEARTBEAT_INTERVAL_MS) return;
    this.lastMs = nowMs;
    this.tree.write(globalPaths.actual(this.host, 'time'), formatStamp(this.tree.clock.now()));
  }
}
