// The messages of the peer protocol (docs/protocol.md §3-5): one zod schema per message type,
// discriminated on `t`. Every header and every structured payload that arrives from a peer
// goes through parseMessage/checkPayload/parseEntsPayload before any code looks at it
// (docs/design.md §3.10): names are validated with the same rules as the /mars tree (names.ts,
// links.ts), numbers are non-negative safe integers within the protocol's limits.
//
// Unknown fields in a header are ignored (dropped by the schemas), so a later protocol
// revision may add optional fields without breaking this one; anything that changes meaning
// changes PROTOCOL_VERSION instead.
import { inflateEnts } from './ents-deflate.js';
export { DEFLATE_ENTS_FROM_BYTES, MAX_ENTS_INFLATED_BYTES, maybeDeflateEnts } from './ents-deflate.js';
import { z } from 'zod';
import { hostNameSchema, resourceNameSchema, validTreePath } from '../../common/tree/names.js';
import { tryParseLogName } from '../../common/tree/log-names.js';
import { assert } from '../../common/util/assert.js';
import { ProtocolError } from './frame.js';
import { FRAME_CIPHERS } from './frame-auth.js';
import { DIGEST_ALGORITHMS, DIGEST_BYTES, KEYED_DIGEST, SYNC_BLOCK_BYTES, UNKEYED_DIGESTS } from '../../common/resource/sync-blocks.js';

// 2: every frame after the handshake carries a tag (frame-auth.ts); auth names the frame cipher;
// the handshake proofs use per-host keys.
export const PROTOCOL_VERSION = 2;
/** Largest request id: ids are u32 chosen by the requester. */
export const MAX_REQUEST_ID = 0xffff_ffff;
/** Largest payload of one log-data frame. */
export const MAX_LOG_DATA_BYTES = 1024 * 1024;
/** Longest a following log-read may wait for new bytes before it ends. */
export const MAX_LOG_WAIT_MS = 60_000;
/** Largest range one sync-digests request may cover. */
export const MAX_SYNC_DIGEST_RANGE_BYTES = 256 * 1024 * 1024;
export const MAX_SYNC_READ_BYTES = 1024 * 1024;
export const MAX_VALUE_CHARS = 1023; // as TreeStore
export const MAX_UUID_CHARS = 200;
export const MAX_REASON_CHARS = 500;
export const MAX_ERROR_MESSAGE_CHARS = 1000;
/** Most directories one listing may name (a resource has one; the tree's other directories are
 *  a few per host). A frame of 8 MiB could not hold many more names anyway. */
export const MAX_LISTING_DIRS = 200_000;

// ---- building blocks ------------------------------------------------------------------------

const uint = z.int().min(0); // zod's int() is already limited to safe integers
const requestId = z.int().min(0).max(MAX_REQUEST_ID);
const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters');
export const keyIdSchema = z.string().regex(/^[0-9a-f]{16}$/, 'a key id is 16 lowercase hex characters');
const noControlChars = (s: string) => !/[\u0000-\u001f\u007f]/.test(s);

export const uuidSchema = z.string().min(1).max(MAX_UUID_CHARS).refine(noControlChars, 'a cluster uuid contains no control characters');

export const treePathSchema = z.string().max(400).refine((p) => {
  try {
    validTreePath(p);
    return true;
  } catch {
    return false;
  }
}, 'a /mars path is 1-3 plain name components');

export const linkValueSchema = z
  .string()
  .min(1)
  .max(MAX_VALUE_CHARS)
  .refine((v) => !v.includes('\0'), 'a link value contains no NUL');

/** `log-SEQ-ORIGIN` with SEQ nine digits and ORIGIN a valid host name. */
export const logFileNameSchema = z.string().superRefine((name, ctx) => {
  const parsed = tryParseLogName(name);
  if (!parsed.ok) {
    ctx.addIssue({ code: 'custom', message: parsed.reason });
  } else if (!hostNameSchema.safeParse(parsed.value.origin).success) {
    ctx.addIssue({ code: 'custom', message: `invalid origin host in ${JSON.stringify(name)}` });
  }
});

/**
 * Which listing of a host a delta builds on (docs/protocol.md, getents): `epoch` names the
 * serving process (random per start), `generation` its listing counter at that reply.
 */
export const listingEpochSchema = z.string().regex(/^[0-9a-f]{16}$/, 'a listing epoch is 16 lowercase hex characters');
export const listingSinceSchema = z.object({ epoch: listingEpochSchema, generation: uint });
export type ListingSince = z.infer<typeof listingSinceSchema>;

