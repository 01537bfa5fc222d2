// marsadm resize on a real tree where marsd never ran (the running cluster is in
// test_suite/e2e/resize.test.ts): a SIZE that is no size (exit 2), a resource that does not
// exist, and a member whose disk size marsd has not published yet are refused with a clear
// message, and the tree stays exactly as it was (every link's value and stamp).
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.js';
import { treeState } from '../helpers/tree-state.js';
import { offlineMarsadm } from '../helpers/offline-marsadm.js';

t.test('resize: bad input is refused and changes nothing', async (t) => {
  const dir = tempDir(t);
  const { marsDir, run } = offlineMarsadm(dir);
  t.equal(run(['create-cluster', '--listen', '127.0.0.1:7999']).code, 0);
  writeFileSync(join(dir, 'r1.img'), Buffer.alloc(1 << 20));
  t.equal(run(['create-resource', 'r1', join(dir, 'r1.img'), '--timeout', '0']).code, 0);
  const before = treeState(marsDir, { stamps: true });

  for (const [args, code, pattern] of [
    [['resize', 'r1', 'huge'], 2, /invalid SIZE "huge"/],
    [['resize', 'r1', '1.5G'], 2, /invalid SIZE "1.5G"/],
    [['resize', 'nosuch', '2M'], 1, /resource nosuch does not exist/],
    [['resize', 'r1', '2M'], 1, /disk size of alpha is not known \(no actsize-HOST link\)/],
    [['resize', 'r1', '2M', '--dry-run'], 1, /disk size of alpha is not known/],
  ] as const) {
    const r = run([...args]);
    t.equal(r.code, code, `marsadm ${args.join(' ')}: exit ${code}`);
    t.match(r.stderr, pattern, `marsadm ${args.join(' ')}: ${r.stderr.trim()}`);
    t.equal(treeState(marsDir, { stamps: true }), before, `marsadm ${args.join(' ')} changed nothing`);
  }
});
