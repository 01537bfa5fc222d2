// A listing sent as a delta (daemon/propagate/listing-delta.ts) must be, once the receiver
// applied it, exactly the full listing the server would have sent at that moment: the same
// entries in the same order and the same logfiles, so that planMerge and the tombstone rules
// see no difference. Random sequences of tree operations on a real /mars directory (through
// the server's own TreeStore, through a second store as marsadm would, and behind both with
// plain fs calls), with pulls of two receivers interleaved; the operations run within the same
// second, so the DirCache's racy mtime window (dir-cache.ts) is crossed all the time, and
// `backdate` moves the directories' mtimes 10 s back so that listings are trusted, too.
import t from 'tap';
import fc from 'fast-check';
import { appendFileSync, existsSync, lstatSync, mkdirSync, readdirSync, renameSync, rmSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { PeerService } from '../../daemon/serve/peer-service.js';
import { entsReply } from '../../daemon/net/service.js';
import { parseEntsPayload, parseMessage, type ListingSince } from '../../daemon/net/messages.js';
import { applyListing, type HeldListing } from '../../daemon/propagate/listing-delta.js';
import { tempDir } from '../helpers/tmp.js';

const RESOURCES = ['r1', 'r2'];
const DIRS = ['ips', 'actual-hosta', 'actual-hostb', ...RESOURCES.map((r) => `resource-${r}`), 'resource-r1/todo-hostb', 'resource-r2/todo-hosta'];
const LINKS = ['uuid', 'ips/ip-hosta', 'ips/ip-hostb', 'actual-hostb/time', 'actual-hosta/is-primary', 'resource-r1/size', 'resource-r1/primary',
  'resource-r1/data-hostb', 'resource-r2/size', 'resource-r2/replay-hostb', 'resource-r1/todo-hostb/attach', 'resource-r2/todo-hosta/primary',
  'resource-r1/version-000000001-hostb', 'resource-r1/log-000000002-hostb'];

type Op =
  | { k: 'write'; via: number; path: string; value: string }
  | { k: 'remove'; via: number; path: string }
  | { k: 'unlink'; via: number; path: string }
  | { k: 'logCreate'; res: string; seq: number; origin: string; bytes: number; tell: boolean }
  | { k: 'logAppend'; res: string; bytes: number }
  | { k: 'logDelete'; res: string; which: number; tell: boolean }
  | { k: 'mkdir'; dir: string; tell: boolean }
  | { k: 'rmdir'; dir: string; tell: boolean }
  | { k: 'backdate' }
  | { k: 'turn' }
  | { k: 'pull'; who: number; fresh: boolean }
  | { k: 'reconnect'; who: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ k: fc.constant('write' as const), via: fc.nat(2), path: fc.constantFrom(...LINKS), value: fc.stringMatching(/^[a-z0-9.,:-]{1,12}$/) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('remove' as const), via: fc.nat(1), path: fc.constantFrom(...LINKS) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('unlink' as const), via: fc.nat(1), path: fc.constantFrom(...LINKS) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('logCreate' as const), res: fc.constantFrom(...RESOURCES), seq: fc.integer({ min: 1, max: 9 }), origin: fc.constantFrom('hosta', 'hostb'), bytes: fc.nat(300), tell: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('logAppend' as const), res: fc.constantFrom(...RESOURCES), bytes: fc.integer({ min: 1, max: 200 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('logDelete' as const), res: fc.constantFrom(...RESOURCES), which: fc.nat(5), tell: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('mkdir' as const), dir: fc.constantFrom(...DIRS, 'resource-r3', 'actual-hostc'), tell: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('rmdir' as const), dir: fc.constantFrom(...DIRS, 'resource-r3', 'actual-hostc'), tell: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ k: 'backdate' as const }) },
  { weight: 2, arbitrary: fc.constant({ k: 'turn' as const }) },
  { weight: 5, arbitrary: fc.record({ k: fc.constant('pull' as const), who: fc.nat(1), fresh: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('reconnect' as const), who: fc.nat(1) }) },
);

