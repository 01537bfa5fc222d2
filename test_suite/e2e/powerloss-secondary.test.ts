// Power loss on a secondary (issue 16 item 2). Two hosts: alpha, primary of r0, on an ordinary
// disk; beta, its secondary, with /mars (its fetched logfile copies, replay link, versionlinks)
// and its data disk on the volatile stack (test_suite/powerloss/stack.ts: a disk whose write
// cache is lost at a power cut, with ext4 on it) as in powerloss.test.ts.
//
// Each round: a tagged write workload with FLUSHes through alpha's export (every write of every
// round in one WriteOrderOracle history: alpha is never cut), which beta fetches and replays;
// the cut armed on beta's disk strikes right after the n-th write (random n) that reaches it from
// then on, i.e. inside beta's fdatasyncs while it fetches and replays, among unflushed blocks. At
// the cut beta's disk freezes, alpha's workload stops (with a final FLUSH), beta's marsd is
// SIGKILLed, its stack released, powered off and on, `marsadm pause-replay` run on beta's tree
// and its marsd started again (with replay paused, it only repairs a half-applied window). Then:
//   - beta must reach a paused, consistent state by itself (its
//     replay link without a half-applied window, replay-code >= 0; a damaged copy may stop replay
//     for a while with -74 and be fetched again, docs/design.md §3.4, but no stop may remain);
//   - its data disk, read while the replay link stays put, is a consistent prefix of alpha's
//     write history (oracle.checkImage: no torn, misplaced or unknown block, §3.3);
//   - `marsadm resume-replay`: beta catches up (its versionlink equals alpha's) and its disk
//     equals alpha's device read through alpha's NBD export, which holds every write (§3.5: a
//     replay link that ran ahead of the disk would have skipped writes for good).
//
// MARS_POWERLOSS_SECONDARY_CUTS (default 8), MARS_POWERLOSS_SEED (default 4242, printed) and
// MARS_POWERLOSS_BUDGET_MIN (default 8, below tap's 10-minute limit) change the run.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NbdClient } from '../../kernel-shim/nbd-client.js';
import type { MarsHost } from '../helpers/cluster.js';
import { caughtUpWith, startCluster, waitWritebackDone } from '../helpers/multi-host.js';
import { decodeBlock, readImage, WriteOrderOracle } from '../helpers/oracle.js';
import { ensureTools } from '../helpers/prereqs.js';
import { mulberry32 } from '../helpers/prng.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { runWorkload } from '../helpers/workload.js';
import {
  CutTotals, cutAfterWarmup, describePlan, drawCut, hostDirOnStack, powerCycle, releaseBeforeKill, restartDefect, startPowerStack, syncStack,
} from '../powerloss/power-host.js';
import type { CutResult } from '../powerloss/volatile-backend.js';

const RES = 'r0';
const SIZE_BYTES = 16 * 1024 * 1024;
const DISK_BYTES = 512 * 1024 * 1024;
const BLOCK = 4096;
const CUTS = Number(process.env.MARS_POWERLOSS_SECONDARY_CUTS ?? 8);
const SEED = Number(process.env.MARS_POWERLOSS_SEED ?? 4242);
/** Hard stop for the loop, below tap's per-file limit. */
const BUDGET_MS = Number(process.env.MARS_POWERLOSS_BUDGET_MIN ?? 8) * 60_000;
/** Damaged local copies may be fetched again; a stop with any other code is a defect. */
const EBADMSG = -74;
const ENOENT = -2;

const isRoot = process.getuid?.() === 0;

/** The negative replay-codes (with their message) beta showed while we waited on it. */
class StopWatch {
  readonly seen = new Map<string, number>();

  constructor(private readonly h: MarsHost) {}

  look(): number {
    const code = Number(this.h.actual(RES, 'replay-code'));
    if (code < 0) {
      const key = `${code}: ${(this.h.actual(RES, 'msg-err-replay-stop') ?? '').slice(0, 300)}`;
      this.seen.set(key, (this.seen.get(key) ?? 0) + 1);
    }
    return code;
  }

  /** Stops other than a damaged or missing copy that is fetched again. */
  foreign(): string[] {
    return [...this.seen.keys()].filter((k) => !((k.startsWith(`${EBADMSG}:`) || k.startsWith(`${ENOENT}:`)) && /fetch/.test(k)));
  }
}

/** Where two images first differ, in oracle terms. */
function firstDifference(want: Buffer, got: Buffer): string {
  for (let pos = 0; pos < want.length; pos += BLOCK) {
    if (want.compare(got, pos, pos + BLOCK, pos, pos + BLOCK) === 0) continue;
    const show = (b: Buffer) => {
      const d = decodeBlock(b, pos, BLOCK, false);
      return d.kind === 'zero' ? 'zeros' : d.kind === 'bad' ? `garbage (${d.why})` : `write #${d.seq}`;
    };
    return `block ${pos / BLOCK}: alpha has ${show(want)}, beta ${show(got)}`;
  }
  return 'no difference';
}

