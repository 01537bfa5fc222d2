// How a failing seed is reported: the invariant, the step, and the command that replays it.
import type { SimOptions, SimResult } from './world.js';

export function describeFailure(r: SimResult, o: SimOptions): string {
  const v = r.violation!;
  return `sim: VIOLATION ${v.invariant} at seed ${r.seed}, step ${v.step} (${v.atMs} simulated ms): ${v.detail}\n`
    + `replay: npm run sim -- --seed ${r.seed} --seeds 1 --hosts ${o.hosts} --chaos-ms ${o.chaosMs} --trace`;
}