/** A directory of a listing: '' (the root) or a /mars path of 1-2 names. */
export const listingDirSchema = z.string().max(400).refine((p) => {
  if (p === '') return true;
  try {
    validTreePath(p);
    return p.split('/').length <= 2;
  } catch {
    return false;
  }
}, 'a listing directory is the root ("") or 1-2 plain name components');

/** One symlink of the tree: path, value (".deleted" for a tombstone), Lamport stamp in µs. */
export const entrySchema = z.object({ p: treePathSchema, v: linkValueSchema, s: uint });
export type Entry = z.infer<typeof entrySchema>;

/** One logfile a host holds: its resource, name and current size. */
export const logInfoSchema = z.object({ res: resourceNameSchema, name: logFileNameSchema, sizeBytes: uint });
export type LogInfo = z.infer<typeof logInfoSchema>;

// ---- handshake --------------------------------------------------------------------------------

const helloSchema = z.object({ t: z.literal('hello'), proto: z.literal(PROTOCOL_VERSION), host: hostNameSchema, uuid: uuidSchema, nonce: hex64 });
// kid: the key id of the secret the client proves (optional; a hint for the log during a rotation).
const authSchema = z.object({ t: z.literal('auth'), proto: z.literal(PROTOCOL_VERSION), host: hostNameSchema, uuid: uuidSchema, nonce: hex64, cipher: z.enum(FRAME_CIPHERS), mac: hex64, kid: keyIdSchema.optional() });
const welcomeSchema = z.object({ t: z.literal('welcome'), mac: hex64, clockUs: uint });
const refusedSchema = z.object({ t: z.literal('refused'), reason: z.string().max(MAX_REASON_CHARS) });

// ---- requests (client -> server; ping and notify also server -> client) ----------------------

// since: the listing the client holds of ours; the reply may then be a delta (entsSchema).
// deflate: the client takes a deflated ents payload (a server that does not know it ignores it).
const getentsSchema = z.object({ t: z.literal('getents'), id: requestId, since: listingSinceSchema.optional(), deflate: z.literal(true).optional() });
const logReadSchema = z.object({
  t: z.literal('log-read'),
  id: requestId,
  res: resourceNameSchema,
  name: logFileNameSchema,
  fromPos: uint,
  follow: z.boolean(),
  waitMs: z.int().min(0).max(MAX_LOG_WAIT_MS),
  rateBytesPerS: uint,
});
const syncDigestsSchema = z
  .object({
    t: z.literal('sync-digests'),
    id: requestId,
    res: resourceNameSchema,
    fromPos: uint,
    lengthBytes: z.int().min(0).max(MAX_SYNC_DIGEST_RANGE_BYTES),
    blockBytes: z.literal(SYNC_BLOCK_BYTES), digest: z.enum(UNKEYED_DIGESTS).optional(), // absent: md5
    // The keyed digest, where the primary can make it (else `digest`); peers before it drop both fields.
    keyed: z.literal(KEYED_DIGEST).optional(), key: z.string().regex(/^[0-9a-f]{32}$/, 'must be 32 lowercase hex characters').optional(),
  })
  .refine((m) => m.fromPos % m.blockBytes === 0 && m.lengthBytes % m.blockBytes === 0, 'fromPos and lengthBytes must be multiples of blockBytes')
  .refine((m) => (m.keyed === undefined) === (m.key === undefined), 'keyed and key come together');
const syncReadSchema = z.object({ t: z.literal('sync-read'), id: requestId, res: resourceNameSchema, fromPos: uint, lengthBytes: z.int().min(0).max(MAX_SYNC_READ_BYTES) });
const positionSchema = z.object({ t: z.literal('position'), id: requestId, res: resourceNameSchema });
const pushLinkSchema = z.object({ t: z.literal('push-link'), id: requestId, entry: entrySchema });
const pingSchema = z.object({ t: z.literal('ping'), id: requestId });
const cancelSchema = z.object({ t: z.literal('cancel'), id: requestId });
const notifySchema = z.object({ t: z.literal('notify') });
/**
 * The cluster secret rotation (marsadm rotate-secret): `status` asks for the key ids the server
 * holds; `set` moves it to a phase of the rotation from key `old` to key `new`, whose secret
 * travels along (only ever on an encrypted session, checked by the server).
 */