const opCounts = new Map<string, number>();
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

function lexists(path: string): boolean {
  try { lstatSync(path); return true; } catch { return false; }
}

function ensureParent(tree: TreeStore, path: string): void {
  if (dirname(path) !== '.') tree.ensureDir(dirname(path));
}

/** The logfiles of a resource directory, oldest first (the last one the logger or fetcher appends to). */
function logsOf(root: string, res: string): string[] {
  const dir = join(root, `resource-${res}`);
  if (!existsSync(dir)) return [];
  // Regular files only: a link may carry a logfile's name (LINKS), and no logger appends to it.
  return readdirSync(dir, { withFileTypes: true }).filter((d) => d.isFile() && /^log-\d{9}-/.test(d.name)).map((d) => d.name).sort();
}

function service(tree: TreeStore): PeerService {
  return new PeerService({
    tree, host: 'hosta',
    activeLogEnd: () => undefined, primaryPosition: () => undefined,
    onTreeChanged: () => undefined, onNotify: () => undefined, log: () => undefined,
  });
}

/** Pull `svc` as a receiver holding `held` would: over the wire format, applied. */
async function pullOnce(svc: PeerService, peer: string, held: HeldListing | undefined) {
  const asked: ListingSince | undefined = held ? { epoch: held.epoch, generation: held.generation } : undefined;
  const answer = await svc.getents(peer, asked);
  const { message, payload } = entsReply({ id: 1, ...(asked ? { since: asked } : {}) }, answer);
  const header = parseMessage(JSON.parse(JSON.stringify(message)));
  if (header.t !== 'ents') throw new Error(`not ents: ${header.t}`);
  const ents = parseEntsPayload(payload, header.count, header);
  const applied = applyListing(held, asked, { ...ents, epoch: header.epoch, generation: header.generation, since: header.since });
  return { applied, delta: header.since !== undefined, sentEntries: ents.entries.length };
}

