// marsadm check: Nagios codes decided from the macros (marsadm/status/check-model.ts).
import t from 'tap';
import { checkResource, NAGIOS } from '../../marsadm/status/check-model.js';
import { progress, type ProgressFacts } from '../../common/resource/replication-progress.js';
import type { ViewSnapshot } from '../../marsadm/status/view-model.js';

const NOW = 2_000_000;
const facts = (o: Partial<ProgressFacts> = {}): ProgressFacts => ({
  nowS: NOW, windowS: 60, isPrimaryHere: false, primaryEnd: { seq: 2, origin: 'alpha', pos: 100, stampS: NOW }, primaryHeartbeatS: NOW - 1,
  logs: [{ seq: 2, origin: 'alpha', localBytes: 100, originBytes: 100 }], replay: { seq: 2, origin: 'alpha', pos: 100, stampS: NOW },
  nextRecordStampS: undefined, lastFetchS: NOW, sync: { doneBytes: 1, sizeBytes: 1, stampS: NOW, rateBytesPerS: 0 }, fetchRateBytesPerS: 0, replayRateBytesPerS: 0, ...o,
});

function v(over: Partial<ViewSnapshot> = {}): ViewSnapshot {
  return {
    res: 'db', host: 'beta', sizeBytes: 1, designatedPrimary: 'alpha', members: ['alpha', 'beta'], clusterHosts: ['alpha', 'beta'], member: true, dataPath: '/dev/x',
    todo: { attach: true, connect: true, sync: true, replay: true }, daemonRunning: true, heartbeatAgeS: 1, windowS: 60, syncstatusBytes: 1,
    replayLink: undefined, primaryLink: undefined, splitBrain: undefined, syncPassed: true, progress: progress(facts()),
    actual: { isAttached: true, isPrimary: false, openCount: 0, replayCode: 1, errorMessage: undefined, writebackRestBytes: 0, isRecovering: false, recoveryRestBytes: 0, socket: undefined, isCopying: true, isSyncing: false, isReplaying: true, fetchRestBytes: 0, replayRestBytes: 0, syncRateBytesPerS: 0 },
    ...over,
  };
}

t.test('expected codes by state', async (t) => {
  const table: [string, ViewSnapshot, number, RegExp][] = [
    ['healthy replica', v(), NAGIOS.OK, /^MARS OK - db: UpToDate Replaying Secondary \| replay_lag=0.0s;60;300/],
    ['replay lag over the warning limit', v({ progress: progress(facts({ primaryEnd: { seq: 2, origin: 'alpha', pos: 900, stampS: NOW }, logs: [{ seq: 2, origin: 'alpha', localBytes: 900, originBytes: 900 }], nextRecordStampS: NOW - 90 })) }), NAGIOS.WARNING, /lag 90 s >= 60 s/],
    ['replay lag over the critical limit', v({ progress: progress(facts({ primaryEnd: { seq: 2, origin: 'alpha', pos: 900, stampS: NOW }, logs: [{ seq: 2, origin: 'alpha', localBytes: 900, originBytes: 900 }], nextRecordStampS: NOW - 400 })) }), NAGIOS.CRITICAL, /lag 400 s >= 300 s/],
    ['split brain', v({ splitBrain: { common: { seq: 1, origin: 'alpha', pos: 0 }, sides: [] } }), NAGIOS.CRITICAL, /split brain/],
    ['primary unreachable', v({ progress: progress(facts({ primaryHeartbeatS: NOW - 500 })) }), NAGIOS.CRITICAL, /primary unreachable/],
    ['replay switched off', v({ todo: { attach: true, connect: true, sync: true, replay: false } }), NAGIOS.WARNING, /a switch is off/],
    ['marsd down', v({ daemonRunning: false }), NAGIOS.CRITICAL, /marsd is not running/],
    ['not a member', v({ member: false, members: ['alpha'] }), NAGIOS.UNKNOWN, /not a member/],
  ];
  for (const [what, snap, code, line] of table) {
    const r = checkResource(snap);
    t.equal(r.code, code, `${what}: code`);
    t.match(r.line, line, `${what}: line`);
    t.notMatch(r.line, /\n/, 'one line');
  }
});
