// The peer protocol fuzzer in CI with a bounded budget (docs/reliability.md, "Fuzzing"): a fixed
// seed against marsd's real PeerServer and PeerService on a real tree; `npm run fuzz -- --target
// peer` runs more. And its check of the victim's state does see a change.
import t from 'tap';
import { fuzzPeer, victimDigest, victimTree } from './peer-fuzz.js';
import { tempDir } from '../helpers/tmp.js';

const CI_INPUTS = 1_500;
const CI_MAX_MS = 90_000;

t.test(`${CI_INPUTS} inputs: nothing served without authentication, altered frames end the session, a rogue member changes nothing of the victim's`, async (t) => {
  const r = await fuzzPeer({ dir: tempDir(t, 'mars-fuzz-peer-'), seed: 20261205, inputs: CI_INPUTS, maxMs: CI_MAX_MS });
  t.comment(`fuzz peer: ${r.inputs} inputs (${JSON.stringify(r.byKind)}), ${r.tampered} tampered, ${r.handlerCalls} handler calls, ${r.probes} probes in ${r.elapsedMs} ms`);
  t.same(r.violations, []);
  t.ok(r.inputs >= CI_INPUTS / 4, `enough inputs ran within the budget (${r.inputs})`);
  t.ok(r.byKind.garbage > 0 && r.byKind.handshake > 0 && r.byKind.session > 0 && r.tampered > 0, 'every kind of input ran');
  t.ok(r.handlerCalls > r.byKind.session / 4, `authenticated requests reached the handlers (${r.handlerCalls})`);
});

t.test('the victim check sees a change of the victim\'s own links', async (t) => {
  const dir = tempDir(t, 'mars-fuzz-peer-');
  const tree = victimTree(dir);
  const before = victimDigest(tree, dir);
  tree.write('resource-r0/replay-beta', 'log-000000001-alpha,100,0');
  t.equal(victimDigest(tree, dir), before, 'another host\'s link is not the victim\'s');
  tree.write('resource-r0/replay-alpha', 'log-000000001-alpha,100,0');
  t.not(victimDigest(tree, dir), before, 'the victim\'s replay link is');
});
