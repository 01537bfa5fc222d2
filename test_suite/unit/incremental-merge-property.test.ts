// The merge of a peer's listing directory by directory, passing over the directories found
// quiet (daemon/propagate/incremental-merge.ts), must plan exactly what planMerge plans for the
// whole listing: the same writes, rejections and quiet refusals in the same order. Random
// operations on two real trees (the sender's, served by a real PeerService with deltas, and
// the receiver's, changed through its store, through another store as marsadm would, and
// behind both), pulls that apply the plan or not; within the DirCache's racy window and,
// after `backdate`, outside it, where directories are actually passed over.
import t from 'tap';
import fc from 'fast-check';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { PeerService } from '../../daemon/serve/peer-service.js';
import { entsReply } from '../../daemon/net/service.js';
import { parseEntsPayload, parseMessage, type ListingSince } from '../../daemon/net/messages.js';
import { applyListing, type HeldListing } from '../../daemon/propagate/listing-delta.js';
import { IncrementalMerge, logsOfDirs, peerListingOfDirs } from '../../daemon/propagate/incremental-merge.js';
import { planMerge, TOMBSTONE_VALUE, type MergeOptions } from '../../daemon/propagate/merge.js';
import { applyMergePlan, linksOfHost, localState, mergeFacts } from '../../daemon/propagate/tree-io.js';
import { listingOf } from '../../daemon/propagate/tombstones.js';
import { replayFloor } from '../../daemon/propagate/peer-manager.js';
import { tempDir } from '../helpers/tmp.js';

const SENDER = 'hostb';
const RECEIVER = 'hosta';
const LINKS = ['uuid', 'ips/ip-hosta', 'ips/ip-hostb', 'ips/ip-hostc', 'ips/removed-hostc', 'actual-hostb/time', 'actual-hosta/is-primary',
  'resource-r1/size', 'resource-r1/primary', 'resource-r1/data-hostb', 'resource-r1/data-hostc', 'resource-r1/removed-hostc', 'resource-r1/maxnr',
  'resource-r2/size', 'resource-r2/replay-hostb', 'resource-r2/replay-hosta', 'resource-r1/todo-hostb/attach', 'resource-r1/todo-hostc/attach',
  'resource-r1/version-000000001-hostb', 'resource-r1/log-000000002-hostb', 'resource-r2/log-000000001-hostb'];
const VALUES = ['hosta', 'hostb', 'hostc', '1', '2', '4096', '127.0.0.9', TOMBSTONE_VALUE, TOMBSTONE_VALUE, 'x'];

type Op =
  | { k: 'write'; side: number; via: number; path: string; value: string }
  | { k: 'unlink'; side: number; path: string }
  | { k: 'file'; side: number; path: string }
  | { k: 'rmdir'; side: number; dir: string }
  | { k: 'backdate' }
  | { k: 'turn' }
  | { k: 'pull'; apply: boolean; reconnect: boolean };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ k: fc.constant('write' as const), side: fc.nat(1), via: fc.nat(2), path: fc.constantFrom(...LINKS), value: fc.constantFrom(...VALUES) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('unlink' as const), side: fc.nat(1), path: fc.constantFrom(...LINKS) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('file' as const), side: fc.nat(1), path: fc.constantFrom(...LINKS) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('rmdir' as const), side: fc.nat(1), dir: fc.constantFrom('actual-hostb', 'resource-r2', 'resource-r1/todo-hostc') }) },
  { weight: 2, arbitrary: fc.constant({ k: 'backdate' as const }) },
  { weight: 2, arbitrary: fc.constant({ k: 'turn' as const }) },
  { weight: 8, arbitrary: fc.record({ k: fc.constant('pull' as const), apply: fc.boolean(), reconnect: fc.boolean().map((b) => b && Math.random() < 0.2) }) },
);

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

function service(tree: TreeStore): PeerService {
  return new PeerService({
    tree, host: SENDER,
    activeLogEnd: () => undefined, primaryPosition: () => undefined,
    onTreeChanged: () => undefined, onNotify: () => undefined, log: () => undefined,
  });
}

