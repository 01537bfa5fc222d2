// The log-delete decision (marsadm/status/log-retention.ts): which logfiles every replica is
// past, and who holds the rest back. Pure: driven with small hand-made trees.
import t from 'tap';
import { planLogRetention, type RetentionInput, type RetentionLogfile } from '../../marsadm/status/log-retention.js';
import { cronPurgeDecision, TOMBSTONE_FALLBACK_AGE_S } from '../../marsadm/commands/logs.js';
import { viewLines, type ViewSnapshot } from '../../marsadm/status/view-model.js';
import { MACROS, viewJson } from '../../marsadm/status/macros.js';

const NOW = 1_800_000_000_000;
const OLD = NOW - 3600_000;
const MiB = 1 << 20;

function logs(from: number, to: number, origin = 'alpha', sizeBytes = MiB, mtimeMs = OLD): RetentionLogfile[] {
  const out: RetentionLogfile[] = [];
  for (let seq = from; seq <= to; seq++) out.push({ seq, origin, name: `log-${String(seq).padStart(9, '0')}-${origin}`, sizeBytes, mtimeMs });
  return out;
}

function replay(seq: number, origin = 'alpha', pos = 0): string {
  return `log-${String(seq).padStart(9, '0')}-${origin},${pos},0`;
}

function input(over: Partial<RetentionInput> = {}): RetentionInput {
  return {
    members: ['alpha', 'beta'],
    replay: new Map([['alpha', replay(8)], ['beta', replay(8)]]),
    syncing: new Set(),
    syncpos: new Map(),
    heartbeatAgeS: new Map([['alpha', 1], ['beta', 1]]),
    self: 'alpha',
    windowS: 60,
    logfiles: logs(1, 8),
    nowMs: NOW,
    force: false,
    ...over,
  };
}

const names = (l: readonly RetentionLogfile[]) => l.map((x) => x.seq);

t.test('everybody on the newest logfile: all older ones go, versionlinks below N-1', async (t) => {
  const p = planLogRetention(input());
  t.same(names(p.deletable), [1, 2, 3, 4, 5, 6, 7]);
  t.equal(p.keepFromSeq, 8);
  t.equal(p.versionsBelow, 7, 'version-7-* stays for the chain check of a replica on 8');
  t.equal(p.heldBack, undefined, 'nobody holds anything back');
});

t.test('a paused secondary holds its replay logfile and everything after it', async (t) => {
  const p = planLogRetention(input({ replay: new Map([['alpha', replay(8)], ['beta', replay(3, 'alpha', 4096)]]) }));
  t.same(names(p.deletable), [1, 2]);
  t.equal(p.keepFromSeq, 3);
  t.equal(p.versionsBelow, 2, 'beta on 3 keeps version-2-* for its chain check');
  t.same(p.heldBack?.hosts, ['beta']);
  t.same([p.heldBack?.fromSeq, p.heldBack?.toSeq, p.heldBack?.count, p.heldBack?.bytes], [3, 7, 5, 5 * MiB]);
  t.equal(p.heldBack?.text, 'logfiles 3-7 (5.0 MiB) kept for beta (replay at log 3)');
});

t.test('the newest logfile is never deleted, even when every replay link is past it', async (t) => {
  const p = planLogRetention(input({ logfiles: logs(1, 5), replay: new Map([['alpha', replay(9)], ['beta', replay(9)]]) }));
  t.same(names(p.deletable), [1, 2, 3, 4]);
});

t.test('a member without a replay link blocks every deletion', async (t) => {
  const p = planLogRetention(input({ members: ['alpha', 'beta', 'gamma'] }));
  t.same(p.deletable, []);
  t.equal(p.keepFromSeq, undefined);
  t.equal(p.versionsBelow, undefined, 'no versionlink goes either');
  t.same(p.heldBack?.hosts, ['gamma']);
  t.match(p.heldBack?.text, /^logfiles 1-7 \(7\.0 MiB\) kept for gamma \(no replay link here: join-resource unfinished, or not yet propagated; never heard from gamma\)$/);
  t.match(p.reason, /gamma/);
});

