// marsadm rotate-secret's pure choices: which hosts are asked (live members only: a removed or
// departed host never gets the new secret), who blocks the rotation, and where it goes on.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Adm } from '../../marsadm/context.js';
import { blockers, nextPhase, rotationMembers } from '../../marsadm/commands/rotate-secret.js';
import { clusterMarkerPath } from '../../common/tree/removal.js';

t.test('rotationMembers: live members other than this host; removed and departed hosts are left out', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rotplan-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const adm = new Adm({ marsDir: join(dir, 'mars'), host: 'alpha' }, () => undefined);
  adm.tree.ensureDir('ips');
  for (const [h, port] of [['alpha', 1], ['beta', 2], ['gamma', 3], ['delta', 4], ['epsilon', 5]] as const) adm.tree.write(`ips/ip-${h}`, `127.0.0.1:700${port}`);
  adm.tree.write(clusterMarkerPath('gamma'), 'by alpha'); // lowlevel-delete-host gamma (marker newer than its link)
  adm.tree.remove('ips/ip-delta'); // leave-cluster on delta
  adm.tree.ensureDir('userspace');
  adm.tree.write('userspace/transport-epsilon', 'tcp,encrypt');
  const members = rotationMembers(adm);
  t.same(members.map((m) => m.host), ['beta', 'epsilon'], 'only beta and epsilon are asked');
  t.same(members.find((m) => m.host === 'epsilon')?.transport, { kind: 'tcp', encrypt: true }, 'the transport spec of a member is followed');
  adm.tree.write('ips/ip-gamma', '127.0.0.1:7003'); // gamma rejoined after its removal
  t.same(rotationMembers(adm).map((m) => m.host), ['beta', 'epsilon', 'gamma'], 'a host that joined again after its removal counts');
});

t.test('blockers and nextPhase', async (t) => {
  const reports = [{ host: 'beta', phase: 2 }, { host: 'gamma', problem: 'unreachable: ECONNREFUSED' }, { host: 'delta', phase: 1 }];
  t.same(blockers(reports).map((r) => r.host), ['gamma'], 'an unreachable member blocks');
  t.equal(nextPhase(2, reports), 2, 'continue with the least advanced reachable member (delta at 1)');
  t.equal(nextPhase(0, []), 1, 'a new rotation starts with prepared');
  t.equal(nextPhase(3, [{ host: 'beta', phase: 3 }]), 4, 'all finished: nothing left');
});
