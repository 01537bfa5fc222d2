// The torture loop (docs/reliability.md, "Torture runner"): a proxied cluster of real marsd
// processes, a tagged write workload on whichever host is primary, one fault of the seeded
// schedule per step, the invariants checked after every step, and at the end, with every fault
// healed, all disks compared. Stops at the first violation: its seed and step replay it.
import { checkAllEqual, checkPrimaryData, checkSinglePrimary, LogScanner, waitAllCaughtUp } from './checks.js';
import { FAULTS } from './faults.js';
import { FAULT_KINDS, Schedule, type FaultKind } from './schedule.js';
import { smallMarsUnavailable } from '../helpers/small-mars.js';
import { World } from './world.js';
import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TortureOptions {
  seed: number;
  minutes: number;
  hosts: number;
  /** Resources r0..r(K-1) (default 1). */
  resources?: number;
  kinds?: readonly FaultKind[];
  /** Keep drawing past `minutes` until this many faults ran (default 0), but never past `maxMinutes`. */
  minFaults?: number;
  /** Hard limit for drawing faults (default: `minutes`). */
  maxMinutes?: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

export interface Violation { step: number; kind: FaultKind | 'final'; message: string }

export interface TortureResult {
  faults: number;
  byKind: Record<FaultKind, number>;
  checks: number;
  violations: Violation[];
  writes: number;
  elapsedMs: number;
  /** Kinds asked for but not drawn on this machine, and why (e.g. mars-full without root). */
  notDrawn: { kind: FaultKind; why: string }[];
  /** After a violation: the directory the marsd logs and /mars trees were copied to. */
  keptLogs?: string;
}

/** The kinds this machine can run, and why the others cannot. */
export function availableKinds(kinds: readonly FaultKind[]): { kinds: FaultKind[]; notDrawn: { kind: FaultKind; why: string }[] } {
  const notDrawn: { kind: FaultKind; why: string }[] = [];
  if (kinds.includes('mars-full')) {
    const why = smallMarsUnavailable();
    if (why) notDrawn.push({ kind: 'mars-full', why: `each host's /mars must be a small ext4 of its own: ${why}` });
  }
  return { kinds: kinds.filter((k) => !notDrawn.some((n) => n.kind === k)), notDrawn };
}

const MAX_STEPS = 100_000;

export async function runTorture(o: TortureOptions): Promise<TortureResult> {
  const started = Date.now();
  const log = o.log ?? (() => undefined);
  const { kinds, notDrawn } = availableKinds(o.kinds ?? FAULT_KINDS);
  for (const n of notDrawn) log(`torture: ${n.kind} is not drawn: ${n.why}`);
  if (kinds.length === 0) throw new Error(`no fault kind can run here: ${notDrawn.map((n) => `${n.kind}: ${n.why}`).join('; ')}`);
  const schedule = new Schedule(o.seed, kinds);
  const byKind = Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<FaultKind, number>;
  const r: TortureResult = { faults: 0, byKind, checks: 0, violations: [], writes: 0, elapsedMs: 0, notDrawn };
  const scanner = new LogScanner();
  // Small /mars filesystems only when mars-full may come up: they need root and loop devices.
  const w = await World.start(o.hosts, { smallMars: kinds.includes('mars-full'), resources: o.resources ?? 1 });
  let step = 0;
  let kind: FaultKind | 'final' = 'final';
  const check = async (what: () => Promise<string[]> | string[]): Promise<void> => {
    r.checks++;
    for (const message of await what()) r.violations.push({ step, kind, message });
  };
  const checkAll = async (): Promise<void> => {
    await check(async () => {
      try { await waitAllCaughtUp(w, 90_000); return []; } catch (err) { return [`secondaries did not catch up: ${firstLine(err)}`]; }
    });
    await check(() => checkPrimaryData(w));
    await check(() => checkSinglePrimary(w));
    await check(() => scanner.scan(w));
  };
  try {
    await w.burst(o.seed + 1);
    const end = started + o.minutes * 60_000;
    const hardEnd = started + Math.max(o.minutes, o.maxMinutes ?? 0) * 60_000;
    const more = () => Date.now() < end || (r.faults < (o.minFaults ?? 0) && Date.now() < hardEnd);
    while (more() && r.faults < MAX_STEPS && r.violations.length === 0) {
      const s = schedule.next();
      step = s.step;
      kind = s.kind;
      const t0 = Date.now();
      try {
        for (const message of await FAULTS[s.kind](w, s)) r.violations.push({ step, kind, message });
        r.faults++;
        byKind[s.kind]++;
        await checkAll();
      } catch (err) {
        r.violations.push({ step, kind, message: `the step failed: ${err instanceof Error ? err.message : String(err)}` });
      }
      const notes = w.takeNotes();
      log(`torture: step ${step} ${s.kind} (primary ${w.primary.name}${notes.length > 0 ? `; ${notes.join('; ')}` : ''}) ${((Date.now() - t0) / 1000).toFixed(1)}s ${r.violations.length === 0 ? 'ok' : 'VIOLATION'}`);
    }
    if (r.violations.length === 0) {
      kind = 'final';
      step++;
      await heal(w);
      await w.burst(o.seed + 2);
      await checkAll();
      await check(() => checkAllEqual(w));
    }
  } catch (err) {
    r.violations.push({ step, kind, message: `the run failed: ${err instanceof Error ? err.message : String(err)}` });
  } finally {
    r.writes = w.writes;
    if (r.violations.length > 0) r.keptLogs = keepLogs(w, o.seed);
    await w.close();
    r.elapsedMs = Date.now() - started;
  }
  return r;
}

/** Every fault undone: links healed, /mars drained, marsd running, fetch, replay and sync on. */
async function heal(w: World): Promise<void> {
  for (const p of w.cluster.proxies.values()) p.reset();
  w.drainMars();
  for (const h of w.hosts) {
    if (!h.running) await h.start(60_000);
  }
  for (const h of w.secondaries) {
    for (const cmd of ['resume-fetch', 'resume-replay', 'resume-sync']) await h.marsadmOk([cmd, w.resList]);
  }
}

/** Copy every host's marsd log and /mars tree (symlinks as they are) before cleanup removes them. */
function keepLogs(w: World, seed: number): string | undefined {
  try {
    const dir = mkdtempSync(join(tmpdir(), `torture-seed${seed}-`));
    for (const h of w.hosts) {
      cpSync(h.logPath, join(dir, `${h.name}-marsd.log`));
      cpSync(h.marsDir, join(dir, `${h.name}-mars`), { recursive: true, verbatimSymlinks: true, filter: (src) => !/\/log-\d{9}-[^/]+$/.test(src) });
    }
    return dir;
  } catch {
    return undefined;
  }
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
}
