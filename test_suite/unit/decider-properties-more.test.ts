// Property tests of more pure deciders (issue 16 item 3; docs/reliability.md): the control
// deciders (decide, decideSecondary, decideStartupGate, planDevice, decidePrimaryEmergency), the
// network's (decideSecretSet, decideAdmission) and marsadm's (planInvalidate, planResize,
// decideExportGrowth). Random inputs; each property states an invariant of docs/design.md §3 or
// of the decider's header comment. Seeded: a failure prints the seed and the shrunk
// counterexample; rerun with the same SEED to get it again.
import t from 'tap';
import fc from 'fast-check';
import { decide, type RuntimeState } from '../../daemon/control/decide.js';
import { decideSecondary } from '../../daemon/control/decide-secondary.js';
import { decideStartupGate } from '../../daemon/control/decide-startup.js';
import { planDevice, DEVICE_RETRY_MS, type DeviceRuntime } from '../../daemon/control/decide-device.js';
import { decidePrimaryEmergency, nextSpaceLevel, limitSecondaryPlan, MAX_SPACE_LEVEL } from '../../daemon/control/decide-emergency.js';
import type { LoggingMode } from '../../daemon/logger/emergency-backend.js';
import { decideSecretSet, type RotationPhase } from '../../daemon/net/decide-secret-ring.js';
import { ROTATION_PHASES } from '../../daemon/net/messages.js';
import { decideAdmission } from '../../daemon/net/admission.js';
import { keyId, phaseIndex, ringIds, ringOfPhase, type SecretRing } from '../../common/cluster/secret-ring.js';
import { ANY_UUID } from '../../common/cluster/secret.js';
import type { LinkLookup } from '../../common/tree/removal.js';
import { planInvalidate } from '../../common/resource/invalidate-plan.js';
import { chainsFrom, commonPoint, type Chain } from '../../common/resource/split-brain.js';
import { planResize, decideExportGrowth, RESIZE_ALIGN_BYTES } from '../../common/resource/resize-plan.js';
import type { ResourceSnapshot } from '../../common/resource/snapshot.js';
import { formatVersionLink, nextVersionLink } from '../../common/log/links.js';
import { logName } from '../../common/tree/log-names.js';

const SEED = 16_003;
const runs = (numRuns: number) => ({ seed: SEED, numRuns });
t.comment(`fast-check seed ${SEED}`);

const SIZE = 1 << 20;
const likely = fc.constantFrom(true, true, true, false);
const digest = (c: string) => c.repeat(32);

// ---------------------------------------------------------------- decide (the primary side)

const ME = 'bravo';

const decideArb = fc.record({
  designated: fc.constantFrom(ME, ME, 'alpha', undefined),
  member: likely,
  sized: likely,
  attach: likely,
  removed: fc.constantFrom(undefined, undefined, undefined, 'removed by alpha'),
  syncstatus: fc.constantFrom(undefined, 0, SIZE - 1, SIZE, SIZE, SIZE * 2),
  mode: fc.constantFrom('planned' as const, 'planned' as const, 'ignore-sync' as const, 'force' as const),
  activePrimaries: fc.constantFrom([] as string[], [] as string[], ['alpha']),
  // logfiles 3..5: absent, or one (origin, size), sometimes two with one number
  logs: fc.array(fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom('alpha', 'alpha', ME).chain((origin) => fc.constantFrom(100, 200, 200).map((size) => [{ origin, size }])) },
    { weight: 2, arbitrary: fc.constant([] as { origin: string; size: number }[]) },
    { weight: 1, arbitrary: fc.constant([{ origin: 'alpha', size: 0 }, { origin: ME, size: 100 }]) },
  ), { minLength: 3, maxLength: 3 }),
  // the origins' LOGPOS of logfiles 3..5 (undefined: versionlink not here)
  logPos: fc.array(fc.option(fc.constantFrom(100, 200), { freq: 6, nil: undefined }), { minLength: 3, maxLength: 3 }),
  maxnr: fc.constantFrom(0, 0, 0, 4, 5, 6),
  signature: fc.constantFrom('s1', 's2'),
});
type DecideArgs = typeof decideArb extends fc.Arbitrary<infer T> ? T : never;

