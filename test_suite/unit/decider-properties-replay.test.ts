// Property tests of the data path's pure deciders (issue 16 item 3; docs/reliability.md):
// decideReplayStep (daemon/replay/switchover.ts) and planFetch (daemon/fetch/plan.ts). The inputs
// are drawn around a true history of the origins (logfiles 1..6, a versionlink chain), with the
// things a secondary really sees: links not propagated yet, partly fetched copies, a forged or
// damaged link, a second logfile with one number, a torn or defective scan, a kept content
// mismatch. Each property is stated on what the decider was given (docs/design.md §3.4, §3.7):
// replay applies only a verified prefix, switches only to logfile SEQ+1 under MARS's
// conditions, and fetch copies in order, from where the local copy ends, from a member that
// has more. Seeded: a failure prints the seed and the shrunk counterexample.
import t from 'tap';
import fc from 'fast-check';
import { decideReplayStep, REPLAY_STOP_CODE, type ReplayInput, type ReplayStep, type VersionLinkEntry } from '../../daemon/replay/switchover.js';
import { planFetch, type FetchInput } from '../../daemon/fetch/plan.js';
import { nextVersionLink, tryParseVersionLink, versionChainPrefix } from '../../common/log/links.js';
import { logName } from '../../common/tree/log-names.js';

const SEED = 16_003;
const runs = (numRuns: number) => ({ seed: SEED, numRuns });
t.comment(`fast-check seed ${SEED}`);

const ME = 'bravo';
const LAST = 6;
const content = (variant: string) => variant.repeat(64);

// ---------------------------------------------------------------- decideReplayStep

const replayArb = fc.record({
  // the origins' history: who wrote logfile n (1..LAST), and its final length
  hist: fc.array(fc.record({ origin: fc.constantFrom('alpha', 'alpha', 'alpha', 'charlie'), len: fc.constantFrom(0, 100, 200, 200) }), { minLength: LAST, maxLength: LAST }),
  S: fc.constantFrom(2, 3, 4),
  otherOrigin: fc.constantFrom(false, false, false, false, false, false, true),
  ownOrigin: fc.constantFrom(false, false, false, false, false, false, false, false, true),
  minPos: fc.constantFrom(0, 50, 100, 200, 250, 'end' as const, 'end' as const, 'end' as const),
  len: fc.constantFrom(0, 0, 0, 0, 0, 50),
  // the origins finished logfiles up to this number; their links of later numbers are not here yet
  finished: fc.constantFrom(1, 3, 4, 5, 6, 6, 6),
  dropOriginLink: fc.array(fc.boolean(), { minLength: LAST, maxLength: LAST }).map((a) => a.map((x, i) => x && i % 3 === 0)),
  // version-(S+1) of its origin continues from another end of logfile S (condition 6)
  forkedNext: fc.constantFrom(false, false, false, false, true),
  forgedOriginLink: fc.option(fc.integer({ min: 1, max: LAST }), { freq: 6, nil: undefined }),
  ownPrev: fc.constantFrom('true', 'true', 'true', 'missing', 'forged'),
  ownCur: fc.constantFrom('describes', 'describes', 'describes', 'describes-forged', 'missing', 'stale'),
  // local copies: size of logfile n (relative to its length), or missing
  local: fc.array(fc.constantFrom('missing', 'full', 'full', 'full', 'full', 'full', 'half', 'beyond', 'empty'), { minLength: LAST, maxLength: LAST }),
  split: fc.constantFrom('none', 'none', 'none', 'none', 'none', 'logfile', 'versionlink'),
  scan: fc.option(fc.record({
    at: fc.constantFrom('pos', 'pos', 'other'),
    stopClass: fc.constantFrom('clean' as const, 'torn' as const, 'defect' as const),
    limitPlus: fc.constantFrom(0, 0, 50),
  }), { freq: 4, nil: undefined }),
  kept: fc.constantFrom('none', 'none', 'none', 'none', 'none', 'here', 'before', 'malformed'),
  designated: fc.constantFrom(false, false, false, false, true),
});
type ReplayArgs = typeof replayArb extends fc.Arbitrary<infer T> ? T : never;

