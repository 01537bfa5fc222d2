// Shared by the monitoring e2e tests: every view macro of a host at once (view --json), and an
// expected-values table checked against it once the state has settled (with a deadline).
import type { Test } from 'tap';
import type { MarsHost } from '../helpers/cluster.js';

/** An expected value: exact text, a pattern, or a named predicate. */
export type Expect = string | RegExp | { what: string; ok: (value: string) => boolean };

export const positive: Expect = { what: '> 0', ok: (s) => s !== '' && Number(s) > 0 };
export const zero = '0';
export const atLeast = (n: number): Expect => ({ what: `>= ${n}`, ok: (s) => s !== '' && Number(s) >= n });
export const between = (lo: number, hi: number): Expect => ({ what: `in [${lo}, ${hi}]`, ok: (s) => s !== '' && Number(s) >= lo && Number(s) <= hi });

function matches(value: string | undefined, e: Expect): boolean {
  if (value === undefined) return false;
  if (typeof e === 'string') return value === e;
  if (e instanceof RegExp) return e.test(value);
  return e.ok(value);
}

function describe(e: Expect): string {
  return typeof e === 'string' ? JSON.stringify(e) : e instanceof RegExp ? String(e) : e.what;
}

export async function macrosOf(h: MarsHost, res: string, windowS?: number): Promise<Record<string, string>> {
  const args = [...(windowS === undefined ? [] : ['--window', String(windowS)]), 'view', res, '--json'];
  const parsed = JSON.parse(await h.marsadmOk(args)) as { macros: Record<string, string> } | { macros: Record<string, string> }[];
  return (Array.isArray(parsed) ? parsed[0]! : parsed).macros;
}

/**
 * Polls the host's macros until every row of `table` holds (states settle asynchronously:
 * links propagate, rates need a window), then asserts each row, so a timeout names every
 * macro that is off and its value.
 */
export async function expectMacros(t: Test, h: MarsHost, res: string, state: string, table: Record<string, Expect>, opts: { windowS?: number; timeoutMs?: number } = {}): Promise<Record<string, string>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  let m: Record<string, string> = {};
  for (;;) {
    m = await macrosOf(h, res, opts.windowS);
    if (Object.entries(table).every(([k, e]) => matches(m[k], e)) || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  for (const [k, e] of Object.entries(table)) {
    t.ok(matches(m[k], e), `${state}: ${h.name} view-${k} = ${JSON.stringify(m[k])} (expected ${describe(e)})`);
  }
  return m;
}
