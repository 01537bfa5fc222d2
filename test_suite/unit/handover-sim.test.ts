// A planned handover driven through the real shell with simulated time (no real sleep): beta's
// ResourceRunner (plan, secondary runner, fetcher, replayer, primary runner) on a real TreeStore,
// real files and a real data disk image, fetching from alpha's real PeerService; alpha's side is
// a scripted primary writing real logfiles with the LogWriter and its links as the primary
// runner does. The clock is a SimClock; between steps the event loop turns (setImmediate) so the
// real file I/O completes.
//
// What must hold: beta follows alpha's history while alpha is primary; once beta is designated it
// keeps fetching and replaying (alpha still writes and rotates); it starts its primary role only
// after alpha stepped down and after everything alpha logged is on beta's disk; its history is
// byte-identical to alpha's (the logfile copies, the disk, the version chain), and it continues
// the numbering after alpha's last logfile.
import t, { type Test } from 'tap';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { resPaths, TODO_KEYS } from '../../common/tree/paths.js';
import { formatReplayLink, initialVersionLinks } from '../../common/log/links.js';
import { raiseMaxnr, readReplayLink, writeVersionLink } from '../../common/resource/links.js';
import { readResourceSnapshot } from '../../common/resource/snapshot.js';
import { LogWriter } from '../../daemon/logger/log-writer.js';
import { PeerService } from '../../daemon/serve/peer-service.js';
import { planMerge } from '../../daemon/propagate/merge.js';
import { applyMergePlan, localState, type LogListing } from '../../daemon/propagate/tree-io.js';
import { replayFloor } from '../../daemon/propagate/peer-manager.js';
import type { LogReadRequest } from '../../daemon/net/messages.js';
import { ResourceRunner } from '../../daemon/control/resource-runner.js';
import type { SecondaryPeers } from '../../daemon/control/secondary-runner.js';
import type { ResourcePlan } from '../../daemon/control/plan.js';
import { tempDir } from '../helpers/tmp.js';
import { SimClock } from '../helpers/sim-clock.js';
import { mulberry32 as rng } from '../helpers/prng.js';

const RES = 'r0';
const SIZE = 1 << 20;
const WRITE_BYTES = 4096;
const SIM_START_MS = 1_700_000_000_000;

/**
 * Alpha as the primary: what its logger and primary runner do to its logfiles and links (a
 * fresh logfile after create-resource's empty one, appends with durable versionlinks,
 * rotation with the final and the next versionlink, stepping down).
 */
class ScriptedPrimary {
  readonly image = Buffer.alloc(SIZE);
  steppedDown = false;
  private constructor(readonly tree: TreeStore, public writer: LogWriter, private readonly random: () => number) {}

  static async start(tree: TreeStore): Promise<ScriptedPrimary> {
    const v = initialVersionLinks(1, 'alpha');
    tree.ensureDir(resPaths.dir(RES));
    tree.ensureDir(resPaths.todoDir(RES, 'alpha'));
    tree.ensureDir(resPaths.actualDir(RES, 'alpha'));
    tree.write(resPaths.data(RES, 'alpha'), '/dev/alpha-disk');
    tree.write(resPaths.primary(RES), 'alpha');
    tree.write(resPaths.syncstatus(RES, 'alpha'), String(SIZE));
    tree.write(resPaths.version(RES, v.previous.seq, 'alpha'), v.previous.value);
    writeFileSync(tree.abs(resPaths.log(RES, 1, 'alpha')), '');
    for (const key of TODO_KEYS) tree.write(resPaths.todo(RES, 'alpha', key), '1');
    tree.write(resPaths.size(RES), String(SIZE));
    // The start: recovery finishes the empty log-1, the logger opens log-2.
    writeVersionLink(tree, RES, 'alpha', 1, 'alpha', 0, true);
    const writer = await LogWriter.openFresh(tree.abs(resPaths.log(RES, 2, 'alpha')), 2);
    writeVersionLink(tree, RES, 'alpha', 2, 'alpha', 0, true);
    tree.write(resPaths.replay(RES, 'alpha'), formatReplayLink({ seq: 2, origin: 'alpha', minPos: 0, len: 0 }));
    raiseMaxnr(tree, RES, 2);
    tree.write(resPaths.actual(RES, 'alpha', 'is-primary'), '1');
    return new ScriptedPrimary(tree, writer, rng(7));
  }

  get seq(): number {
    return this.writer.seq;
  }

