// The delta listing's edges (daemon/propagate/listing-delta.ts): when the server answers in
// full (no since, another epoch, a generation it never handed out), what an older peer sends
// and gets, and that a malformed or unfitting delta is refused with a clear error and changes
// nothing.
import t, { type Test } from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TreeStore } from '../../common/tree/store.js';
import { LamportClock } from '../../common/tree/lamport.js';
import { PeerService } from '../../daemon/serve/peer-service.js';
import { entsReply } from '../../daemon/net/service.js';
import { MAX_LISTING_DIRS, parseEntsPayload, parseMessage, type ListingSince } from '../../daemon/net/messages.js';
import { ProtocolError } from '../../daemon/net/frame.js';
import { applyListing, ListingDeltaError, type HeldListing, type ListingReply } from '../../daemon/propagate/listing-delta.js';
import { tempDir } from '../helpers/tmp.js';

function setup(t: Test) {
  const root = tempDir(t);
  const tree = new TreeStore(root, new LamportClock());
  tree.write('uuid', 'u1');
  tree.ensureDir('resource-r0');
  tree.write('resource-r0/size', '4096');
  tree.write('resource-r0/primary', 'alpha');
  writeFileSync(join(root, 'resource-r0', 'log-000000001-beta'), 'abc');
  const service = () => new PeerService({
    tree, host: 'alpha', activeLogEnd: () => undefined, primaryPosition: () => undefined,
    onTreeChanged: () => undefined, onNotify: () => undefined, log: () => undefined,
  });
  return { root, tree, service };
}

/** A getents round trip through the wire format: the reply as the receiving side parses it. */
async function ask(svc: PeerService, since?: ListingSince): Promise<ListingReply> {
  const { message, payload } = entsReply({ id: 7, ...(since ? { since } : {}) }, await svc.getents('beta', since));
  const header = parseMessage(JSON.parse(JSON.stringify(message)));
  if (header.t !== 'ents') throw new Error('not ents');
  return { ...parseEntsPayload(payload, header.count, header), epoch: header.epoch, generation: header.generation, since: header.since };
}

const baseOf = (r: ListingReply): ListingSince => ({ epoch: r.epoch!, generation: r.generation! });

t.test('without since, the listing is full and names its epoch, generation and directories', async (t) => {
  const { service } = setup(t);
  const svc = service();
  const r = await ask(svc);
  t.equal(r.since, undefined, 'not a delta');
  t.equal(r.changed, undefined);
  t.match(r.epoch, /^[0-9a-f]{16}$/);
  t.ok(r.generation! >= 2);
  t.same(r.dirs, ['', 'resource-r0']);
  t.same(r.entries.map((e) => e.p).sort(), ['resource-r0/primary', 'resource-r0/size', 'uuid'], 'every link');
  t.equal(r.entries[0]!.p, 'uuid', 'the root directory first');
  t.equal(r.entries.length, 3);
  t.same(r.logs, [{ res: 'r0', name: 'log-000000001-beta', sizeBytes: 3 }]);
  const again = await ask(svc);
  t.equal(again.since, undefined, 'asked again without since: full again');
  t.equal(again.entries.length, 3);
});

t.test('a since of another epoch (the server restarted) or a generation never handed out gets a full listing', async (t) => {
  const { service } = setup(t);
  const first = await ask(service());
  const restarted = service();
  const r = await ask(restarted, baseOf(first));
  t.equal(r.since, undefined, 'full');
  t.not(r.epoch, first.epoch, 'a new epoch');
  t.equal(r.entries.length, 3);
  // The receiver takes it as a full listing and holds it.
  const held0 = applyListing(undefined, undefined, first).held;
  const applied = applyListing(held0, baseOf(first), r);
  t.equal(applied.held?.epoch, r.epoch);
  t.same(applied.entries, r.entries);
  const future = await ask(restarted, { epoch: r.epoch!, generation: r.generation! + 1000 });
  t.equal(future.since, undefined, 'a generation beyond ours: full');
  const delta = await ask(restarted, baseOf(r));
  t.equal(delta.since, r.generation, 'our own current base: a delta');
});

t.test('an older peer: a request without since and a reply without epoch', async (t) => {
  const { service } = setup(t);
  // An older server answers a since it does not know with a full listing without epoch.
  const svc = service();
  const old = { ...(await svc.getents('beta')) };
  delete old.listing;
  const { message, payload } = entsReply({ id: 1, since: { epoch: '0123456789abcdef', generation: 3 } }, old);
  t.equal(message.epoch, undefined);
  const header = parseMessage(JSON.parse(JSON.stringify(message)));
  if (header.t !== 'ents') throw new Error('not ents');
  const ents = parseEntsPayload(payload, header.count, header);
  t.same(Object.keys(JSON.parse(payload.toString())).sort(), ['entries', 'logs'], 'the payload of before');
  const applied = applyListing(undefined, { epoch: '0123456789abcdef', generation: 3 }, { ...ents });
  t.equal(applied.held, undefined, 'nothing to build on');
  t.same(applied.entries, ents.entries);
  // An older client's parser (entries and logs only) reads our full listing: the directories are extra.
  const full = entsReply({ id: 2 }, await svc.getents('beta'));
  const doc = JSON.parse(full.payload.toString());
  t.equal(doc.entries.length, 3);
  t.equal(doc.logs.length, 1);
  t.equal(doc.changed, undefined);
});