function replayInput(a: ReplayArgs): ReplayInput {
  const origin = (n: number) => a.hist[n - 1]!.origin;
  const len = (n: number) => a.hist[n - 1]!.len;
  // the origins' true chain
  const chain: string[] = [''];
  for (let n = 1; n <= LAST; n++) chain.push(nextVersionLink(chain[n - 1]!, n, origin(n), len(n), content('a')));
  const S = a.S;
  const minPos = a.minPos === 'end' ? len(S) : a.minPos; // 'end': replayed all of logfile S
  const O = a.ownOrigin ? ME : a.otherOrigin ? (origin(S) === 'alpha' ? 'charlie' : 'alpha') : origin(S);
  const links: VersionLinkEntry[] = [];
  for (let n = S - 1; n <= Math.min(a.finished, LAST); n++) {
    if (a.dropOriginLink[n - 1]) continue;
    const forged = a.forgedOriginLink === n;
    const forkedPrev = a.forkedNext && n === S + 1 ? nextVersionLink(chain[S - 1]!, S, origin(S), len(S), content('b')) : undefined;
    links.push({ seq: n, host: origin(n), value: forged ? nextVersionLink(chain[n - 1]!, n, origin(n), len(n), content('f')) : forkedPrev ? nextVersionLink(forkedPrev, n, origin(n), len(n), content('a')) : chain[n]! });
  }
  // own chain: version-(S-1)-ME and version-S-ME
  const prevOwn = a.ownPrev === 'true' ? chain[S - 1]! : a.ownPrev === 'forged' ? nextVersionLink(chain[S - 2]!, S - 1, origin(S - 1), len(S - 1), content('e')) : undefined;
  if (prevOwn !== undefined) links.push({ seq: S - 1, host: ME, value: prevOwn });
  if (a.ownCur !== 'missing' && O !== ME) {
    const pos = a.ownCur === 'stale' ? Math.max(0, minPos - 50) : minPos;
    links.push({ seq: S, host: ME, value: nextVersionLink(prevOwn ?? '', S, O, pos, content(a.ownCur === 'describes-forged' ? 'd' : 'a')) });
  }
  const logfiles: { seq: number; origin: string; sizeBytes: number }[] = [];
  for (let n = S - 1; n <= LAST; n++) {
    const l = a.local[n - 1]!;
    if (l === 'missing') continue;
    const o = n === S ? O : origin(n);
    logfiles.push({ seq: n, origin: o, sizeBytes: l === 'full' ? len(n) : l === 'half' ? len(n) / 2 : l === 'beyond' ? len(n) + 50 : 0 });
  }
  const other = origin(S + 1) === 'alpha' ? 'charlie' : 'alpha';
  if (a.split === 'logfile') logfiles.push({ seq: S + 1, origin: other, sizeBytes: 10 });
  if (a.split === 'versionlink') links.push({ seq: S + 1, host: other, value: nextVersionLink(chain[S]!, S + 1, other, 10, content('c')) });
  const scan = a.scan && {
    endPos: a.scan.at === 'pos' ? minPos : minPos + 10, limitBytes: minPos + a.scan.limitPlus, stopClass: a.scan.stopClass,
    stopKind: a.scan.stopClass === 'clean' ? 'clean-end' as const : a.scan.stopClass === 'torn' ? 'truncated-record' as const : 'bad-start-magic' as const, detail: 'drawn',
  };
  const keptMismatch = a.kept === 'malformed' ? 'malformed' as const : a.kept === 'here' ? { seq: S, origin: O, pos: minPos } : a.kept === 'before' ? { seq: S, origin: O, pos: minPos + 1 } : undefined;
  return {
    host: ME, replay: { seq: S, origin: O, minPos: minPos, len: a.len }, logfiles, versionLinks: links, scan,
    designatedPrimary: a.designated ? ME : 'alpha', isDesignatedPrimary: a.designated, ...(keptMismatch ? { keptMismatch } : {}),
  };
}

/** A versionlink value of the input, parsed, when it names logfile seq. */
function linkOf(v: ReplayInput, seq: number, host: string) {
  const value = v.versionLinks.find((e) => e.seq === seq && e.host === host)?.value;
  const parsed = value === undefined ? undefined : tryParseVersionLink(value);
  return parsed?.ok && parsed.value.seq === seq ? { value: value!, link: parsed.value } : undefined;
}

/** Origins of logfile seq: local logfiles, and versionlinks by their own origin. */
function originsOf(v: ReplayInput, seq: number): Set<string> {
  const out = new Set(v.logfiles.filter((l) => l.seq === seq).map((l) => l.origin));
  for (const e of v.versionLinks) {
    const p = tryParseVersionLink(e.value);
    if (e.seq === seq && p.ok && p.value.origin === e.host && p.value.seq === seq) out.add(e.host);
  }
  return out;
}

