// Rests and lags measured against the primary's newest logfile as this host knows it
// (common/resource/replication-progress.ts), and the view macros built on them.
import t from 'tap';
import { percent, progress, remainS, type ProgressFacts } from '../../common/resource/replication-progress.js';
import { diskState, replState, type ViewSnapshot } from '../../marsadm/status/view-model.js';
import { MACROS, viewJson } from '../../marsadm/status/macros.js';
import { readProgressFacts } from '../../common/resource/read-progress.js';
import { TreeStore } from '../../common/tree/store.js';
import { resPaths, resourceDir } from '../../common/tree/paths.js';
import { tempDir } from '../helpers/tmp.js';
import { writeFileSync } from 'node:fs';
import { encodeRecord, MAX_RECORD_BYTES, RecordCode } from '../../common/log/record.js';
import { formatReplayLink, formatVersionLink } from '../../common/log/links.js';

const NOW = 1_000_000;

function facts(over: Partial<ProgressFacts> = {}): ProgressFacts {
  return {
    nowS: NOW, windowS: 60, isPrimaryHere: false,
    primaryEnd: { seq: 2, origin: 'alpha', pos: 5000, stampS: NOW - 1 },
    primaryHeartbeatS: NOW - 2,
    logs: [{ seq: 2, origin: 'alpha', localBytes: 5000, originBytes: 5000 }],
    replay: { seq: 2, origin: 'alpha', pos: 5000, stampS: NOW - 1 },
    nextRecordStampS: undefined,
    lastFetchS: NOW - 1,
    sync: { doneBytes: 1 << 20, sizeBytes: 1 << 20, stampS: NOW - 100, rateBytesPerS: 0 },
    fetchRateBytesPerS: 0, replayRateBytesPerS: 0,
    ...over,
  };
}

t.test('caught up: every rest and lag is 0', async (t) => {
  const p = progress(facts());
  t.same([p.fetchRest, p.replayRest, p.workRest, p.fetchLagS, p.replayLagS, p.stale], [0, 0, 0, 0, 0, false]);
});

t.test('after a log-rotate the new logfile counts although nothing of it is here yet (regression)', async (t) => {
  // The primary rotated to log 3 and logged 1000 bytes there; this host holds all of log 2
  // and has replayed it, its fetcher has not started log 3: the rest is not 0.
  const p = progress(facts({
    primaryEnd: { seq: 3, origin: 'alpha', pos: 1000, stampS: NOW - 1 },
    logs: [{ seq: 2, origin: 'alpha', localBytes: 5000, originBytes: 5000 }, { seq: 3, origin: 'alpha', localBytes: undefined, originBytes: 1000 }],
    lastFetchS: NOW - 20,
  }));
  t.equal(p.fetchRest, 1000);
  t.equal(p.replayRest, 1000);
  t.equal(p.workRest, 0);
  t.equal(p.fetchLagS, 20, 'upper bound: the last time the local copies grew');
  t.equal(p.replayLagS, 20, 'not fetched yet: as old as the fetch lag');
});

t.test('a fetcher trailing the primary: fetch-lag is the age of the newest record copied, not 0 (regression)', async (t) => {
  // The copies grow all the time (mtime now) but hold only writes up to 25 s old.
  const p = progress(facts({
    primaryEnd: { seq: 2, origin: 'alpha', pos: 9000, stampS: NOW },
    logs: [{ seq: 2, origin: 'alpha', localBytes: 5000, originBytes: 9000 }],
    lastFetchS: NOW,
    newestFetchedStampS: () => NOW - 25,
  }));
  t.equal(p.fetchRest, 4000);
  t.equal(p.fetchLagS, 25);
  const caughtUp = progress(facts({ newestFetchedStampS: () => { throw new Error('read although fetch-rest is 0'); } }));
  t.equal(caughtUp.fetchLagS, 0, 'caught up: 0, and the copy is not read');
});