t.test('a malformed delta is refused by the parser', async (t) => {
  const { service, tree } = setup(t);
  const svc = service();
  const first = await ask(svc);
  tree.write('resource-r0/size', '8192');
  const since = baseOf(first);
  const { message, payload } = entsReply({ id: 7, since }, await svc.getents('beta', since));
  const doc = JSON.parse(payload.toString());
  t.equal(message.since, first.generation, 'a delta');
  t.same(doc.changed, ['resource-r0'], 'only the changed directory');
  t.same(doc.entries.map((e: { p: string }) => e.p).sort(), ['resource-r0/primary', 'resource-r0/size'], 'in full');
  const parse = (d: unknown, h: object = message) => parseEntsPayload(Buffer.from(JSON.stringify(d)), (d as { entries: unknown[] }).entries.length, h as never);
  t.doesNotThrow(() => parse(doc));
  const bad: [string, unknown, RegExp][] = [
    ['no changed directories', { ...doc, changed: undefined }, /does not say which directories changed/],
    ['a changed directory not among the directories', { ...doc, changed: ['resource-r0', 'resource-r9'] }, /resource-r9.*not among the directories/],
    ['an entry outside the changed directories', { ...doc, entries: [...doc.entries, { p: 'uuid', v: 'x', s: 1 }] }, /entry uuid is outside the changed directories/],
    ['a logfile outside the changed directories', { ...doc, changed: [''], entries: [] }, /logfile log-000000001-beta of r0 is outside/],
    ['a directory named twice', { ...doc, dirs: ['', 'resource-r0', 'resource-r0'] }, /named twice/],
    ['a directory three levels deep', { ...doc, dirs: [...doc.dirs, 'a/b/c'] }, /listing directory is the root/],
    ['too many directories', { ...doc, dirs: Array.from({ length: MAX_LISTING_DIRS + 1 }, (_, i) => `d${i}`) }, /dirs/],
  ];
  for (const [what, d, re] of bad) t.throws(() => parse(d), { name: 'ProtocolError', message: re }, what);
  t.throws(() => parse({ ...doc, dirs: undefined }), ProtocolError, 'a listing with an epoch and no directories');
  t.throws(() => parse(doc, { epoch: message.epoch }), /lists changed directories but is no delta/, 'changed directories in a full listing');
  // The header's own checks.
  const header = JSON.parse(JSON.stringify(message));
  t.throws(() => parseMessage({ ...header, since: header.generation + 1 }), /not below since/);
  t.throws(() => parseMessage({ ...header, generation: undefined, since: undefined }), /epoch and generation come together/);
  t.throws(() => parseMessage({ ...header, epoch: 'XYZ' }), /listing epoch/);
  t.throws(() => parseMessage({ t: 'getents', id: 1, since: { epoch: '0123456789abcdef', generation: -1 } }), ProtocolError, 'a negative since');
  t.throws(() => parseMessage({ t: 'getents', id: 1, since: { epoch: 'nope', generation: 1 } }), ProtocolError, 'a malformed epoch');
});

t.test('a delta that does not fit the held listing is refused and changes nothing', async (t) => {
  const { service, tree } = setup(t);
  const svc = service();
  const first = await ask(svc);
  const held = applyListing(undefined, undefined, first).held!;
  const snapshot = JSON.stringify([...held.dirs]);
  tree.write('uuid', 'u2');
  const since = baseOf(first);
  const delta = await ask(svc, since);
  t.equal(delta.since, since.generation);
  const refused = (h: HeldListing | undefined, asked: ListingSince | undefined, r: ListingReply, re: RegExp, what: string) =>
    t.throws(() => applyListing(h, asked, r), { name: 'ListingDeltaError', message: re }, what);
  refused(held, undefined, delta, /answers a request for a full listing/, 'a delta to a request without since');
  refused(undefined, since, delta, /answers a request for a full listing/, 'nothing held');
  refused(held, since, { ...delta, epoch: 'fedcba9876543210' }, /epoch/, 'another epoch');
  refused(held, since, { ...delta, since: since.generation - 1 }, /since generation/, 'another base');
  refused({ ...held, generation: held.generation - 1 }, since, delta, /since generation/, 'a held listing of another generation');
  refused(held, since, { ...delta, dirs: [...delta.dirs!, 'resource-r7'] }, /resource-r7.*no listing of it is held/, 'an unchanged directory we never got');
  t.equal(JSON.stringify([...held.dirs]), snapshot, 'the held listing is unchanged');
  const ok = applyListing(held, since, delta);
  t.same(ok.entries.find((e) => e.p === 'uuid')?.v, 'u2', 'the fitting delta applies');
  t.equal(ok.entries.length, 3);
  t.ok(new ListingDeltaError('x') instanceof Error);
});