/** Where the history goes on from logfile S, once final: the link that gives its end (switchover.ts referenceLink). */
function historyEnd(v: ReplayInput, S: number, O: string): number | undefined {
  const next = [...originsOf(v, S + 1)];
  if (next.length !== 1) return undefined;
  const O2 = next[0]!;
  // not final yet (a designated primary does not wait for version-(S+1): condition 4)
  if (!linkOf(v, S + 1, O2) && !(v.isDesignatedPrimary && v.logfiles.some((l) => l.seq === S + 1 && l.origin === O2))) return undefined;
  const theirs = O2 !== O && O2 !== v.host ? linkOf(v, S, O2) : undefined;
  const ref = theirs && theirs.link.origin === O ? theirs : linkOf(v, S, O);
  return ref?.link.logPos;
}

function replayViolation(v: ReplayInput, step: ReplayStep): string | undefined {
  const link = v.replay!;
  const S = link.seq;
  const O = link.origin;
  const kept = v.keptMismatch === 'malformed'
    || (v.keptMismatch !== undefined && v.keptMismatch.seq === S && v.keptMismatch.origin === O && link.minPos >= v.keptMismatch.pos);
  if (step.kind === 'stop') return Object.values(REPLAY_STOP_CODE).includes(step.code as never) ? undefined : 'unknown stop code';
  if (step.kind === 'wait') return undefined;
  // (a repair re-applies only the window that was being applied: it does not move on)
  if (kept && !(step.kind === 'apply' && step.repair)) return 'moved on over a kept content mismatch';
  if (step.kind === 'record-version') {
    return step.seq === S && step.origin === O && step.logPos === link.minPos && O !== v.host && link.len === 0 ? undefined : 'record-version of another position';
  }
  const cur = v.logfiles.find((l) => l.seq === S && l.origin === O);
  if (step.kind === 'apply') {
    if (step.seq !== S || step.origin !== O || step.fromPos !== link.minPos) return 'apply elsewhere than the replay link';
    if (!cur || step.toPos > cur.sizeBytes) return 'apply beyond the local copy';
    if (step.repair) return link.len > 0 && step.toPos === link.minPos + link.len ? undefined : 'repair of another window';
    if (link.len !== 0) return 'new bytes applied before the half-applied window was repaired';
    if (step.toPos <= step.fromPos) return 'an empty apply';
    if (v.scan && v.scan.endPos === link.minPos && v.scan.stopClass === 'defect') return 'apply past a defect';
    const end = historyEnd(v, S, O);
    if (end !== undefined && step.toPos > end) return 'apply past the origin\'s final length';
    if (O !== v.host) {
      const own = linkOf(v, S, v.host);
      if (!own || own.link.origin !== O || own.link.logPos !== link.minPos) return 'apply while the own versionlink does not describe the replayed position';
    }
    return undefined;
  }
  // switch
  if (step.from.seq !== S || step.from.origin !== O || step.from.endPos !== link.minPos || link.len !== 0) return 'switch from elsewhere than the replay link';
  if (step.to.seq !== S + 1) return 'switch skips a logfile';
  const next = originsOf(v, S + 1);
  if (next.size !== 1 || !next.has(step.to.origin)) return 'switch with two logfiles of one number';
  if (!v.logfiles.some((l) => l.seq === S + 1 && l.origin === step.to.origin)) return 'switch to a logfile not here';
  if (historyEnd(v, S, O) !== link.minPos) return 'switch before the end of the history in logfile S';
  const ref = linkOf(v, S, O);
  const own = O === v.host ? ref : linkOf(v, S, v.host);
  const theirs = step.to.origin !== O && step.to.origin !== v.host ? linkOf(v, S, step.to.origin) : undefined;
  const refValue = theirs && theirs.link.origin === O ? theirs.value : ref?.value;
  if (!own || own.value !== refValue) return 'switch over a version chain (content) mismatch';
  const nextLink = linkOf(v, S + 1, step.to.origin);
  if (!nextLink && !v.isDesignatedPrimary) return 'switch before the origin finished logfile S';
  if (nextLink && nextLink.link.prev !== versionChainPrefix(own.value)) return 'switch into a logfile continuing another history';
  if (v.isDesignatedPrimary && O === v.host && step.to.origin !== v.host) return 'a designated primary continued into a foreign logfile';
  return undefined;
}

