// The replayer's pure decision (daemon/replay/switchover.ts): what to apply, when to wait,
// when to switch to the next logfile, and when to stop (the MARS user manual: replaying in order). Every
// switchover condition has a passing and a failing case.
import t from 'tap';
import { initialVersionLinks, nextVersionLink, versionChainPrefix, type ReplayLink } from '../../common/log/links.js';
import { contentDigestOf } from '../../common/log/content-digest.js';
import {
  REPLAY_STOP_CODE, decideReplayStep, replayRestBytes,
  type LocalLogfile, type ReplayInput, type ScanOutcome, type VersionLinkEntry,
} from '../../daemon/replay/switchover.js';

// One content for every logfile: these tests are about positions and chains, not bytes.
const CONTENT = contentDigestOf(Buffer.from('logfile bytes'));

const ME = 'beta';
const A = 'alpha';
const C = 'gamma';

// The origin's chain: version-0-alpha (create-resource) then one link per logfile length.
const V0 = initialVersionLinks(1, A).previous.value;

/** versionlinks of `host` for logfiles 1.. with the given origins and lengths, chained from V0 */
function chain(host: string, files: { origin: string; len: number }[]): VersionLinkEntry[] {
  const out: VersionLinkEntry[] = [{ seq: 0, host, value: V0 }];
  let prev = V0;
  files.forEach((f, i) => {
    prev = nextVersionLink(prev, i + 1, f.origin, f.len, CONTENT);
    out.push({ seq: i + 1, host, value: prev });
  });
  return out;
}

function link(seq: number, origin: string, minPos: number, len = 0): ReplayLink {
  return { seq, origin, minPos, len };
}

function clean(pos: number): ScanOutcome {
  return { endPos: pos, limitBytes: pos, stopClass: 'clean', stopKind: 'clean-end', detail: 'end' };
}

function torn(pos: number, limitBytes: number): ScanOutcome {
  return { endPos: pos, limitBytes, stopClass: 'torn', stopKind: 'truncated-record', detail: 'record continues beyond the end' };
}

function incompleteWrite(pos: number, limitBytes: number): ScanOutcome {
  return { endPos: pos, limitBytes, stopClass: 'incomplete-write', stopKind: 'clean-end', detail: 'end' };
}

function defect(pos: number, limitBytes: number, kind: ScanOutcome['stopKind'] = 'bad-checksum'): ScanOutcome {
  return { endPos: pos, limitBytes, stopClass: 'defect', stopKind: kind, detail: 'payload does not match' };
}

/**
 * A secondary `beta` replaying alpha's logfile 1 at position `pos`; alpha says logfile 1 has
 * `originLen` bytes; `withNext` adds alpha's logfile 2 and version-2-alpha (logfile 1 final).
 */
function input(o: {
  pos: number; len?: number; localBytes?: number; originLen?: number; withNext?: boolean; scan?: ScanOutcome;
  extraLogs?: LocalLogfile[]; extraVersions?: VersionLinkEntry[]; ownVersions?: VersionLinkEntry[];
  isDesignatedPrimary?: boolean; noOwn?: boolean;
}): ReplayInput {
  const originLen = o.originLen ?? o.localBytes ?? 0;
  const origin = chain(A, o.withNext ? [{ origin: A, len: originLen }, { origin: A, len: 0 }] : [{ origin: A, len: originLen }]);
  // own links as the replayer keeps them: version-1-beta describes the replay position
  const own = o.ownVersions ?? chain(ME, [{ origin: A, len: o.pos }]);
  const logfiles: LocalLogfile[] = [];
  if (o.localBytes !== undefined) logfiles.push({ seq: 1, origin: A, sizeBytes: o.localBytes });
  if (o.withNext) logfiles.push({ seq: 2, origin: A, sizeBytes: 0 });
  logfiles.push(...(o.extraLogs ?? []));
  return {
    host: ME,
    replay: link(1, A, o.pos, o.len ?? 0),
    logfiles,
    versionLinks: [...origin, ...(o.noOwn ? [] : own), ...(o.extraVersions ?? [])],
    scan: o.scan,
    designatedPrimary: A,
    isDesignatedPrimary: o.isDesignatedPrimary ?? false,
  };
}

