// marsadm's limits and its generic `all` and `--dry-run` (issue 14), on a real tree without
// marsd: set/get-sync-limit-value, set/get-emergency-limit (bad values refused, nothing
// changed), `all` and `a,b` for a command that takes one resource, and --dry-run printing what
// secondary, leave-resource, invalidate and log-delete would change while the tree stays as it is.
import t from 'tap';
import { readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.js';
import { treeState } from '../helpers/tree-state.js';
import { offlineMarsadm } from '../helpers/offline-marsadm.js';

t.test('limits, all and --dry-run', async (t) => {
  const dir = tempDir(t);
  const { marsDir, run } = offlineMarsadm(dir);
  const ok = (args: string[]) => {
    const r = run(args);
    t.equal(r.code, 0, `marsadm ${args.join(' ')}${r.code !== 0 ? `: ${r.stderr}` : ''}`);
    return r.stdout;
  };
  ok(['create-cluster', '--listen', '127.0.0.1:7999']);
  for (const r of ['r1', 'r2']) {
    writeFileSync(join(dir, `${r}.img`), Buffer.alloc(1 << 20));
    ok(['create-resource', r, join(dir, `${r}.img`), '--timeout', '0']);
  }

  t.equal(ok(['get-sync-limit-value']).trim(), '0', 'unlimited by default');
  ok(['set-sync-limit-value', '50M']);
  t.equal(ok(['get-sync-limit-value']).trim(), String(50 << 20));
  t.equal(readlinkSync(join(marsDir, 'defaults-alpha/sync-limit')), String(50 << 20), 'the link the sync worker reads');
  let before = treeState(marsDir, { stamps: true });
  let bad = run(['set-sync-limit-value', 'fast']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /bytes per second/);
  bad = run(['set-emergency-limit', 'r1', '150']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /percentage 0\.\.100/);
  t.equal(treeState(marsDir, { stamps: true }), before, 'bad values change nothing');

  ok(['set-emergency-limit', 'all', '20']);
  t.equal(ok(['get-emergency-limit', 'r1']).trim(), '20', '`all` reached r1');
  t.equal(ok(['get-emergency-limit', 'r2']).trim(), '20', '`all` reached r2');
  t.match(ok(['get-emergency-limit', 'r1,r2']), /--- r1\n20\n--- r2\n20/, 'a,b runs each in turn');
  t.equal(readlinkSync(join(marsDir, 'resource-r1/todo-alpha/emergency-limit')), '20');
  const partly = run(['pause-sync', 'r1,nosuch']);
  t.not(partly.code, 0, 'an unknown resource in the list fails the command');

  before = treeState(marsDir, { stamps: true });
  const sec = ok(['secondary', 'all', '--dry-run']);
  t.match(sec, /dry-run: would write resource-r1\/primary -> \(none\) \(now alpha\)/, 'secondary says what it would write');
  t.match(sec, /resource-r2\/primary/);
  const del = ok(['log-delete', 'all', '--dry-run', '--force']);
  t.match(del, /r1/);
  t.equal(treeState(marsDir, { stamps: true }), before, 'the dry runs changed nothing');
  ok(['secondary', 'r1', '--timeout', '0']);
  ok(['down', 'r1', '--timeout', '0']);
  before = treeState(marsDir, { stamps: true });
  const leave = run(['leave-resource', 'r1', '--dry-run']);
  t.equal(leave.code, 0, `leave-resource --dry-run: ${leave.stderr}`);
  t.match(leave.stdout, /dry-run: would remove resource-r1\/data-alpha/, 'leave-resource prints what it would remove');
  t.match(leave.stdout, /dry-run, nothing changed; it would report: alpha left r1/, 'its report says nothing changed');
  t.equal(treeState(marsDir, { stamps: true }), before, 'leave-resource --dry-run changed nothing');
  t.equal(run(['create-resource', 'r3', join(dir, 'r1.img'), '--dry-run']).code, 2, '--dry-run is refused where it is not offered');
});
