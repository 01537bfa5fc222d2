// create-cluster: make this host the first member of a new cluster.
import { TREE_DIR_MODE } from '../../common/tree/modes.js';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { AdmError, type Adm } from '../context.js';
import { globalPaths } from '../../common/tree/paths.js';
import { clusterHosts } from '../../common/cluster/members.js';
import { formatStamp } from '../../common/tree/lamport.js';
import { resPaths } from '../../common/tree/paths.js';
import { ANY_UUID, readSecretFile } from '../../common/cluster/secret.js';
import { openPeerSession, type PeerSession } from '../../daemon/client.js';
import { formatTransportSpec } from '../../common/cluster/transport-spec.js';
import { checkTlsFiles } from '../../common/cluster/tls-files.js';
import { localPaths } from '../../common/tree/paths.js';
import { parseSpecArgument } from './transport.js';
import { listResources } from '../../common/resource/snapshot.js';
import { rethrowInvariant } from '../../common/util/assert.js';
import { actingForOther, leaveClusterFor } from './hosts.js';

export const DEFAULT_PORT = 7777;

const listenSchema = z.string().regex(/^(\d{1,3}\.){3}\d{1,3}:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, 'use ADDRESS:PORT, e.g. 10.0.0.1:7777');

export function parseListen(text: string | undefined): string {
  if (text === undefined) {
    const ip = Object.values(networkInterfaces()).flat().find((i) => i && i.family === 'IPv4' && !i.internal)?.address ?? '127.0.0.1';
    return `${ip}:${DEFAULT_PORT}`;
  }
  const withPort = /:\d+$/.test(text) && !/^[0-9a-fA-F:]+$/.test(text) ? text : `${text}:${DEFAULT_PORT}`;
  const r = listenSchema.safeParse(withPort);
  if (!r.success) throw new AdmError(`invalid --listen ${JSON.stringify(text)}: ${r.error.issues[0]?.message}`, 2);
  const port = Number(withPort.slice(withPort.lastIndexOf(':') + 1));
  if (port < 1 || port > 65535) throw new AdmError(`invalid port in --listen ${text}`, 2);
  return withPort;
}