t.test('bytes beyond the replay position are applied', async (t) => {
  t.same(decideReplayStep(input({ pos: 0, localBytes: 1000 })), { kind: 'apply', seq: 1, origin: A, fromPos: 0, toPos: 1000, repair: false, final: false });
  t.same(decideReplayStep(input({ pos: 400, localBytes: 1000, originLen: 5000 })), { kind: 'apply', seq: 1, origin: A, fromPos: 400, toPos: 1000, repair: false, final: false },
    'up to the local end while the origin writes on');
  t.same(decideReplayStep(input({ pos: 400, localBytes: 1000, scan: clean(300) })).kind, 'apply', 'a scan from another position is ignored');
});

t.test('a missing or malformed replay link stops with EINVAL', async (t) => {
  const step = decideReplayStep({ ...input({ pos: 0, localBytes: 10 }), replay: undefined });
  t.match(step, { kind: 'stop', code: REPLAY_STOP_CODE.EINVAL, reason: /replay-beta is missing/ });
});

t.test('the own versionlink is brought up to the replay link first', async (t) => {
  t.same(decideReplayStep(input({ pos: 700, localBytes: 1000, ownVersions: chain(ME, [{ origin: A, len: 300 }]) })),
    { kind: 'record-version', seq: 1, origin: A, logPos: 700 }, 'a stale own LOGPOS (crash between the link writes)');
  t.same(decideReplayStep(input({ pos: 0, localBytes: 1000, ownVersions: [{ seq: 0, host: ME, value: V0 }] })),
    { kind: 'record-version', seq: 1, origin: A, logPos: 0 }, 'a missing own versionlink');
  const bad = decideReplayStep(input({ pos: 0, localBytes: 1000, ownVersions: [{ seq: 0, host: ME, value: 'garbage:' }] }));
  t.match(bad, { kind: 'stop', code: REPLAY_STOP_CODE.EINVAL, reason: /version-000000000-beta is malformed/ });

  // On its own logfile the host's versionlink is the origin's: never rewritten by replay.
  const own: ReplayInput = {
    host: A, replay: link(1, A, 100), logfiles: [{ seq: 1, origin: A, sizeBytes: 500 }],
    versionLinks: chain(A, [{ origin: A, len: 500 }]), scan: undefined, designatedPrimary: C, isDesignatedPrimary: false,
  };
  t.same(decideReplayStep(own), { kind: 'apply', seq: 1, origin: A, fromPos: 100, toPos: 500, repair: false, final: false });
});

t.test('a half-applied window left by a crash is re-applied first', async (t) => {
  t.same(decideReplayStep(input({ pos: 100, len: 900, localBytes: 2000, noOwn: true })),
    { kind: 'apply', seq: 1, origin: A, fromPos: 100, toPos: 1000, repair: true, final: false }, 'before anything else, even the own versionlink');
  t.match(decideReplayStep(input({ pos: 100, len: 900, localBytes: 800 })),
    { kind: 'wait', reason: /less than the end 1000 of the half-applied window/ }, 'waits until the copy covers the window');
  t.match(decideReplayStep({ ...input({ pos: 100, len: 900 }), logfiles: [] }),
    { kind: 'stop', code: REPLAY_STOP_CODE.ENOENT, refetch: true, file: 'log-000000001-alpha' }, 'missing logfile: refetch');
  t.match(decideReplayStep(input({ pos: 100, len: 900, localBytes: 2000, scan: defect(100, 1000) })),
    { kind: 'stop', code: REPLAY_STOP_CODE.EBADMSG, refetch: true, defect: { offset: 100 }, reason: /stays inconsistent/ },
    'a defect inside the window stops with a refetch');
});