async function pullOnce(svc: PeerService, held: HeldListing | undefined) {
  const asked: ListingSince | undefined = held ? { epoch: held.epoch, generation: held.generation } : undefined;
  const answer = await svc.getents(RECEIVER, asked);
  const { message, payload } = entsReply({ id: 1, ...(asked ? { since: asked } : {}) }, answer);
  const header = parseMessage(JSON.parse(JSON.stringify(message)));
  if (header.t !== 'ents') throw new Error(`not ents: ${header.t}`);
  const ents = parseEntsPayload(payload, header.count, header);
  return applyListing(held, asked, { ...ents, epoch: header.epoch, generation: header.generation, since: header.since });
}

const totals = { pulls: 0, skipped: 0, dirs: 0, writes: 0, rejected: 0 };

async function run(base: string, ops: readonly Op[]): Promise<void> {
  const roots = [join(base, 'a'), join(base, 'b')];
  for (const r of roots) mkdirSync(r);
  const receiver = new TreeStore(roots[0]!, new LamportClock());
  const sender = new TreeStore(roots[1]!, new LamportClock());
  const stores = [receiver, sender];
  const others = roots.map((r) => new TreeStore(r, new LamportClock())); // marsadm
  const svc = service(sender);
  const merger = new IncrementalMerge();
  let held: HeldListing | undefined;
  let logs: ReadonlyMap<string, ReadonlyMap<string, number>> = new Map();
  let raw = 0;
  let backdates = 0;
  const startMs = Date.now();
  for (const op of ops) {
    switch (op.k) {
      case 'write': {
        const root = roots[op.side]!;
        const abs = join(root, op.path);
        const store = op.via === 0 ? stores[op.side]! : others[op.side]!;
        try {
          if (op.via < 2) {
            if (dirname(op.path) !== '.') store.ensureDir(dirname(op.path));
            store.write(op.path, op.value);
          } else {
            mkdirSync(dirname(abs), { recursive: true });
            const tmp = join(dirname(abs), `.tmp.raw.${raw++}`);
            symlinkSync(op.value, tmp);
            try { renameSync(tmp, abs); } catch { unlinkSync(tmp); }
          }
        } catch { /* a file or directory on the way */ }
        break;
      }
      case 'unlink':
        try { unlinkSync(join(roots[op.side]!, op.path)); } catch { /* absent */ }
        break;
      case 'file': {
        // A regular file where a link may be (a logfile, a stray file)
        const abs = join(roots[op.side]!, op.path);
        try { mkdirSync(dirname(abs), { recursive: true }); rmSync(abs, { force: true }); writeFileSync(abs, 'abc'); } catch { /* a directory on the way */ }
        break;
      }
      case 'rmdir':
        rmSync(join(roots[op.side]!, op.dir), { recursive: true, force: true });
        break;
      case 'backdate': {
        const past = new Date(startMs - 10_000 - 1_000 * backdates++);
        const walk = (dir: string, depth: number) => {
          for (const d of readdirSync(dir, { withFileTypes: true })) if (d.isDirectory() && depth < 2) walk(join(dir, d.name), depth + 1);
          utimesSync(dir, past, past);
        };
        for (const r of roots) walk(r, 0);
        break;
      }
      case 'turn':
        await nextTurn();
        break;
      case 'pull': {
        if (op.reconnect) held = undefined;
        const applied = await pullOnce(svc, held);
        held = applied.held;
        const dirs = applied.dirs;
        if (dirs === undefined) throw new Error('our own server\'s listing is not in directory order');
        const o = (): MergeOptions => ({
          sender: SENDER, receiver: RECEIVER, nowUs: receiver.clock.realNowUs() + 3_600_000_000, facts: mergeFacts(receiver), maxResources: 3,
          replayFloor: (res) => replayFloor(receiver, res, RECEIVER), linksOf: (h, dir) => linksOfHost(receiver, h, dir),
        });
        const { incremental, full } = receiver.readBatch(() => ({
          incremental: merger.plan(receiver, dirs, (p) => localState(receiver, p), o()),
          full: planMerge(applied.entries, (p) => localState(receiver, p), o()),
        }));
        if (JSON.stringify(incremental) !== JSON.stringify(full)) {
          throw new Error(`plans differ:\nincremental ${JSON.stringify(incremental)}\nfull ${JSON.stringify(full)}`);
        }
        // The tombstone rules' view and the fetcher's logfiles are the listing's, too.
        const flat = listingOf(0, applied.entries, applied.logs);
        const byDir = peerListingOfDirs(0, dirs);
        for (const p of LINKS) {
          const vs = (e: { v: string; s: number } | undefined) => (e === undefined ? undefined : [e.v, e.s]);
          if (JSON.stringify(vs(byDir.entries.get(p))) !== JSON.stringify(vs(flat.entries.get(p)))) throw new Error(`the tombstone view of ${p} differs`);
          if (byDir.files.has(p) !== flat.files.has(p)) throw new Error(`the tombstone view of the file ${p} differs`);
        }
        const next = logsOfDirs(dirs, logs);
        const expected = new Map<string, Map<string, number>>();
        for (const l of applied.logs) {
          if (!expected.has(l.res)) expected.set(l.res, new Map());
          expected.get(l.res)!.set(l.name, l.sizeBytes);
        }
        if (JSON.stringify([...next.logs].map(([r, m]) => [r, [...m]])) !== JSON.stringify([...expected].map(([r, m]) => [r, [...m]]))) throw new Error('the logfiles differ');
        logs = next.logs;
        totals.pulls++;
        totals.skipped += merger.skipped;
        totals.dirs += dirs.size;
        totals.writes += full.writes.length;
        totals.rejected += full.rejected.length;
        if (op.apply) applyMergePlan(receiver, incremental);
        break;
      }
    }
  }
}