export function createCluster(adm: Adm, opts: { listen?: string }): void {
  const listen = parseListen(opts.listen);
  if (existsSync(adm.marsDir) && adm.tree.value(globalPaths.uuid) !== undefined) {
    throw new AdmError(`${adm.marsDir} already belongs to cluster ${adm.tree.value(globalPaths.uuid)}; nothing changed`);
  }
  mkdirSync(adm.marsDir, { recursive: true, mode: TREE_DIR_MODE });
  const secretPath = join(adm.marsDir, 'cluster-secret');
  writeFileSync(secretPath, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  adm.tree.ensureDir(globalPaths.ipsDir);
  adm.tree.ensureDir(globalPaths.actualDir(adm.host));
  adm.tree.ensureDir(globalPaths.defaultsDir(adm.host));
  adm.tree.ensureDir('userspace');
  adm.tree.write(globalPaths.ip(adm.host), listen, { durable: true });
  adm.tree.write(localPaths.host, adm.host);
  adm.tree.write(`${globalPaths.defaultsDir(adm.host)}/sync-limit`, '0');
  const uuid = `${adm.host}_${formatStamp(adm.tree.clock.tick())}`;
  adm.tree.write(globalPaths.uuid, uuid, { durable: true });
  adm.tree.fsyncDir('');
  adm.result(`created cluster ${uuid} in ${adm.marsDir}: this host ${adm.host} listens on ${listen}; the cluster secret is in ${secretPath}`, {
    uuid, host: adm.host, listen, marsDir: adm.marsDir, secretFile: secretPath,
  });
}

/**
 * join-cluster PEER: make this (empty) /mars a member of the cluster PEER belongs to. We
 * authenticate with the cluster secret, pull PEER's tree (uuid, members, resources), and
 * push our own ips/ip-HOST to PEER so it connects back; the marsds do the rest. With
 * --transport, PEER is reached that way (TLS, or ssh to its `marsd --stdio`), and the spec is
 * kept as this host's transport to PEER.
 */
export async function joinCluster(adm: Adm, peerAddress: string, opts: { listen?: string; secretFile?: string; transport?: string; tlsCaFile?: string }): Promise<void> {
  const peer = parseListen(peerAddress);
  const listen = parseListen(opts.listen);
  const transport = opts.transport === undefined ? { kind: 'tcp' as const } : parseSpecArgument(opts.transport);
  if (opts.tlsCaFile !== undefined) {
    if (transport.kind !== 'tls') throw new AdmError('--tls-ca only applies with --transport tls', 2);
    try {
      checkTlsFiles({ caFile: opts.tlsCaFile });
    } catch (err) {
      rethrowInvariant(err);
      throw new AdmError((err as Error).message, 2);
    }
  }
  const { tree, host } = adm;
  const uuid = existsSync(adm.marsDir) ? tree.value(globalPaths.uuid) : undefined;
  if (uuid !== undefined && uuid !== ANY_UUID) {
    throw new AdmError(`${adm.marsDir} already belongs to cluster ${uuid}; leave it first ("marsadm leave-cluster") or use another --mars-dir`);
  }
  const secretPath = join(adm.marsDir, 'cluster-secret');
  const source = opts.secretFile ?? (existsSync(secretPath) ? secretPath : undefined);
  if (source === undefined) throw new AdmError(`give the cluster secret: --secret-file FILE (a copy of ${'/mars/cluster-secret'} from a member, mode 0600)`, 2);
  let secret: Buffer;
  try {
    secret = readSecretFile(source);
  } catch (err) {
    rethrowInvariant(err);
    throw new AdmError((err as Error).message, 2);
  }
  mkdirSync(adm.marsDir, { recursive: true, mode: TREE_DIR_MODE });
  if (listResources(tree).length > 0 && !adm.force) throw new AdmError(`${adm.marsDir} already holds resources; join-cluster needs an empty /mars (or --force)`);
  let conn: PeerSession;
  try {
    conn = await openPeerSession(transport, {
      address: peer, host, secret, timeoutMs: Math.max(1000, (adm.timeoutS > 0 ? adm.timeoutS : 60) * 1000),
      ...(opts.tlsCaFile !== undefined ? { tlsCaFile: opts.tlsCaFile } : {}),
    });
  } catch (err) {
    rethrowInvariant(err);
    throw new AdmError(`cannot join through ${peer}: ${(err as Error).message}; nothing changed`);
  }
  try {
    if (source !== secretPath) writeFileSync(secretPath, `${secret.toString('hex')}\n`, { mode: 0o600 });
    tree.ensureDir(globalPaths.ipsDir);
    tree.ensureDir(globalPaths.actualDir(host));
    tree.ensureDir(globalPaths.defaultsDir(host));
    tree.ensureDir('userspace');
    // A placeholder uuid with a stamp 1 s after the epoch: the cluster's real one wins the merge.
    tree.write(globalPaths.uuid, ANY_UUID, { stampUs: 1_000_000 });
    tree.write(globalPaths.ip(host), listen, { durable: true });
    tree.write(localPaths.host, host);
    await conn.pullTree(tree, host);
    await conn.pushOwnLink(tree, globalPaths.ip(host));
    // marsd keeps reaching PEER the way we just did.
    if (transport.kind !== 'tcp') tree.write(localPaths.transport(conn.peerHost), formatTransportSpec(transport), { durable: true });
  } finally {
    conn.close('join-cluster done');
  }
  const joined = tree.value(globalPaths.uuid);
  if (joined === undefined || joined === ANY_UUID) throw new AdmError(`${peer} sent no cluster uuid; is it a member of a cluster?`);
  tree.fsyncDir('');
  adm.trigger();
  adm.result(`joined cluster ${joined} through ${peer}${transport.kind !== 'tcp' ? ` (${formatTransportSpec(transport)})` : ''}: this host ${host} listens on ${listen}; start marsd here (or it picks this up on its next scan)`, {
    uuid: joined, host, listen, peer, marsDir: adm.marsDir, transport: formatTransportSpec(transport),
  });
}

/** leave-cluster: tombstone our membership link once we are member of no resource. */
export async function leaveCluster(adm: Adm): Promise<void> {
  adm.requireCluster();
  if (actingForOther(adm)) {
    leaveClusterFor(adm);
    return;
  }
  const { tree, host } = adm;
  const member = listResources(tree).filter((r) => tree.value(resPaths.data(r, host)) !== undefined);
  if (member.length > 0 && !adm.force) {
    throw new AdmError(`${host} is still a member of ${member.join(', ')}: run "marsadm leave-resource" for each first`);
  }
  tree.remove(globalPaths.ip(host), { durable: true });
  adm.trigger();
  adm.result(`${host} left the cluster; its peers stop contacting it once they see the tombstone of ips/ip-${host}`, { host, left: true });
}

/** wait-cluster: until every member sent a heartbeat newer than the start of this command. */
export async function waitCluster(adm: Adm): Promise<void> {
  adm.requireCluster();
  const { tree, host } = adm;
  const startUs = tree.clock.now();
  const members = clusterHosts(tree).filter((h) => h !== host);
  const fresh = (h: string) => (tree.read(globalPaths.actual(h, 'time'))?.stampUs ?? 0) > startUs;
  await adm.waitFor(`every member (${members.join(', ') || 'none'}) answered`, () => members.every(fresh),
    () => `waiting for: ${members.filter((h) => !fresh(h)).join(', ')}`);
  adm.result(`cluster members up to date: ${members.join(', ') || '(none besides this host)'}`, { members });
}