t.test('decideReplayStep: applies only a verified prefix, switches only to SEQ+1 under MARS\'s conditions', async (t) => {
  const seen: Record<string, number> = {};
  fc.assert(fc.property(replayArb, (a) => {
    const v = replayInput(a);
    const step = decideReplayStep(v);
    const key = step.kind === 'apply' && step.repair ? 'repair' : step.kind;
    seen[key] = (seen[key] ?? 0) + 1;
    const bad = replayViolation(v, step);
    if (bad) throw new Error(`${bad}: ${JSON.stringify(step)}`);
    return true;
  }), runs(4_000));
  t.ok((seen.apply ?? 0) > 100 && (seen.switch ?? 0) > 30 && (seen['record-version'] ?? 0) > 100 && (seen.stop ?? 0) > 100 && (seen.repair ?? 0) > 10,
    `every kind of step was drawn (${JSON.stringify(seen)})`);
});

t.test('decideReplayStep: the order of the logfiles and versionlinks does not matter', async () => {
  fc.assert(fc.property(replayArb, fc.array(fc.nat(), { minLength: 30, maxLength: 30 }), (a, keys) => {
    const v = replayInput(a);
    const shuffle = <T>(xs: readonly T[]) => xs.map((x, i) => [keys[i % keys.length]! + i / 100, x] as const).sort((p, q) => p[0] - q[0]).map((p) => p[1]);
    const w: ReplayInput = { ...v, logfiles: shuffle(v.logfiles), versionLinks: shuffle([...v.versionLinks].reverse()) };
    return JSON.stringify(decideReplayStep(v)) === JSON.stringify(decideReplayStep(w));
  }), runs(1_500));
});

// ---------------------------------------------------------------- planFetch

const fetchArb = fc.record({
  hist: fc.array(fc.record({ origin: fc.constantFrom('alpha', 'alpha', 'alpha', 'charlie', ME), len: fc.constantFrom(100, 200) }), { minLength: LAST, maxLength: LAST }),
  replaySeq: fc.constantFrom(2, 3),
  finished: fc.integer({ min: 1, max: LAST }),
  handoverEnd: fc.array(fc.constantFrom(0, 0, 0, -50), { minLength: LAST, maxLength: LAST }),
  local: fc.array(fc.constantFrom('missing', 'full', 'full', 'half', 'beyond', 'empty'), { minLength: LAST, maxLength: LAST }),
  peers: fc.uniqueArray(fc.record({
    host: fc.constantFrom('alpha', 'charlie', 'delta'),
    connected: fc.constantFrom(true, true, true, false),
    offers: fc.array(fc.constantFrom('none', 'full', 'full', 'half', 'less'), { minLength: LAST, maxLength: LAST }),
  }), { maxLength: 3, selector: (p) => p.host }),
  split: fc.option(fc.integer({ min: 1, max: LAST }), { freq: 8, nil: undefined }),
});
type FetchArgs = typeof fetchArb extends fc.Arbitrary<infer T> ? T : never;

function fetchInput(a: FetchArgs): FetchInput {
  const origin = (n: number) => a.hist[n - 1]!.origin;
  const len = (n: number) => a.hist[n - 1]!.len;
  const local = new Map<string, number>();
  for (let n = 1; n <= LAST; n++) {
    const l = a.local[n - 1]!;
    const size = origin(n) === ME ? len(n) : l === 'full' ? len(n) : l === 'half' ? len(n) / 2 : l === 'beyond' ? len(n) + 50 : 0;
    if (l !== 'missing' || origin(n) === ME) local.set(logName(n, origin(n)), size);
  }
  const peers = a.peers.map((p) => {
    const logs = new Map<string, number>();
    for (let n = 1; n <= LAST; n++) {
      const o = p.offers[n - 1]!;
      // a logfile not finished yet is still growing on its origin: others have less of it
      const have = n <= a.finished ? len(n) : p.host === origin(n) ? len(n) / 2 : len(n) / 4;
      if (o !== 'none') logs.set(logName(n, origin(n)), o === 'full' ? have : o === 'half' ? have / 2 : Math.max(0, have - 150));
    }
    if (a.split !== undefined) logs.set(logName(a.split, 'delta'), 10);
    return { host: p.host, connected: p.connected, logs };
  });
  // final lengths: once the successor wrote its versionlink; a successor other than the origin
  // (a forced failover) may have ended the logfile earlier than the origin did
  const finalLength = (seq: number, o: string, successor: string) => {
    if (seq >= a.finished || seq >= LAST || o !== origin(seq)) return undefined;
    if (successor === o) return len(seq);
    return successor === origin(seq + 1) ? len(seq) + a.handoverEnd[seq - 1]! : undefined;
  };
  return { self: ME, replaySeq: a.replaySeq, local, peers, finalLength };
}

