// Cryptographic pieces of the peer handshake (docs/protocol.md §4): the cluster secret, nonces,
// the two HMAC-SHA256 proofs (each keyed with the prover's per-host key, secret.hostKey) and
// the session keys that authenticate every later frame (frame-auth.ts). No I/O besides reading the secret file; handshake.ts drives
// the exchange.
//
// Why the MAC inputs look like this: each proof covers both fresh nonces (a recorded proof is
// useless on another connection), both host names and both uuids (a man in the middle cannot
// splice two handshakes together or relabel a peer), and a label that differs between the
// client's and the server's proof (a proof cannot be reflected back to its sender). Every
// field is length-prefixed, so no two different field lists encode to the same bytes. The frame
// cipher the client chose is covered too, so a relay cannot downgrade an encrypted session.
import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { assert } from '../../common/util/assert.js';
import { ANY_UUID, MIN_SECRET_BYTES, SecretError, hostKey, parseSecret } from '../../common/cluster/secret.js';
import { SESSION_KEY_BYTES, type FrameCipher, type SessionKeys } from './frame-auth.js';

export const NONCE_BYTES = 32;

export const CLIENT_MAC_LABEL = 'marsd-v2 client';
export const SERVER_MAC_LABEL = 'marsd-v2 server';
const SESSION_LABEL = 'marsd-v2 session';

/** A secret given as hex text (as in the file) or as the raw key bytes. */
export function normalizeSecret(secret: Buffer | string): Buffer {
  if (typeof secret === 'string') return parseSecret(secret);
  if (secret.length < MIN_SECRET_BYTES) throw new SecretError(`the cluster secret is ${secret.length} bytes; at least ${MIN_SECRET_BYTES} needed`);
  return Buffer.from(secret);
}

/** A fresh random nonce as 64 lowercase hex characters. */
export function newNonce(): string {
  return randomBytes(NONCE_BYTES).toString('hex');
}

/** What both proofs are computed over; the nonces as sent (lowercase hex text). */
export interface HandshakeTranscript {
  serverNonce: string;
  clientNonce: string;
  serverHost: string;
  clientHost: string;
  serverUuid: string;
  clientUuid: string;
  /** The frame cipher the client chose (in auth). */
  cipher: FrameCipher;
}

/** The client's proof: HMAC(hostKey(clientHost), L("marsd-v2 client") L(serverNonce) L(clientNonce) L(clientHost) L(serverHost) L(clientUuid) L(serverUuid) L(cipher)). */
export function clientMac(secret: Buffer, tr: HandshakeTranscript): string {
  return hmacHex(hostKey(secret, tr.clientHost), [CLIENT_MAC_LABEL, tr.serverNonce, tr.clientNonce, tr.clientHost, tr.serverHost, tr.clientUuid, tr.serverUuid, tr.cipher]);
}

/** The server's proof: HMAC(hostKey(serverHost), L("marsd-v2 server") L(clientNonce) L(serverNonce) L(serverHost) L(clientHost) L(serverUuid) L(clientUuid) L(cipher)). */
export function serverMac(secret: Buffer, tr: HandshakeTranscript): string {
  return hmacHex(hostKey(secret, tr.serverHost), [SERVER_MAC_LABEL, tr.clientNonce, tr.serverNonce, tr.serverHost, tr.clientHost, tr.serverUuid, tr.clientUuid, tr.cipher]);
}

/**
 * The two session keys of a connection, one per direction: HKDF-SHA256 with the cluster secret
 * as input key, both nonces as salt, and info naming the direction, the cipher, both hosts and
 * both uuids. Fresh nonces make them unique to this connection; the direction in the info makes
 * a frame reflected back to its sender fail.
 */
export function deriveSessionKeys(secret: Buffer, tr: HandshakeTranscript, role: 'client' | 'server'): SessionKeys {
  assert(secret.length >= MIN_SECRET_BYTES, 'session keys from a secret shorter than the minimum');
  const salt = Buffer.concat([Buffer.from(tr.serverNonce, 'hex'), Buffer.from(tr.clientNonce, 'hex')]);
  const key = (direction: string) => Buffer.from(hkdfSync('sha256', secret, salt,
    macInput([SESSION_LABEL, direction, tr.cipher, tr.serverHost, tr.clientHost, tr.serverUuid, tr.clientUuid]), SESSION_KEY_BYTES));
  const toServer = key('client to server');
  const toClient = key('server to client');
  return role === 'client'
    ? { cipher: tr.cipher, sendKey: toServer, receiveKey: toClient }
    : { cipher: tr.cipher, sendKey: toClient, receiveKey: toServer };
}

/** The exact bytes a MAC is computed over: each field as u32 BE byte length + UTF-8 bytes. */
export function macInput(fields: string[]): Buffer {
  const parts: Buffer[] = [];
  for (const field of fields) {
    const bytes = Buffer.from(field, 'utf8');
    const length = Buffer.allocUnsafe(4);
    length.writeUInt32BE(bytes.length, 0);
    parts.push(length, bytes);
  }
  return Buffer.concat(parts);
}

function hmacHex(key: Buffer, fields: string[]): string {
  assert(key.length >= MIN_SECRET_BYTES, 'HMAC with a key shorter than the minimum');
  return createHmac('sha256', key).update(macInput(fields)).digest('hex');
}

/** Compare a received MAC with the expected one in constant time. */
export function macMatches(expectedHex: string, receivedHex: string): boolean {
  const expected = Buffer.from(expectedHex, 'hex');
  const received = Buffer.from(receivedHex, 'hex');
  // Both are 32 bytes when the message validated; the length check keeps timingSafeEqual safe.
  return expected.length === received.length && expected.length > 0 && timingSafeEqual(expected, received);
}

/** Two hosts belong to the same cluster when their uuids are equal or one of them is joining. */
export function uuidsCompatible(mine: string, theirs: string): boolean {
  return mine === theirs || mine === ANY_UUID || theirs === ANY_UUID;
}
