// Regression: a planned handover right after another secondary left the resource. marsadm
// counted the host that left as a member (its data-HOST link is a tombstone, not gone), found
// its syncstatus missing, took it for a member still syncing and refused the handover while
// that host's marsd ran ("gamma is still syncing r0"). Members are the live data-HOST links
// (common/cluster/members.ts resourceMembers).
import t from 'tap';
import { startCluster, writeWorkload } from '../helpers/multi-host.js';

const RES = 'r0';
const SIZE = 8 << 20;

t.test('a handover right after a secondary left the resource', async (t) => {
  const c = await startCluster(t, { hosts: ['alpha', 'beta', 'gamma'], sizeBytes: SIZE, res: RES });
  const [alpha, beta, gamma] = [c.host('alpha'), c.host('beta'), c.host('gamma')];
  await gamma.marsadmOk(['down', RES]);
  await gamma.marsadmOk(['leave-resource', RES]);
  await beta.until('beta sees that gamma left', () => beta.link(`resource-${RES}/data-gamma`) === '.deleted', 30_000);
  t.ok(gamma.running, 'gamma\'s marsd still runs (alive, no longer a member)');
  await writeWorkload(alpha, RES, SIZE, 20, 7);
  await c.waitCaughtUp(beta);
  const out = await beta.marsadm(['primary', RES, '--timeout', '60']);
  t.equal(out.code, 0, `the handover to beta succeeds: ${out.stderr.trim()}`);
  t.notMatch(out.stderr, /still syncing/, 'gamma is not taken for a member that syncs');
  await beta.until('beta is primary', () => beta.actual(RES, 'is-primary') === '1', 30_000);
  t.equal(alpha.actual(RES, 'is-primary'), '0', 'alpha stepped down');
});