function decideSnapshot(a: DecideArgs): ResourceSnapshot {
  const logfiles = a.logs.flatMap((ls, i) => ls.map((l) => ({ seq: 3 + i, origin: l.origin, sizeBytes: l.size })));
  const versionLinks = a.logs.flatMap((ls, i) => {
    const pos = a.logPos[i];
    return pos === undefined ? [] : ls.filter((l) => l.origin !== ME).map((l) => ({
      seq: 3 + i, host: l.origin, value: formatVersionLink({ digest: digest('a'), seq: 3 + i, origin: l.origin, logPos: pos, prev: '' }),
    }));
  });
  return {
    name: 'r0', sizeBytes: a.sized ? SIZE : undefined, designatedPrimary: a.designated, dataPath: a.member ? '/dev/x' : undefined,
    todo: { attach: a.attach, connect: true, sync: true, 'allow-replay': true }, replayLink: `${logName(3, 'alpha')},0,0`,
    syncstatusBytes: a.syncstatus, logfiles, emergencyLimitPercent: 0, primaryMode: a.mode, activePrimaries: a.activePrimaries,
    versionLinks, maxnr: a.maxnr, wantPrimaryRequest: undefined, invalidateRequest: undefined, removed: a.removed, signature: a.signature,
  };
}

const rtArb = fc.record({
  phase: fc.constantFrom('down' as const, 'down' as const, 'starting' as const, 'primary' as const, 'primary' as const, 'stopping' as const, 'failed' as const),
  currentSeq: fc.constantFrom(undefined, 5),
  currentLogBytes: fc.constantFrom(0, 50, 100),
  failedSignature: fc.constantFrom(undefined, 's1'),
  actionInFlight: fc.constantFrom(false, false, false, true),
});

/** The previous primary's history from logfile 3 on is here completely (docs/design.md §3: planned handover). */
function historyComplete(a: DecideArgs): boolean {
  let highest = 2;
  for (let i = 0; i < 3; i++) {
    const ls = a.logs[i]!;
    if (ls.length === 0) break;
    if (ls.length > 1) return false; // two logfiles with one number: split brain
    highest = 3 + i;
    if (ls[0]!.origin === ME) continue;
    if (a.logPos[i] === undefined || ls[0]!.size < a.logPos[i]!) return false;
  }
  const later = a.logs.some((ls, i) => ls.length > 0 && 3 + i > highest + 1);
  return !later && highest >= a.maxnr;
}

t.test('decide: the primary role starts only where every condition holds, and never into an incomplete history', async (t) => {
  let starts = 0;
  let plannedStarts = 0;
  fc.assert(fc.property(decideArb, rtArb, fc.constantFrom(0, 0, 100), (a, r, rotate) => {
    const rt: RuntimeState = r;
    const d = decide(decideSnapshot(a), rt, { host: ME, logRotateBytes: rotate });
    const wanted = a.designated === ME && a.attach && a.member && a.sized && a.removed === undefined;
    if (d.wantPrimary !== wanted) return false;
    if (r.actionInFlight && d.action.kind !== 'none') return false; // one action at a time
    switch (d.action.kind) {
      case 'start-primary':
        starts++;
        if (!wanted || (r.phase !== 'down' && r.phase !== 'failed')) return false;
        if (r.phase === 'failed' && r.failedSignature === a.signature) return false; // nothing changed since the failure
        if ((a.syncstatus ?? 0) < SIZE) return false; // an inconsistent disk never becomes primary, not even forced
        if (a.mode !== 'force') {
          plannedStarts++;
          if (a.activePrimaries.length > 0 || !historyComplete(a)) return false;
        }
        return true;
      case 'stop-primary':
        return r.phase === 'primary' && !wanted;
      case 'rotate':
      case 'create-next-logfile': {
        const seq = d.action.kind === 'rotate' ? d.action.toSeq : d.action.seq;
        return r.phase === 'primary' && wanted && r.currentSeq !== undefined && seq === r.currentSeq + 1;
      }
      case 'none':
        // an unwanted acting primary is stopped (when no other action runs)
        return !(r.phase === 'primary' && !wanted && !r.actionInFlight);
    }
  }), runs(3_000));
  t.ok(starts > 20 && plannedStarts > 5, `the inputs reach starts (${starts}, ${plannedStarts} planned)`);
});