async function run(root: string, ops: readonly Op[]): Promise<{ pulls: number; deltas: number; fresh: number }> {
  const tree = new TreeStore(root, new LamportClock());
  const other = new TreeStore(root, new LamportClock()); // marsadm: another process's store
  const svc = service(tree);
  const held: (HeldListing | undefined)[] = [undefined, undefined];
  const stats = { pulls: 0, deltas: 0, fresh: 0 };
  let raw = 0;
  let backdates = 0;
  const startMs = Date.now();
  for (const op of ops) {
    opCounts.set(op.k, (opCounts.get(op.k) ?? 0) + 1);
    switch (op.k) {
      case 'write': {
        const abs = join(root, op.path);
        if (op.via === 0) { ensureParent(tree, op.path); tree.write(op.path, op.value); }
        else if (op.via === 1) { ensureParent(other, op.path); other.write(op.path, op.value); }
        else {
          // A rename over by hand: the link's own mtime becomes its stamp.
          mkdirSync(dirname(abs), { recursive: true });
          const tmp = join(dirname(abs), `.tmp.raw.${raw++}`);
          symlinkSync(op.value, tmp);
          try { renameSync(tmp, abs); } catch { unlinkSync(tmp); } // a directory there
        }
        break;
      }
      case 'remove':
        try { (op.via === 0 ? tree : other).remove(op.path); } catch { /* a directory on the way */ }
        break;
      case 'unlink':
        if (op.via === 0) { try { tree.purge(op.path); } catch { /* a directory */ } }
        else { try { unlinkSync(join(root, op.path)); } catch { /* absent */ } }
        break;
      case 'logCreate': {
        const dir = join(root, `resource-${op.res}`);
        if (!existsSync(dir)) break;
        const name = `log-${String(op.seq).padStart(9, '0')}-${op.origin}`;
        if (lexists(join(dir, name))) break; // a logfile, or a link of that name (LINKS)
        writeFileSync(join(dir, name), Buffer.alloc(op.bytes, 1));
        if (op.tell) tree.changed(`resource-${op.res}`);
        break;
      }
      case 'logAppend': {
        // Only the newest logfile grows (log-sizes.ts).
        const newest = logsOf(root, op.res).at(-1);
        if (newest !== undefined) appendFileSync(join(root, `resource-${op.res}`, newest), Buffer.alloc(op.bytes, 2));
        break;
      }
      case 'logDelete': {
        const logs = logsOf(root, op.res);
        if (logs.length === 0) break;
        unlinkSync(join(root, `resource-${op.res}`, logs[op.which % logs.length]!));
        if (op.tell) tree.changed(`resource-${op.res}`);
        break;
      }
      case 'mkdir':
        if (op.tell) tree.ensureDir(op.dir);
        else mkdirSync(join(root, op.dir), { recursive: true });
        break;
      case 'rmdir':
        rmSync(join(root, op.dir), { recursive: true, force: true });
        if (op.tell) tree.changed(dirname(op.dir) === '.' ? '' : dirname(op.dir));
        break;
      case 'backdate': {
        // As if the last changes were 10 s ago: listings read from now on are trusted. Each
        // backdate goes further back than the ones before, so that a directory never gets an
        // mtime back that the server saw already (a real clock never does that either).
        const past = new Date(startMs - 10_000 - 1_000 * backdates++);
        const walk = (dir: string, depth: number) => {
          for (const d of readdirSync(dir, { withFileTypes: true })) if (d.isDirectory() && depth < 2) walk(join(dir, d.name), depth + 1);
          utimesSync(dir, past, past);
        };
        walk(root, 0);
        break;
      }
      case 'turn':
        await nextTurn();
        break;
      case 'reconnect':
        held[op.who] = undefined;
        break;
      case 'pull': {
        if (op.fresh) await nextTurn();
        const { applied, delta } = await pullOnce(svc, `peer${op.who}`, held[op.who]);
        // The full listing at the same moment (same event-loop turn), as another peer gets it.
        const full = await svc.getents('observer');
        if (JSON.stringify(applied.entries) !== JSON.stringify(full.entries)) {
          throw new Error(`entries differ (${delta ? 'delta' : 'full'}):\n${JSON.stringify(applied.entries)}\n${JSON.stringify(full.entries)}`);
        }
        if (JSON.stringify(applied.logs) !== JSON.stringify(full.logs)) {
          throw new Error(`logs differ (${delta ? 'delta' : 'full'}):\n${JSON.stringify(applied.logs)}\n${JSON.stringify(full.logs)}`);
        }
        if (op.fresh) {
          // And what a fresh process reads from disk now (the cache is right, too).
          const truth = await service(new TreeStore(root, new LamportClock())).getents('observer');
          const key = (x: unknown[]) => x.map((e) => JSON.stringify(e)).sort();
          if (JSON.stringify(key(applied.entries)) !== JSON.stringify(key(truth.entries)) || JSON.stringify(key(applied.logs)) !== JSON.stringify(key(truth.logs))) {
            throw new Error(`the reconstruction differs from a fresh read of the tree:\n${JSON.stringify(applied)}\n${JSON.stringify(truth)}`);
          }
          stats.fresh++;
        }
        held[op.who] = applied.held;
        stats.pulls++;
        if (delta) stats.deltas++;
        break;
      }
    }
  }
  return stats;
}