export const ROTATION_PHASES = ['prepared', 'switched', 'finished'] as const;
const secretRingSchema = z
  .object({
    t: z.literal('secret-ring'),
    id: requestId,
    op: z.enum(['status', 'set']),
    phase: z.enum(ROTATION_PHASES).optional(),
    old: keyIdSchema.optional(),
    new: keyIdSchema.optional(),
    secret: hex64.optional(),
  })
  .refine((m) => m.op === 'status' || (m.phase !== undefined && m.old !== undefined && m.new !== undefined && m.secret !== undefined && m.old !== m.new),
    'set needs phase, old, new (different keys) and secret');

// ---- replies (server -> client; pong also client -> server) -----------------------------------

// epoch, generation: name this listing, for the client's next `since`; since: present only in a
// delta, which lists the directories changed after that generation (parseEntsPayload).
const entsSchema = z
  .object({ t: z.literal('ents'), id: requestId, clockUs: uint, count: uint, epoch: listingEpochSchema.optional(), generation: uint.optional(), since: uint.optional(), deflated: z.literal(true).optional() })
  .refine((m) => (m.epoch === undefined) === (m.generation === undefined), 'epoch and generation come together')
  .refine((m) => m.since === undefined || (m.generation !== undefined && m.since <= m.generation), 'a delta names its generation, not below since');
const logDataSchema = z.object({ t: z.literal('log-data'), id: requestId, pos: uint });
const logEndSchema = z
  .object({ t: z.literal('log-end'), id: requestId, pos: uint, durableEnd: uint })
  .refine((m) => m.durableEnd >= m.pos, 'durableEnd must not be below pos');
const digestsSchema = z.object({ t: z.literal('digests'), id: requestId, fromPos: uint, count: uint, digest: z.enum(DIGEST_ALGORITHMS).optional() });
const blocksSchema = z.object({ t: z.literal('blocks'), id: requestId, fromPos: uint });
const positionReplySchema = z.object({ t: z.literal('position-reply'), id: requestId, seq: z.int().min(0).max(999_999_999), origin: hostNameSchema, pos: uint });
const okSchema = z.object({ t: z.literal('ok'), id: requestId });
const secretStateSchema = z.object({ t: z.literal('secret-state'), id: requestId, dial: keyIdSchema, next: keyIdSchema.optional(), previous: keyIdSchema.optional() });
const pongSchema = z.object({ t: z.literal('pong'), id: requestId });
const errorSchema = z.object({
  t: z.literal('error'),
  id: requestId,
  code: z.string().regex(/^E[A-Z0-9]{1,31}$/, 'an error code looks like EIO'),
  message: z.string().max(MAX_ERROR_MESSAGE_CHARS),
});

const messageSchema = z.discriminatedUnion('t', [
  helloSchema, authSchema, welcomeSchema, refusedSchema,
  getentsSchema, logReadSchema, syncDigestsSchema, syncReadSchema, positionSchema, pushLinkSchema,
  pingSchema, cancelSchema, notifySchema, secretRingSchema,
  entsSchema, logDataSchema, logEndSchema, digestsSchema, blocksSchema, positionReplySchema,
  okSchema, pongSchema, errorSchema, secretStateSchema,
]);

const KNOWN_TYPES: ReadonlySet<string> = new Set(messageSchema.options.map((o) => o.shape.t.value));

export type Message = z.infer<typeof messageSchema>;
export type MessageType = Message['t'];
export type MessageOf<T extends MessageType> = Extract<Message, { t: T }>;

export type HelloMessage = MessageOf<'hello'>;
export type AuthMessage = MessageOf<'auth'>;
export type WelcomeMessage = MessageOf<'welcome'>;
export type RefusedMessage = MessageOf<'refused'>;
export type GetentsRequest = MessageOf<'getents'>;
export type LogReadRequest = MessageOf<'log-read'>;
export type SyncDigestsRequest = MessageOf<'sync-digests'>;
export type SyncReadRequest = MessageOf<'sync-read'>;
export type PositionRequest = MessageOf<'position'>;
export type PushLinkRequest = MessageOf<'push-link'>;
export type PingMessage = MessageOf<'ping'>;
export type CancelMessage = MessageOf<'cancel'>;
export type NotifyMessage = MessageOf<'notify'>;
export type EntsReply = MessageOf<'ents'>;
export type LogDataMessage = MessageOf<'log-data'>;
export type LogEndMessage = MessageOf<'log-end'>;
export type DigestsReply = MessageOf<'digests'>;
export type BlocksReply = MessageOf<'blocks'>;
export type PositionReply = MessageOf<'position-reply'>;
export type OkReply = MessageOf<'ok'>;
export type PongMessage = MessageOf<'pong'>;
export type ErrorReply = MessageOf<'error'>;
export type SecretRingRequest = MessageOf<'secret-ring'>;
export type SecretStateReply = MessageOf<'secret-state'>;