t.test('decide: hosts that read one tree never both start the primary role', async () => {
  fc.assert(fc.property(decideArb, rtArb, rtArb, (a, r1, r2) => {
    const s = decideSnapshot(a);
    const started = [[ME, r1], ['alpha', r2]].filter(([h, r]) => decide({ ...s, activePrimaries: [] }, r as RuntimeState, { host: h as string, logRotateBytes: 0 }).action.kind === 'start-primary');
    return started.length <= 1;
  }), runs(1_000));
});

// ---------------------------------------------------------------- decideSecondary (+ space limits)

const secondaryArb = fc.record({
  designated: fc.constantFrom(ME, 'alpha', 'alpha', undefined),
  member: likely,
  sized: likely,
  removed: fc.constantFrom(undefined, undefined, undefined, 'removed by alpha'),
  attach: likely, connect: likely, sync: likely, replay: likely,
  replayLink: fc.constantFrom(undefined, `${logName(3, 'alpha')},0,0`, `${logName(3, 'alpha')},0,0`),
  syncstatus: fc.constantFrom(undefined, 0, SIZE / 2, SIZE, SIZE, SIZE + 1),
  handover: fc.constantFrom(undefined, undefined, 'replaying alpha\'s history'),
  level: fc.integer({ min: 0, max: MAX_SPACE_LEVEL }),
});

t.test('decideSecondary: sync and replay never write the disk at once; nothing runs where it is not wanted', async (t) => {
  let replays = 0;
  let syncs = 0;
  fc.assert(fc.property(secondaryArb, (a) => {
    const s: ResourceSnapshot = {
      ...decideSnapshot({ designated: a.designated, member: a.member, sized: a.sized, attach: a.attach, removed: a.removed, syncstatus: a.syncstatus, mode: 'planned', activePrimaries: [], logs: [[], [], []], logPos: [undefined, undefined, undefined], maxnr: 0, signature: 's1' }),
      todo: { attach: a.attach, connect: a.connect, sync: a.sync, 'allow-replay': a.replay }, replayLink: a.replayLink,
    };
    const p0 = decideSecondary(s, ME, a.handover === undefined ? {} : { handover: a.handover });
    const p = limitSecondaryPlan(p0, a.level);
    const syncDone = a.syncstatus !== undefined && a.sized && a.syncstatus >= SIZE;
    if (p.replay) replays++;
    if (p.sync) syncs++;
    if (p.sync && p.replay) return false; // both write the same disk
    if ((p.fetch || p.sync || p.replay || p.repairOnly) && !p.disk) return false; // all of it needs the disk open
    if (p.disk && (!a.attach || !a.member || !a.sized || a.removed !== undefined)) return false;
    if (a.designated === ME && a.handover === undefined && (p.disk || p.fetch || p.sync || p.replay)) return false; // the primary's own disk
    if (p.replay && (!a.replay || !syncDone)) return false; // replay only over a complete sync (a consistent image)
    if (p.sync && (!a.sync || syncDone || a.designated === undefined || a.handover !== undefined)) return false;
    if (p.fetch && (!a.connect || a.level >= 3)) return false; // fetch pauses from space level 3 on
    if (p.repairOnly && (p.replay || !syncDone)) return false;
    if (a.replayLink === undefined && (p.fetch || p.sync || p.replay)) return false; // join not finished
    // the space limits only ever switch fetching off
    return p.disk === p0.disk && p.sync === p0.sync && p.replay === p0.replay && (p.fetch === p0.fetch || !p.fetch);
  }), runs(3_000));
  t.ok(replays > 50 && syncs > 50, `replay (${replays}) and sync (${syncs}) plans were drawn`);
});

