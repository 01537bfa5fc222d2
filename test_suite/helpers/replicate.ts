// Steps that replication tests over different transports share: a secondary joins a resource
// and finishes its full sync, the primary gets a write workload over NBD, and the disks must
// end equal. Every wait has a deadline (MarsHost.until).
import type { Test } from 'tap';
import { randomBytes, randomInt } from 'node:crypto';
import { NbdClient } from '../../kernel-shim/nbd-client.js';
import type { MarsHost } from './cluster.js';
import { fileDigest, TestCluster, waitWritebackDone } from './multi-host.js';

/**
 * A random address in 127.0.0.0/8 other than 127.0.0.1. Tests that run beside others (tap
 * runs files in parallel) use one per test: a daemon of another test that keeps retrying a
 * port it once knew, or takes a port between freePort() and bind, then never meets ours.
 */
export function randomLoopbackHost(): string {
  return `127.${randomInt(1, 255)}.${randomInt(0, 256)}.${randomInt(2, 255)}`;
}

/** `secondary` learns the resource from `primary`, joins it with its data file and syncs fully. */
export async function joinAndSync(secondary: MarsHost, primary: MarsHost, res: string, sizeBytes: number): Promise<void> {
  await secondary.until(`${secondary.name} learned ${res} and its primary's links`, () => {
    const replay = secondary.link(`resource-${res}/replay-${primary.name}`);
    if (!replay) return false;
    const seq = replay.slice(4, 13);
    return secondary.link(`resource-${res}/version-${seq}-${primary.name}`) !== undefined;
  }, 30_000);
  await secondary.marsadmOk(['join-resource', res, secondary.dataPath]);
  await secondary.until(`${secondary.name} synced ${res}`, () => secondary.link(`resource-${res}/syncstatus-${secondary.name}`) === String(sizeBytes), 60_000, 50);
}

/** `count` pipelined random writes of 1-16 blocks through the primary's export, then FLUSH. */
export async function writeRandomBlocks(primary: MarsHost, res: string, sizeBytes: number, count: number, seed = 0): Promise<void> {
  const client = await NbdClient.connect(primary.socketPath(res), res);
  try {
    const pending: Promise<void>[] = [];
    for (let i = 0; i < count; i++) {
      const blocks = 1 + ((i * 7 + seed) % 16);
      const pos = (((i * 2654435761 + seed) >>> 0) % (sizeBytes / 4096 - blocks)) * 4096;
      pending.push(client.write(pos, randomBytes(blocks * 4096)));
      if (pending.length >= 16) await pending.shift();
    }
    await Promise.all(pending);
    await client.flush();
  } finally {
    await client.disconnect();
  }
}

/** Every secondary replays all the primary logged, and its disk checksum equals the primary's. */
export async function expectEqualDisks(t: Test, primary: MarsHost, secondaries: MarsHost[], res: string, sizeBytes: number): Promise<void> {
  const cluster = new TestCluster([primary, ...secondaries], new Map(), res);
  for (const s of secondaries) await cluster.waitCaughtUp(s);
  await waitWritebackDone(primary, res);
  const want = fileDigest(primary.dataPath, sizeBytes);
  for (const s of secondaries) t.equal(fileDigest(s.dataPath, sizeBytes), want, `${s.name}'s disk equals the primary's`);
}