export const HANDSHAKE_TYPES = ['hello', 'auth', 'welcome', 'refused'] as const;
/** Requests that expect exactly one reply frame. */
export const SINGLE_REPLY_REQUEST_TYPES = ['getents', 'sync-digests', 'sync-read', 'position', 'push-link', 'ping', 'secret-ring'] as const;
/** A request whose reply is a stream of log-data frames ended by log-end. */
export const STREAM_REQUEST_TYPES = ['log-read'] as const;
/** Frames that answer a request of the receiver (carry the id of that request). */
export const REPLY_TYPES = ['ents', 'log-data', 'log-end', 'digests', 'blocks', 'position-reply', 'ok', 'pong', 'error', 'secret-state'] as const;

export type SingleReplyRequest = MessageOf<(typeof SINGLE_REPLY_REQUEST_TYPES)[number]>;
export type StreamRequest = MessageOf<(typeof STREAM_REQUEST_TYPES)[number]>;
export type Request = SingleReplyRequest | StreamRequest;
export type Reply = MessageOf<(typeof REPLY_TYPES)[number]>;

export function isReply(m: Message): m is Reply {
  return (REPLY_TYPES as readonly string[]).includes(m.t);
}

export function isHandshakeMessage(m: Message): boolean {
  return (HANDSHAKE_TYPES as readonly string[]).includes(m.t);
}

/** Validate a frame header received from a peer. Throws ProtocolError saying what is wrong. */
export function parseMessage(header: unknown): Message {
  const result = messageSchema.safeParse(header);
  if (result.success) return result.data;
  const t = header !== null && typeof header === 'object' ? (header as { t?: unknown }).t : undefined;
  if (typeof t !== 'string' || !KNOWN_TYPES.has(t)) {
    throw new ProtocolError(`unknown message type ${describe(t)}`);
  }
  throw new ProtocolError(`invalid ${t} message: ${describeIssues(result.error)}`);
}

/**
 * Check the payload that came with a message: only the frames that carry bytes may have a
 * payload, and their sizes follow from the header.
 */
export function checkPayload(m: Message, payload: Buffer): void {
  switch (m.t) {
    case 'log-data':
      if (payload.length === 0 || payload.length > MAX_LOG_DATA_BYTES) {
        throw new ProtocolError(`log-data payload of ${payload.length} bytes: must be 1-${MAX_LOG_DATA_BYTES}`);
      }
      return;
    case 'digests':
      if (payload.length !== m.count * DIGEST_BYTES) {
        throw new ProtocolError(`digests payload of ${payload.length} bytes does not hold ${m.count} digests of ${DIGEST_BYTES} bytes`);
      }
      return;
    case 'blocks':
      if (payload.length > MAX_SYNC_READ_BYTES) throw new ProtocolError(`blocks payload of ${payload.length} bytes exceeds ${MAX_SYNC_READ_BYTES}`);
      return;
    case 'ents':
      return; // parseEntsPayload checks the document
    default:
      if (payload.length !== 0) throw new ProtocolError(`a ${m.t} message carries no payload, got ${payload.length} bytes`);
  }
}

const logInfosSchema = z.array(logInfoSchema);
const listingDirsSchema = z.array(listingDirSchema).max(MAX_LISTING_DIRS);
const entsPayloadSchema = z.object({ entries: z.array(entrySchema), logs: logInfosSchema, dirs: listingDirsSchema.optional(), changed: listingDirsSchema.optional() });
export interface EntsPayload {
  entries: Entry[];
  logs: LogInfo[];
  /**
   * Every directory of the listing, in the order its entries are listed (a listing that names
   * its epoch has it; an older peer's has not). Each entry and logfile belongs to one of them:
   * the entry to its path's directory, the logfile to resource-RES.
   */
  dirs?: string[];
  /**
   * Only in a delta: the directories whose entries and logfiles this payload holds, in full;
   * the others in `dirs` are unchanged since the listing the client named.
   */
  changed?: string[];
}

/** The directory an entry of a listing belongs to: '' for a name in the root. */
export function listingDirOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