  /** n durable writes of random data at random sector-aligned places. */
  async write(n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      const devicePos = 512 * Math.floor(this.random() * ((SIZE - WRITE_BYTES) / 512));
      const data = Buffer.alloc(WRITE_BYTES);
      for (let j = 0; j < WRITE_BYTES; j += 4) data.writeUInt32LE((this.random() * 2 ** 32) >>> 0, j);
      await this.writer.appendWrite(devicePos, data, this.tree.clock.tick(), true);
      data.copy(this.image, devicePos);
    }
    writeVersionLink(this.tree, RES, 'alpha', this.seq, 'alpha', this.writer.durablePos, false);
  }

  async rotate(): Promise<void> {
    const old = this.writer;
    await old.close();
    this.writer = await LogWriter.openFresh(this.tree.abs(resPaths.log(RES, old.seq + 1, 'alpha')), old.seq + 1);
    writeVersionLink(this.tree, RES, 'alpha', old.seq, 'alpha', old.writtenPos, true);
    writeVersionLink(this.tree, RES, 'alpha', this.seq, 'alpha', 0, true);
    raiseMaxnr(this.tree, RES, this.seq);
  }

  /** Leave the primary role: the logfile ends, its versionlink is final, is-primary goes to 0. */
  async stepDown(): Promise<void> {
    await this.writer.close();
    writeVersionLink(this.tree, RES, 'alpha', this.seq, 'alpha', this.writer.writtenPos, true);
    this.tree.write(resPaths.actual(RES, 'alpha', 'is-primary'), '0');
    this.steppedDown = true;
  }
}

async function setup(t: Test) {
  const dir = tempDir(t, 'mars-handover-sim-');
  const sim = new SimClock(SIM_START_MS);
  const lamport = () => new LamportClock(() => sim.nowMs() * 1000);
  for (const d of ['alpha', 'beta']) mkdirSync(join(dir, d));
  const alphaTree = new TreeStore(join(dir, 'alpha'), lamport());
  const betaTree = new TreeStore(join(dir, 'beta'), lamport());
  const alpha = await ScriptedPrimary.start(alphaTree);
  t.teardown(() => alpha.writer.close());
  const logs: string[] = [];
  const service = new PeerService({
    tree: alphaTree, host: 'alpha', log: () => undefined,
    activeLogEnd: (_res, seq) => (!alpha.steppedDown && seq === alpha.seq ? alpha.writer.durablePos : undefined),
    primaryPosition: () => undefined, inEmergency: () => false, onTreeChanged: () => undefined, onNotify: () => undefined,
  });

  // The link to alpha, without a transport: alpha's listing from its last pull, and logfile
  // requests handed straight to its PeerService. A request that follows a growing logfile is
  // held open for waitMs (simulated) when nothing new is there, as the origin holds it.
  let listing: LogListing[] = [];
  const peers: SecondaryPeers = {
    listings: (res) => [{ host: 'alpha', connected: true, logs: new Map(listing.filter((l) => l.res === res).map((l) => [l.name, l.sizeBytes])) }],
    logRead: async (_peer, p, onData, signal) => {
      let sentBytes = 0;
      const request: LogReadRequest = { t: 'log-read', id: 0, ...p, follow: false, waitMs: 0 };
      const end = await service.logRead('beta', request, { reserve: async () => undefined, release: () => undefined, send: async (pos, data) => { sentBytes += data.length; await onData(pos, data); } }, signal);
      if (p.follow && sentBytes === 0) await sim.sleep(p.waitMs, signal);
      return end;
    },
    connection: () => undefined,
  };

  const betaDisk = join(dir, 'beta.img');
  writeFileSync(betaDisk, Buffer.alloc(SIZE));
  const exports: { phaseOk: boolean; alphaSteppedDown: boolean; disk: Buffer }[] = [];
  const nbd = {
    addExport: async () => { exports.push({ phaseOk: true, alphaSteppedDown: alpha.steppedDown, disk: readFileSync(betaDisk) }); },
    stopListening: () => undefined,
    removeExport: async () => undefined,
  };
  const runner = new ResourceRunner(RES, {
    tree: betaTree, host: 'beta', runDir: dir, nbd, memLimitBytes: 16 << 20, logRotateBytes: 0, clock: sim,
    log: (level, msg) => logs.push(`${level}: ${msg}`), requestTick: () => undefined, peers, fetchRateBytesPerS: 0,
  });
  t.teardown(() => runner.shutdown());

  /** A pull of alpha's tree as PeerLink.pull does it: merge its entries, keep its logfile listing. */
  const pull = async () => {
    const got = await service.getents('beta');
    const plan = planMerge(got.entries, (p) => localState(betaTree, p), {
      sender: 'alpha', receiver: 'beta', nowUs: betaTree.clock.now(), replayFloor: (res) => replayFloor(betaTree, res, 'beta'),
    });
    applyMergePlan(betaTree, plan);
    listing = got.logs;
    runner.secondary.nudge();
  };

  // beta joins while alpha has written nothing yet (both disks are zeros: the sync is done).
  await pull();
  betaTree.ensureDir(resPaths.todoDir(RES, 'beta'));
  betaTree.write(resPaths.data(RES, 'beta'), betaDisk);
  betaTree.write(resPaths.version(RES, 1, 'beta'), betaTree.value(resPaths.version(RES, 1, 'alpha'))!);
  betaTree.write(resPaths.version(RES, 2, 'beta'), betaTree.value(resPaths.version(RES, 2, 'alpha'))!);
  betaTree.write(resPaths.syncstatus(RES, 'beta'), String(SIZE));
  betaTree.write(resPaths.replay(RES, 'beta'), formatReplayLink({ seq: 2, origin: 'alpha', minPos: 0, len: 0 }));
  for (const key of TODO_KEYS) betaTree.write(resPaths.todo(RES, 'beta', key), '1');

  const plans: { plan: ResourcePlan; alphaSteppedDown: boolean }[] = [];
  /** One control round of beta as marsd runs it (after a pull), then 20 ms of simulated time. */
  const step = async () => {
    await pull();
    const { plan } = runner.round(readResourceSnapshot(betaTree, RES, 'beta'), { present: true, spaceLevel: 0 });
    plans.push({ plan, alphaSteppedDown: alpha.steppedDown });
    await sim.advance(20);
  };
  const runUntil = async (what: string, cond: () => boolean, maxRounds = 2000) => {
    for (let i = 0; !cond(); i++) {
      if (i >= maxRounds) throw new Error(`${what}: not reached in ${maxRounds} rounds (${sim.nowMs()} ms simulated); beta's log:\n${logs.join('\n')}`);
      await step();
    }
  };
  const replayAt = () => readReplayLink(betaTree, RES, 'beta');
  const replayedAll = () => {
    const r = replayAt();
    return r !== undefined && r.seq === alpha.seq && r.origin === 'alpha' && r.minPos === alpha.writer.durablePos && r.len === 0;
  };
  return { alpha, alphaTree, betaTree, betaDisk, runner, sim, logs, plans, exports, runUntil, replayAt, replayedAll };
}