/** Lines of a marsd log (from byte `from`) that say a damaged local copy is fetched again. */
function refetchLines(h: MarsHost, from: number): number {
  return readFileSync(h.logPath, 'utf8').slice(from).split('\n').filter((l) => /is damaged; fetching it again/.test(l)).length;
}

t.test('power loss on a secondary: it restarts by itself, its disk a prefix of the history, then equal', {
  skip: isRoot ? false : 'needs root (FUSE mount, loop devices, mount): run the tests as root',
}, async (t) => {
  const missing = ensureTools(['nbdfuse', 'losetup', 'mkfs.ext4', 'fusermount3']);
  if (missing) {
    t.fail(missing);
    return;
  }
  t.comment(`seed ${SEED} (MARS_POWERLOSS_SEED=${SEED} repeats this run), ${CUTS} power cuts on the secondary`);
  const rnd = mulberry32(SEED);
  const started = Date.now();

  const work = tempDir(t, 'mars-power2-');
  const stack = await startPowerStack(t, work, DISK_BYTES);
  const betaDir = hostDirOnStack(stack, join(work, 'beta'));
  const c = await startCluster(t, { hosts: ['alpha', 'beta'], sizeBytes: SIZE_BYTES, res: RES, dirs: { beta: betaDir } });
  releaseBeforeKill(t, stack);
  const alpha = c.primary;
  const beta = c.host('beta');
  await syncStack(stack);

  const oracle = new WriteOrderOracle({ deviceBytes: SIZE_BYTES });
  const totals = new CutTotals();
  let lost = 0;
  let refetches = 0;
  let transientStops = 0;
  let maxRecoveryMs = 0;
  let maxCatchUpMs = 0;
  for (let cut = 1; cut <= CUTS; cut++) {
    if (Date.now() - started > BUDGET_MS) {
      t.fail(`time budget of ${BUDGET_MS / 1000} s used up after ${cut - 1} of ${CUTS} cuts`);
      break;
    }
    const roundStart = Date.now();
    const firstSeq = oracle.lastSeq + 1;
    const durableBefore = oracle.durableSeq;
    const plan = drawCut(rnd);
    // Every other round on average, alpha starts a new logfile while beta follows: the cut may
    // then strike around the end of a fetched copy (its fdatasync) and the switch to the next.
    const rotate = rnd() < 0.5;
    const abort = new AbortController();
    const workload = runWorkload({
      socketPath: alpha.socketPath(RES), exportName: RES, oracle, writes: 1_000_000, durationMs: 60_000,
      blocksPerWrite: { min: 1, max: 16 }, queueDepth: plan.queueDepth, flushEvery: plan.flushEvery, finalFlush: true,
      settleTimeoutMs: 10_000, seed: plan.cutSeed, signal: abort.signal,
    });
    const rotated = rotate ? alpha.marsadmOk(['log-rotate', RES]) : Promise.resolve('');
    let cutResult: CutResult;
    try {
      cutResult = await cutAfterWarmup(stack, oracle, plan, workload);
    } catch (err) {
      abort.abort();
      await workload;
      await rotated.catch(() => undefined);
      t.fail(`cut ${cut}: the armed cut did not happen: ${(err as Error).message}`);
      break;
    }
    const cutMs = Date.now() - roundStart;
    // The primary is not cut: its workload ends now with a FLUSH, every write acknowledged.
    abort.abort();
    const logFrom = readFileSync(beta.logPath, 'utf8').length;
    let restartAt: number;
    try {
      // Replay paused before marsd starts: the disk is checked as the cut left it (a half-applied
      // window repaired, nothing more applied).
      restartAt = await powerCycle(beta, stack, () => beta.marsadmOk(['pause-replay', RES]));
    } catch (err) {
      t.fail(`cut ${cut}: ${(err as Error).message}`);
      break;
    }
    const wl = await workload;
    try {
      await rotated;
    } catch (err) {
      t.fail(`cut ${cut}: ${(err as Error).message}`);
      break;
    }
    if (wl.stopReason !== 'aborted' || wl.failed > 0 || wl.flushesFailed > 0) {
      t.fail(`cut ${cut}: alpha's workload ended by ${wl.stopReason} (${wl.failed} writes failed): ${wl.error ?? ''}`);
      break;
    }
    const round = `cut ${cut}: ${describePlan(plan)}${rotate ? ' log-rotate' : ''}; writes #${firstSeq}..#${wl.lastSeq} (flushes ${wl.flushes}); `
      + `at the cut (after ${cutMs} ms) ${cutResult.applied} cached blocks applied, ${cutResult.dropped} dropped; power cycle ${restartAt - roundStart - cutMs} ms`;

    // 1. beta comes back by itself (replay paused): no half-applied window, no stop left.
    const stops = new StopWatch(beta);
    let prefix = '';
    let recoveryMs = 0;
    try {
      await beta.until('beta paused at a consistent point after the power cut', () => {
        const code = stops.look();
        return code >= 0 && beta.actual(RES, 'is-replaying') === '0' && /,0$/.test(beta.link(`resource-${RES}/replay-${beta.name}`) ?? '');
      }, 90_000, 50);
      recoveryMs = Date.now() - restartAt;

      // 2. Its disk, read while the replay link stays put, is a prefix of alpha's history.
      const check = await waitFor('a read of beta\'s disk with its replay link unchanged', async () => {
        const before = beta.link(`resource-${RES}/replay-${beta.name}`);
        const r = await oracle.checkImage(readImage(beta.dataPath));
        return beta.link(`resource-${RES}/replay-${beta.name}`) === before && /,0$/.test(before ?? '') ? r : false;
      }, 30_000, 50);
      if (!check.ok) {
        lost++;
        t.fail(`cut ${cut} (seed ${SEED}): beta's disk (replay paused) is no prefix of the history: ${check.reason}`, { round, log: beta.logTail(30) });
        break;
      }
      prefix = `beta = prefix ${check.prefixMin}..${check.prefixMax} of ${oracle.lastSeq}`;

      // 3. Resumed, beta catches up and its disk equals alpha's.
      await beta.marsadmOk(['resume-replay', RES]);
      const resumedAt = Date.now();
      await beta.until('beta caught up with alpha', () => {
        stops.look();
        return caughtUpWith(beta, alpha, RES);
      }, 120_000, 50);
      maxCatchUpMs = Math.max(maxCatchUpMs, Date.now() - resumedAt);
    } catch (err) {
      t.fail(`cut ${cut} (seed ${SEED}): beta did not come back after the power cut: ${(err as Error).message}`, {
        round, stops: [...stops.seen.keys()], replay: beta.link(`resource-${RES}/replay-${beta.name}`),
      });
      break;
    }
    await waitWritebackDone(alpha, RES);
    const client = await NbdClient.connect(alpha.socketPath(RES), RES);
    const want = await client.readRange(0, SIZE_BYTES);
    await client.disconnect();
    const got = readImage(beta.dataPath)(0, SIZE_BYTES);
    const alphaCheck = await oracle.checkReached((pos, len) => want.subarray(pos, pos + len), oracle.durableSeq);
    const defect = await restartDefect(beta, RES, (code) => code >= 0);
    const copies = refetchLines(beta, logFrom);
    refetches += copies;
    if (stops.seen.size > 0) transientStops++;
    t.comment(`${round}; ${prefix}; recovery ${recoveryMs} ms${copies ? `, ${copies} copies fetched again` : ''}`
      + `${stops.seen.size ? `; stops seen: ${[...stops.seen.keys()].join(' | ')}` : ''}; round ${Date.now() - roundStart} ms`);
    totals.count(cutResult, wl, oracle.durableSeq - durableBefore);
    maxRecoveryMs = Math.max(maxRecoveryMs, recoveryMs);
    if (!alphaCheck.ok) {
      t.fail(`cut ${cut}: alpha's device is not its history: ${alphaCheck.reason}`);
      break;
    }
    if (!want.equals(got)) {
      lost++;
      t.fail(`cut ${cut} (seed ${SEED}): beta caught up, but its disk differs from alpha's: ${firstDifference(want, got)}`, { round, log: beta.logTail(30) });
      break;
    }
    if (defect || stops.foreign().length > 0) {
      t.fail(`cut ${cut} (seed ${SEED}): beta stopped replay after the power cut: ${defect ?? stops.foreign().join(' | ')}`, { round, log: beta.logTail(30) });
      break;
    }
  }
  t.comment(totals.line(started, { lost, refetches, transientStops, maxRecoveryMs, maxCatchUpMs }));
  t.equal(totals.cuts, CUTS, `all ${CUTS} power cuts on the secondary survived`);
  t.equal(lost, 0, 'no replicated state lost or torn');
  t.ok(totals.cutsDroppingBlocks > 0, 'some cuts dropped unflushed blocks (the cuts hit unsynced writes)');
  t.notMatch(beta.logTail(100_000), /unhandled rejection|InvariantError/, 'beta\'s marsd logged no unhandled rejection or broken invariant');
});
