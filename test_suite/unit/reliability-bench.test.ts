// The reliability bench suite's parsing and rendering (test_suite/bench/reliability.ts): the
// figures come from the tools' real summary lines, a run without one shows "unknown", and the
// generated table replaces only the text between its markers.
import t from 'tap';
import { BEGIN_MARK, END_MARK, commandOf, parseFigures, parseReliabilityOptions, renderSection, spliceSection, violationsOf, type PartRecord } from '../bench/reliability.js';

const machine = { cpuModel: 'cpu', cores: 2, gitCommit: 'abc1234', loadAvgAtStart: [1.5], loadAvgAtEnd: [2] };
const record = (part: PartRecord['part'], output: string, exitCode = 0): PartRecord => ({
  part, command: 'cmd', startedAt: '2026-12-06T07:00:00.000Z', durationS: 90, exitCode, machine, ...parseFigures(part, output),
});

t.test('summary lines of each tool become figures', async (t) => {
  const sim = record('sim', 'noise\nsim: seeds=100 hosts=3 steps=5 ops=4 messages=3 lost=1 checks=9 violations=0 time=1.0s seeds/s=100.0\n');
  t.equal(sim.figures.seeds, '100');
  t.equal(sim.figures['seeds/s'], '100.0');
  t.equal(violationsOf(sim), 0);
  const fuzz = record('fuzz-peer', 'fuzz: 500 inputs\nfuzz: VIOLATION input 7: handler ran\nreplay: x\nfuzz: target=peer seed=1 inputs=9 garbage=1 handshake=2 session=6 tampered=1 handler-calls=3 probes=0 violations=1 time=1s inputs/s=9\n', 1);
  t.equal(violationsOf(fuzz), 1);
  t.match(fuzz.detail.join('\n'), /VIOLATION input 7/);
  const torture = record('torture', 'fault kind        count\nkill-primary          3\nhandover              0\ntime: 1.0s seed=1 hosts=3\ntorture: faults=3 checks=12 violations=0 writes=400\n');
  t.same(torture.detail, ['kill-primary 3']);
  t.equal(torture.figures.writes, '400');
  const pl = record('powerloss', '    # totals: {"cuts":2,"cutsDroppingBlocks":1,"blocksDropped":7,"flushedLost":0} in 40 s\nok 1 - x\n');
  t.equal(pl.figures.cuts, '2');
  t.equal(pl.figures.seconds, '40');
  t.equal(violationsOf(pl), 0);
  t.equal(violationsOf(record('powerloss', 'not ok 1 - power loss\n', 1)), -1, 'no totals: unknown');
  // The secondary's test names its count `lost` (replicated state lost or torn).
  const pls = record('powerloss-secondary', '    # totals: {"cuts":200,"cutsDroppingBlocks":183,"blocksDropped":6263,"writes":17651,"lost":0,"maxCatchUpMs":1820} in 3657 s\nok 1 - x\n');
  t.equal(violationsOf(pls), 0, 'the secondary power-loss part: 0 lost is 0 violations');
  t.equal(violationsOf(record('powerloss-secondary', '    # totals: {"cuts":3,"lost":2} in 9 s\nnot ok 1 - x\n', 1)), 3, 'lost states and the failed exit count');
  t.equal(violationsOf(record('sim', 'Segmentation fault\n', 139)), -1, 'no summary: unknown');
});

t.test('the section is rendered between its markers and replaces only that', async (t) => {
  const ok = record('fuzz-nbd', 'fuzz: target=nbd seed=1 inputs=1000000 garbage=1 handshake=1 transmission=1 backend-calls=5 probes=1 violations=0 time=1s inputs/s=900\n');
  const bad = record('sim', 'crash\n', 2);
  const section = renderSection({ 'fuzz-nbd': ok, sim: bad });
  t.ok(section.startsWith(BEGIN_MARK) && section.endsWith(END_MARK));
  t.match(section, /\| fuzz-nbd \| `cmd` \| inputs 1,000,000;/);
  t.match(section, /\| sim \| `cmd` \| \(no summary line\) \| unknown \| 2 \|/);
  t.match(section, /- \*\*sim\*\*: exit 2/);
  const doc = `# Title\n\nbefore\n\n${BEGIN_MARK}\nold table\n${END_MARK}\n\nafter\n`;
  const out = spliceSection(doc, section);
  t.notMatch(out, /old table/);
  t.match(out, /before\n\n<!-- reliability bench/);
  t.match(out, /end of reliability bench -->\n\nafter\n$/);
  t.match(spliceSection('# Doc\n', section), /## Bench figures[\s\S]*fuzz-nbd/, 'appended when the markers are missing');
});

t.test('options are validated; the commands are the documented ones', async (t) => {
  t.throws(() => parseReliabilityOptions(['--parts', 'torture,nope']), /unknown part nope/);
  t.throws(() => parseReliabilityOptions(['--cuts', '0']), /--cuts needs an integer/);
  t.throws(() => parseReliabilityOptions(['--fuzz-inputs', 'many']), /--fuzz-inputs/);
  const o = parseReliabilityOptions(['--suite', 'reliability']);
  t.equal(o.tortureMinutes, 60);
  t.equal(o.cuts, 200);
  t.equal(o.fuzzInputs, 1_000_000);
  t.equal(o.simSeeds, 100_000);
  t.equal(commandOf('sim', o).display, 'npm run sim -- --seeds 100000 --seed 1 --chaos-ms 1500');
  t.equal(commandOf('torture', o).display, 'npm run torture -- --minutes 60 --seed 20261206 --hosts 3');
  t.match(commandOf('powerloss', o).display, /^MARS_POWERLOSS_CUTS=200 MARS_POWERLOSS_BUDGET_MIN=100 npx tap/);
  const q = parseReliabilityOptions(['--quick', '--parts', 'sim']);
  t.same(q.parts, ['sim']);
  t.equal(q.simSeeds, 200);
});