// ---------------------------------------------------------------- decideStartupGate

t.test('decideStartupGate: closed only while a peer may still answer; once open, later rounds stay open', async () => {
  const gateArb = fc.record({
    startedMs: fc.integer({ min: 0, max: 1_000_000 }),
    waited: fc.integer({ min: -1_000, max: 200_000 }),
    later: fc.integer({ min: 0, max: 100_000 }),
    graceMs: fc.integer({ min: 0, max: 120_000 }),
    peerCount: fc.integer({ min: 0, max: 4 }),
    pulledFrom: fc.subarray(['alpha', 'charlie']),
  });
  fc.assert(fc.property(gateArb, (g) => {
    const at = (nowMs: number, pulledFrom: readonly string[]) => decideStartupGate({ nowMs, startedMs: g.startedMs, graceMs: g.graceMs, peerCount: g.peerCount, pulledFrom });
    const now = g.startedMs + g.waited;
    const gate = at(now, g.pulledFrom);
    const mustOpen = g.peerCount === 0 || g.pulledFrom.length > 0 || g.waited >= g.graceMs;
    if (gate.open !== mustOpen) return false;
    // monotone: more time or more merged peers never close it again
    if (gate.open && !at(now + g.later, g.pulledFrom).open) return false;
    if (gate.open && !at(now, [...g.pulledFrom, 'delta']).open) return false;
    return gate.why.length > 0;
  }), runs(3_000));
});

// ---------------------------------------------------------------- planDevice

t.test('planDevice: the device exists only while the primary role runs; the role is not given up under it', async () => {
  const devArb = fc.record({ enabled: likely, attached: fc.boolean(), busy: fc.constantFrom(false, false, true), failedAtMs: fc.constantFrom(undefined, undefined, 0, 20_000, 100_000) });
  const primaryArb = fc.constantFrom({ kind: 'none' as const }, { kind: 'none' as const }, { kind: 'stop-primary' as const, reason: 'x' }, { kind: 'start-primary' as const }, { kind: 'rotate' as const, toSeq: 4 });
  const phaseArb = fc.constantFrom('down' as const, 'starting' as const, 'primary' as const, 'primary' as const, 'stopping' as const, 'failed' as const);
  fc.assert(fc.property(devArb, phaseArb, primaryArb, fc.integer({ min: 0, max: 150_000 }), (dev: DeviceRuntime, phase, primary, nowMs) => {
    const p = planDevice(dev, phase, primary, nowMs);
    if (!dev.enabled) return p.action === 'none' && !p.holdPrimary;
    if (p.action === 'attach') {
      if (phase !== 'primary' || primary.kind === 'stop-primary') return false; // only under a running role
      if (dev.attached || dev.busy) return false; // never twice, never while one runs
      if (dev.failedAtMs !== undefined && nowMs - dev.failedAtMs < DEVICE_RETRY_MS) return false; // retry paced
    }
    if (p.action === 'detach' && (dev.busy || !dev.attached || (phase === 'primary' && primary.kind !== 'stop-primary'))) return false;
    const present = dev.attached || dev.busy;
    // stop-primary is held exactly while the device (or an attach/detach of it) is still there
    if (p.holdPrimary !== (primary.kind === 'stop-primary' && present)) return false;
    // a role that is leaving gets its device removed
    const leaving = primary.kind === 'stop-primary' || phase !== 'primary' && phase !== 'starting';
    if (leaving && dev.attached && !dev.busy && p.action !== 'detach') return false;
    return true;
  }), runs(3_000));
});

// ---------------------------------------------------------------- decidePrimaryEmergency