t.test('planned handover: beta replays all of alpha\'s history, then starts after it', async (t) => {
  const s = await setup(t);
  const { alpha, alphaTree, betaTree, runner } = s;

  // alpha primary, beta secondary: beta follows, through a rotation.
  await alpha.write(20);
  await alpha.rotate();
  await alpha.write(20);
  await s.runUntil('beta replays alpha\'s log-3', s.replayedAll);
  t.same(readFileSync(s.betaDisk), alpha.image, 'a secondary: the disk equals alpha\'s after its writes so far');
  t.equal(runner.phase, 'down');
  t.ok(s.plans.every((p) => p.plan.primary.kind === 'none'), 'not designated: nothing to start');

  // `marsadm primary` on beta: the designation moves while alpha's application still writes.
  alphaTree.write(resPaths.primary(RES), 'beta');
  betaTree.write(resPaths.primary(RES), 'beta');
  const designatedAt = s.plans.length;
  await alpha.write(10);
  await alpha.rotate();
  await alpha.write(10);
  await s.runUntil('beta replays alpha\'s log-4 during the handover', s.replayedAll);
  const during = s.plans.slice(designatedAt);
  t.ok(during.length > 0 && during.every((p) => p.plan.primary.kind === 'none'), 'no start while alpha is primary');
  t.match(during.at(-1)!.plan.primaryWait, /waiting for alpha to leave the primary role/);
  t.ok(during.at(-1)!.plan.secondary.replay && during.at(-1)!.plan.secondary.fetch, 'fetch and replay go on during the handover');
  t.equal(betaTree.value(resPaths.actual(RES, 'beta', 'primary-wait')), during.at(-1)!.plan.primaryWait, 'published as primary-wait');

  // alpha's application stopped: a last few writes, then alpha leaves the role.
  await alpha.write(5);
  await alpha.stepDown();
  await s.runUntil('beta is primary', () => runner.phase === 'primary');

  const firstStart = s.plans.findIndex((p) => p.plan.primary.kind === 'start-primary');
  t.equal(s.plans.filter((p) => p.plan.primary.kind === 'start-primary').length, 1, 'started once');
  t.ok(s.plans[firstStart]!.alphaSteppedDown, 'the start was planned only after alpha left the primary role');
  t.equal(s.exports.length, 1, 'one export');
  t.ok(s.exports[0]!.alphaSteppedDown, 'the device goes live only after alpha stepped down');
  t.same(s.exports[0]!.disk, alpha.image, 'when it goes live, beta\'s disk holds all of alpha\'s writes');
  t.same(readFileSync(s.betaDisk), alpha.image, 'and still does');
  // Replay began at log-2, where beta joined: everything from there on is copied.
  for (let seq = 2; seq <= alpha.seq; seq++) {
    t.same(readFileSync(betaTree.abs(resPaths.log(RES, seq, 'alpha'))), readFileSync(alphaTree.abs(resPaths.log(RES, seq, 'alpha'))),
      `log-${seq}-alpha: beta's copy is byte-identical`);
  }
  t.equal(betaTree.value(resPaths.version(RES, alpha.seq, 'beta')), alphaTree.value(resPaths.version(RES, alpha.seq, 'alpha')),
    'beta\'s version chain ends where alpha\'s does: the same history');
  t.equal(runner.activeLogger?.currentSeq, alpha.seq + 1, 'beta logs into the logfile after alpha\'s last');
  t.same(readReplayLink(betaTree, RES, 'beta'), { seq: alpha.seq + 1, origin: 'beta', minPos: 0, len: 0 });
  t.equal(betaTree.value(resPaths.actual(RES, 'beta', 'is-primary')), '1');
  t.same(s.logs.filter((l) => l.startsWith('error')), [], 'no errors on the way');
  t.comment(`${s.plans.length} control rounds, ${s.sim.nowMs() - SIM_START_MS} ms of simulated time`);
});
