// The torture runner's fault schedule (docs/reliability.md, "Torture runner"): a pure function of
// the seed. Step n's fault kind and its "pick" (which host it hits, resolved against the hosts
// eligible at run time) come from a seeded PRNG alone, so --seed S replays the same schedule.
import { mulberry32 } from '../helpers/prng.js';

export const FAULT_KINDS = [
  'kill-secondary', 'kill-primary', 'link-cut', 'blackhole', 'slow-link', 'handover',
  'force-failover', 'pause-fetch', 'pause-replay', 'pause-sync', 'log-rotate', 'log-delete', 'cron',
  'jitter-link', 'mars-full', 'replace-host', 'kill-during-handover', 'kill-during-sync',
] as const;

export type FaultKind = (typeof FAULT_KINDS)[number];

export interface FaultStep {
  /** 1-based step number (what a violation names). */
  step: number;
  kind: FaultKind;
  /** Chooses the host among the eligible ones (pick % count). */
  pick: number;
  /** Seed of the write burst that runs during the fault. */
  writeSeed: number;
}

export function isFaultKind(s: string): s is FaultKind {
  return (FAULT_KINDS as readonly string[]).includes(s);
}

/** "a,b,c" into kinds; throws naming the unknown one. */
export function parseKinds(list: string): FaultKind[] {
  const kinds = list.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (kinds.length === 0) throw new Error('--only needs at least one fault kind');
  for (const k of kinds) {
    if (!isFaultKind(k)) throw new Error(`unknown fault kind "${k}" (known: ${FAULT_KINDS.join(', ')})`);
  }
  return [...new Set(kinds)] as FaultKind[];
}

/** The endless schedule of a seed over `kinds` (default: all), drawn one step at a time. */
export class Schedule {
  private readonly rnd: () => number;
  private n = 0;
  readonly kinds: readonly FaultKind[];

  constructor(readonly seed: number, kinds: readonly FaultKind[] = FAULT_KINDS) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`seed must be a non-negative integer, not ${seed}`);
    if (kinds.length === 0) throw new Error('a schedule needs at least one fault kind');
    this.kinds = kinds;
    this.rnd = mulberry32(seed ^ 0x7043_7572);
  }

  next(): FaultStep {
    const kind = this.kinds[Math.floor(this.rnd() * this.kinds.length)]!;
    const pick = Math.floor(this.rnd() * 0x1_0000_0000);
    const writeSeed = Math.floor(this.rnd() * 0x7fff_ffff) + 1;
    return { step: ++this.n, kind, pick, writeSeed };
  }

  /** The first `count` steps (for tests and for printing a schedule). */
  static take(seed: number, count: number, kinds?: readonly FaultKind[]): FaultStep[] {
    const s = new Schedule(seed, kinds);
    return Array.from({ length: count }, () => s.next());
  }
}
