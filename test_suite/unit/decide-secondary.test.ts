import t from 'tap';
import { decideSecondary } from '../../daemon/control/decide-secondary.js';
import type { ResourceSnapshot } from '../../common/resource/snapshot.js';

const SIZE = 1 << 20;
function snap(over: Partial<ResourceSnapshot> = {}): ResourceSnapshot {
  return {
    name: 'r0', sizeBytes: SIZE, designatedPrimary: 'alpha', dataPath: '/dev/x',
    todo: { attach: true, connect: true, sync: true, 'allow-replay': true },
    replayLink: 'log-000000001-alpha,0,0', syncstatusBytes: SIZE, logfiles: [], signature: 's', emergencyLimitPercent: 0,
    primaryMode: 'planned', activePrimaries: [], versionLinks: [], maxnr: 1, invalidateRequest: undefined, wantPrimaryRequest: undefined,
    ...over,
  };
}
const todo = (o: Partial<ResourceSnapshot['todo']>) => ({ attach: true, connect: true, sync: true, 'allow-replay': true, ...o });

t.test('a synced secondary fetches and replays', async (t) => {
  t.same(decideSecondary(snap(), 'beta'), { disk: true, fetch: true, sync: false, replay: true, repairOnly: false, why: '' });
});

t.test('the designated primary and non-members run no secondary work', async (t) => {
  t.notOk(decideSecondary(snap(), 'alpha').disk);
  t.notOk(decideSecondary(snap({ dataPath: undefined }), 'beta').disk);
  t.notOk(decideSecondary(snap({ todo: todo({ attach: false }) }), 'beta').disk);
});

t.test('an unfinished sync runs first; replay waits for it', async (t) => {
  const p = decideSecondary(snap({ syncstatusBytes: 4096 }), 'beta');
  t.same([p.sync, p.replay, p.fetch], [true, false, true]);
  t.match(p.why, /replay waits for the sync/);
  const paused = decideSecondary(snap({ syncstatusBytes: 0, todo: todo({ sync: false }) }), 'beta');
  t.same([paused.sync, paused.replay], [false, false]);
  t.match(paused.why, /sync paused/);
  const noPrimary = decideSecondary(snap({ syncstatusBytes: 0, designatedPrimary: undefined }), 'beta');
  t.notOk(noPrimary.sync);
  t.match(noPrimary.why, /no designated primary/);
});

t.test('switches pause fetch and replay independently', async (t) => {
  t.same(decideSecondary(snap({ todo: todo({ connect: false }) }), 'beta').fetch, false);
  const paused = decideSecondary(snap({ todo: todo({ 'allow-replay': false }) }), 'beta');
  t.same([paused.replay, paused.repairOnly], [false, true], 'a paused replayer still repairs a crash window');
  t.same(decideSecondary(snap({ syncstatusBytes: 0 }), 'beta').repairOnly, false, 'never while the sync writes the disk');
});

t.test('a designated primary completing the previous primary\'s history fetches and replays, never syncs', async (t) => {
  const plan = decideSecondary(snap({ designatedPrimary: 'beta' }), 'beta', { handover: 'waiting for alpha to leave the primary role' });
  t.same({ disk: plan.disk, fetch: plan.fetch, sync: plan.sync, replay: plan.replay }, { disk: true, fetch: true, sync: false, replay: true });
  t.match(plan.why, /becoming primary: waiting for alpha/);
  const unsynced = decideSecondary(snap({ designatedPrimary: 'beta', syncstatusBytes: 0 }), 'beta', { handover: 'x' });
  t.equal(unsynced.sync, false, 'no sync during a takeover');
  t.equal(unsynced.replay, false, 'an unsynced disk is not replayed');
});