t.test('fetch-lag from a real copy cut in the middle of a record (regression: it was about 0 while the copy grew)', async (t) => {
  const tree = new TreeStore(tempDir(t));
  tree.ensureDir(resourceDir('db'));
  tree.write(resPaths.primary('db'), 'alpha');
  const nowS = Math.floor(Date.now() / 1000);
  // 20 records of 4 KiB, one a second, from 40 s ago; the copy holds 12 and a half of them.
  const file = Buffer.alloc(20 * MAX_RECORD_BYTES);
  let at = 0;
  const ends: number[] = [];
  for (let i = 0; i < 20; i++) {
    at += encodeRecord(file, at, { devicePos: i * 4096, code: RecordCode.WriteNew, stampSec: nowS - 40 + i, stampNsec: 0, seqNr: i + 1, payload: Buffer.alloc(4096, i + 1) });
    ends.push(at);
  }
  const copyBytes = ends[11]! + 2000;
  writeFileSync(tree.abs(resPaths.log('db', 1, 'alpha')), file.subarray(0, copyBytes));
  tree.write(resPaths.version('db', 1, 'alpha'), formatVersionLink({ digest: 'a'.repeat(32), seq: 1, origin: 'alpha', logPos: ends[19]!, prev: '' }));
  tree.write(resPaths.replay('db', 'beta'), formatReplayLink({ seq: 1, origin: 'alpha', minPos: ends[3]!, len: 0 }));
  const p = progress(readProgressFacts(tree, 'db', 'beta', 60, nowS));
  t.equal(p.fetchRest, ends[19]! - copyBytes);
  t.equal(p.fetchLagS, 29, 'the 12th record (stamp now - 29) is the newest complete one here');
  t.equal(p.replayLagS, 36, 'replay-lag: the first record not applied (the 5th, now - 36)');
  writeFileSync(tree.abs(resPaths.log('db', 1, 'alpha')), file.subarray(0, 50));
  const torn = progress(readProgressFacts(tree, 'db', 'beta', 60, nowS));
  t.ok(torn.fetchLagS >= 0 && torn.fetchLagS < 5, `no complete record here: since the copy last grew (${torn.fetchLagS})`);
});

t.test('replay paused while the primary writes: replay-lag is the age of the first record not applied', async (t) => {
  const p = progress(facts({
    primaryEnd: { seq: 2, origin: 'alpha', pos: 9000, stampS: NOW },
    logs: [{ seq: 2, origin: 'alpha', localBytes: 9000, originBytes: 9000 }],
    replay: { seq: 2, origin: 'alpha', pos: 5000, stampS: NOW - 30 },
    nextRecordStampS: NOW - 29.5,
    lastFetchS: NOW,
  }));
  t.equal(p.fetchRest, 0);
  t.equal(p.replayRest, 4000);
  t.equal(p.workRest, 4000);
  t.equal(p.replayLagS, 29.5);
  t.equal(p.replayAgeS, 30);
});

t.test('replay-rest is never below fetch-rest (regression: "fetch-rest 23541760, replay-rest 0" on UpToDate)', async (t) => {
  const p = progress(facts({
    primaryEnd: { seq: 2, origin: 'alpha', pos: 5000 + 23541760, stampS: NOW },
    logs: [{ seq: 2, origin: 'alpha', localBytes: 5000, originBytes: 5000 + 23541760 }],
  }));
  t.equal(p.fetchRest, 23541760);
  t.equal(p.replayRest, 23541760);
});

t.test('knowledge of the primary older than --window: stale (rests are lower bounds)', async (t) => {
  t.equal(progress(facts({ primaryHeartbeatS: NOW - 61 })).stale, true);
  t.equal(progress(facts({ primaryHeartbeatS: undefined })).stale, true);
  t.equal(progress(facts({ primaryHeartbeatS: NOW - 59 })).stale, false);
  t.equal(progress(facts({ isPrimaryHere: true, primaryHeartbeatS: undefined })).stale, false);
});

t.test('ETA and percent', async (t) => {
  t.equal(remainS(0, 0), 0);
  t.equal(remainS(1000, 0), -1);
  t.equal(remainS(1000, 300), 4);
  t.equal(percent(1, 3), 33);
  t.equal(percent(3, 3), 100);
  t.equal(percent(0, 0), 100);
});

function snap(over: Partial<ViewSnapshot> = {}, actual: Partial<ViewSnapshot['actual']> = {}): ViewSnapshot {
  return {
    res: 'db', host: 'beta', sizeBytes: 1 << 20, designatedPrimary: 'alpha', members: ['alpha', 'beta'], clusterHosts: ['alpha', 'beta'],
    member: true, dataPath: '/dev/x', todo: { attach: true, connect: true, sync: true, replay: true },
    daemonRunning: true, heartbeatAgeS: 1, windowS: 60, syncstatusBytes: 1 << 20, replayLink: 'log-000000002-alpha,5000,0', syncPassed: true, splitBrain: undefined, primaryLink: undefined,
    progress: progress(facts()),
    ...over,
    actual: {
      isAttached: true, isPrimary: false, openCount: 0, replayCode: 1, errorMessage: undefined,
      writebackRestBytes: 0, isRecovering: false, recoveryRestBytes: 0, socket: undefined,
      isCopying: true, isSyncing: false, isReplaying: true, fetchRestBytes: 0, replayRestBytes: 0, syncRateBytesPerS: 0, ...actual,
    },
  };
}

