import t from 'tap';
import {
  decidePrimaryEmergency, holeNumbers, limitSecondaryPlan, nextSpaceLevel, parseSpaceLevels, rawSpaceLevel,
  replayedCopies, resolveThresholdsBytes, secondarySpaceLimits,
} from '../../daemon/control/decide-emergency.js';
import { parseSize } from '../../common/config.js';
import type { SecondaryPlan } from '../../daemon/control/decide-secondary.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const size = (s: string) => parseSize(s, 'test');

t.test('default thresholds: MARS values on a large /mars, a share of a small one', async (t) => {
  t.same(resolveThresholdsBytes(undefined, 1000 * GiB), [8 * GiB, 6 * GiB, 4 * GiB, 2 * GiB]);
  t.same(resolveThresholdsBytes(undefined, 100 * MiB), [8 * MiB, 6 * MiB, 4 * MiB, 2 * MiB]);
});

t.test('--space-levels: sizes and percentages, kept in order', async (t) => {
  const spec = parseSpaceLevels('12M,10%,8M,2%', size);
  t.same(resolveThresholdsBytes(spec, 100 * MiB), [12 * MiB, 10 * MiB, 8 * MiB, 2 * MiB]);
  // A later level above an earlier one is capped: levels never overlap the wrong way.
  t.same(resolveThresholdsBytes(parseSpaceLevels('1M,5M,0,0', size), 100 * MiB), [1 * MiB, 1 * MiB, 0, 0]);
  t.throws(() => parseSpaceLevels('1M,2M', size), /4 comma-separated/);
  t.throws(() => parseSpaceLevels('1M,2M,3M,150%', size), /percentage/);
  t.throws(() => parseSpaceLevels('1M,2M,3M,lots', size), /invalid/);
});

t.test('the level is the highest threshold the free space is below', async (t) => {
  const th = [8, 6, 4, 2].map((m) => m * MiB);
  t.equal(rawSpaceLevel(100 * MiB, th), 0);
  t.equal(rawSpaceLevel(7 * MiB, th), 1);
  t.equal(rawSpaceLevel(5 * MiB, th), 2);
  t.equal(rawSpaceLevel(3 * MiB, th), 3);
  t.equal(rawSpaceLevel(1 * MiB, th), 4);
  t.equal(rawSpaceLevel(0, th), 4);
  t.equal(rawSpaceLevel(0, [0, 0, 0, 0]), 0, 'all thresholds 0: levels off');
});

t.test('hysteresis: up at once, down one step per round', async (t) => {
  let level = 0;
  level = nextSpaceLevel(level, 4);
  t.equal(level, 4);
  const seen: number[] = [];
  for (let round = 0; round < 6; round++) seen.push((level = nextSpaceLevel(level, 0)));
  t.same(seen, [3, 2, 1, 0, 0, 0]);
  t.equal(nextSpaceLevel(3, 0, false), 3, 'no fall before the round is over');
  t.equal(nextSpaceLevel(2, 4, false), 4, 'a rise never waits');
});

t.test('a primary enters emergency mode at level 4 and leaves it only at level 0', async (t) => {
  t.equal(decidePrimaryEmergency(3, 'logging'), 'none');
  t.equal(decidePrimaryEmergency(4, 'logging'), 'enter');
  t.equal(decidePrimaryEmergency(4, 'entering'), 'none');
  t.equal(decidePrimaryEmergency(0, 'entering'), 'none', 'the switch finishes first');
  for (const level of [1, 2, 3, 4]) t.equal(decidePrimaryEmergency(level, 'direct'), 'none', `stays at level ${level}`);
  t.equal(decidePrimaryEmergency(0, 'direct'), 'leave');
  t.equal(decidePrimaryEmergency(0, 'resuming'), 'none');
  // Round by round: after ENOSPC the level is 4; space freed; four rounds later logging resumes.
  let level = 4;
  const actions: string[] = [];
  for (let round = 0; round < 5; round++) {
    level = nextSpaceLevel(level, 0);
    actions.push(decidePrimaryEmergency(level, 'direct'));
  }
  t.same(actions, ['none', 'none', 'none', 'leave', 'leave']);
});

const plan: SecondaryPlan = { disk: true, fetch: true, sync: false, replay: true, repairOnly: false, why: '' };

t.test('secondaries: delete replayed copies from level 2, stop fetching from level 3', async (t) => {
  t.same(secondarySpaceLimits(1), { deleteReplayedCopies: false, pauseFetch: false });
  t.same(secondarySpaceLimits(2), { deleteReplayedCopies: true, pauseFetch: false });
  t.same(secondarySpaceLimits(3), { deleteReplayedCopies: true, pauseFetch: true });
  t.same(limitSecondaryPlan(plan, 2), plan);
  const paused = limitSecondaryPlan(plan, 3);
  t.equal(paused.fetch, false);
  t.equal(paused.replay, true, 'replay goes on with what was fetched');
  t.match(paused.why, /fetch paused: \/mars space level 3/);
  t.match(limitSecondaryPlan({ ...plan, why: 'replay paused' }, 4).why, /^replay paused; fetch paused/);
  t.same(limitSecondaryPlan({ ...plan, fetch: false, why: 'fetch paused' }, 4), { ...plan, fetch: false, why: 'fetch paused' });
});

t.test('only copies of foreign logfiles below the replay link are deletable', async (t) => {
  const copies = [
    { seq: 3, origin: 'alpha', name: 'log-000000003-alpha' },
    { seq: 4, origin: 'beta', name: 'log-000000004-beta' },
    { seq: 5, origin: 'alpha', name: 'log-000000005-alpha' },
    { seq: 6, origin: 'alpha', name: 'log-000000006-alpha' },
  ];
  t.same(replayedCopies('beta', 6, copies).map((c) => c.name), ['log-000000003-alpha', 'log-000000005-alpha'],
    'not the one being replayed, not this host\'s own logfile');
  t.same(replayedCopies('beta', undefined, copies), [], 'no replay link: nothing is known to be replayed');
  t.same(replayedCopies('beta', 3, copies), []);
});

t.test('the hole: ten numbers above everything ever used', async (t) => {
  t.same(holeNumbers(7, 7), { holeSeq: 17, nextSeq: 18 });
  t.same(holeNumbers(7, 30), { holeSeq: 40, nextSeq: 41 });
});
