// A cluster of real marsd processes on one machine for replication tests (docs/design.md §7): each
// host has its own /mars, data file and loopback port; optionally every host is reached
// through a FaultProxy in front of it (its ips/ip-HOST names the proxy, marsd --bind listens
// behind it), so a test can delay, throttle, cut or blackhole the traffic into any host.
import type { Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { NbdClient } from '../../kernel-shim/nbd-client.js';
import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { freePort, MarsHost } from './cluster.js';
import { FaultProxy } from './fault-proxy.js';
import { tempDir } from './tmp.js';

export interface ClusterSpec {
  hosts: string[];
  sizeBytes: number;
  res: string;
  proxied?: boolean;
  extraArgs?: string[];
  /** join the secondaries to the resource (default true) */
  joinResource?: boolean;
  /** marsd arguments of one host (beside extraArgs), e.g. its own --device-dir */
  hostArgs?: (host: MarsHost) => string[];
  /** fill a host's data file before the resource is created (default: sparse zeros) */
  initData?: (host: MarsHost) => void;
  /** a host's base directory (default: a fresh temporary directory removed in teardown) */
  dirs?: Record<string, string>;
}

export class TestCluster {
  /** `addresses`: where the peers reach each host (its proxy's address when proxied). */
  constructor(readonly hosts: MarsHost[], readonly proxies: Map<string, FaultProxy>, readonly res: string,
    readonly addresses: Map<string, string> = new Map()) {}

  get primary(): MarsHost {
    return this.hosts[0]!;
  }

  get secondaries(): MarsHost[] {
    return this.hosts.slice(1);
  }

  host(name: string): MarsHost {
    const h = this.hosts.find((x) => x.name === name);
    if (!h) throw new Error(`no host ${name}`);
    return h;
  }

  proxy(name: string): FaultProxy {
    const p = this.proxies.get(name);
    if (!p) throw new Error(`host ${name} has no proxy (start the cluster with proxied: true)`);
    return p;
  }

  /**
   * Wait until `host` replayed everything the primary logged: the primary's versionlink of
   * its newest logfile covers the whole file (call this after the writes were flushed), and
   * `host`'s versionlink equals it (equal versionlinks prove equal history).
   */
  async waitCaughtUp(host: MarsHost, timeoutMs = 60_000): Promise<void> {
    const p = this.primary;
    await host.until(`${host.name} caught up with ${p.name}`, () => {
      const seq = newestVersionSeq(p, this.res, p.name);
      if (seq === undefined) return false;
      const mine = p.link(`resource-${this.res}/version-${seq}-${p.name}`);
      if (mine === undefined) return false;
      const logPos = Number(mine.split(':')[0]!.split(',')[2]);
      let fileBytes = -1;
      try { fileBytes = statSync(`${p.marsDir}/resource-${this.res}/log-${seq}-${p.name}`).size; } catch { /* not yet */ }
      return logPos === fileBytes && host.link(`resource-${this.res}/version-${seq}-${host.name}`) === mine;
    }, timeoutMs, 50);
  }
}

function newestVersionSeq(h: MarsHost, res: string, owner: string): string | undefined {
  let best: string | undefined;
  for (const n of readdirSync(`${h.marsDir}/resource-${res}`)) {
    const m = /^version-(\d{9})-(.+)$/.exec(n);
    if (m && m[2] === owner && (best === undefined || m[1]! > best)) best = m[1]!;
  }
  return best;
}

/** Checksum of the first sizeBytes of a file. */
export function fileDigest(path: string, sizeBytes: number): string {
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(1 << 20);
    for (let pos = 0; pos < sizeBytes; pos += buf.length) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, sizeBytes - pos), pos);
      h.update(buf.subarray(0, n));
      if (n < Math.min(buf.length, sizeBytes - pos)) h.update(Buffer.alloc(Math.min(buf.length, sizeBytes - pos) - n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

/** What prepareHost needs of a ClusterSpec. */
export type HostOptions = Pick<ClusterSpec, 'sizeBytes' | 'proxied' | 'extraArgs' | 'hostArgs' | 'initData' | 'dirs'>;

/**
 * One host of a cluster, not yet a member: its directories and data file, its marsd arguments,
 * its listen port and (proxied) the FaultProxy in front of it, added to `proxies`. Returns the
 * host and the address its peers reach it at (the proxy's when proxied).
 */
export async function prepareHost(t: Test, name: string, o: HostOptions, proxies: Map<string, FaultProxy>): Promise<{ host: MarsHost; address: string }> {
  const dir = o.dirs?.[name] ?? tempDir(t, `mars-${name}-`);
  const h = new MarsHost({ host: name, sizeBytes: o.sizeBytes, dir, extraArgs: [...(o.extraArgs ?? []), '--pull-interval-ms', '200'] });
  t.teardown(() => h.cleanup());
  h.prepare();
  h.extraArgs.push(...(o.hostArgs?.(h) ?? []));
  o.initData?.(h);
  const realPort = await freePort();
  let address = `127.0.0.1:${realPort}`;
  if (o.proxied) {
    const proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: realPort });
    t.teardown(() => proxy.close());
    proxies.set(name, proxy);
    address = proxy.address;
  }
  h.extraArgs.push('--bind', `127.0.0.1:${realPort}`);
  return { host: h, address };
}

