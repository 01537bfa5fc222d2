// Property tests of the pure deciders (issue 16 item 3; docs/reliability.md): random inputs, and
// the plan never breaks an invariant of docs/design.md. fast-check shrinks a failure to a small
// counterexample and prints its seed.
import t from 'tap';
import fc from 'fast-check';
import { planResource, type RunnerState } from '../../daemon/control/plan.js';
import type { ResourceSnapshot } from '../../common/resource/snapshot.js';
import { planLogRetention, type RetentionInput } from '../../marsadm/status/log-retention.js';
import { decideTombstonePurge, type PeerListing } from '../../daemon/propagate/tombstones.js';
import { TOMBSTONE_VALUE } from '../../daemon/propagate/merge.js';

const HOSTS = ['alpha', 'bravo', 'charlie'];
const SIZE = 1 << 20;
const RUNS = { numRuns: 2_000 };

const logName = (seq: number, origin: string) => `log-${String(seq).padStart(9, '0')}-${origin}`;

/** Mostly true: the interesting plans (a start) need many conditions at once. */
const likely = fc.constantFrom(true, true, true, false);

const snapshotArb = fc.record({
  designated: fc.constantFrom('alpha', 'alpha', 'bravo', undefined),
  member: likely,
  sized: likely,
  attach: likely,
  syncstatus: fc.constantFrom(undefined, 0, SIZE / 2, SIZE, SIZE, SIZE * 2),
  mode: fc.constantFrom('planned' as const, 'ignore-sync' as const, 'force' as const),
  activePrimaries: fc.oneof(fc.constant([] as string[]), fc.subarray(HOSTS)),
  removed: fc.constantFrom(undefined, undefined, undefined, 'removed by bravo'),
  replayLink: fc.constantFrom(undefined, `${logName(3, 'alpha')},0,0`, 'garbage'),
});

type SnapArgs = typeof snapshotArb extends fc.Arbitrary<infer T> ? T : never;

function snapshot(a: SnapArgs, host: string): ResourceSnapshot {
  return {
    name: 'r0', sizeBytes: a.sized ? SIZE : undefined, designatedPrimary: a.designated, dataPath: a.member ? '/dev/x' : undefined,
    todo: { attach: a.attach, connect: true, sync: true, 'allow-replay': true }, replayLink: a.replayLink, syncstatusBytes: a.syncstatus,
    logfiles: [], emergencyLimitPercent: 0, primaryMode: a.mode, activePrimaries: a.activePrimaries.filter((h) => h !== host),
    versionLinks: [], maxnr: 0, wantPrimaryRequest: undefined, invalidateRequest: undefined, removed: a.removed, signature: JSON.stringify(a),
  };
}

const runtimeArb = fc.record({
  phase: fc.constantFrom('down' as const, 'down' as const, 'starting' as const, 'primary' as const, 'primary' as const, 'stopping' as const, 'failed' as const),
  actionInFlight: fc.constantFrom(false, false, false, true),
  currentSeq: fc.constantFrom(undefined, 3),
});

function runtime(r: { phase: RunnerState['phase']; actionInFlight: boolean; currentSeq: number | undefined }): RunnerState {
  return {
    phase: r.phase, actionInFlight: r.actionInFlight, ...(r.currentSeq !== undefined ? { currentSeq: r.currentSeq } : {}),
    loggingMode: r.phase === 'primary' ? 'logging' : undefined, holeUnwritten: false, invalidating: false, openCount: 0,
    primarySinceUs: undefined, wantHandled: undefined, stopHookConfigured: false, splitBrainChecking: false, splitBrainCheckedMs: 0,
  };
}

t.test('planResource starts the primary role only where every condition holds', async (t) => {
  let starts = 0;
  let stops = 0;
  fc.assert(fc.property(snapshotArb, runtimeArb, likely, fc.constantFrom(undefined, undefined, 'start-up: waiting'), (a, r, present, hold) => {
    const s = snapshot(a, 'alpha');
    const plan = planResource({ snapshot: s, runtime: runtime(r), present, spaceLevel: 0, nowMs: 0, config: { host: 'alpha', logRotateBytes: 0 }, startupHold: hold });
    if (plan.primary.kind === 'stop-primary') stops++;
    if (plan.primary.kind === 'start-primary') {
      starts++;
      // A start needs: here, designated here, attached, a member, not removed, a consistent disk
      // (even with --force), no start-up hold, one action at a time, and for a planned
      // takeover no other acting primary in this tree.
      if (!present || hold !== undefined || r.actionInFlight) return false;
      if (a.designated !== 'alpha' || !a.attach || !a.member || !a.sized || a.removed !== undefined) return false;
      if ((a.syncstatus ?? 0) < SIZE) return false;
      if (a.mode !== 'force' && s.activePrimaries.length > 0) return false;
      if (r.phase !== 'down' && r.phase !== 'failed') return false;
    }
    // A host that acts as primary but is no longer wanted there is stopped (unless an action runs).
    if (present && r.phase === 'primary' && !r.actionInFlight && (a.designated !== 'alpha' || !a.attach || a.removed !== undefined)) {
      return plan.primary.kind === 'stop-primary';
    }
    return true;
  }), { numRuns: 6_000 });
  t.ok(starts > 10 && stops > 20, `the inputs reach both decisions (${starts} starts, ${stops} stops)`);
});

