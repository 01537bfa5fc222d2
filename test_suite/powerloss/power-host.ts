// The steps the power-loss tests share (e2e/powerloss.test.ts cuts a primary's disk,
// e2e/powerloss-secondary.test.ts a secondary's): a host whose /mars and data disk live on the
// volatile stack (stack.ts), the teardown order, the draw of one cut, the cut itself and the
// power cycle after it, the check that marsd came back without a defect, and the totals line.
import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import type { MarsHost } from '../helpers/cluster.js';
import type { WriteOrderOracle } from '../helpers/oracle.js';
import { waitFor } from '../helpers/wait.js';
import type { WorkloadResult } from '../helpers/workload.js';
import { PowerStack, run } from './stack.js';
import type { CutResult } from './volatile-backend.js';

/**
 * The stack at WORK/stack, powered on. Its teardown (registered now, so it runs after the
 * teardowns of the hosts started later: tap runs them last-in first-out) powers it off once
 * marsd is gone; WORK itself must be a temporary directory registered before.
 */
export async function startPowerStack(t: Test, work: string, diskBytes: number): Promise<PowerStack> {
  const stack = new PowerStack(join(work, 'stack'), diskBytes);
  t.teardown(async () => {
    const problems = await stack.powerOff();
    if (problems.length) console.error(`# powerloss teardown: ${problems.join('; ')}`);
  });
  await stack.powerOn();
  return stack;
}

/**
 * Makes HOSTDIR a host directory whose `mars` and `data.img` are symlinks into the stack's
 * filesystem; the directory itself stays outside (marsd's log and socket survive a cut).
 */
export function hostDirOnStack(stack: PowerStack, hostDir: string): string {
  mkdirSync(hostDir, { recursive: true });
  mkdirSync(join(stack.mnt, 'mars'));
  symlinkSync(join(stack.mnt, 'mars'), join(hostDir, 'mars'));
  symlinkSync(join(stack.mnt, 'data.img'), join(hostDir, 'data.img'));
  return hostDir;
}

/**
 * Call after the host on the stack is started (its teardown kills marsd): this teardown then
 * runs first and releases a frozen disk, since a marsd blocked in fdatasync on it cannot exit.
 */
export function releaseBeforeKill(t: Test, stack: PowerStack): void {
  t.teardown(() => stack.release().catch(() => undefined));
}

/** Makes the setup durable once: power loss during create-cluster or a full sync is not the subject. */
export async function syncStack(stack: PowerStack): Promise<void> {
  const r = await run('sync', ['-f', join(stack.mnt, 'mars')]);
  if (r.code !== 0) throw new Error(`sync -f ${stack.mnt} failed (${r.code}): ${r.stderr.trim()}`);
}

/** One round's draw from the run's PRNG (this order: a seed repeats its rounds). */
export interface CutPlan {
  /** the cut strikes right after this many writes from the arming reach the disk */
  afterWrites: number;
  /** which cached blocks survive the cut; also the workload's seed */
  cutSeed: number;
  queueDepth: number;
  flushEvery: number;
  /** writes the workload gets in before the cut is armed */
  warmup: number;
}

export function drawCut(rnd: () => number): CutPlan {
  const afterWrites = 1 + Math.floor(rnd() * 40);
  const cutSeed = Math.floor(rnd() * 2 ** 31);
  const queueDepth = 1 + Math.floor(rnd() * 8);
  const flushEvery = 1 + Math.floor(rnd() * 12);
  // Let some writes through before arming, so the cut does not always strike the first flush.
  const warmup = Math.floor(rnd() * 20);
  return { afterWrites, cutSeed, queueDepth, flushEvery, warmup };
}

export function describePlan(p: CutPlan): string {
  return `n=${p.afterWrites} seed ${p.cutSeed} qd ${p.queueDepth} flush/${p.flushEvery}`;
}

/**
 * Lets `plan.warmup` writes of the running workload through, then arms the cut and resolves at
 * it. From then on the disk is frozen (no replies) until release().
 */
export async function cutAfterWarmup(stack: PowerStack, oracle: WriteOrderOracle, plan: CutPlan, workload: Promise<WorkloadResult>): Promise<CutResult> {
  const armAt = oracle.lastSeq;
  if (plan.warmup > 0) {
    await Promise.race([workload, waitFor('warm-up writes before arming the cut', () => oracle.lastSeq >= armAt + plan.warmup, 20_000, 2)]);
  }
  return stack.armCut(plan.cutSeed, plan.afterWrites, 30_000);
}

/**
 * How long marsd may take to exit or to start. A start took 12 s on 2 cores at load 15 (the
 * bench's 200-cut run beside other jobs), and the harness's default of 20 s failed cut 38 of
 * that run: a deadline for a state change, not a speed limit.
 */
const PROCESS_DEADLINE_MS = 90_000;

/**
 * The power cycle after a cut: the disk is frozen, so marsd cannot complete an fdatasync any
 * more (it acknowledges nothing durable after the power went). SIGKILL it, let the dead disk
 * acknowledge and discard everything, reap it, take the stack down (the page cache of the
 * filesystem is lost with it), power on (empty cache; ext4 replays its journal) and start
 * marsd again (`beforeStart` runs just before that, e.g. a marsadm command on the powered-on
 * tree). Returns when marsd runs (Date.now() of its start).
 */
export async function powerCycle(host: MarsHost, stack: PowerStack, beforeStart?: () => Promise<unknown>): Promise<number> {
  host.kill('SIGKILL');
  await stack.release();
  await host.waitExit(PROCESS_DEADLINE_MS);
  const problems = await stack.powerOff();
  if (problems.length) throw new Error(`power off: ${problems.join('; ')}`);
  await stack.powerOn();
  await beforeStart?.();
  const startedAt = Date.now();
  await host.start(PROCESS_DEADLINE_MS);
  return startedAt;
}

/**
 * undefined if marsd's state of `res` shows no defect: diskstate not DefectiveLog and a
 * replay-code `codeOk` accepts; else what it shows, with its message.
 */
export async function restartDefect(host: MarsHost, res: string, codeOk: (code: number) => boolean): Promise<string | undefined> {
  const diskState = await host.view('diskstate', res);
  const code = Number(host.actual(res, 'replay-code'));
  if (!/DefectiveLog/.test(diskState) && codeOk(code)) return undefined;
  return `diskstate ${diskState}, replay-code ${host.actual(res, 'replay-code')}: ${host.actual(res, 'msg-err-replay-stop') ?? '(no message)'}`;
}

/** What the cuts of a run did, printed as `totals: {...}`. */
export class CutTotals {
  cuts = 0;
  cutsDroppingBlocks = 0;
  blocksDropped = 0;
  blocksApplied = 0;
  writes = 0;
  acknowledged = 0;
  durable = 0;

  /** One survived cut: what it dropped and applied, what the workload did in its round. */
  count(cut: CutResult, wl: WorkloadResult, durable: number): void {
    this.cuts++;
    if (cut.dropped > 0) this.cutsDroppingBlocks++;
    this.blocksDropped += cut.dropped;
    this.blocksApplied += cut.applied;
    this.writes += wl.submitted;
    this.acknowledged += wl.acknowledged;
    this.durable += durable;
  }

  line(startedMs: number, extra: Record<string, number>): string {
    return `totals: ${JSON.stringify({ ...this, ...extra })} in ${Math.round((Date.now() - startedMs) / 1000)} s`;
  }
}