/** `join-cluster` through a member (with its secret file) and marsd started. */
export async function joinCluster(h: MarsHost, address: string, via: { address: string; secretFile: string }): Promise<void> {
  await h.marsadmOk(['join-cluster', via.address, '--listen', address, '--secret-file', via.secretFile]);
  await h.start();
}

/** Once `h` learned the resource and `primary`'s links of it: `join-resource` on `device` (default its data file). */
export async function joinResource(h: MarsHost, res: string, primary: MarsHost, device = h.dataPath): Promise<void> {
  await h.until(`${h.name} learned ${res} and its primary's links`, () => {
    const replay = h.link(`resource-${res}/replay-${primary.name}`);
    if (!replay) return false;
    const seq = replay.slice(4, 13);
    return h.link(`resource-${res}/version-${seq}-${primary.name}`) !== undefined;
  }, 30_000);
  await h.marsadmOk(['join-resource', res, device]);
}

/** Until `h`'s full sync of `res` is done. */
export async function waitSynced(h: MarsHost, res: string, sizeBytes: number, timeoutMs = 60_000): Promise<void> {
  await h.until(`${h.name} synced ${res}`, () => h.link(`resource-${res}/syncstatus-${h.name}`) === String(sizeBytes), timeoutMs, 50);
}

export async function startCluster(t: Test, spec: ClusterSpec): Promise<TestCluster> {
  const hosts: MarsHost[] = [];
  const proxies = new Map<string, FaultProxy>();
  const addresses = new Map<string, string>();
  for (const name of spec.hosts) {
    const { host, address } = await prepareHost(t, name, spec, proxies);
    addresses.set(name, address);
    hosts.push(host);
  }
  const [first, ...rest] = hosts;
  await first!.createCluster(addresses.get(first!.name)!);
  await first!.start();
  await first!.createResource(spec.res);
  await first!.waitPrimary(spec.res);
  const via = { address: addresses.get(first!.name)!, secretFile: `${first!.marsDir}/cluster-secret` };
  for (const h of rest) await joinCluster(h, addresses.get(h.name)!, via);
  const cluster = new TestCluster(hosts, proxies, spec.res, addresses);
  if (spec.joinResource ?? true) {
    for (const h of rest) await joinResource(h, spec.res, first!);
    for (const h of rest) await waitSynced(h, spec.res, spec.sizeBytes);
  }
  return cluster;
}

/**
 * What an application does on the primary: `writes` random writes of 1..maxBlocks 4 KiB
 * blocks at positions spread by `seed`, eight in flight, then FLUSH, then close the device.
 */
export async function writeWorkload(h: MarsHost, res: string, sizeBytes: number, writes: number, seed: number, maxBlocks = 8): Promise<void> {
  const client = await NbdClient.connect(h.socketPath(res), res);
  try {
    const pending: Promise<void>[] = [];
    for (let i = 0; i < writes; i++) {
      const blocks = 1 + ((i + seed) % maxBlocks);
      const pos = (((i * 2654435761 + seed * 40503) >>> 0) % (sizeBytes / 4096 - blocks)) * 4096;
      pending.push(client.write(pos, randomBytes(blocks * 4096)));
      if (pending.length >= 8) await pending.shift();
    }
    await Promise.all(pending);
    await client.flush();
  } finally {
    await client.disconnect();
  }
}

/** Bytes of `primary`'s own newest logfile (the real file: status links may lag behind it). */
function newestLogBytes(primary: MarsHost, res: string, seq: string): number {
  try {
    return statSync(`${primary.marsDir}/resource-${res}/log-${seq}-${primary.name}`).size;
  } catch {
    return -1;
  }
}

/**
 * `h` has replayed everything `primary` logged: `primary`'s versionlink of its newest logfile
 * covers the whole file (so it is not a stale status link) and `h`'s versionlink equals it.
 */
export function caughtUpWith(h: MarsHost, primary: MarsHost, res: string): boolean {
  const seq = newestVersionSeq(primary, res, primary.name);
  if (seq === undefined) return false;
  const theirs = primary.link(`resource-${res}/version-${seq}-${primary.name}`);
  if (theirs === undefined || Number(theirs.split(':')[0]!.split(',')[2]) !== newestLogBytes(primary, res, seq)) return false;
  return h.link(`resource-${res}/version-${seq}-${h.name}`) === theirs;
}

/**
 * The primary's disk holds everything it logged: its replay link (the writeback position) is at
 * the end of the logfile it names, and every newer logfile of the primary is still empty (right
 * after a rotation the link stays on the old file). Unlike actual-HOST/writeback-rest, which is
 * published at most every 200 ms and may still read 0 from before the last writes, this compares
 * with the files themselves.
 */
export async function waitWritebackDone(primary: MarsHost, res: string, timeoutMs = 30_000): Promise<void> {
  const dir = `${primary.marsDir}/resource-${res}`;
  await primary.until(`${primary.name} wrote back everything it logged`, () => {
    const replay = /^log-(\d{9})-[^,]+,(\d+),0$/.exec(primary.link(`resource-${res}/replay-${primary.name}`) ?? '');
    if (!replay || replay[0].split(',')[0]!.slice(14) !== primary.name || Number(replay[2]) !== newestLogBytes(primary, res, replay[1]!)) return false;
    return readdirSync(dir).every((n) => {
      const m = /^log-(\d{9})-(.+)$/.exec(n);
      return !m || m[2] !== primary.name || m[1]! <= replay[1]! || newestLogBytes(primary, res, m[1]!) === 0;
    });
  }, timeoutMs, 25);
}