/**
 * Encode an `ents` payload from our own tree, checked like a peer's. The entries must already
 * have passed entrySchema one by one (the caller filters what it cannot send, and need not
 * parse an unchanged link again per listing: PeerService.getents), so only the logs and
 * directories are parsed here.
 */
export function encodeEntsPayload(doc: EntsPayload, _entries: 'each-checked-with-entrySchema'): Buffer {
  const result = logInfosSchema.safeParse(doc.logs);
  assert(result.success, `refusing to send an invalid logfile listing: ${result.success ? '' : describeIssues(result.error)}`);
  const out: EntsPayload = { entries: doc.entries, logs: doc.logs };
  if (doc.dirs !== undefined) {
    const problem = listingShapeProblem(doc, doc.changed !== undefined);
    assert(problem === undefined, `refusing to send an inconsistent listing: ${problem}`);
    out.dirs = doc.dirs;
    if (doc.changed !== undefined) out.changed = doc.changed;
  }
  return Buffer.from(JSON.stringify(out), 'utf8');
}

/**
 * Parse and validate the payload of an `ents` reply; `count` is the header's entry count. A
 * reply that names its listing (`epoch`) carries the directories; a delta (`since`) also the
 * changed ones, and holds entries and logfiles of those only.
 */
export function parseEntsPayload(payload: Buffer, count: number, header: { epoch?: string | undefined; since?: number | undefined; deflated?: true | undefined } = {}): EntsPayload {
  let doc: unknown;
  const text = header.deflated ? inflateEnts(payload) : payload;
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(text));
  } catch (err) {
    throw new ProtocolError(`ents payload is not valid UTF-8 JSON: ${(err as Error).message}`);
  }
  const result = entsPayloadSchema.safeParse(doc);
  if (!result.success) throw new ProtocolError(`invalid ents payload: ${describeIssues(result.error)}`);
  const ents = result.data;
  if (ents.entries.length !== count) {
    throw new ProtocolError(`ents header says ${count} entries, the payload holds ${ents.entries.length}`);
  }
  const delta = header.since !== undefined;
  if (header.epoch !== undefined && ents.dirs === undefined) throw new ProtocolError('ents names its listing (epoch) but not its directories');
  if (delta && ents.changed === undefined) throw new ProtocolError('a delta ents does not say which directories changed');
  if (!delta && ents.changed !== undefined) throw new ProtocolError('ents lists changed directories but is no delta (no since)');
  if (ents.dirs === undefined) return { entries: ents.entries, logs: ents.logs };
  const problem = listingShapeProblem(ents, delta);
  if (problem !== undefined) throw new ProtocolError(`invalid ents payload: ${problem}`);
  return ents.changed === undefined ? { entries: ents.entries, logs: ents.logs, dirs: ents.dirs } : { entries: ents.entries, logs: ents.logs, dirs: ents.dirs, changed: ents.changed };
}

/**
 * What is wrong with a listing's directories, if anything: each named once, the changed ones
 * among them, and every entry and logfile in a directory the payload covers (all of them, or
 * in a delta the changed ones).
 */
function listingShapeProblem(doc: EntsPayload, delta: boolean): string | undefined {
  const dirs = new Set(doc.dirs);
  if (dirs.size !== doc.dirs!.length) return 'a directory is named twice';
  let covered: ReadonlySet<string> = dirs;
  if (delta) {
    const changed = new Set(doc.changed);
    if (changed.size !== doc.changed!.length) return 'a changed directory is named twice';
    for (const d of changed) if (!dirs.has(d)) return `changed directory ${JSON.stringify(d)} is not among the directories`;
    covered = changed;
  }
  for (const e of doc.entries) {
    if (!covered.has(listingDirOf(e.p))) return `entry ${e.p} is outside the ${delta ? 'changed ' : ''}directories`;
  }
  for (const l of doc.logs) {
    if (!covered.has(`resource-${l.res}`)) return `logfile ${l.name} of ${l.res} is outside the ${delta ? 'changed ' : ''}directories`;
  }
  return undefined;
}

/** Validate a message we are about to send: a bad one is a bug on our side, not the peer's. */
export function validateOutgoing<M extends Message>(m: M): M {
  const result = messageSchema.safeParse(m);
  assert(result.success, `refusing to send an invalid ${m.t} message: ${result.success ? '' : describeIssues(result.error)}`);
  return m;
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${i.path.length > 0 ? i.path.join('.') : '(message)'}: ${i.message}`)
    .join('; ');
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  return value === undefined ? '(missing t)' : typeof value;
}