t.test('decidePrimaryEmergency: enters only at level 4, leaves only at level 0, never flaps', async (t) => {
  let cycles = 0;
  fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: MAX_SPACE_LEVEL }), { minLength: 1, maxLength: 40 }), (raws) => {
    let level = 0;
    let mode: LoggingMode = 'logging';
    let enteredAt: number | undefined;
    for (const [round, raw] of raws.entries()) {
      level = nextSpaceLevel(level, raw, true);
      const action = decidePrimaryEmergency(level, mode);
      if (action === 'enter') {
        if (mode !== 'logging' || level < MAX_SPACE_LEVEL) return false;
        mode = 'direct';
        enteredAt = round;
      } else if (action === 'leave') {
        if (mode !== 'direct' || level !== 0) return false;
        // the level falls one step per round: from 4 to 0 takes at least 4 rounds
        if (enteredAt !== undefined && round - enteredAt < MAX_SPACE_LEVEL) return false;
        cycles++;
        mode = 'logging';
      } else if (mode === 'logging' && level >= MAX_SPACE_LEVEL) {
        return false; // /mars about to be full and still logging
      }
    }
    // the transient modes never move on their own
    return (['entering', 'resuming'] as const).every((m) => [0, 2, 4].every((l) => decidePrimaryEmergency(l, m) === 'none'));
  }), runs(2_000));
  t.ok(cycles > 10, `emergency cycles were drawn (${cycles})`);
});

// ---------------------------------------------------------------- decideSecretSet

const SECRETS = [1, 2, 3].map((n) => Buffer.alloc(32, n));
const IDS = SECRETS.map(keyId);
/** keyId is an HKDF: looked up for the three secrets of these tests */
const idOf = (b: Buffer) => IDS[SECRETS.findIndex((x) => x.equals(b))]!;

const ringArb = fc.oneof(
  fc.constantFrom(0, 1, 2).map((i) => ({ dial: SECRETS[i]! }) as SecretRing),
  fc.tuple(fc.constantFrom(0, 1, 2), fc.constantFrom(0, 1, 2), fc.constantFrom('next' as const, 'previous' as const))
    .filter(([a, b]) => a !== b).map(([a, b, role]) => ({ dial: SECRETS[a]!, other: { role, secret: SECRETS[b]! } }) as SecretRing),
);

const secretReqArb = fc.record({
  phase: fc.constantFrom(...ROTATION_PHASES) as fc.Arbitrary<RotationPhase>,
  oldI: fc.constantFrom(0, 1, 2),
  newI: fc.constantFrom(0, 1, 2),
  sentI: fc.constantFrom(0, 1, 2), // the secret actually sent (should be newI's)
  sessionI: fc.constantFrom(0, 1, 2),
  encrypted: likely,
});

t.test('decideSecretSet: moves only forward, keeps the session\'s key, holds only the two keys of the rotation', async (t) => {
  let changed = 0;
  fc.assert(fc.property(ringArb, secretReqArb, (ring, r) => {
    const req = { phase: r.phase, oldId: IDS[r.oldI]!, newId: IDS[r.newI]!, secret: SECRETS[r.sentI]! };
    const session = { keyId: IDS[r.sessionI]!, encrypted: r.encrypted };
    const d = decideSecretSet(ring, req, session);
    if ('refuse' in d) return d.refuse.length > 0;
    if (!r.encrypted || r.oldI === r.newI || r.sentI !== r.newI) return false; // a new secret only on an encrypted session, and only the one named
    const before = phaseIndex(ring, req.oldId, req.newId);
    if (before === undefined) return false; // a ring of another rotation is never touched
    if (!d.changed) return d.ring === ring && ROTATION_PHASES.indexOf(r.phase) + 1 <= before;
    changed++;
    const after = phaseIndex(d.ring, req.oldId, req.newId);
    if (after !== ROTATION_PHASES.indexOf(r.phase) + 1 || after <= before) return false; // forward, to the phase asked for
    const ids = Object.values(ringIds(d.ring));
    if (!ids.includes(session.keyId)) return false; // the session's own key is never retired
    if (!ids.every((id) => id === req.oldId || id === req.newId)) return false;
    // a repeated request changes nothing
    const again = decideSecretSet(d.ring, req, session);
    return !('refuse' in again) && !again.changed;
  }), runs(3_000));
  t.ok(changed > 50, `rings changed (${changed})`);
});

