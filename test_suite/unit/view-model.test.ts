import t from 'tap';
import { diskState, flags, replState, role, viewLines, type ViewSnapshot } from '../../marsadm/status/view-model.js';
import { MACROS } from '../../marsadm/status/macros.js';

function v(over: Partial<ViewSnapshot> = {}, actual: Partial<ViewSnapshot['actual']> = {}): ViewSnapshot {
  return {
    res: 'db', host: 'alpha', sizeBytes: 1 << 30, designatedPrimary: 'alpha', members: ['alpha'], clusterHosts: ['alpha'],
    member: true, dataPath: '/dev/x', todo: { attach: true, connect: true, sync: true, replay: true },
    daemonRunning: true, heartbeatAgeS: 1, windowS: 60, syncstatusBytes: 1 << 30, replayLink: 'log-000000002-alpha,0,0', syncPassed: true, splitBrain: undefined, primaryLink: undefined,
    ...over,
    actual: {
      isAttached: true, isPrimary: true, openCount: 0, replayCode: 0, errorMessage: undefined,
      writebackRestBytes: 0, isRecovering: false, recoveryRestBytes: 0, socket: '/run/mars/db.sock',
      isCopying: false, isSyncing: false, isReplaying: false, fetchRestBytes: 0, replayRestBytes: 0, syncRateBytesPerS: 0, ...actual,
    },
  };
}

t.test('a healthy primary', async (t) => {
  t.equal(viewLines(v())[0], 'db [1/1] UpToDate Replicating DCASFR Primary alpha');
  t.equal(MACROS['is-primary']!(v()), '1');
  t.equal(MACROS['is-consistent']!(v()), '1');
});

t.test('states a monitoring script must tell apart', async (t) => {
  t.equal(diskState(v({}, { writebackRestBytes: 4096 })), 'WriteBack[4096]');
  t.equal(MACROS['is-consistent']!(v({}, { writebackRestBytes: 4096 })), '0');
  t.equal(diskState(v({}, { isPrimary: false, isRecovering: true, recoveryRestBytes: 99 })), 'Recovery[99]');
  t.equal(diskState(v({}, { isPrimary: false, replayCode: -74, errorMessage: 'bad' })), 'DefectiveLog[code=-74]');
  t.equal(diskState(v({ todo: { attach: false, connect: true, sync: true, replay: true } }, { isAttached: false, isPrimary: false })), 'Detached');
  t.equal(diskState(v({ todo: { attach: false, connect: true, sync: true, replay: true } }, { isAttached: true })), 'Detaching');
  t.equal(diskState(v({ member: false, members: [] })), 'NotJoined');
  t.equal(replState(v({ daemonRunning: false })), 'DaemonNotRunning');
  t.equal(replState(v({ heartbeatAgeS: 600 })), 'UnResponsive');
  t.equal(replState(v({}, { isPrimary: false })), 'NotYetPrimary');
  t.equal(replState(v({ designatedPrimary: undefined }, { isPrimary: false })), 'NoPrimaryDesignated');
  t.equal(role(v({ designatedPrimary: undefined })), 'RemainsPrimary');
  t.equal(role(v({ designatedPrimary: 'beta' }, { isPrimary: false })), 'Secondary');
  t.equal(flags(v({ todo: { attach: true, connect: false, sync: true, replay: false } }, { isPrimary: false })), 'dCAS--');
});

t.test('unusual states get explanatory detail lines', async (t) => {
  const lines = viewLines(v({ daemonRunning: false }, { isPrimary: false, replayCode: -74, errorMessage: 'defective logfile X' }));
  t.ok(lines.some((l) => l.includes('ERROR: defective logfile X')));
  t.ok(lines.some((l) => l.includes('marsd is not running')));
  t.ok(viewLines(v({}, { openCount: 2 })).some((l) => l.includes('Opened by 2')));
});

t.test('a running sync shows where it is, not the durable syncstatus (which moves every 64 MiB)', async (t) => {
  const sec = { designatedPrimary: 'beta', members: ['alpha', 'beta'], syncstatusBytes: 0 };
  const syncing = { isPrimary: false, replayCode: 1, isSyncing: true, syncPosBytes: 3 << 28, syncRateBytesPerS: 1 << 20 };
  t.equal(diskState(v(sec, syncing)), 'Syncing[75%]');
  t.equal(MACROS['sync-pos']!(v(sec, syncing)), String(3 << 28));
  t.equal(MACROS['sync-percent']!(v(sec, syncing)), '75');
  t.equal(MACROS['sync-rest']!(v(sec, syncing)), String(1 << 28));
  t.equal(MACROS['sync-remain']!(v(sec, syncing)), '256');
  t.equal(MACROS['is-consistent']!(v(sec, syncing)), '0', 'consistency keeps to the durable mark');
  t.equal(flags(v(sec, syncing)).charAt(3), 's');
});

