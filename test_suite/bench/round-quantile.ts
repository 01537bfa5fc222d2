// The control round's p99 for the scale suite (issue 11: one control round over every resource
// p99 < 100 ms), from marsd's histogram mars_control_round_duration_seconds (docs/monitoring.md)
// scraped before and after a window: the window's samples are the difference of the two
// scrapes. A histogram gives a quantile as the upper bound of the bucket it falls in, which is
// what is reported ("<= 25 ms"); above the largest finite bucket it is Infinity.
import { createRequire } from 'node:module';

interface Family { name: string; type: string; metrics: { count?: string; buckets?: Record<string, string> }[] }
const parse = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => Family[];

export const CONTROL_ROUND_METRIC = 'mars_control_round_duration_seconds';

/** Cumulative bucket counts of an unlabelled histogram: upper bound (s, Infinity for +Inf) -> samples at or below it. */
export interface HistogramCounts {
  count: number;
  buckets: Map<number, number>;
}

export function histogramOf(exposition: string, name: string): HistogramCounts {
  const f = parse(exposition).find((x) => x.name === name);
  if (f === undefined || f.type !== 'HISTOGRAM' || f.metrics.length !== 1) throw new Error(`no unlabelled histogram ${name} in the exposition`);
  const m = f.metrics[0]!;
  const buckets = new Map<number, number>();
  for (const [le, n] of Object.entries(m.buckets ?? {})) buckets.set(le === '+Inf' ? Infinity : Number(le), Number(n));
  const count = Number(m.count);
  if (!Number.isFinite(count) || [...buckets.keys()].some((k) => Number.isNaN(k))) throw new Error(`${name}: unreadable histogram`);
  return { count, buckets };
}

/** The samples of `after` that came after `before` (same histogram, scraped twice). */
export function histogramSince(before: HistogramCounts, after: HistogramCounts): HistogramCounts {
  const buckets = new Map<number, number>();
  for (const [le, n] of after.buckets) buckets.set(le, n - (before.buckets.get(le) ?? 0));
  const count = after.count - before.count;
  if (count < 0 || [...buckets.values()].some((n) => n < 0)) throw new Error('the histogram went backwards: marsd restarted between the scrapes');
  return { count, buckets };
}

/** Upper bound in seconds of the bucket holding quantile q (0 < q <= 1); undefined without samples. */
export function quantileBound(h: HistogramCounts, q: number): number | undefined {
  if (!(q > 0 && q <= 1)) throw new Error(`quantile ${q} must be in (0, 1]`);
  if (h.count === 0) return undefined;
  const need = q * h.count;
  for (const le of [...h.buckets.keys()].sort((a, b) => a - b)) if (h.buckets.get(le)! >= need) return le;
  return Infinity;
}