t.test('decideSecretSet: members driven phase by phase, each request late or repeated, always share a key', async () => {
  // The coordinator (marsadm rotate-secret) sends phase k+1 only after every member took phase k;
  // a member may get any earlier phase again at any time (a late or repeated request).
  fc.assert(fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 2 })), { maxLength: 30 }), (late) => {
    const members: SecretRing[] = [0, 1, 2].map(() => ({ dial: SECRETS[0]! }));
    const oldId = IDS[0]!;
    const newId = IDS[1]!;
    const accepts = (r: SecretRing) => [r.dial, ...(r.other ? [r.other.secret] : [])].map(idOf);
    const connected = () => members.every((a) => members.every((b) => accepts(b).includes(idOf(a.dial))));
    let li = 0;
    const send = (m: number, k: number): boolean => {
      // the session that carries the request is authenticated with the coordinator's dial key
      const d = decideSecretSet(members[m]!, { phase: ROTATION_PHASES[k]!, oldId, newId, secret: SECRETS[1]! }, { keyId: idOf(members[0]!.dial), encrypted: true });
      if ('refuse' in d) return false;
      members[m] = d.ring;
      return connected();
    };
    for (let k = 0; k < ROTATION_PHASES.length; k++) {
      for (let m = 0; m < members.length; m++) {
        if (!send(m, k)) return false;
        if (li < late.length) {
          const [lk, lm] = late[li++]!;
          if (!send(lm, Math.min(lk, k))) return false;
        }
      }
    }
    return members.every((r) => phaseIndex(r, oldId, newId) === 3);
  }), runs(300));
});

// ---------------------------------------------------------------- decideAdmission

t.test('decideAdmission: never this host, never a non-member, a removed host only to learn of its removal', async (t) => {
  const linkArb = fc.option(fc.record({ stampUs: fc.integer({ min: 1, max: 5 }), deleted: fc.boolean() }), { nil: undefined });
  let members = 0;
  fc.assert(fc.property(fc.constantFrom('alpha', 'bravo', 'charlie'), fc.constantFrom('u-1', 'u-2', ANY_UUID), linkArb, linkArb, (peer, uuid, member, marker) => {
    const tree = new Map<string, { value: string; stampUs: number; deleted: boolean }>();
    if (member) tree.set(`ips/ip-${peer}`, { value: '127.0.0.9', ...member });
    if (marker) tree.set(`ips/removed-${peer}`, { value: 'by charlie', ...marker });
    const lookup: LinkLookup = (p) => tree.get(p);
    const a = decideAdmission(lookup, 'alpha', peer, uuid);
    if (peer === 'alpha') return 'refuse' in a; // nobody may claim to be this host
    if ('refuse' in a) return true;
    const markerInForce = marker !== undefined && !marker.deleted && !(member !== undefined && !member.deleted && member.stampUs > marker.stampUs);
    if (uuid === ANY_UUID) return a.admit === 'joining'; // join requests only
    if (markerInForce) return a.admit === 'removed';
    if (a.admit === 'member') members++;
    return a.admit === 'member' && member !== undefined && !member.deleted;
  }), runs(2_000));
  t.ok(members > 50, `members were admitted (${members})`);
});

// ---------------------------------------------------------------- planInvalidate

const HOST = 'bravo';
const PRIMARY = 'alpha';

const invalidateArb = fc.record({
  // the primary's history: logfiles 1..n with their origin and length
  history: fc.array(fc.record({ origin: fc.constantFrom(PRIMARY, PRIMARY, 'charlie'), len: fc.constantFrom(100, 200, 300) }), { minLength: 1, maxLength: 6 }),
  // this host: shares the first `shared` logfiles (the last one maybe only partly), then its own
  shared: fc.nat({ max: 6 }),
  cut: fc.constantFrom(undefined, undefined, 50, 100),
  own: fc.array(fc.record({ origin: fc.constantFrom(HOST, HOST, PRIMARY), len: fc.constantFrom(100, 150, 300), variant: fc.constantFrom('b', 'c') }), { maxLength: 3 }),
  // its chain starts at this number (older links were deleted by log-delete)
  myFirst: fc.constantFrom(1, 1, 2),
  localMissing: fc.nat({ max: 8 }),
  deleted: fc.nat({ max: 8 }),
  primaryReplaySeq: fc.option(fc.integer({ min: 1, max: 6 }), { nil: undefined }),
});

