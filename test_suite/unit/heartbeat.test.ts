// The heartbeat (daemon/heartbeat.ts): actual-HOST/time at most once a second however often
// rounds run, alive written at once; and a peer's heartbeat is recognised as one
// (peer-manager.ts runs no round for it).
import t from 'tap';
import { TreeStore } from '../../common/tree/store.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { isHeartbeatPath } from '../../common/tree/paths.js';
import { Heartbeat, HEARTBEAT_INTERVAL_MS } from '../../daemon/heartbeat.js';
import { SimClock } from '../helpers/sim-clock.js';
import { tempDir } from '../helpers/tmp.js';

t.test('time is renewed once per interval, alive at once', async (t) => {
  const clock = new SimClock();
  const tree = new TreeStore(tempDir(t), new LamportClock(() => clock.nowMs() * 1000));
  tree.ensureDir('actual-alpha');
  const hb = new Heartbeat(tree, 'alpha', clock);
  const time = () => tree.read('actual-alpha/time')?.stampUs;
  hb.beat(true);
  const first = time();
  t.ok(first !== undefined, 'the first beat writes the time');
  t.equal(tree.value('actual-alpha/alive'), '1');
  for (let i = 0; i < 50; i++) {
    clock.advanceSync(HEARTBEAT_INTERVAL_MS / 100);
    hb.beat(true);
  }
  t.equal(time(), first, '50 rounds within half an interval write no new time');
  clock.advanceSync(HEARTBEAT_INTERVAL_MS / 2);
  hb.beat(true);
  const second = time();
  t.ok(second !== undefined && second > first!, 'a round after the interval renews it');
  hb.beat(false);
  t.equal(tree.value('actual-alpha/alive'), '0', 'alive 0 at once');
  t.ok(time()! > second!, 'with a fresh time');
});

t.test('heartbeat paths', async (t) => {
  t.ok(isHeartbeatPath('actual-alpha/time'));
  for (const p of ['actual-alpha/alive', 'resource-r0/actual-alpha/time', 'actual-alpha/time/x', 'time', 'actual-alpha/rest-space-bytes']) {
    t.notOk(isHeartbeatPath(p), `${p} is no heartbeat`);
  }
});
