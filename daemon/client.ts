// What marsadm asks of a running marsd over the peer protocol, and nothing more: the one
// module of daemon/ that marsadm may import (the dependency rule in .dependency-cruiser.cjs
// says so). Today that is join-cluster: authenticate to a member the way a transport spec
// says, pull its tree into ours with the daemon's own merge rules, and push our ips/ip-HOST
// link so it connects back. And rotate-secret: ask a member for its cluster secret key ids and
// move it through the phases of a rotation (secret-ring requests).
import type { TreeStore } from '../common/tree/store.js';
import type { TransportSpec } from '../common/cluster/transport-spec.js';
import { ANY_UUID } from '../common/cluster/secret.js';
import { dialTransport } from './net/dial-transport.js';
import { planMerge } from './propagate/merge.js';
import { applyMergePlan, localState, mergeFacts } from './propagate/tree-io.js';
import { pushLink } from './propagate/peer-calls.js';
import { HandshakeError } from './net/handshake.js';
import { keyId } from '../common/cluster/secret-ring.js';

export interface PeerSessionOptions {
  /** where tcp and tls connect; ssh connects to the host of its spec */
  address: string;
  /** this host's name */
  host: string;
  secret: Buffer;
  timeoutMs: number;
  tlsCaFile?: string;
}

/** An authenticated session with one member, as a joining host (its uuid is not known yet). */
export interface PeerSession {
  readonly peerHost: string;
  /** Merge the member's whole tree into ours; returns how many entries changed here. */
  pullTree(tree: TreeStore, host: string): Promise<number>;
  /** Send one of our own links (it must exist in our tree) to the member. */
  pushOwnLink(tree: TreeStore, path: string): Promise<void>;
  close(reason: string): void;
}

export async function openPeerSession(spec: TransportSpec, o: PeerSessionOptions): Promise<PeerSession> {
  const conn = await dialTransport(spec, {
    address: o.address, host: o.host, uuid: ANY_UUID, secret: o.secret, timeoutMs: o.timeoutMs,
    ...(o.tlsCaFile !== undefined ? { tlsCaFile: o.tlsCaFile } : {}),
  });
  return {
    peerHost: conn.peerHost,
    async pullTree(tree, host) {
      const { entries } = await conn.getents();
      const plan = planMerge(entries, (p) => localState(tree, p), { sender: conn.peerHost, receiver: host, nowUs: tree.clock.realNowUs(), facts: mergeFacts(tree) });
      return applyMergePlan(tree, plan);
    },
    async pushOwnLink(tree, path) {
      const raw = tree.readRaw(path);
      if (raw === undefined) throw new Error(`${path} is not in this host's tree`);
      await pushLink(conn, { p: path, v: raw.value, s: raw.stampUs });
    },
    close(reason) { conn.close(reason); },
  };
}

export interface RotationSessionOptions {
  address: string;
  host: string;
  /** The cluster uuid: marsadm speaks as this member. */
  uuid: string;
  /** The secrets to try, in order: a member that does not accept the first may accept the second. */
  secrets: Buffer[];
  expectHost: string;
  timeoutMs: number;
  tlsCaFile?: string;
}

export interface SecretState {
  dial: string;
  next?: string;
  previous?: string;
}

/** A session with one member for marsadm rotate-secret; frames always encrypted. */
export interface RotationSession {
  /** Key id of the secret this session was authenticated with. */
  readonly keyId: string;
  status(): Promise<SecretState>;
  set(phase: 'prepared' | 'switched' | 'finished', oldId: string, newId: string, secret: Buffer): Promise<SecretState>;
  close(reason: string): void;
}

export async function openRotationSession(spec: TransportSpec, o: RotationSessionOptions): Promise<RotationSession> {
  let lastError: Error | undefined;
  for (const secret of o.secrets) {
    let conn;
    try {
      conn = await dialTransport(spec, {
        address: o.address, host: o.host, uuid: o.uuid, secret, expectHost: o.expectHost, timeoutMs: o.timeoutMs, encrypt: true,
        ...(o.tlsCaFile !== undefined ? { tlsCaFile: o.tlsCaFile } : {}),
      });
    } catch (err) {
      // Only a refused secret is worth another try; anything else (unreachable) is the answer.
      if (!(err instanceof HandshakeError && err.refusal === 'authentication failed')) throw err;
      lastError = err;
      continue;
    }
    const c = conn;
    const state = (r: { header: SecretState }): SecretState => ({
      dial: r.header.dial, ...(r.header.next ? { next: r.header.next } : {}), ...(r.header.previous ? { previous: r.header.previous } : {}),
    });
    return {
      keyId: keyId(secret),
      async status() { return state(await c.request({ t: 'secret-ring', op: 'status' })); },
      async set(phase, oldId, newId, next) {
        return state(await c.request({ t: 'secret-ring', op: 'set', phase, old: oldId, new: newId, secret: next.toString('hex') }));
      },
      close(reason) { c.close(reason); },
    };
  }
  throw lastError ?? new Error('no secret to try');
}