function chain(steps: { seq: number; origin: string; len: number; variant: string }[], first: number): { seq: number; value: string }[] {
  let prev = '';
  const out: { seq: number; value: string }[] = [];
  for (const s of steps) {
    prev = nextVersionLink(prev, s.seq, s.origin, s.len, s.variant.repeat(64));
    if (s.seq >= first) out.push({ seq: s.seq, value: prev });
  }
  return out;
}

t.test('planInvalidate: the plan leaves a chain the primary\'s history extends, and never deletes the primary\'s logfiles', async (t) => {
  const kinds = { incremental: 0, full: 0, refused: 0 };
  fc.assert(fc.property(invalidateArb, (a) => {
    const theirSteps: { seq: number; origin: string; len: number; variant: string }[] = a.history.map((h, i) => ({ seq: i + 1, origin: h.origin, len: h.len, variant: 'a' }));
    const shared = Math.min(a.shared, theirSteps.length);
    const mySteps = theirSteps.slice(0, shared);
    if (a.cut !== undefined && mySteps.length > 0) mySteps[mySteps.length - 1] = { ...mySteps[mySteps.length - 1]!, len: a.cut };
    a.own.forEach((o) => mySteps.push({ seq: mySteps.length + 1, origin: o.origin, len: o.len, variant: o.variant }));
    const entries = [
      ...chain(theirSteps, 1).map((e) => ({ ...e, host: PRIMARY })),
      ...chain(mySteps, a.myFirst).map((e) => ({ ...e, host: HOST })),
    ];
    const chains = chainsFrom(entries);
    const local = new Map<string, number>();
    [...theirSteps, ...mySteps].forEach((s, i) => { if (i !== a.localMissing) local.set(logName(s.seq, s.origin), Math.max(local.get(logName(s.seq, s.origin)) ?? 0, s.len)); });
    const deletedLogs = new Set(theirSteps.filter((_, i) => i === a.deleted).map((s) => logName(s.seq, s.origin)));
    const primaryReplay = a.primaryReplaySeq !== undefined && a.primaryReplaySeq <= theirSteps.length
      ? { seq: a.primaryReplaySeq, origin: theirSteps[a.primaryReplaySeq - 1]!.origin } : undefined;
    const plan = planInvalidate({ host: HOST, primary: PRIMARY, chains, localLogBytes: local, deletedLogs, primaryReplay });
    kinds[plan.kind]++;
    if (plan.kind === 'refused') return plan.reason.length > 0;
    const theirs: Chain = chains.get(PRIMARY)!;
    const mine: Chain = chains.get(HOST) ?? new Map();
    const theirNames = new Set([...theirs.values()].map((l) => logName(l.seq, l.origin)));
    // only own logfiles are deleted everywhere, and none the primary's history holds
    if (plan.deleteOwnLogs.some((n) => !n.endsWith(`-${HOST}`) || theirNames.has(n))) return false;
    if (plan.unlinkLocalLogs.some((n) => n.endsWith(`-${HOST}`) || !local.has(n))) return false;
    if (plan.replay.len !== 0) return false;
    if ([...plan.writeVersions.keys()].some((n) => plan.deleteVersions.includes(n))) return false;
    // every versionlink written is one of the two chains' (none invented)
    for (const [n, v] of plan.writeVersions) if (mine.get(n)?.raw !== v && theirs.get(n)?.raw !== v) return false;
    // the chain left here: no split brain with the primary any more (extendVersion is hashed later: left out)
    const after = new Map([...mine].filter(([n]) => !plan.deleteVersions.includes(n) && !(plan.extendVersion && n === plan.extendVersion.seq)));
    for (const [n, v] of plan.writeVersions) after.set(n, chainsFrom([{ seq: n, host: 'x', value: v }]).get('x')!.get(n)!);
    if (commonPoint(after, theirs) !== undefined) return false;
    if (plan.kind === 'incremental') {
      // replay restarts at the common point, which lies in the primary's history
      const c = plan.common;
      if (plan.replay.seq !== c.seq || plan.replay.origin !== c.origin || plan.replay.minPos !== c.pos) return false;
      const at = theirs.get(c.seq);
      if (at && at.origin === c.origin && at.logPos < c.pos) return false;
      // the writes since the split are read from local copies that are complete
      for (const p of plan.ourParts) if ((local.get(logName(p.seq, p.origin)) ?? -1) < p.toPos) return false;
      if (plan.truncate && plan.truncate.name !== logName(c.seq, c.origin)) return false;
    } else {
      if (!primaryReplay || plan.replay.seq !== primaryReplay.seq || plan.replay.minPos !== 0) return false;
    }
    return true;
  }), runs(2_000));
  t.ok(kinds.incremental > 50 && kinds.full > 50, `both kinds of plan were drawn (${JSON.stringify(kinds)})`);
});

