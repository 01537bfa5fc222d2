import t from 'tap';
import { decide, type RuntimeState } from '../../daemon/control/decide.js';
import type { ResourceSnapshot } from '../../common/resource/snapshot.js';
import { nextVersionLink } from '../../common/log/links.js';
import { contentDigestOf } from '../../common/log/content-digest.js';

// One content for every logfile: these tests are about positions and chains, not bytes.
const CONTENT = contentDigestOf(Buffer.from('logfile bytes'));

const cfg = { host: 'alpha', logRotateBytes: 1000 };

function snap(over: Partial<ResourceSnapshot> = {}): ResourceSnapshot {
  return {
    name: 'r0', sizeBytes: 1 << 20, designatedPrimary: 'alpha', dataPath: '/dev/x',
    todo: { attach: true, connect: true, sync: true, 'allow-replay': true },
    replayLink: 'log-000000001-alpha,0,0', syncstatusBytes: 1 << 20, logfiles: [{ seq: 1, origin: 'alpha', sizeBytes: 0 }], signature: 's1', emergencyLimitPercent: 0,
    primaryMode: 'planned', activePrimaries: [], versionLinks: [], maxnr: 1, invalidateRequest: undefined, wantPrimaryRequest: undefined,
    ...over,
  };
}

t.test('a designated, attached primary that is down starts', async (t) => {
  t.same(decide(snap(), { phase: 'down' }, cfg).action, { kind: 'start-primary' });
});

t.test('nothing starts without attach, data link, size, or the primary role', async (t) => {
  const down: RuntimeState = { phase: 'down' };
  t.same(decide(snap({ todo: { attach: false, connect: true, sync: true, 'allow-replay': true } }), down, cfg).action, { kind: 'none' });
  t.same(decide(snap({ dataPath: undefined }), down, cfg).action, { kind: 'none' });
  t.match(decide(snap({ dataPath: undefined }), down, cfg).blockedBy, /data-HOST/);
  t.same(decide(snap({ sizeBytes: undefined }), down, cfg).action, { kind: 'none' });
  t.same(decide(snap({ designatedPrimary: 'beta' }), down, cfg).action, { kind: 'none' });
  t.same(decide(snap({ designatedPrimary: undefined }), down, cfg).action, { kind: 'none' });
});

t.test('a running primary stops when detached or when the role moves', async (t) => {
  const rt: RuntimeState = { phase: 'primary', currentSeq: 2, currentLogBytes: 10 };
  t.match(decide(snap({ todo: { attach: false, connect: true, sync: true, 'allow-replay': true } }), rt, cfg).action, { kind: 'stop-primary', reason: /detach/ });
  t.match(decide(snap({ designatedPrimary: undefined }), rt, cfg).action, { kind: 'stop-primary', reason: /\(none\)/ });
  t.match(decide(snap({ designatedPrimary: 'beta' }), rt, cfg).action, { kind: 'stop-primary', reason: /beta/ });
});

t.test('rotation: to an empty next own logfile, or by size', async (t) => {
  const rt: RuntimeState = { phase: 'primary', currentSeq: 2, currentLogBytes: 10 };
  const files = [{ seq: 2, origin: 'alpha', sizeBytes: 10 }, { seq: 3, origin: 'alpha', sizeBytes: 0 }];
  t.same(decide(snap({ logfiles: files }), rt, cfg).action, { kind: 'rotate', toSeq: 3 });
  t.same(decide(snap({ logfiles: [files[0]!] }), rt, cfg).action, { kind: 'none' });
  t.same(decide(snap({ logfiles: [files[0]!] }), { ...rt, currentLogBytes: 1000 }, cfg).action, { kind: 'create-next-logfile', seq: 3 });
  const foreign = [{ seq: 2, origin: 'alpha', sizeBytes: 10 }, { seq: 3, origin: 'beta', sizeBytes: 0 }];
  t.same(decide(snap({ logfiles: foreign }), rt, cfg).action, { kind: 'none' }, 'never switches to a foreign logfile');
  const nonEmpty = [{ seq: 2, origin: 'alpha', sizeBytes: 10 }, { seq: 3, origin: 'alpha', sizeBytes: 5 }];
  t.same(decide(snap({ logfiles: nonEmpty }), rt, cfg).action, { kind: 'none' }, 'never appends to a non-empty logfile');
  t.same(decide(snap({ logfiles: [files[0]!] }), { ...rt, currentLogBytes: 1000 }, { ...cfg, logRotateBytes: 0 }).action, { kind: 'none' });
});

t.test('a failed start is retried only after the tree changed', async (t) => {
  const failed: RuntimeState = { phase: 'failed', failedSignature: 's1' };
  t.same(decide(snap(), failed, cfg).action, { kind: 'none' });
  t.same(decide(snap({ signature: 's2' }), failed, cfg).action, { kind: 'start-primary' });
});

