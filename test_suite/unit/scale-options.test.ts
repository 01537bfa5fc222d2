// Options of the scale bench (test_suite/bench/scale-options.ts): every bad value is refused
// with a message that names the option.
import t from 'tap';
import { countJoinProblems } from '../bench/scale-join.js';
import { parseScaleConfigs, parseScaleOptions, SCALE_DEFAULTS } from '../bench/scale-options.js';
import { settledResources } from '../bench/scale.js';

t.test('defaults and single values', async (t) => {
  const o = parseScaleOptions(['--suite', 'scale']);
  t.same(o.configs, [{ resources: SCALE_DEFAULTS.resources, logfiles: SCALE_DEFAULTS.logfiles }]);
  t.equal(o.windowS, 60);
  t.equal(o.handover, false);
  t.equal(o.writeDocs, true);
  const p = parseScaleOptions(['--suite', 'scale', '--scale-resources', '30', '--scale-logfiles', '200', '--scale-window', '30', '--scale-handover', '--no-write-docs']);
  t.same(p.configs, [{ resources: 30, logfiles: 200 }]);
  t.equal(p.windowS, 30);
  t.equal(p.handover, true);
  t.equal(p.writeDocs, false);
});

t.test('a configuration list', async (t) => {
  t.same(parseScaleConfigs('100x1000, 1000x10'), [{ resources: 100, logfiles: 1000 }, { resources: 1000, logfiles: 10 }]);
  t.throws(() => parseScaleConfigs(''), /at least one RxL/);
  t.throws(() => parseScaleConfigs('100x'), /"100x" is not RxL/);
  t.throws(() => parseScaleConfigs('0x10'), /resources must be from 1/);
  t.throws(() => parseScaleConfigs('10x0'), /logfiles must be from 1/);
});

t.test('bad values name the option', async (t) => {
  const bad: [string[], RegExp][] = [
    [['--scale-resources', 'ten'], /--scale-resources must be a whole number/],
    [['--scale-resources', '0'], /--scale-resources must be from 1/],
    [['--scale-logfiles=-5'], /--scale-logfiles must be a whole number/],
    [['--scale-window', '0'], /--scale-window must be from 1/],
    [['--scale-window', '1.5'], /--scale-window must be a whole number/],
    [['--scale-settle-timeout', '5'], /--scale-settle-timeout must be from 10/],
    [['--scale-configs', '10x10', '--scale-resources', '5'], /either --scale-configs or/],
    [['--scale-join=-1'], /--scale-join must be a whole number/],
    [['--scale-join', '1001'], /--scale-join must be from 0 to 1000/],
    [['--scale-join', '10', '--scale-join-mib', '0'], /--scale-join-mib must be from 1/],
  ];
  for (const [args, re] of bad) t.throws(() => parseScaleOptions(['--suite', 'scale', ...args]), re, args.join(' '));
  t.throws(() => parseScaleOptions(['--suite', 'scale', '--scale-windw', '5']), /Unknown option/, 'unknown options are refused');
  t.throws(() => parseScaleOptions(['--suite', 'write']), /cannot be combined/);
});

t.test('a resource counts as settled only when UpToDate and replicated in its role', async (t) => {
  const ok = { resource: 'r0', diskstate: 'UpToDate', replstate: 'Replicating', isPrimary: true, fetchRest: 0, replayRest: 0, splitBrain: null, error: null, daemonRunning: true };
  const sec = { ...ok, replstate: 'Replaying', isPrimary: false };
  t.equal(settledResources([ok, { ...ok, resource: 'r1' }], true), 2);
  t.equal(settledResources([ok, { ...ok, error: 'stopped' }], true), 1, 'an error is not settled');
  t.equal(settledResources([sec], false), 1);
  t.equal(settledResources([{ ...sec, replayRest: 4096 }], false), 0, 'replay still to do');
  t.equal(settledResources([{ ...sec, diskstate: 'Inconsistent' }], false), 0, 'an inconsistent replica');
  t.equal(settledResources([{ ...sec, daemonRunning: false }], false), 0, 'marsd not running');
  t.equal(settledResources([ok], false), 0, 'a primary does not count as the secondary');
});

t.test('the join part: off by default, N resources of M MiB when asked', async (t) => {
  const off = parseScaleOptions(['--suite', 'scale']);
  t.equal(off.joinResources, 0);
  const on = parseScaleOptions(['--suite', 'scale', '--scale-join', '100', '--scale-join-mib', '8']);
  t.equal(on.joinResources, 100);
  t.equal(on.joinDeviceBytes, 8 * 2 ** 20);
});

t.test('the join part counts lost connections, refusals and restarted syncs in both logs', async (t) => {
  const h1 = [
    '2026-12-06T23:00:00.000Z marsd[1] info: r3: primary; logging to log-000000001-h1',
    '2026-12-06T23:00:01.000Z marsd[1] warn: peer h2 (tcp 127.0.0.3:7): connection lost: h2 closed the connection',
  ].join('\n');
  const h2 = [
    '2026-12-06T23:00:02.000Z marsd[2] warn: fetching log-000000001-h1 failed: h1: more than 64 requests at once (EBUSY)',
    '2026-12-06T23:00:03.000Z marsd[2] warn: r7: sync interrupted (connection lost); resuming at 1048576 bytes',
    '2026-12-06T23:00:04.000Z marsd[2] error: r7: something else',
  ].join('\n');
  const c = countJoinProblems([h1, h2]);
  t.equal(c.connectionsLost, 1);
  t.equal(c.busyRefusals, 1);
  t.equal(c.syncRestarts, 1);
  t.equal(c.warnLines, 3);
  t.equal(c.errorLines, 1);
  t.equal(c.sampleLines.length, 4, 'distinct problem lines without time stamps');
  t.same(countJoinProblems(['2026-12-06T23:00:00.000Z marsd[1] info: all fine']), { connectionsLost: 0, busyRefusals: 0, syncRestarts: 0, warnLines: 0, errorLines: 0, sampleLines: [] });
});