t.test('secondary states: syncing, inconsistent until replay passes the sync point, outdated while behind', async (t) => {
  const sec = { designatedPrimary: 'beta', members: ['alpha', 'beta'] };
  const idle = { isPrimary: false, replayCode: 1 };
  t.equal(diskState(v({ ...sec, syncstatusBytes: 1 << 29 }, { ...idle, isSyncing: true })), 'Syncing[50%]');
  t.equal(replState(v({ ...sec, syncstatusBytes: 1 << 29 }, idle)), 'Syncing');
  t.equal(diskState(v({ ...sec, syncPassed: false }, idle)), 'InConsistent');
  t.equal(MACROS['is-consistent']!(v({ ...sec, syncPassed: false }, idle)), '0');
  t.equal(diskState(v(sec, { ...idle, replayRestBytes: 100 })), 'Outdated[R]');
  t.equal(MACROS['replay-rest']!(v(sec, { ...idle, replayRestBytes: 100 })), '100');
  t.equal(diskState(v(sec, idle)), 'UpToDate');
  t.equal(replState(v(sec, idle)), 'Replaying');
});

t.test('a split brain is named with its common point and what each side wrote', async (t) => {
  const splitBrain = { common: { seq: 2, origin: 'alpha', pos: 200 }, sides: [{ hosts: ['alpha'], bytes: 330, records: '12' }, { hosts: ['beta'], bytes: 70, records: '?' }] };
  const lines = viewLines(v({ splitBrain }));
  t.match(lines.join('\n'), /SPLIT BRAIN: the histories diverge after log-000000002-alpha at 200 bytes; since then alpha wrote 330 bytes in 12 records; beta wrote 70 bytes in \? records/);
  t.match(lines.join('\n'), /marsadm invalidate db/);
  t.equal(MACROS['is-split-brain']!(v({ splitBrain })), '1');
  t.equal(MACROS['is-split-brain']!(v()), '0');
});

t.test('a secondary says when its link to the primary is down', async (t) => {
  const lines = viewLines(v({ host: 'beta', designatedPrimary: 'alpha', primaryLink: 'down connection lost: ECONNRESET' }, { isPrimary: false }));
  t.match(lines.join('\n'), /link to the primary alpha: down connection lost: ECONNRESET/);
  t.notMatch(viewLines(v({ host: 'beta', designatedPrimary: 'alpha', primaryLink: 'connected 127.0.0.1:1 since x' }, { isPrimary: false })).join('\n'), /link to the primary/);
});

t.test('emergency mode and /mars space in the view', async (t) => {
  const e = (o: Partial<NonNullable<ViewSnapshot['emergency']>> = {}): NonNullable<ViewSnapshot['emergency']> => ({
    spaceLevel: 0, restSpaceBytes: 1 << 20, totalSpaceBytes: 64 << 20, hasEmergency: false, isEmergency: false, message: undefined, primaryIsEmergency: false, ...o,
  });
  const primary = v({ emergency: e({ spaceLevel: 4, hasEmergency: true, isEmergency: true, message: 'emergency mode since T' }) });
  t.equal(diskState(primary), 'EmergencyMode');
  t.equal(replState(primary), 'EmergencyMode');
  t.equal(MACROS['is-emergency']!(primary), '1');
  t.equal(MACROS['has-emergency']!(primary), '1');
  t.equal(MACROS['emergency-level']!(primary), '4');
  t.equal(MACROS['rest-space-bytes']!(primary), String(1 << 20));
  t.equal(MACROS['rest-space']!(primary), '0', 'GiB, as MARS');
  const lines = viewLines(primary);
  t.equal(lines[0], 'db [1/1] EmergencyMode EmergencyMode DCASFR Primary alpha');
  t.ok(lines.some((l) => /EMERGENCY: emergency mode since T/.test(l)));
  t.ok(lines.some((l) => /\/mars space level 4: 1048576 of 67108864 bytes free; primaries stop logging/.test(l)));
  t.equal(MACROS['is-emergency']!(v({ emergency: e() })), '0');
  t.equal(diskState(v({ emergency: e({ spaceLevel: 2 }) })), 'UpToDate', 'a low level alone changes no state');

  const secondary = (over: Partial<ViewSnapshot> = {}, actual: Partial<ViewSnapshot['actual']> = {}) =>
    v({ host: 'beta', members: ['alpha', 'beta'], ...over }, { isPrimary: false, replayCode: 1, ...actual });
  const atHole = secondary({ emergency: e({ primaryIsEmergency: true }) }, { replayCode: -61, errorMessage: 'hole in the logfile sequence after 3' });
  t.equal(diskState(atHole), 'Orphan', 'stopped at the hole: consistent but outdated');
  t.equal(replState(atHole), 'Orphan');
  t.equal(MACROS['is-consistent']!(atHole), '1');
  t.equal(MACROS['is-orphan']!(atHole), '1');
  t.equal(MACROS['is-emergency']!(atHole), '1', 'the primary is in emergency mode');
  t.ok(viewLines(atHole).some((l) => /the primary alpha is in emergency mode/.test(l)));
  t.equal(replState(secondary({ emergency: e({ spaceLevel: 3 }) })), 'PausedFetch', 'space level 3 pauses fetching');
});
