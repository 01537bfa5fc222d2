// The actual-HOST/* links of a resource as a pure function of the runners' state
// (daemon/control/status-links.ts): the secondary's figures while it runs, the primary's
// otherwise; a draining primary still counts as primary; emergency mode's two links.
import t from 'tap';
import { statusLinks, type StatusState } from '../../daemon/control/status-links.js';

function state(over: Partial<StatusState> = {}): StatusState {
  return {
    host: 'alpha', phase: 'down', draining: false, secondary: undefined, diskOpen: false, openCount: 0, recoveryRestBytes: 0,
    writebackRestBytes: 0, failure: undefined, socketPath: '/run/mars/r0.sock', primaryWait: undefined, appState: 'none',
    stopHookConfigured: false, loggingMode: 'logging', emergency: { sinceMs: undefined, reason: undefined, hole: undefined },
    ...over,
  };
}

t.test('a running primary', async (t) => {
  const l = statusLinks(state({ phase: 'primary', diskOpen: true, openCount: 2, writebackRestBytes: 4096 }));
  t.match(l, {
    'is-primary': '1', 'if-on': '1', 'is-attached': '1', 'open-count': '2', 'writeback-rest': '4096', 'replay-code': '0',
    socket: '/run/mars/r0.sock', 'is-replaying': '0', 'has-emergency': '0', 'is-emergency': '0', 'msg-err-emergency': 'OK',
    'primary-wait': 'OK', 'has-app-stop': '0',
  });
  t.notOk('fetch-state' in l, 'no secondary figures beside the primary role');
});

t.test('a stepping-down primary counts as primary until writeback is complete', async (t) => {
  t.match(statusLinks(state({ phase: 'stopping', draining: true, diskOpen: true })), { 'is-primary': '1', socket: '/run/mars/r0.sock', 'replay-code': '1' });
  t.match(statusLinks(state({ phase: 'stopping', diskOpen: true })), { 'is-primary': '0', socket: '(none)' });
});

t.test('a failed start publishes its code and message', async (t) => {
  t.match(statusLinks(state({ phase: 'failed', failure: { code: -28, message: 'too small' } })), { 'replay-code': '-28', 'msg-err-replay-stop': 'too small' });
});

t.test('the secondary side while it runs', async (t) => {
  const l = statusLinks(state({
    primaryWait: 'waiting for alpha', appState: 'stop hook done (exit 0)', stopHookConfigured: true,
    secondary: {
      attached: true, copying: true, syncing: false, replaying: true, replayCode: '1', message: 'OK', fetchRestBytes: 10,
      replayRestBytes: 20, syncRateBytesPerS: 0, syncPosBytes: 8192, fetchRateBytesPerS: 4096, replayRateBytesPerS: 512, replayWait: 'replay paused', fetchState: '', why: '',
    },
  }));
  t.match(l, {
    'fetch-rate': '4096', 'replay-rate': '512', 'sync-pos': '8192', 'msg-inf-replay': 'replay paused', 'msg-inf-fetch': 'OK',
    'is-attached': '1', 'is-primary': '0', 'is-copying': '1', 'is-replaying': '1', 'fetch-rest': '10', 'replay-rest': '20',
    'fetch-state': 'off', 'secondary-why': 'OK', 'primary-wait': 'waiting for alpha', 'has-app-stop': '1', socket: '(none)',
  });
  t.notOk('is-recovering' in l);
});

t.test('emergency mode: decided (has-emergency) and in effect (is-emergency), with the hole in the message', async (t) => {
  const emergency = { sinceMs: 0, reason: 'full', hole: { endedSeq: 3, endPos: 100, holeSeq: 13, nextSeq: 14 } };
  t.match(statusLinks(state({ phase: 'primary', loggingMode: 'entering', emergency })), { 'has-emergency': '1', 'is-emergency': '0' });
  const l = statusLinks(state({ phase: 'primary', loggingMode: 'direct', emergency }));
  t.match(l, { 'has-emergency': '1', 'is-emergency': '1' });
  t.match(l['msg-err-emergency'], /since 1970-01-01T00:00:00.000Z \(full\).*log-000000003-alpha ended at 100 bytes, hole at 13, logging resumes in log-000000014-alpha/);
});