t.test('a write request held back at the end of the copy waits for the rest, or for the origin to finish the logfile there', async (t) => {
  t.match(decideReplayStep(input({ pos: 600, localBytes: 900, originLen: 5000, scan: incompleteWrite(600, 900) })),
    { kind: 'wait', caughtUp: false, reason: /write request at offset 600 is incomplete in the local copy \(900 bytes\)/ }, 'the copy did not grow: wait, not caught up');
  t.match(decideReplayStep(input({ pos: 600, localBytes: 900, scan: incompleteWrite(600, 900) })),
    { kind: 'wait', caughtUp: false }, 'not caught up even where the origin\'s length is not known');
  t.same(decideReplayStep(input({ pos: 600, localBytes: 1200, originLen: 5000, scan: incompleteWrite(600, 900) })),
    { kind: 'apply', seq: 1, origin: A, fromPos: 600, toPos: 1200, repair: false, final: false }, 'the copy grew: read again');
  t.same(decideReplayStep(input({ pos: 600, localBytes: 900, originLen: 900, withNext: true, scan: incompleteWrite(600, 900) })),
    { kind: 'apply', seq: 1, origin: A, fromPos: 600, toPos: 900, repair: false, final: true },
    'the origin finished the logfile inside that write request (its crash cut it off): apply it as it stands');
  t.match(decideReplayStep(input({ pos: 900, localBytes: 900, originLen: 900, withNext: true, scan: clean(900) })),
    { kind: 'switch' }, 'then switch as usual');
  t.match(decideReplayStep(input({ pos: 600, localBytes: 900, originLen: 600, withNext: true, scan: incompleteWrite(600, 900) })),
    { kind: 'switch' }, 'the logfile was finished before the held request (a forced failover): it is not history, switch');
  t.same(decideReplayStep(input({ pos: 100, len: 800, localBytes: 2000, originLen: 900, withNext: true })),
    { kind: 'apply', seq: 1, origin: A, fromPos: 100, toPos: 900, repair: true, final: true }, 'a repair window ending at the final length is final');
});

t.test('a logfile that is not there yet', async (t) => {
  t.match(decideReplayStep(input({ pos: 0 })), { kind: 'wait', reason: /log-000000001-alpha not yet present/ });
  t.match(decideReplayStep(input({ pos: 50 })), { kind: 'stop', code: REPLAY_STOP_CODE.ENOENT, refetch: true, reason: /50 bytes of it were replayed/ });
  t.match(decideReplayStep(input({ pos: 500, localBytes: 100, originLen: 900 })), { kind: 'wait', reason: /less than the replayed 500/ },
    'a copy shorter than the replayed position (being fetched again)');
});