t.test('transitions in progress are never interrupted (tick by tick)', async (t) => {
  for (const phase of ['starting', 'stopping'] as const) {
    t.same(decide(snap(), { phase }, cfg).action, { kind: 'none' });
    t.same(decide(snap({ designatedPrimary: 'beta' }), { phase }, cfg).action, { kind: 'none' });
  }
  // A full sequence: down -> start -> primary -> role moves -> stop -> down stays down.
  let rt: RuntimeState = { phase: 'down' };
  t.equal(decide(snap(), rt, cfg).action.kind, 'start-primary');
  rt = { phase: 'primary', currentSeq: 2, currentLogBytes: 0 };
  t.equal(decide(snap(), rt, cfg).action.kind, 'none');
  t.equal(decide(snap({ designatedPrimary: undefined }), rt, cfg).action.kind, 'stop-primary');
  rt = { phase: 'down' };
  t.equal(decide(snap({ designatedPrimary: undefined }), rt, cfg).action.kind, 'none');
});

t.test('a designated primary waits until the previous primary left and its history is here', async (t) => {
  const down: RuntimeState = { phase: 'down' };
  const v1 = nextVersionLink('', 1, 'alpha', 300, CONTENT);
  const base = {
    designatedPrimary: 'beta', replayLink: 'log-000000001-alpha,100,0',
    logfiles: [{ seq: 1, origin: 'alpha', sizeBytes: 300 }],
    versionLinks: [{ seq: 1, host: 'alpha', value: v1 }],
  };
  const b = { ...cfg, host: 'beta' };
  let d = decide(snap({ ...base, activePrimaries: ['alpha'] }), down, b);
  t.same(d.action, { kind: 'none' });
  t.ok(d.handover, 'the secondary side keeps running');
  t.match(d.blockedBy, /waiting for alpha to leave the primary role/);
  d = decide(snap({ ...base, logfiles: [{ seq: 1, origin: 'alpha', sizeBytes: 200 }] }), down, b);
  t.match(d.blockedBy, /fetching log-000000001-alpha: 200 of 300 bytes/);
  d = decide(snap({ ...base, versionLinks: [] }), down, b);
  t.match(d.blockedBy, /waiting for version-000000001-alpha/);
  d = decide(snap({ ...base, maxnr: 2 }), down, b);
  t.match(d.blockedBy, /waiting for logfile 2/);
  d = decide(snap({ ...base, logfiles: [...base.logfiles, { seq: 3, origin: 'alpha', sizeBytes: 10 }], maxnr: 3 }), down, b);
  t.match(d.blockedBy, /hole in the logfile numbers after 1/);
  d = decide(snap({ ...base, logfiles: [...base.logfiles, { seq: 2, origin: 'alpha', sizeBytes: 0 }, { seq: 2, origin: 'gamma', sizeBytes: 0 }], maxnr: 2 }), down, b);
  t.match(d.blockedBy, /split brain: two logfiles numbered 2/);
  d = decide(snap({ ...base, syncstatusBytes: 5 }), down, b);
  t.match(d.blockedBy, /sync of this replica is not complete/);
  // --ignore-sync has MARS's meaning now (another member may still sync): never an inconsistent disk here.
  t.match(decide(snap({ ...base, syncstatusBytes: 5, primaryMode: 'ignore-sync' }), down, b).blockedBy, /not complete.*not even by "marsadm primary --force"/);
  t.same(decide(snap(base), down, b).action, { kind: 'start-primary' }, 'everything here, alpha left: start');
  t.notOk(decide(snap(base), down, b).handover);
});

t.test('a forced takeover starts with whatever is here, but never on an inconsistent disk', async (t) => {
  const forced = {
    designatedPrimary: 'beta', primaryMode: 'force' as const, activePrimaries: ['alpha'], maxnr: 9,
    replayLink: 'log-000000001-alpha,100,0', logfiles: [{ seq: 1, origin: 'alpha', sizeBytes: 150 }],
  };
  const d = decide(snap({ ...forced, syncstatusBytes: 1 << 20 }), { phase: 'down' }, { ...cfg, host: 'beta' });
  t.same(d.action, { kind: 'start-primary' });
  const torn = decide(snap({ ...forced, syncstatusBytes: 4096 }), { phase: 'down' }, { ...cfg, host: 'beta' });
  t.same(torn.action, { kind: 'none' }, 'a half-synced disk is not started even in force mode');
  t.match(torn.blockedBy, /sync of this replica is not complete \(4096 of/);
});

t.test('a host removed by a survivor takes no role (a zombie on its old tree)', async (t) => {
  const removed = 'beta was removed from the cluster by gamma: it takes no role and serves nothing';
  const d = decide(snap({ designatedPrimary: 'beta', removed }), { phase: 'down' }, { ...cfg, host: 'beta' });
  t.same(d.action, { kind: 'none' });
  t.notOk(d.wantPrimary);
  const running = decide(snap({ designatedPrimary: 'beta', removed }), { phase: 'primary', currentSeq: 1 }, { ...cfg, host: 'beta' });
  t.same(running.action, { kind: 'stop-primary', reason: removed }, 'a running primary stops');
});

t.test('a failed start is retried only through the takeover rules', async (t) => {
  const d = decide(snap({ designatedPrimary: 'beta', activePrimaries: ['alpha'], signature: 's2' }), { phase: 'failed', failedSignature: 's1' }, { ...cfg, host: 'beta' });
  t.same(d.action, { kind: 'none' });
  t.match(d.blockedBy, /waiting for alpha/);
});
