// Offline generator of two /mars trees for the scale benchmark (issue 11): a primary and a
// secondary with R resources, each with L logfiles already present, replicated, replayed and
// synced, as if the cluster had run for a long time. Writing 100 x 1000 logfiles through a
// real marsd (a rotation per logfile, a fetch and a replay per logfile on the secondary) takes
// hours; writing the same files and links directly takes a minute.
//
// Everything that has a format goes through the project's own codecs, so the tree is exactly
// what marsd writes and reads: records by encodeRecord (common/log/record.ts), versionlinks by
// nextVersionLink over contentDigestOf the logfile's bytes (common/log/links.ts and
// content-digest.ts), replay links by formatReplayLink, names by resPaths/globalPaths
// (common/tree/paths.ts), stamps by stampToSeconds (common/tree/lamport.ts). The links are
// those marsadm create-cluster/join-cluster/create-resource/join-resource and a finished sync
// leave behind (a two-host tree after a few rotations was the model); status links
// (actual-HOST/...) are marsd's own and are left to it.
//
// Both trees get every propagated link with the same value and the same stamp (a peer's pull
// keeps the writer's stamp), so the first pulls after start find nothing to merge. Each
// host's data file of a resource holds what replaying all its logfiles produces: the
// primary's writeback and the secondary's replay are complete.
import { closeSync, mkdirSync, openSync, symlinkSync, lutimesSync, writeFileSync, writeSync, truncateSync, existsSync, readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { encodeRecord, RecordCode, recordBytes, MAX_RECORD_PAYLOAD_BYTES } from '../../common/log/record.js';
import { contentDigestOf } from '../../common/log/content-digest.js';
import { formatReplayLink, initialVersionLinks, nextVersionLink } from '../../common/log/links.js';
import { globalPaths, localPaths, resPaths, resourceDir, TODO_KEYS } from '../../common/tree/paths.js';
import { formatStamp, LamportClock, stampToSeconds } from '../../common/tree/lamport.js';
import { validHost, validResource } from '../../common/tree/names.js';
import { TREE_DIR_MODE, TREE_FILE_MODE } from '../../common/tree/modes.js';

export interface ScaleTreeSpec {
  /** the directory that receives one subdirectory per host (DIR/HOST/mars, DIR/HOST/data) */
  dir: string;
  /** [primary, secondary] */
  hosts: readonly [string, string];
  /** ips/ip-HOST of each host: ADDRESS:PORT */
  addresses: ReadonlyMap<string, string>;
  resources: number;
  logfilesPerResource: number;
  /** records in each logfile (at least 1) */
  recordsPerLogfile: number;
  /** payload of each record (1..4096) */
  payloadBytes: number;
  /** size of every resource's device (a multiple of 4096, at least 64 KiB) */
  deviceSizeBytes: number;
}

export const DEFAULT_SCALE_TREE: Omit<ScaleTreeSpec, 'dir' | 'addresses' | 'resources' | 'logfilesPerResource'> = {
  hosts: ['h1', 'h2'],
  recordsPerLogfile: 1,
  payloadBytes: 512,
  deviceSizeBytes: 1 << 20,
};

export interface ScaleHostPaths {
  name: string;
  /** DIR/HOST */
  dir: string;
  marsDir: string;
  runDir: string;
  /** data file of a resource on this host */
  dataPath: (res: string) => string;
}

export interface ScaleTreeResult {
  hosts: ScaleHostPaths[];
  resources: string[];
  /** bytes of one logfile */
  logfileBytes: number;
  /** files and links written, both hosts together */
  filesWritten: number;
  linksWritten: number;
  elapsedMs: number;
}

/** Resource names of a generated tree: r0, r1, ... */
export function scaleResourceNames(count: number): string[] {
  return Array.from({ length: count }, (_, i) => validResource(`r${i}`));
}

export function scaleHostPaths(dir: string, name: string): ScaleHostPaths {
  const hostDir = join(dir, validHost(name));
  return {
    name,
    dir: hostDir,
    marsDir: join(hostDir, 'mars'),
    runDir: join(hostDir, 'run'),
    dataPath: (res: string) => join(hostDir, 'data', `${validResource(res)}.img`),
  };
}

/** Throws, naming the field, when a spec cannot make a valid tree. */
export function checkScaleTreeSpec(s: ScaleTreeSpec): void {
  const whole = (n: number, min: number, max: number, what: string): void => {
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new Error(`${what} must be an integer from ${min} to ${max}, not ${n}`);
  };
  whole(s.resources, 1, 100_000, 'resources');
  whole(s.logfilesPerResource, 1, 1_000_000, 'logfiles per resource');
  whole(s.recordsPerLogfile, 1, 10_000, 'records per logfile');
  whole(s.payloadBytes, 1, MAX_RECORD_PAYLOAD_BYTES, 'record payload bytes');
  whole(s.deviceSizeBytes, 64 * 1024, 2 ** 40, 'device size bytes');
  if (s.deviceSizeBytes % 4096 !== 0) throw new Error(`device size ${s.deviceSizeBytes} must be a multiple of 4096`);
  if (s.payloadBytes > s.deviceSizeBytes) throw new Error('a record payload must fit the device');
  if (s.hosts[0] === s.hosts[1]) throw new Error('the two hosts need different names');
  for (const h of s.hosts) {
    validHost(h);
    if (!s.addresses.get(h)) throw new Error(`no address for host ${h}`);
  }
  if (existsSync(s.dir) && readdirSync(s.dir).length > 0) throw new Error(`${s.dir} is not empty: the generator only writes fresh trees`);
}

/**
 * One link at `rel` in both trees with one stamp. The trees are fresh and nobody reads them
 * while they are written, so a plain symlink and lutimes do what TreeStore.write's temporary
 * link and rename do for a live tree, at half the system calls.
 */
class TwinTrees {
  links = 0;
  files = 0;

  constructor(readonly roots: readonly string[], readonly clock: LamportClock) {}

  dir(rel: string, roots: readonly string[] = this.roots): void {
    for (const root of roots) mkdirSync(join(root, rel), { recursive: true, mode: TREE_DIR_MODE });
  }

  link(rel: string, value: string, roots: readonly string[] = this.roots): void {
    const seconds = stampToSeconds(this.clock.tick());
    for (const root of roots) {
      const path = join(root, rel);
      symlinkSync(value, path);
      lutimesSync(path, seconds, seconds);
      this.links++;
    }
  }

  file(rel: string, bytes: Uint8Array, roots: readonly string[] = this.roots): void {
    for (const root of roots) {
      writeFileSync(join(root, rel), bytes, { mode: TREE_FILE_MODE, flag: 'wx' });
      this.files++;
    }
  }
}

/**
 * The bytes of logfile `seq` of resource number `resIndex`: recordsPerLogfile records at
 * consecutive device positions (wrapping at the device end), each payload a byte pattern that
 * names the resource, logfile and record, so that a misplaced record would show.
 */
export function scaleLogfileBytes(spec: Pick<ScaleTreeSpec, 'recordsPerLogfile' | 'payloadBytes' | 'deviceSizeBytes'>, resIndex: number, seq: number, stampUs: number): { bytes: Buffer; writes: { devicePos: number; payload: Buffer }[] } {
  const total = spec.recordsPerLogfile * recordBytes(spec.payloadBytes);
  const bytes = Buffer.alloc(total);
  const writes: { devicePos: number; payload: Buffer }[] = [];
  const slots = Math.floor(spec.deviceSizeBytes / spec.payloadBytes);
  let at = 0;
  for (let k = 0; k < spec.recordsPerLogfile; k++) {
    const n = (seq - 1) * spec.recordsPerLogfile + k;
    const devicePos = (n % slots) * spec.payloadBytes;
    const payload = Buffer.alloc(spec.payloadBytes, (resIndex * 131 + seq * 7 + k) % 251 + 1);
    if (spec.payloadBytes >= 4) payload.writeUInt32LE(seq, 0);
    at += encodeRecord(bytes, at, {
      devicePos, code: RecordCode.WriteNew,
      stampSec: Math.floor(stampUs / 1e6), stampNsec: (stampUs % 1e6) * 1000,
      seqNr: k + 1, payload,
    });
    writes.push({ devicePos, payload });
  }
  return { bytes, writes };
}

/** Writes both trees and data files. The directory must not exist or be empty. */
export function generateScaleTrees(spec: ScaleTreeSpec): ScaleTreeResult {
  checkScaleTreeSpec(spec);
  const started = Date.now();
  const [primary, secondary] = spec.hosts;
  const hosts = spec.hosts.map((h) => scaleHostPaths(spec.dir, h));
  const roots = hosts.map((h) => h.marsDir);
  const [pRoot, sRoot] = roots as [string, string];
  for (const h of hosts) {
    mkdirSync(h.marsDir, { recursive: true, mode: TREE_DIR_MODE });
    mkdirSync(h.runDir, { recursive: true });
    mkdirSync(join(h.dir, 'data'), { recursive: true });
  }
  const clock = new LamportClock();
  const t = new TwinTrees(roots, clock);

  // The cluster as create-cluster on the primary and join-cluster on the secondary leave it.
  const secret = `${randomBytes(32).toString('hex')}\n`;
  for (const root of roots) writeFileSync(join(root, 'cluster-secret'), secret, { mode: 0o600 });
  for (const h of spec.hosts) {
    t.dir(globalPaths.ipsDir);
    t.dir(globalPaths.actualDir(h));
    t.dir(globalPaths.defaultsDir(h));
  }
  t.dir(localPaths.dir);
  t.link(globalPaths.ip(primary), spec.addresses.get(primary)!);
  t.link(`${globalPaths.defaultsDir(primary)}/sync-limit`, '0');
  t.link(globalPaths.uuid, `${primary}_${formatStamp(clock.tick())}`);
  t.link(globalPaths.ip(secondary), spec.addresses.get(secondary)!);
  t.link(localPaths.host, primary, [pRoot]);
  t.link(localPaths.host, secondary, [sRoot]);

  const resources = scaleResourceNames(spec.resources);
  let logfileBytes = 0;
  for (const [resIndex, res] of resources.entries()) {
    t.dir(resourceDir(res));
    for (const h of spec.hosts) {
      t.dir(resPaths.todoDir(res, h));
      t.dir(resPaths.actualDir(res, h));
    }
    // What the replay of every logfile leaves on a disk, kept in memory and written once.
    const image = Buffer.alloc(spec.deviceSizeBytes);
    let touchedEnd = 0;
    // create-resource on the primary: the fake versionlink 0 that starts the chain.
    const initial = initialVersionLinks(1, primary);
    t.link(resPaths.version(res, 0, primary), initial.previous.value);
    let prev = initial.previous.value;
    let last = { seq: 0, bytes: 0 };
    for (let seq = 1; seq <= spec.logfilesPerResource; seq++) {
      const stampUs = clock.tick();
      const { bytes, writes } = scaleLogfileBytes(spec, resIndex, seq, stampUs);
      t.file(resPaths.log(res, seq, primary), bytes);
      for (const w of writes) {
        w.payload.copy(image, w.devicePos);
        touchedEnd = Math.max(touchedEnd, w.devicePos + w.payload.length);
      }
      // The secondary's versionlink equals the primary's: it replayed the same bytes.
      const value = nextVersionLink(prev, seq, primary, bytes.length, contentDigestOf(bytes));
      t.link(resPaths.version(res, seq, primary), value);
      t.link(resPaths.version(res, seq, secondary), value);
      prev = value;
      last = { seq, bytes: bytes.length };
      logfileBytes = bytes.length;
    }
    const size = String(spec.deviceSizeBytes);
    for (const h of hosts) {
      const path = h.dataPath(res);
      writeFileSync(path, '', { flag: 'wx' });
      truncateSync(path, spec.deviceSizeBytes);
      const fd = openSync(path, 'r+');
      try { writeSync(fd, image, 0, touchedEnd, 0); } finally { closeSync(fd); }
    }
    const caughtUp = formatReplayLink({ seq: last.seq, origin: primary, minPos: last.bytes, len: 0 });
    for (const h of hosts) {
      t.link(resPaths.data(res, h.name), h.dataPath(res));
      t.link(resPaths.device(res, h.name), res);
      t.link(resPaths.actsize(res, h.name), size);
      t.link(resPaths.syncstatus(res, h.name), size);
      t.link(resPaths.replay(res, h.name), caughtUp);
      for (const key of TODO_KEYS) t.link(resPaths.todo(res, h.name, key), '1');
    }
    // join-resource before the first logfile, and a sync that began there and finished.
    t.link(resPaths.skipCheck(res, secondary), '1');
    t.link(resPaths.syncpos(res, secondary), formatReplayLink({ seq: 1, origin: primary, minPos: 0, len: 0 }));
    t.link(resPaths.primary(res), primary);
    t.link(resPaths.maxnr(res), String(last.seq));
    // The size link last, as create-resource does: it makes the resource visible.
    t.link(resPaths.size(res), size);
  }
  return { hosts, resources, logfileBytes, filesWritten: t.files, linksWritten: t.links, elapsedMs: Date.now() - started };
}