function fetchViolation(i: FetchInput, plan: ReturnType<typeof planFetch>): string | undefined {
  // every logfile named anywhere, from the replay link on
  const bySeq = new Map<number, Set<string>>();
  for (const name of [...i.local.keys(), ...i.peers.flatMap((p) => [...p.logs.keys()])]) {
    const m = /^log-(\d{9})-(\S+)$/.exec(name)!;
    const seq = Number(m[1]);
    if (seq < i.replaySeq) continue;
    if (!bySeq.has(seq)) bySeq.set(seq, new Set());
    bySeq.get(seq)!.add(m[2]!);
  }
  const finalOf = (seq: number, origin: string) => {
    const next = bySeq.get(seq + 1);
    const successor = next?.size === 1 ? [...next][0]! : origin;
    return { final: i.finalLength(seq, origin, successor), successor };
  };
  if (plan.kind === 'stop') {
    const split = [...bySeq.values()].some((s) => s.size > 1);
    const longer = [...bySeq].some(([seq, s]) => s.size === 1 && [...s][0] !== i.self
      && (finalOf(seq, [...s][0]!).final ?? Infinity) < (i.local.get(logName(seq, [...s][0]!)) ?? 0));
    return split || longer ? undefined : 'stopped without a split brain or a local copy longer than its final length';
  }
  if (plan.kind === 'idle') return undefined;
  const { seq, origin, name, fromPos, source } = plan;
  if (seq < i.replaySeq || origin === i.self || name !== logName(seq, origin)) return 'fetches a logfile it must not';
  if (fromPos !== (i.local.get(name) ?? 0)) return 'does not resume at the local length';
  // in order: everything below is settled (one origin, own or complete here)
  for (const [s, origins] of bySeq) {
    if (s > seq) continue;
    if (origins.size > 1) return `fetches beyond a split brain at ${s}`;
    const o = [...origins][0]!;
    if (s === seq || o === i.self) continue;
    const f = finalOf(s, o);
    if (f.final === undefined || (i.local.get(logName(s, o)) ?? 0) < f.final) return `skips the incomplete logfile ${s}`;
  }
  const peer = i.peers.find((p) => p.host === source && p.connected && p.logs.has(name));
  if (!peer) return 'fetches from a member that is not connected or does not offer the logfile';
  const offered = peer.logs.get(name)!;
  const fromOrigin = i.peers.find((p) => p.host === origin && p.connected && p.logs.has(name))?.logs.get(name);
  if (source !== origin && (offered <= fromPos || (fromOrigin !== undefined && offered <= fromOrigin))) return 'fetches from a non-origin that has no more than the origin or this host';
  if (source === origin && offered < fromPos) return 'asks the origin for bytes it does not offer';
  const { final } = finalOf(seq, origin);
  if (final !== undefined) {
    if (plan.follow || plan.knownEnd !== final || fromPos >= final || offered <= fromPos) return 'fetches a finished logfile beyond its final length or for nothing';
  } else if (!plan.follow || plan.knownEnd !== offered) {
    return 'does not follow a growing logfile to what its source offers';
  }
  return undefined;
}

t.test('planFetch: copies in order, from the local length, from the origin or a member with more, never past the final length', async (t) => {
  const seen: Record<string, number> = {};
  fc.assert(fc.property(fetchArb, (a) => {
    const i = fetchInput(a);
    const plan = planFetch(i);
    const key = plan.kind === 'fetch' ? `fetch-${plan.follow ? 'follow' : 'final'}-${plan.source === plan.origin ? 'origin' : 'other'}` : plan.kind;
    seen[key] = (seen[key] ?? 0) + 1;
    const bad = fetchViolation(i, plan);
    if (bad) throw new Error(`${bad}: ${JSON.stringify(plan)}`);
    return true;
  }), runs(4_000));
  t.ok(Object.keys(seen).length >= 6 && Object.values(seen).every((n) => n > 10), `every kind of plan was drawn (${JSON.stringify(seen)})`);
});

t.test('planFetch: the order of the peers does not change what is fetched', async () => {
  fc.assert(fc.property(fetchArb, (a) => {
    const i = fetchInput(a);
    const p = planFetch(i);
    const q = planFetch({ ...i, peers: [...i.peers].reverse() });
    if (p.kind !== q.kind) return false;
    return p.kind !== 'fetch' || (q.kind === 'fetch' && p.name === q.name && p.fromPos === q.fromPos && p.knownEnd === q.knownEnd && (p.source === q.source || p.source !== p.origin));
  }), runs(1_500));
});