// ---------------------------------------------------------------- planResize, decideExportGrowth

t.test('planResize: only the designated primary, only growth, aligned, fitting every member\'s disk', async (t) => {
  const K = RESIZE_ALIGN_BYTES;
  const sizeArb = fc.integer({ min: 1, max: 64 }).chain((n) => fc.constantFrom(n * K, n * K + 512));
  let grown = 0;
  fc.assert(fc.property(
    fc.constantFrom('alpha', 'alpha', 'bravo', undefined, '(none)'),
    fc.integer({ min: 1, max: 48 }).map((n) => n * K),
    fc.option(sizeArb, { nil: undefined }),
    fc.array(fc.record({ host: fc.constantFrom('alpha', 'bravo', 'charlie'), actsize: fc.option(sizeArb, { freq: 8, nil: undefined }) }), { minLength: 1, maxLength: 3 }),
    (designated, current, requested, ms) => {
      const members = ms.map((m) => ({ host: m.host, actsizeBytes: m.actsize }));
      const d = planResize({ res: 'r0', host: 'alpha', designatedPrimary: designated, currentSizeBytes: current, requestedSizeBytes: requested, members });
      if (!d.ok) return d.error.length > 0;
      if (designated !== 'alpha' || !members.some((m) => m.host === 'alpha')) return false;
      if (d.fromSizeBytes !== current || d.toSizeBytes < current) return false; // never shrinks
      if (d.toSizeBytes % K !== 0) return false;
      if (members.some((m) => m.actsizeBytes === undefined || m.actsizeBytes < d.toSizeBytes)) return false; // fits every disk
      const smallest = Math.min(...members.map((m) => m.actsizeBytes!));
      if (requested === undefined && d.toSizeBytes !== smallest - (smallest % K)) return false;
      if (requested !== undefined && d.toSizeBytes !== requested) return false;
      if (d.toSizeBytes > current) grown++;
      return d.unchanged === (d.toSizeBytes === current);
    }), runs(3_000));
  t.ok(grown > 50, `resizes were planned (${grown})`);
});

t.test('decideExportGrowth: the export only grows, to the size link, within the disk', async () => {
  const n = fc.integer({ min: 0, max: 10 }).map((x) => x * RESIZE_ALIGN_BYTES);
  fc.assert(fc.property(n, fc.option(n, { nil: undefined }), n, (exp, link, disk) => {
    const g = decideExportGrowth(exp, link, disk);
    if (g.kind === 'grow') return link !== undefined && g.toSizeBytes === link && g.toSizeBytes > exp && g.toSizeBytes <= disk;
    if (g.kind === 'refuse') return link !== undefined && link > disk && link > exp;
    return link === undefined || link <= exp;
  }), runs(2_000));
});