t.test('a delta applied by the receiver equals the full listing at the same moment', { timeout: 300_000 }, async (t) => {
  const totals = { pulls: 0, deltas: 0, fresh: 0 };
  await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 20, maxLength: 80 }), async (ops) => {
    const root = tempDir(t, 'mars-delta-');
    try {
      const s = await run(root, ops);
      totals.pulls += s.pulls; totals.deltas += s.deltas; totals.fresh += s.fresh;
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }), {
    numRuns: Number(process.env['MARS_DELTA_RUNS'] ?? 150),
    // Replay a failure: MARS_DELTA_SEED and MARS_DELTA_PATH as fast-check printed them.
    ...(process.env['MARS_DELTA_SEED'] ? { seed: Number(process.env['MARS_DELTA_SEED']), path: process.env['MARS_DELTA_PATH'] ?? '' } : {}),
  });
  t.comment(`ops: ${JSON.stringify(Object.fromEntries(opCounts))}`);
  t.comment(`${totals.pulls} pulls, ${totals.deltas} of them deltas, ${totals.fresh} checked against a fresh read`);
  t.ok(totals.deltas > totals.pulls / 4, 'most pulls were deltas');
});

t.test('an idle tree: after the first pull a delta carries nothing but the directory names', async (t) => {
  const root = tempDir(t);
  const tree = new TreeStore(root, new LamportClock());
  for (const p of LINKS) { ensureParent(tree, p); tree.write(p, 'v1'); }
  writeFileSync(join(root, 'resource-r1', 'log-000000001-hostb'), 'abc');
  writeFileSync(join(root, 'resource-r1', 'log-000000002-hostb'), 'abcd');
  writeFileSync(join(root, 'resource-r1', 'log-000000003-hostb'), 'x');
  const past = new Date(Date.now() - 10_000);
  for (const d of ['', ...DIRS]) if (existsSync(join(root, d))) utimesSync(join(root, d), past, past);
  const svc = service(tree);
  const first = await pullOnce(svc, 'beta', undefined);
  t.notOk(first.delta, 'the first pull is full');
  t.equal(first.sentEntries, LINKS.length);
  await nextTurn();
  const second = await pullOnce(svc, 'beta', first.applied.held);
  t.ok(second.delta, 'the second is a delta');
  t.equal(second.sentEntries, 0, 'no entry sent again');
  t.same(second.applied.entries, first.applied.entries, 'the same listing');
  // The newest logfile grows: only its directory is sent again.
  appendFileSync(join(root, 'resource-r1', 'log-000000003-hostb'), 'yz');
  await nextTurn();
  const third = await pullOnce(svc, 'beta', second.applied.held);
  t.ok(third.delta);
  t.equal(third.sentEntries, LINKS.filter((p) => p.startsWith('resource-r1/') && p.split('/').length === 2).length, 'the entries of resource-r1 only');
  t.same(third.applied.logs.find((l) => l.name === 'log-000000003-hostb')?.sizeBytes, 3, 'with the new size');
});

t.test('across the racy window in real time: resent while racy, then not, and a change behind the store\'s back is seen', { timeout: 30_000 }, async (t) => {
  const root = tempDir(t);
  const tree = new TreeStore(root, new LamportClock());
  const other = new TreeStore(root, new LamportClock());
  for (const p of LINKS) { ensureParent(tree, p); tree.write(p, 'v1'); }
  const svc = service(tree);
  let held = (await pullOnce(svc, 'beta', undefined)).applied.held;
  await nextTurn();
  const racy = await pullOnce(svc, 'beta', held);
  t.ok(racy.delta && racy.sentEntries === LINKS.length, 'within 2 s of the changes every directory is read again and resent');
  held = racy.applied.held;
  await new Promise((r) => setTimeout(r, 2_100));
  held = (await pullOnce(svc, 'beta', held)).applied.held; // read once more, now trusted
  await nextTurn();
  const quiet = await pullOnce(svc, 'beta', held);
  t.equal(quiet.sentEntries, 0, 'outside the window an unchanged tree sends no entry');
  held = quiet.applied.held;
  other.write('resource-r2/size', 'v2'); // marsadm, another process: only the mtime tells
  await nextTurn();
  const seen = await pullOnce(svc, 'beta', held);
  t.equal(seen.applied.entries.find((e) => e.p === 'resource-r2/size')?.v, 'v2', 'the change behind the store\'s back is in the delta');
  t.same(seen.applied.entries, (await svc.getents('observer')).entries, 'equal to the full listing');
});