t.test('a member with an unparsable replay link blocks every deletion', async (t) => {
  for (const garbled of ['log-000000003-alpha', 'log-3-alpha,0,0', 'log-000000003-alpha,-1,0', 'garbage', 'log-000000003-../x,0,0']) {
    const p = planLogRetention(input({ replay: new Map([['alpha', replay(8)], ['beta', garbled]]) }));
    t.same(p.deletable, [], `replay-beta = ${JSON.stringify(garbled)}`);
    t.match(p.heldBack?.text ?? '', /beta \(replay-beta is unparsable/);
  }
});

t.test('a replay link of a host that is no member any more still counts (conservative)', async (t) => {
  const p = planLogRetention(input({ members: ['alpha'], replay: new Map([['alpha', replay(8)], ['beta', replay(5)]]) }));
  t.same(names(p.deletable), [1, 2, 3, 4]);
  t.match(p.heldBack?.text ?? '', /beta \(replay at log 5, not a member any more\)/);
});

t.test('a secondary whose sync is not finished needs everything from its join point', async (t) => {
  const p = planLogRetention(input({ syncing: new Set(['beta']), replay: new Map([['alpha', replay(8)], ['beta', replay(4)]]) }));
  t.same(names(p.deletable), [1, 2, 3]);
  t.match(p.heldBack?.text ?? '', /kept for beta \(sync not finished, replays from log 4\)/);
  const lower = planLogRetention(input({ syncing: new Set(['beta']), syncpos: new Map([['beta', replay(2)]]), replay: new Map([['alpha', replay(8)], ['beta', replay(4)]]) }));
  t.same(names(lower.deletable), [1], 'a (strange) lower syncpos holds back more');
});

t.test('a peer not heard from recently: its link is used, and the text says it may be stale', async (t) => {
  const p = planLogRetention(input({ replay: new Map([['alpha', replay(8)], ['beta', replay(6)]]), heartbeatAgeS: new Map([['alpha', 1], ['beta', 300]]) }));
  t.same(names(p.deletable), [1, 2, 3, 4, 5], 'a stale link only moves forward: holding back by it is safe');
  t.match(p.heldBack?.text ?? '', /beta \(replay at log 6; not heard from for 300 s, so its replay link here may be stale: that only holds back more\)/);
  const never = planLogRetention(input({ replay: new Map([['alpha', replay(8)], ['beta', replay(6)]]), heartbeatAgeS: new Map([['alpha', 1]]) }));
  t.match(never.heldBack?.text ?? '', /never heard from beta/);
  const self = planLogRetention(input({ replay: new Map([['alpha', replay(2)], ['beta', replay(8)]]), heartbeatAgeS: new Map() }));
  t.notMatch(self.heldBack?.text ?? '', /stale|heard/, 'our own link is never stale');
});

t.test('recently modified logfiles are kept unless --force', async (t) => {
  const files = [...logs(1, 3), ...logs(4, 8, 'alpha', MiB, NOW - 10_000)];
  const p = planLogRetention(input({ logfiles: files }));
  t.same(names(p.deletable), [1, 2, 3]);
  t.same(names(p.keptRecent), [4, 5, 6, 7]);
  t.same(names(planLogRetention(input({ logfiles: files, force: true })).deletable), [1, 2, 3, 4, 5, 6, 7]);
  const none = planLogRetention(input({ logfiles: logs(1, 8, 'alpha', MiB, NOW - 10_000) }));
  t.match(none.reason, /modified within the last 120 s/);
});

t.test('three hosts: the text names the lowest; the held range ends where the next host needs', async (t) => {
  const p = planLogRetention(input({
    members: ['alpha', 'beta', 'gamma'],
    replay: new Map([['alpha', replay(8)], ['beta', replay(3)], ['gamma', replay(5)]]),
    heartbeatAgeS: new Map([['alpha', 1], ['beta', 1], ['gamma', 1]]),
  }));
  t.same(names(p.deletable), [1, 2]);
  t.same([p.heldBack?.hosts, p.heldBack?.fromSeq, p.heldBack?.toSeq], [['beta'], 3, 4]);
  const tie = planLogRetention(input({
    members: ['alpha', 'beta', 'gamma'],
    replay: new Map([['alpha', replay(8)], ['beta', replay(3)], ['gamma', replay(3)]]),
  }));
  t.same(tie.heldBack?.hosts, ['beta', 'gamma']);
});

t.test('no member, no replay link: nothing is known to be replayed', async (t) => {
  const p = planLogRetention(input({ members: [], replay: new Map() }));
  t.same(p.deletable, []);
  t.match(p.reason, /no member has a replay link/);
});

t.test('a secondary that has fetched less than the primary: its local files only', async (t) => {
  const p = planLogRetention(input({ self: 'beta', logfiles: logs(6, 7), replay: new Map([['alpha', replay(8)], ['beta', replay(8)]]) }));
  t.same(names(p.deletable), [6], 'its newest local copy stays until a newer one arrives');
});

t.test('cron purge fallback: old replicated tombstones, local ones after 2 x window, everything with --force', async (t) => {
  const nowUs = NOW * 1000;
  const tombs = [
    { path: 'resource-r0/log-000000001-alpha', stampUs: nowUs - 3600e6, replicated: true },
    { path: 'resource-r0/version-000000001-alpha', stampUs: nowUs - (TOMBSTONE_FALLBACK_AGE_S + 1) * 1e6, replicated: true },
    { path: 'userspace/x', stampUs: nowUs - 121e6, replicated: false },
    { path: 'userspace/y', stampUs: nowUs - 10e6, replicated: false },
  ];
  t.same(cronPurgeDecision(tombs, nowUs, 60, false), ['resource-r0/version-000000001-alpha', 'userspace/x'],
    'a replicated tombstone an hour old stays: marsd purges it once every member has seen it');
  t.equal(cronPurgeDecision(tombs, nowUs, 60, true).length, 4);
});

t.test('view: a detail line, --json and macros name who holds space back', async (t) => {
  const retention = planLogRetention(input({ replay: new Map([['alpha', replay(8)], ['beta', replay(3)]]) }));
  const v: ViewSnapshot = {
    res: 'db', host: 'alpha', sizeBytes: 1 << 30, designatedPrimary: 'alpha', members: ['alpha', 'beta'], clusterHosts: ['alpha', 'beta'],
    member: true, dataPath: '/dev/x', todo: { attach: true, connect: true, sync: true, replay: true },
    daemonRunning: true, heartbeatAgeS: 1, windowS: 60, syncstatusBytes: 1 << 30, replayLink: replay(8), syncPassed: true, splitBrain: undefined, primaryLink: undefined,
    actual: {
      isAttached: true, isPrimary: true, openCount: 0, replayCode: 0, errorMessage: undefined, writebackRestBytes: 0, isRecovering: false,
      recoveryRestBytes: 0, socket: undefined, isCopying: false, isSyncing: false, isReplaying: false, fetchRestBytes: 0, replayRestBytes: 0, syncRateBytesPerS: 0,
    },
    retention,
  };
  t.same(viewLines(v), ['db [2/2] UpToDate Replicating DCASFR Primary alpha', '    logfiles 3-7 (5.0 MiB) kept for beta (replay at log 3)']);
  t.match(viewJson(v), { logfiles: { keepFromSeq: 3, deletable: ['log-000000001-alpha', 'log-000000002-alpha'], deletableBytes: 2 * MiB, heldBack: { hosts: ['beta'], fromSeq: 3, toSeq: 7, count: 5, bytes: 5 * MiB } } });
  t.equal(MACROS['log-held-by']!(v), 'beta');
  t.equal(MACROS['log-held-bytes']!(v), String(5 * MiB));
  t.equal(MACROS['log-deletable-bytes']!(v), String(2 * MiB));
  const calm = { ...v, retention: planLogRetention(input()) };
  t.equal(viewLines(calm).length, 1, 'nothing unusual: no detail line');
  t.equal(MACROS['log-held-by']!(calm), '');
});