t.test('the merge by directory plans exactly what planMerge plans for the whole listing', { timeout: 300_000 }, async (t) => {
  await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 20, maxLength: 80 }), async (ops) => {
    const base = tempDir(t, 'mars-incr-');
    try {
      await run(base, ops);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  }), {
    numRuns: Number(process.env['MARS_INCR_RUNS'] ?? 150),
    ...(process.env['MARS_INCR_SEED'] ? { seed: Number(process.env['MARS_INCR_SEED']), path: process.env['MARS_INCR_PATH'] ?? '' } : {}),
  });
  t.comment(JSON.stringify(totals));
  t.ok(totals.skipped > totals.dirs / 10, `directories were passed over (${totals.skipped} of ${totals.dirs})`);
  t.ok(totals.writes > 100 && totals.rejected > 20, 'plans with writes and rejections were compared');
});

t.test('an idle pull passes over every directory; a change on either side is merged', async (t) => {
  const base = tempDir(t);
  mkdirSync(join(base, 'a'));
  mkdirSync(join(base, 'b'));
  const receiver = new TreeStore(join(base, 'a'), new LamportClock());
  const sender = new TreeStore(join(base, 'b'), new LamportClock());
  const links: [string, string][] = [['ips/ip-hostb', '127.0.0.3'], ['resource-r1/size', '4096'], ['resource-r1/data-hostb', '/dev/x'], ['resource-r2/size', '4096']];
  for (const [p, v] of links) {
    sender.ensureDir(dirname(p));
    sender.write(p, v);
  }
  const past = new Date(Date.now() - 10_000);
  const backdate = () => { for (const r of [receiver.root, sender.root]) for (const d of ['', 'ips', 'resource-r1', 'resource-r2']) if (existsSync(join(r, d))) utimesSync(join(r, d), past, past); };
  const svc = service(sender);
  const merger = new IncrementalMerge();
  let held: HeldListing | undefined;
  const pull = async () => {
    const applied = await pullOnce(svc, held);
    held = applied.held;
    const plan = receiver.readBatch(() => merger.plan(receiver, applied.dirs!, (p) => localState(receiver, p), {
      sender: SENDER, receiver: RECEIVER, nowUs: receiver.clock.realNowUs(), facts: mergeFacts(receiver),
    }));
    applyMergePlan(receiver, plan);
    return plan;
  };
  const first = await pull();
  t.same(first.rejected, [], 'nothing refused');
  t.equal(first.writes.length, 4, 'the first pull writes everything');
  backdate();
  await nextTurn();
  await pull(); // both sides read again after the backdate
  await nextTurn();
  const idle = await pull();
  t.equal(idle.writes.length, 0);
  t.equal(merger.skipped, held!.dirs.size, 'every directory passed over');
  // Our copy deleted behind the store's back (the receiver's directory changed): merged again.
  unlinkSync(join(receiver.root, 'resource-r1/size'));
  await nextTurn();
  t.same((await pull()).writes.map((w) => w.p), ['resource-r1/size'], 'the lost link is written again');
  // The peer's link changes (its directory is in the delta): merged.
  sender.write('resource-r1/data-hostb', '/dev/y');
  await nextTurn();
  const changed = await pull();
  t.same([changed.writes.map((w) => w.p), changed.rejected], [['resource-r1/data-hostb'], []]);
});