t.test('hosts that read one tree never plan two primary starts', async (t) => {
  let oneStart = 0;
  fc.assert(fc.property(snapshotArb, fc.array(runtimeArb, { minLength: HOSTS.length, maxLength: HOSTS.length }), (a, rs) => {
    const starts = HOSTS.filter((h, i) => planResource({
      snapshot: snapshot(a, h), runtime: runtime(rs[i]!), present: true, spaceLevel: 0, nowMs: 0, config: { host: h, logRotateBytes: 0 },
    }).primary.kind === 'start-primary');
    if (starts.length === 1) oneStart++;
    return starts.length <= 1;
  }), RUNS);
  t.ok(oneStart > 20, `trees with a start were drawn (${oneStart})`);
});

const retentionArb = fc.record({
  replay: fc.array(fc.option(fc.integer({ min: 1, max: 12 }), { nil: undefined }), { minLength: 3, maxLength: 3 }),
  syncing: fc.subarray(HOSTS),
  syncpos: fc.array(fc.option(fc.integer({ min: 1, max: 12 }), { nil: undefined }), { minLength: 3, maxLength: 3 }),
  members: fc.subarray(HOSTS, { minLength: 1 }),
  last: fc.integer({ min: 1, max: 14 }),
  force: fc.boolean(),
});

t.test('planLogRetention never deletes a logfile a member still needs, nor the newest', async (t) => {
  let deleted = 0;
  fc.assert(fc.property(retentionArb, (a) => {
    const replay = new Map<string, string>();
    const syncpos = new Map<string, string>();
    HOSTS.forEach((h, i) => {
      if (a.replay[i] !== undefined) replay.set(h, `${logName(a.replay[i]!, 'alpha')},0,0`);
      if (a.syncpos[i] !== undefined) syncpos.set(h, `${logName(a.syncpos[i]!, 'alpha')},0,0`);
    });
    const logfiles = Array.from({ length: a.last }, (_, k) => ({ seq: k + 1, origin: 'alpha', name: logName(k + 1, 'alpha'), sizeBytes: 100, mtimeMs: 0 }));
    const input: RetentionInput = {
      members: a.members, replay, syncing: new Set(a.syncing), syncpos, heartbeatAgeS: new Map(HOSTS.map((h) => [h, 1])), self: 'alpha',
      windowS: 60, logfiles, nowMs: 10 * 86_400_000, force: a.force,
    };
    const plan = planLogRetention(input);
    deleted += plan.deletable.length;
    for (const f of plan.deletable) {
      if (f.seq === a.last) return false; // the newest logfile stays
      for (const [i, h] of HOSTS.entries()) {
        if (!a.members.includes(h)) continue;
        const r = a.replay[i];
        if (r === undefined || f.seq >= r) return false; // unknown or needed by its replay
        const sp = a.syncpos[i];
        if (a.syncing.includes(h) && sp !== undefined && f.seq >= sp) return false; // needed after its sync
      }
    }
    return true;
  }), RUNS);
  t.ok(deleted > 100, `logfiles were deletable (${deleted})`);
});

t.test('decideTombstonePurge purges only what every member has seen, after the minimum age', async (t) => {
  let purged = 0;
  const listingArb = fc.option(fc.record({
    requestedAtMs: fc.integer({ min: 0, max: 200 }),
    /** how long before the request the peer's newest pull of us reached us (undefined: never) */
    pulledBeforeMs: fc.option(fc.integer({ min: 0, max: 200 }), { nil: undefined }),
    entry: fc.constantFrom('none', 'tombstone', 'older-link', 'newer-link'),
    file: fc.boolean(),
  }), { nil: undefined });
  fc.assert(fc.property(fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 100 }), fc.array(listingArb, { minLength: 0, maxLength: 3 }), (firstSeenMs, minAgeMs, ls) => {
    const path = 'resource-r0/primary';
    const stampUs = 1_000;
    const members = ls.map((_, i) => HOSTS[i]!);
    const listings = new Map<string, PeerListing | undefined>(ls.map((l, i) => [HOSTS[i]!, l && {
      requestedAtMs: l.requestedAtMs,
      peerPulledAtMs: l.pulledBeforeMs === undefined ? undefined : l.requestedAtMs - l.pulledBeforeMs,
      entries: new Map(l.entry === 'none' ? [] : [[path, { v: l.entry === 'tombstone' ? TOMBSTONE_VALUE : 'alpha', s: l.entry === 'older-link' ? stampUs - 1 : stampUs + (l.entry === 'newer-link' ? 1 : 0) }]]),
      files: new Set(l.file ? [path] : []),
    }]));
    const d = decideTombstonePurge({ tombstones: [{ path, stampUs, firstSeenMs }], members, listings, nowMs: 300, minAgeMs });
    if (!d.purge.includes(path)) return true;
    purged++;
    if (300 - firstSeenMs < minAgeMs) return false;
    return ls.every((l) => l !== undefined && l.requestedAtMs > firstSeenMs && l.pulledBeforeMs !== undefined && l.requestedAtMs - l.pulledBeforeMs > firstSeenMs
      && !l.file && l.entry !== 'older-link');
  }), RUNS);
  t.ok(purged > 20, `tombstones were purged (${purged})`);
});
