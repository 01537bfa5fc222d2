// create-cluster: make this host the first member of a new cluster.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { AdmError, type Adm } from '../context.js';
import { globalPaths } from '../../daemon/tree/paths.js';
import { formatStamp } from '../../daemon/tree/lamport.js';

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
  mkdirSync(adm.marsDir, { recursive: true, mode: 0o755 });
  const secretPath = join(adm.marsDir, 'cluster-secret');
  writeFileSync(secretPath, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  adm.tree.ensureDir(globalPaths.ipsDir);
  adm.tree.ensureDir(globalPaths.actualDir(adm.host));
  adm.tree.ensureDir(globalPaths.defaultsDir(adm.host));
  adm.tree.ensureDir('userspace');
  adm.tree.write(globalPaths.ip(adm.host), listen, { durable: true });
  adm.tree.write(`${globalPaths.defaultsDir(adm.host)}/sync-limit`, '0');
  const uuid = `${adm.host}_${formatStamp(adm.tree.clock.tick())}`;
  adm.tree.write(globalPaths.uuid, uuid, { durable: true });
  adm.tree.fsyncDir('');
  adm.result(`created cluster ${uuid} in ${adm.marsDir}: this host ${adm.host} listens on ${listen}; the cluster secret is in ${secretPath}`, {
    uuid, host: adm.host, listen, marsDir: adm.marsDir, secretFile: secretPath,
  });
}