t.test('torn tail at the local end waits; a defect stops and asks for a refetch', async (t) => {
  t.match(decideReplayStep(input({ pos: 600, localBytes: 700, originLen: 5000, scan: torn(600, 700) })),
    { kind: 'wait', reason: /not yet fetched further: incomplete record at offset 600.*origin has 5000 bytes/ }, 'origin has more');
  t.match(decideReplayStep({ ...input({ pos: 600, localBytes: 700, scan: torn(600, 700) }), versionLinks: chain(ME, [{ origin: A, len: 600 }]) }),
    { kind: 'wait', reason: /origin's length is not known yet/ }, 'origin length unknown');
  t.same(decideReplayStep(input({ pos: 600, localBytes: 900, originLen: 5000, scan: torn(600, 700) })),
    { kind: 'apply', seq: 1, origin: A, fromPos: 600, toPos: 900, repair: false, final: false }, 'the copy grew: read again');

  const inside = decideReplayStep(input({ pos: 600, localBytes: 700, originLen: 5000, scan: defect(600, 700) }));
  t.match(inside, {
    kind: 'stop', code: REPLAY_STOP_CODE.EBADMSG, refetch: true,
    defect: { seq: 1, origin: A, file: 'log-000000001-alpha', offset: 600, kind: 'bad-checksum' },
    reason: /defective logfile copy log-000000001-alpha at offset 600, inside the part its origin confirmed.*re-fetching/,
  });
  const grown = decideReplayStep(input({ pos: 600, localBytes: 3000, originLen: 5000, scan: defect(600, 700) }));
  t.equal(grown.kind, 'stop', 'a defect is never read past, however much the copy grows');
  const beyond = decideReplayStep(input({ pos: 600, localBytes: 700, originLen: 100, scan: defect(600, 700) }));
  t.match(beyond, { kind: 'stop', refetch: true, reason: /beyond what the origin has confirmed/ });
  const finalFile = decideReplayStep(input({ pos: 600, localBytes: 700, originLen: 700, withNext: true, scan: defect(600, 700) }));
  t.match(finalFile, { kind: 'stop', refetch: true, reason: /inside the part its origin confirmed/ }, 'a file whose successor exists');
  const field = decideReplayStep(input({ pos: 600, localBytes: 700, originLen: 5000, scan: defect(600, 700, 'bad-field') }));
  t.match(field, { kind: 'stop', code: REPLAY_STOP_CODE.EBADMSG, refetch: false, reason: /cannot help/ },
    'a verified record beyond the device is copied faithfully: no refetch');
});

t.test('nothing beyond the origin\'s final length is applied', async (t) => {
  t.same(decideReplayStep(input({ pos: 0, localBytes: 1500, originLen: 1000, withNext: true })),
    { kind: 'apply', seq: 1, origin: A, fromPos: 0, toPos: 1000, repair: false, final: true });
  t.match(decideReplayStep(input({ pos: 900, localBytes: 1500, originLen: 1000, withNext: true, scan: torn(900, 1000) })),
    { kind: 'stop', code: REPLAY_STOP_CODE.EBADMSG, refetch: true, reason: /ends inside a record at offset 900.*finished it at 1000/ },
    'a record crossing the final length is damage, not a tear');
  t.match(decideReplayStep(input({ pos: 900, localBytes: 950, originLen: 1000, withNext: true, scan: torn(900, 950) })),
    { kind: 'wait', reason: /not yet fetched further/ }, 'but a torn record before the local end of a short copy waits');
  t.match(decideReplayStep(input({ pos: 1000, localBytes: 1200, originLen: 1000, withNext: true, scan: torn(1000, 1200) })),
    { kind: 'switch' }, 'torn bytes beyond the final length are not part of the history');
  t.match(decideReplayStep(input({ pos: 1200, localBytes: 1200, originLen: 1000, withNext: true })),
    { kind: 'stop', code: REPLAY_STOP_CODE.EPROTO, reason: /replayed 1200 bytes.*finished it at 1000/ }, 'replayed beyond the final length');
});

t.test('caught up with the current logfile', async (t) => {
  t.match(decideReplayStep(input({ pos: 1000, localBytes: 1000, scan: clean(1000) })), { kind: 'wait', caughtUp: true, reason: /caught up/ });
  t.match(decideReplayStep(input({ pos: 1000, localBytes: 1000 })), { kind: 'wait', caughtUp: true }, 'without a scan at the end');
  t.match(decideReplayStep(input({ pos: 1000, localBytes: 1000, originLen: 3000, scan: clean(1000) })),
    { kind: 'wait', caughtUp: false, reason: /not yet fetched further: 1000 of 3000/ });
});

t.test('switch to the next logfile when every condition holds', async (t) => {
  t.same(decideReplayStep(input({ pos: 1000, localBytes: 1000, withNext: true, scan: clean(1000) })),
    { kind: 'switch', from: { seq: 1, origin: A, endPos: 1000 }, to: { seq: 2, origin: A } });
});

t.test('condition 1: exactly one logfile with the next number', async (t) => {
  const two = decideReplayStep(input({ pos: 1000, localBytes: 1000, withNext: true, extraLogs: [{ seq: 2, origin: C, sizeBytes: 0 }] }));
  t.match(two, { kind: 'stop', code: REPLAY_STOP_CODE.EEXIST, reason: /split brain: two logfiles numbered 2 from alpha and gamma/ });
  const byLink = decideReplayStep(input({
    pos: 1000, localBytes: 1000, withNext: true,
    extraVersions: [{ seq: 2, host: C, value: nextVersionLink(chain(C, [{ origin: A, len: 1000 }])[1]!.value, 2, C, 0, CONTENT) }],
  }));
  t.match(byLink, { kind: 'stop', code: REPLAY_STOP_CODE.EEXIST }, 'the other origin is known from its versionlink alone');
  t.same(decideReplayStep(input({ pos: 500, localBytes: 1000, withNext: true, extraLogs: [{ seq: 2, origin: C, sizeBytes: 0 }] })).kind, 'apply',
    'the current logfile is still replayed up to its end');
  // Another host's versionlink for logfile 2 names alpha's file: not a second origin.
  const secondaryLink = { seq: 2, host: C, value: nextVersionLink(chain(C, [{ origin: A, len: 1000 }])[1]!.value, 2, A, 0, CONTENT) };
  t.match(decideReplayStep(input({ pos: 1000, localBytes: 1000, withNext: true, extraVersions: [secondaryLink] })), { kind: 'switch' });
});

t.test('condition 2: no hole in the numbering', async (t) => {
  // Emergency mode on alpha: logfile 1 final at 1000, then log-12-alpha and version-11-alpha.
  const emergency = {
    extraLogs: [{ seq: 12, origin: A, sizeBytes: 0 }],
    extraVersions: [{ seq: 11, host: A, value: `${'0'.repeat(32)},log-000000011-alpha,0:` }],
  };
  t.match(decideReplayStep(input({ pos: 1000, localBytes: 1000, ...emergency })),
    { kind: 'stop', code: REPLAY_STOP_CODE.ENODATA, reason: /hole in the logfile sequence after 1 \(emergency mode or deleted logfile\): the next logfile is number 11.*consistent at the end of log-000000001-alpha \(1000 bytes\)/ });
  t.same(decideReplayStep(input({ pos: 200, localBytes: 2000, originLen: 1000, ...emergency })),
    { kind: 'apply', seq: 1, origin: A, fromPos: 200, toPos: 1000, repair: false, final: true }, 'the rest of the last logfile before the hole is replayed');
  t.match(decideReplayStep(input({ pos: 600, localBytes: 600, originLen: 1000, ...emergency })),
    { kind: 'wait', reason: /not yet fetched completely: 600 of 1000/ });
  t.match(decideReplayStep({ ...input({ pos: 1000, localBytes: 1000, ...emergency }), versionLinks: [...chain(ME, [{ origin: A, len: 1000 }]), ...emergency.extraVersions] }),
    { kind: 'wait', reason: /waiting for version-000000001-alpha/ }, 'the final length must be known');
  t.match(decideReplayStep(input({ pos: 1000, localBytes: 1000, withNext: true, extraLogs: [{ seq: 3, origin: A, sizeBytes: 0 }] })),
    { kind: 'switch' }, 'contiguous numbers pass');
});

t.test('condition 3: own versionlink identical to the origin\'s', async (t) => {
  const ownV0 = `${'0'.repeat(32)},log-000000000-beta,0:`; // beta's own, different history
  let prev = ownV0;
  const own: VersionLinkEntry[] = [{ seq: 0, host: ME, value: ownV0 }];
  prev = nextVersionLink(prev, 1, A, 1000, CONTENT);
  own.push({ seq: 1, host: ME, value: prev });
  const step = decideReplayStep(input({ pos: 1000, localBytes: 1000, withNext: true, ownVersions: own }));
  t.match(step, { kind: 'stop', code: REPLAY_STOP_CODE.EPROTO, reason: /version chain mismatch at 1: split brain\?/ });
  t.match(decideReplayStep(input({ pos: 1000, localBytes: 1000, withNext: true })), { kind: 'switch' }, 'identical links pass');
});

t.test('condition 4: the next origin\'s versionlink must exist', async (t) => {
  const base = input({ pos: 1000, localBytes: 1000, withNext: true });
  const without = { ...base, versionLinks: base.versionLinks.filter((e) => !(e.seq === 2 && e.host === A)) };
  t.match(decideReplayStep(without), { kind: 'wait', caughtUp: true, reason: /waiting for version-000000002-alpha/ });
  t.match(decideReplayStep({ ...without, isDesignatedPrimary: true }), { kind: 'switch' }, 'a designated primary does not wait for it');
  t.match(decideReplayStep(base), { kind: 'switch' });
});

t.test('condition 5: replayed exactly the origin\'s length (values, not string lengths)', async (t) => {
  // 1000 and 9999 have equally long decimal strings: MARS's length comparison would pass.
  t.match(decideReplayStep(input({ pos: 1000, localBytes: 1000, originLen: 9999, withNext: true })),
    { kind: 'wait', reason: /not yet fetched completely: 1000 of 9999/ });
  t.match(decideReplayStep(input({ pos: 9999, localBytes: 9999, originLen: 9999, withNext: true })), { kind: 'switch' });
  t.match(decideReplayStep(input({ pos: 1000, localBytes: 1000, originLen: 900 })),
    { kind: 'wait', caughtUp: true }, 'a stale (smaller) LOGPOS of a file the origin still writes is not an error');
  const stale = input({ pos: 1000, localBytes: 1000, originLen: 900, extraLogs: [{ seq: 2, origin: A, sizeBytes: 0 }] });
  t.match(decideReplayStep(stale), { kind: 'wait', reason: /waiting for version-000000002-alpha/ });
});

t.test('condition 6: the next versionlink continues the own chain', async (t) => {
  // Handover: gamma replayed alpha's logfile 1 to 1000 and continued with its own logfile 2.
  const gamma = chain(C, [{ origin: A, len: 1000 }]);
  const good = { seq: 2, host: C, value: nextVersionLink(gamma[1]!.value, 2, C, 0, CONTENT) };
  const base = input({ pos: 1000, localBytes: 1000, extraLogs: [{ seq: 2, origin: C, sizeBytes: 0 }], extraVersions: [good] });
  t.same(decideReplayStep(base), { kind: 'switch', from: { seq: 1, origin: A, endPos: 1000 }, to: { seq: 2, origin: C } });

  // gamma had replayed only 800 bytes when it was forced to primary.
  const gamma800 = chain(C, [{ origin: A, len: 800 }]);
  const bad = { seq: 2, host: C, value: nextVersionLink(gamma800[1]!.value, 2, C, 0, CONTENT) };
  const step = decideReplayStep({ ...base, versionLinks: [...base.versionLinks.filter((e) => e.host !== C), bad] });
  t.match(step, { kind: 'stop', code: REPLAY_STOP_CODE.EPROTO, reason: /version chain mismatch at 2: split brain\?/ });
  t.not(versionChainPrefix(gamma800[1]!.value), versionChainPrefix(gamma[1]!.value));
});

t.test('the next logfile must be present locally before switching', async (t) => {
  const base = input({ pos: 1000, localBytes: 1000, withNext: true });
  const step = decideReplayStep({ ...base, logfiles: base.logfiles.filter((l) => l.seq !== 2) });
  t.match(step, { kind: 'wait', reason: /next logfile log-000000002-alpha not yet present/ });
});

t.test('a designated primary never continues from its own logfile into a foreign one', async (t) => {
  const v: ReplayInput = {
    host: A, replay: link(1, A, 1000), logfiles: [{ seq: 1, origin: A, sizeBytes: 1000 }, { seq: 2, origin: C, sizeBytes: 0 }],
    versionLinks: [...chain(A, [{ origin: A, len: 1000 }]), { seq: 2, host: C, value: nextVersionLink(chain(C, [{ origin: A, len: 1000 }])[1]!.value, 2, C, 0, CONTENT) }],
    scan: undefined, designatedPrimary: A, isDesignatedPrimary: true,
  };
  t.match(decideReplayStep(v), { kind: 'stop', code: REPLAY_STOP_CODE.EEXIST, reason: /designated primary/ });
  t.match(decideReplayStep({ ...v, isDesignatedPrimary: false }), { kind: 'switch', to: { seq: 2, origin: C } }, 'a secondary follows the new primary');
});

t.test('rest bytes: known lengths of the current and following logfiles minus the replayed part', async (t) => {
  const v = input({ pos: 200, localBytes: 1000, originLen: 1500, withNext: true });
  const withSizes = { ...v, logfiles: v.logfiles.map((l) => (l.seq === 2 ? { ...l, sizeBytes: 700 } : l)) };
  t.equal(replayRestBytes(withSizes), 1300 + 700);
  t.equal(replayRestBytes(input({ pos: 1000, localBytes: 1000 })), 0);
  t.equal(replayRestBytes({ ...v, replay: undefined }), 0);
});

// A forced failover whose old primary (alpha) is gone: gamma replayed alpha's logfile 1 to 600
// bytes, became primary and started logfile 2. alpha's own versionlink still says 1000 (it
// wrote more before it died), and alpha never writes version-2-alpha. beta follows gamma.
function forcedFailover(pos: number, localBytes: number): ReplayInput {
  const gamma = chain(C, [{ origin: A, len: 600 }, { origin: C, len: 0 }]);
  return {
    host: ME,
    replay: link(1, A, pos),
    logfiles: [{ seq: 1, origin: A, sizeBytes: localBytes }, { seq: 2, origin: C, sizeBytes: 0 }],
    versionLinks: [...chain(A, [{ origin: A, len: 1000 }]), ...gamma, ...chain(ME, [{ origin: A, len: pos }])],
    scan: clean(pos),
    designatedPrimary: C,
    isDesignatedPrimary: false,
  };
}

t.test('after a forced failover the history goes on from where the new primary ended the old logfile', async (t) => {
  t.same(decideReplayStep(forcedFailover(600, 1000)), { kind: 'switch', from: { seq: 1, origin: A, endPos: 600 }, to: { seq: 2, origin: C } },
    'at gamma\'s end of logfile 1: switch to gamma\'s logfile 2 (alpha\'s bytes beyond it are not part of the history)');
  t.same(decideReplayStep(forcedFailover(0, 1000)), { kind: 'apply', seq: 1, origin: A, fromPos: 0, toPos: 600, repair: false, final: true },
    'never applies beyond gamma\'s end of logfile 1');
  t.match(decideReplayStep(forcedFailover(400, 400)), { kind: 'wait' }, 'waits for the rest of logfile 1 up to gamma\'s end');
  t.match(decideReplayStep(forcedFailover(800, 1000)), { kind: 'stop', code: REPLAY_STOP_CODE.EPROTO },
    'replayed beyond the new primary\'s end: this replica holds writes the new history lacks');
});

t.test('content: where the origin\'s versionlink names the replayed position, ours must equal it', async (t) => {
  // beta's copy of logfile 1 has other bytes: same logfile, LOGPOS and PREV, other DIGEST.
  const other = [{ seq: 0, host: ME, value: V0 }, { seq: 1, host: ME, value: nextVersionLink(V0, 1, A, 1000, contentDigestOf(Buffer.from('other bytes'))) }];
  const mismatch = { kind: 'stop', code: REPLAY_STOP_CODE.EBADMSG, refetch: false, contentMismatch: { seq: 1, origin: A, pos: 1000 },
    reason: /content mismatch in log-000000001-alpha at offset 1000: split brain or damaged copy.*run "marsadm invalidate"/ };
  t.match(decideReplayStep(input({ pos: 1000, localBytes: 1000, ownVersions: other })), mismatch, 'the origin still writes the logfile');
  t.match(decideReplayStep(input({ pos: 1000, localBytes: 1000, withNext: true, ownVersions: other })), mismatch, 'the origin finished it');
  t.match(decideReplayStep(input({ pos: 1000, localBytes: 1000 })), { kind: 'wait', caughtUp: true }, 'the same bytes: caught up');
  t.match(decideReplayStep(input({ pos: 1000, localBytes: 2000, originLen: 2000, ownVersions: other })), { kind: 'apply', fromPos: 1000 },
    'the origin\'s link names another position: nothing to compare yet');
  // The own link describes the replay position whatever its DIGEST: no 'record-version' loop.
  t.notMatch(decideReplayStep(input({ pos: 1000, localBytes: 1000, ownVersions: other })), { kind: 'record-version' });
});

t.test('content: a kept mismatch (content-mismatch-HOST) holds after a restart and once the origin wrote on', async (t) => {
  const other = [{ seq: 0, host: ME, value: V0 }, { seq: 1, host: ME, value: nextVersionLink(V0, 1, A, 1000, contentDigestOf(Buffer.from('other bytes'))) }];
  const kept = { seq: 1, origin: A, pos: 1000 };
  const held = { kind: 'stop', code: REPLAY_STOP_CODE.EBADMSG, refetch: false, contentMismatch: kept,
    reason: /content mismatch in log-000000001-alpha at offset 1000: split brain or damaged copy.*kept in content-mismatch-beta.*run "marsadm invalidate"/ };
  const movedOn = input({ pos: 1000, localBytes: 2000, originLen: 2000, ownVersions: other });
  t.match(decideReplayStep(movedOn), { kind: 'apply', fromPos: 1000 }, 'without the kept link: the comparison alone would apply further');
  t.match(decideReplayStep({ ...movedOn, keptMismatch: kept }), held, 'with it: the stop holds');
  t.match(decideReplayStep({ ...movedOn, keptMismatch: kept, replay: link(1, A, 1500) }), held, 'also beyond the position');
  t.match(decideReplayStep({ ...input({ pos: 1000, localBytes: 1000, ownVersions: other }), keptMismatch: kept }),
    { ...held, reason: /the origin's is / }, 'while both links name the position: the message with both links');
  t.match(decideReplayStep({ ...movedOn, keptMismatch: kept, replay: link(1, A, 1000, 500) }), { kind: 'apply', repair: true },
    'a half-applied window is repaired first');
  t.match(decideReplayStep({ ...input({ pos: 400, localBytes: 2000, originLen: 2000 }), keptMismatch: kept }), { kind: 'apply', fromPos: 400 },
    'invalidate moved replay back before the position: released');
  t.match(decideReplayStep({ ...movedOn, keptMismatch: { ...kept, seq: 7 } }), { kind: 'apply' }, 'another logfile: released');
  t.match(decideReplayStep({ ...movedOn, keptMismatch: 'malformed' }), { kind: 'stop', code: REPLAY_STOP_CODE.EINVAL, reason: /content-mismatch-beta is malformed/ },
    'a malformed link: stopped, never replayed past');
});