t.test('view-replay-lag is measured, not a constant (regression: it always printed 0)', async (t) => {
  const p = progress(facts({ replay: { seq: 2, origin: 'alpha', pos: 1000, stampS: NOW - 12 }, nextRecordStampS: NOW - 12.3 }));
  t.equal(MACROS['replay-lag']!(snap({ progress: p })), '12.3');
  t.equal(MACROS['replay-rest']!(snap({ progress: p })), '4000');
  t.equal(diskState(snap({ progress: p })), 'Outdated[R]');
  t.equal(MACROS['replay-lag']!(snap()), '0.0');
});

t.test('a replica with bytes left to fetch is not UpToDate (regression)', async (t) => {
  // Without a primary-based measurement (the daemon's own figures only), fetch-rest alone counts too.
  t.equal(diskState(snap({ progress: undefined }, { fetchRestBytes: 23541760, replayRestBytes: 0 })), 'Outdated[F]');
});

t.test('PausedSync only while something is left to sync (regression)', async (t) => {
  const off = { attach: true, connect: true, sync: false, replay: true };
  t.equal(replState(snap({ todo: off })), 'Replaying');
  t.equal(replState(snap({ todo: off, syncstatusBytes: 4096 })), 'PausedSync');
});

t.test('MARS names, aliases, COMMSTATE, ForcedPrimary and messages', async (t) => {
  t.equal(MACROS['is-attach']!(snap()), '1');
  t.equal(MACROS['is-attached']!(snap()), '1', 'old name stays as an alias');
  t.equal(MACROS['is-fetch']!(snap()), MACROS['is-fetching']!(snap()));
  t.equal(MACROS.commstate!(snap()), '');
  const stale = snap({ progress: progress(facts({ primaryHeartbeatS: NOW - 300 })) });
  t.equal(MACROS.commstate!(stale), 'PrimaryUnreachable[300s]');
  t.equal(replState(stale), 'PrimaryUnreachable');
  t.equal(MACROS['is-alive']!(stale), '0', 'MARS: the primary is alive when its heartbeat is within --window');
  t.equal(MACROS['is-local-alive']!(stale), '1');
  const forced = snap({ host: 'alpha', primaryMode: 'force', progress: progress(facts({ isPrimaryHere: true })) }, { isPrimary: true });
  t.equal(MACROS.role!(forced), 'ForcedPrimary');
  t.equal(MACROS.role!(snap({ otherActualPrimaries: ['alpha'] }, { isPrimary: true })), 'ForcedPrimary');
  const msgs = snap({ messages: { 'msg-err-replay-stop': 'bad record', 'msg-inf-fetch': 'fetching x' } });
  t.equal(MACROS['msg-err']!(msgs), 'err-replay-stop: bad record');
  t.equal(MACROS['msg-inf']!(msgs), 'inf-fetch: fetching x');
  t.equal(MACROS['err-count']!(msgs), '1');
  const json = viewJson(snap()) as { macros: Record<string, string> };
  t.same(Object.keys(json.macros).sort(), Object.keys(MACROS).sort(), 'view --json carries every macro');
});

t.test('sync-age and sync-lag follow a running sync\'s position, not the 64 MiB syncstatus steps (regression)', async (t) => {
  const tree = new TreeStore(tempDir(t));
  tree.ensureDir(resourceDir('db'));
  tree.ensureDir(resPaths.actualDir('db', 'beta'));
  tree.write(resPaths.primary('db'), 'alpha');
  tree.write(resPaths.size('db'), String(256 << 20));
  const nowS = Date.now() / 1000;
  // syncstatus last moved 100 s ago (64 MiB); the worker has been moving since.
  tree.write(resPaths.syncstatus('db', 'beta'), String(64 << 20), { stampUs: Math.round((nowS - 100) * 1e6) });
  tree.write(resPaths.actual('db', 'beta', 'is-syncing'), '1');
  tree.write(resPaths.actual('db', 'beta', 'sync-pos'), String(120 << 20));
  const p = progress(readProgressFacts(tree, 'db', 'beta', 60, nowS));
  t.equal(p.syncRest, 136 << 20, 'the running position counts');
  t.ok(p.syncAgeS! < 5 && p.syncLagS < 5, `a moving sync is not 100 s behind (age ${p.syncAgeS}, lag ${p.syncLagS})`);
  tree.write(resPaths.actual('db', 'beta', 'is-syncing'), '0');
  const stopped = progress(readProgressFacts(tree, 'db', 'beta', 60, nowS));
  t.equal(stopped.syncRest, 192 << 20, 'a stopped sync: only syncstatus (durable) counts');
  t.ok(stopped.syncLagS >= 99, `and its lag is the time since syncstatus moved (${stopped.syncLagS})`);
});
