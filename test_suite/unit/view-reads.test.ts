// What `marsadm view` reads since issue 11 (only the links and logfiles it uses) must give what
// reading everything gave: readProgressFacts against the full-read version it replaced (kept
// here as the oracle), readHeldBack against the full retention plan, and the lazy tree
// (lazy-listing.ts) against the full one. Random resource directories on real files.
import t from 'tap';
import { statSync, writeFileSync } from 'node:fs';
import { mulberry32 } from '../helpers/prng.js';
import { tempDir } from '../helpers/tmp.js';
import { TreeStore } from '../../common/tree/store.js';
import { globalPaths, resPaths, resourceDir } from '../../common/tree/paths.js';
import { LOG_NAME, parseVersionName, tryParseLogName, versionName } from '../../common/tree/log-names.js';
import { nextVersionLink, parseReplayLink, parseVersionLink } from '../../common/log/links.js';
import { contentDigestOf } from '../../common/log/content-digest.js';
import { readProgressFacts } from '../../common/resource/read-progress.js';
import { planLogRetention } from '../../marsadm/status/log-retention.js';
import { readHeldBack, readRetentionInput } from '../../marsadm/status/read-retention.js';

const HOSTS = ['alpha', 'beta', 'gamma'];
const RES = 'db';

/** A resource directory in some state marsd and its peers could leave (and some they should not). */
function randomTree(root: string, seed: number, lazy: boolean): TreeStore {
  const rnd = mulberry32(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const tree = new TreeStore(root);
  tree.ensureDir(resourceDir(RES));
  for (const h of HOSTS) tree.ensureDir(`actual-${h}`);
  tree.write(resPaths.size(RES), String(1 << 20));
  if (rnd() < 0.9) tree.write(resPaths.primary(RES), pick(HOSTS));
  const top = 1 + Math.floor(rnd() * 30);
  const from = 1 + Math.floor(rnd() * top);
  for (const h of HOSTS) {
    if (rnd() < 0.85) tree.write(resPaths.data(RES, h), '/dev/x');
    tree.write(globalPaths.actual(h, 'time'), String(1_000_000 - Math.floor(rnd() * 100)));
    let prev = '';
    const upTo = top - Math.floor(rnd() * 4);
    for (let seq = from; seq <= upTo; seq++) {
      const origin = rnd() < 0.8 ? HOSTS[0]! : pick(HOSTS);
      prev = nextVersionLink(prev, seq, origin, Math.floor(rnd() * 5) * 100, contentDigestOf(Buffer.from(`${seed}-${seq}-${origin}`)));
      const r = rnd();
      tree.write(`${resourceDir(RES)}/${versionName(seq, h)}`, r < 0.03 ? 'garbage' : r < 0.06 ? '.deleted' : prev);
    }
    if (rnd() < 0.85) tree.write(resPaths.replay(RES, h), `log-${String(from + Math.floor(rnd() * (top - from + 1))).padStart(9, '0')}-${pick(HOSTS)},${Math.floor(rnd() * 4) * 100},0`);
    if (rnd() < 0.5) tree.write(resPaths.syncstatus(RES, h), String(rnd() < 0.7 ? 1 << 20 : 4096));
    if (rnd() < 0.3) tree.write(resPaths.syncpos(RES, h), `log-${String(from).padStart(9, '0')}-alpha,0,0`);
  }
  for (let seq = from; seq <= top; seq++) {
    if (rnd() < 0.15) continue;
    const origin = rnd() < 0.85 ? 'alpha' : pick(HOSTS);
    writeFileSync(tree.abs(resPaths.log(RES, seq, origin)), Buffer.alloc(Math.floor(rnd() * 5) * 100));
  }
  tree.changed(resourceDir(RES));
  return lazy ? new TreeStore(root, undefined, { lazyLinks: true }) : new TreeStore(root);
}

/** The full-read readProgressFacts before issue 11's change (its logs, ends and fetch facts). */
function oracle(tree: TreeStore, host: string) {
  const dir = resourceDir(RES);
  const primary = tree.value(resPaths.primary(RES));
  const replayValue = tree.value(resPaths.replay(RES, host));
  const replayLink = replayValue === undefined ? undefined : parseReplayLink(replayValue);
  const origins = new Map<number, { origin: string; logPos: number; stampS: number }>();
  for (const name of tree.list(dir)) {
    const vn = parseVersionName(name);
    if (!vn) continue;
    const entry = tree.read(`${dir}/${name}`);
    const link = entry && parseVersionLink(entry.value);
    if (!link || link.seq !== vn.seq || link.origin !== vn.host) continue;
    origins.set(vn.seq, { origin: link.origin, logPos: link.logPos, stampS: entry.stampUs / 1e6 });
  }
  const local = new Map<number, { origin: string; bytes: number; mtimeS: number }>();
  for (const name of tree.list(dir)) {
    if (!LOG_NAME.test(name)) continue;
    const parsed = tryParseLogName(name);
    if (!parsed.ok) continue;
    const st = statSync(tree.abs(`${dir}/${name}`), { throwIfNoEntry: false });
    if (st?.isFile()) local.set(parsed.value.seq, { origin: parsed.value.origin, bytes: st.size, mtimeS: st.mtimeMs / 1000 });
  }
  let primaryEnd: { seq: number; origin: string; pos: number; stampS: number } | undefined;
  for (const [seq, o] of origins) {
    if (o.origin === primary && (!primaryEnd || seq > primaryEnd.seq)) primaryEnd = { seq, origin: o.origin, pos: o.logPos, stampS: o.stampS };
  }
  const logs: { seq: number; origin: string; localBytes: number | undefined; originBytes: number | undefined }[] = [];
  let lastFetchS: number | undefined;
  const fromSeq = replayLink?.seq ?? Math.min(...origins.keys());
  const toSeq = Math.max(primaryEnd?.seq ?? 0, ...local.keys());
  for (let seq = fromSeq; Number.isFinite(seq) && seq <= toSeq; seq++) {
    const o = origins.get(seq);
    const l = local.get(seq);
    const origin = o?.origin ?? l?.origin ?? (seq === replayLink?.seq ? replayLink.origin : undefined);
    if (origin === undefined) continue;
    const mine = l && l.origin === origin ? l : undefined;
    if (mine && origin !== host) lastFetchS = Math.max(lastFetchS ?? 0, mine.mtimeS);
    logs.push({ seq, origin, localBytes: mine?.bytes, originBytes: o?.logPos });
  }
  return { primaryEnd, logs, lastFetchS };
}

t.test('progress facts and held-back logfiles read partly equal those read in full', async (t) => {
  const runs = Number(process.env['MARS_VIEW_READS_RUNS'] ?? 120);
  for (let seed = 1; seed <= runs; seed++) {
    for (const lazy of [false, true]) {
      const tree = randomTree(tempDir(t), seed, lazy);
      for (const host of HOSTS) {
        const f = readProgressFacts(tree, RES, host, 60, 1_000_000);
        const want = oracle(tree, host);
        const got = { primaryEnd: f.primaryEnd, logs: f.logs, lastFetchS: f.lastFetchS };
        if (JSON.stringify(got) !== JSON.stringify(want)) t.same(got, want, `seed ${seed} host ${host} lazy ${lazy}`);
        const full = planLogRetention(readRetentionInput(tree, RES, host, 60, false, 1_000_000_000)).heldBack;
        const held = readHeldBack(tree, RES, host, 60, false, 1_000_000_000);
        if (JSON.stringify(held) !== JSON.stringify(full)) t.same(held, full, `held back: seed ${seed} host ${host} lazy ${lazy}`);
      }
    }
  }
  t.pass(`${runs} trees`);
});

t.test('a lazy tree lists names without reading links and reads a link when asked', async (t) => {
  const root = tempDir(t);
  const writer = new TreeStore(root);
  writer.ensureDir('d');
  for (let i = 0; i < 50; i++) writer.write(`d/link-${i}`, `v${i}`);
  writeFileSync(writer.abs('d/file'), 'x');
  const lazy = new TreeStore(root, undefined, { lazyLinks: true });
  const full = new TreeStore(root);
  t.same(lazy.list('d').sort(), full.list('d').sort());
  t.same(lazy.read('d/link-7'), full.read('d/link-7'));
  t.same(lazy.entry('d/file'), { kind: 'file' });
  // A link replaced by another process after the listing: the lazy tree reads it when asked,
  // so it sees the newer value (the directory's mtime changed, so the listing is read again too).
  writer.write('d/link-9', 'newer');
  t.equal(lazy.value('d/link-9'), 'newer');
  // This store's own writes are seen at once.
  lazy.write('d/link-3', 'mine');
  t.equal(lazy.value('d/link-3'), 'mine');
  t.same([...lazy.listing('d')!].length, 51, 'iterating a lazy listing reads every entry');
});
