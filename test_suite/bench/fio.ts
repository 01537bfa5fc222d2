// Job definitions (fio with its nbd ioengine, and nbdcopy) and parsing of their results.
import { runCommand, type RunResult } from './proc.js';

export type JobId = 'COPY' | 'J1' | 'J2' | 'J3' | 'J4' | 'J5' | 'J6';

/** Order of execution within a round. COPY runs first: it also fills the device for J5. */
export const JOB_ORDER: JobId[] = ['COPY', 'J1', 'J2', 'J3', 'J4', 'J5', 'J6'];

/** The figures one run produces (undefined when the job does not have that figure). */
export interface Metrics {
  /** total IOPS (reads + writes) */
  iops?: number;
  readIops?: number;
  writeIops?: number;
  /** total bandwidth, MiB/s */
  bwMiBs?: number;
  /** J3: write + flush latency (sum of the two percentiles), µs */
  latP50Us?: number;
  latP99Us?: number;
  writeLatP50Us?: number;
  writeLatP99Us?: number;
  flushLatP50Us?: number;
  flushLatP99Us?: number;
  /** fio's own CPU use (usr+sys, % of one core) */
  fioCpuPct?: number;
  /** nbdcopy: wall time in seconds */
  wallS?: number;
}

export type FigureKey = keyof Metrics;

export interface Figure {
  key: FigureKey;
  label: string;
  unit: string;
  /** true: bigger is better (IOPS, MiB/s); false: smaller is better (latency, time) */
  higherBetter: boolean;
  /** the target for ratio = ours / nbdkit of the medians, if any */
  target?: { op: '>=' | '<='; ratio: number };
  decimals: number;
}

export interface JobDef {
  id: JobId;
  title: string;
  kind: 'fio' | 'nbdcopy';
  /** does the job write (so marsd logs and writes back)? */
  writes: boolean;
  /** fio arguments besides name, engine, uri, size, runtime and output format */
  fioArgs: string[];
  /** figures shown in the table; the first one is the job's headline figure */
  figures: Figure[];
}

const iops = (key: FigureKey, label: string, target?: Figure['target']): Figure => ({ key, label, unit: 'IOPS', higherBetter: true, target, decimals: 0 });

export const JOBS: Record<JobId, JobDef> = {
  COPY: {
    id: 'COPY', title: 'nbdcopy of random data the size of the device (from a file in the page cache) into the export, with --flush',
    kind: 'nbdcopy', writes: true, fioArgs: [],
    figures: [{ key: 'wallS', label: 'wall time', unit: 's', higherBetter: false, target: { op: '<=', ratio: 1.1 }, decimals: 2 }],
  },
  J1: {
    id: 'J1', title: '4k random write, iodepth 32', kind: 'fio', writes: true,
    fioArgs: ['--rw=randwrite', '--bs=4k', '--iodepth=32'],
    figures: [iops('writeIops', 'write', { op: '>=', ratio: 1.0 })],
  },
  J2: {
    id: 'J2', title: '4k random write, iodepth 32, FLUSH every 32 writes (--fsync=32)', kind: 'fio', writes: true,
    fioArgs: ['--rw=randwrite', '--bs=4k', '--iodepth=32', '--fsync=32'],
    figures: [iops('writeIops', 'write', { op: '>=', ratio: 1.0 })],
  },
  J3: {
    id: 'J3', title: '4k random write, iodepth 1, FLUSH after every write (--fsync=1)', kind: 'fio', writes: true,
    fioArgs: ['--rw=randwrite', '--bs=4k', '--iodepth=1', '--fsync=1', '--lat_percentiles=1'],
    figures: [
      { key: 'latP50Us', label: 'write+flush latency p50', unit: 'µs', higherBetter: false, target: { op: '<=', ratio: 1.2 }, decimals: 0 },
      { key: 'latP99Us', label: 'write+flush latency p99', unit: 'µs', higherBetter: false, decimals: 0 },
      { key: 'writeLatP50Us', label: 'write latency p50', unit: 'µs', higherBetter: false, decimals: 0 },
      { key: 'flushLatP50Us', label: 'flush latency p50', unit: 'µs', higherBetter: false, decimals: 0 },
      iops('writeIops', 'write'),
    ],
  },
  J4: {
    id: 'J4', title: '1M sequential write, iodepth 8', kind: 'fio', writes: true,
    fioArgs: ['--rw=write', '--bs=1M', '--iodepth=8'],
    // No target against nbdkit: its file plugin only rewrites the page cache here, while marsd
    // must make every byte durable in its log first. The report compares J4 with the disk's
    // synced sequential rate measured in the same run instead.
    figures: [{ key: 'bwMiBs', label: 'write bandwidth', unit: 'MiB/s', higherBetter: true, decimals: 0 }],
  },
  J5: {
    id: 'J5', title: '4k random read, iodepth 32, on the filled device', kind: 'fio', writes: false,
    fioArgs: ['--rw=randread', '--bs=4k', '--iodepth=32'],
    figures: [iops('readIops', 'read', { op: '>=', ratio: 1.0 })],
  },
  J6: {
    id: 'J6', title: '70/30 random read/write 4k, iodepth 32', kind: 'fio', writes: true,
    fioArgs: ['--rw=randrw', '--rwmixread=70', '--bs=4k', '--iodepth=32'],
    figures: [iops('iops', 'read+write', { op: '>=', ratio: 1.0 }), iops('readIops', 'read'), iops('writeIops', 'write')],
  },
};

/** The full fio command line of a job against one NBD URI. */
export function fioCommand(job: JobDef, uri: string, sizeBytes: number, runtimeS: number): string[] {
  return [
    'fio', `--name=${job.id}`, '--ioengine=nbd', `--uri=${uri}`, `--size=${sizeBytes}`,
    ...job.fioArgs,
    '--norandommap', '--time_based', `--runtime=${runtimeS}`, '--output-format=json',
  ];
}

/** The nbdcopy command line of the COPY job. */
export function nbdcopyCommand(source: string, uri: string): string[] {
  return ['nbdcopy', '--flush', source, uri];
}

export interface JobOutcome {
  metrics: Metrics;
  error?: string;
  /** wall time of the client process, s */
  clientWallS: number;
}

/** Runs a fio job (bounded by runtime + a grace period) and parses its JSON output. */
export async function runFio(cmd: string[], runtimeS: number): Promise<JobOutcome> {
  const r = await runCommand(cmd[0]!, cmd.slice(1), (runtimeS + 60) * 1000);
  if (r.timedOut) return { metrics: {}, error: `fio did not finish within ${runtimeS + 60} s (killed)`, clientWallS: r.wallS };
  if (r.code !== 0) return { metrics: {}, error: `fio exited ${r.code ?? r.signal}: ${lastLines(r)}`, clientWallS: r.wallS };
  try {
    return { metrics: parseFioJson(r.stdout), clientWallS: r.wallS };
  } catch (err) {
    return { metrics: {}, error: `cannot parse fio output: ${(err as Error).message}: ${lastLines(r)}`, clientWallS: r.wallS };
  }
}

/** Runs nbdcopy (bounded) and reports its wall time. */
export async function runNbdcopy(cmd: string[], timeoutS: number): Promise<JobOutcome> {
  const r = await runCommand(cmd[0]!, cmd.slice(1), timeoutS * 1000);
  if (r.timedOut) return { metrics: {}, error: `nbdcopy did not finish within ${timeoutS} s (killed)`, clientWallS: r.wallS };
  if (r.code !== 0) return { metrics: {}, error: `nbdcopy exited ${r.code ?? r.signal}: ${lastLines(r)}`, clientWallS: r.wallS };
  return { metrics: { wallS: r.wallS }, clientWallS: r.wallS };
}

function lastLines(r: RunResult): string {
  return (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-5).join(' | ');
}

interface FioDir {
  io_bytes: number;
  bw_bytes: number;
  iops: number;
  total_ios: number;
  lat_ns?: { percentile?: Record<string, number> };
  clat_ns?: { percentile?: Record<string, number> };
}

interface FioJob {
  error: number;
  read: FioDir;
  write: FioDir;
  sync?: { total_ios: number; lat_ns?: { percentile?: Record<string, number> } };
  usr_cpu: number;
  sys_cpu: number;
}

const pct = (p: Record<string, number> | undefined, which: string): number | undefined => {
  const v = p?.[which];
  return v === undefined ? undefined : v / 1000;
};

/**
 * Parses fio's JSON output. fio's nbd engine prints a line ("fio: connected to NBD server")
 * before the JSON, so parsing starts at the first `{`.
 */
export function parseFioJson(stdout: string): Metrics {
  const start = stdout.indexOf('{');
  if (start < 0) throw new Error('no JSON object in fio output');
  const doc = JSON.parse(stdout.slice(start)) as { jobs: FioJob[] };
  const job = doc.jobs?.[0];
  if (!job) throw new Error('fio output has no job');
  if (job.error) throw new Error(`fio job error ${job.error}`);
  const m: Metrics = {
    readIops: job.read.iops,
    writeIops: job.write.iops,
    iops: job.read.iops + job.write.iops,
    bwMiBs: (job.read.bw_bytes + job.write.bw_bytes) / 2 ** 20,
    fioCpuPct: job.usr_cpu + job.sys_cpu,
  };
  if (job.read.total_ios + job.write.total_ios === 0) throw new Error('fio did no I/O');
  const wp = (job.write.lat_ns?.percentile ?? job.write.clat_ns?.percentile);
  if (job.sync && job.sync.total_ios > 0) {
    const sp = job.sync.lat_ns?.percentile;
    m.writeLatP50Us = pct(wp, '50.000000');
    m.writeLatP99Us = pct(wp, '99.000000');
    m.flushLatP50Us = pct(sp, '50.000000');
    m.flushLatP99Us = pct(sp, '99.000000');
    if (m.writeLatP50Us !== undefined && m.flushLatP50Us !== undefined) m.latP50Us = m.writeLatP50Us + m.flushLatP50Us;
    if (m.writeLatP99Us !== undefined && m.flushLatP99Us !== undefined) m.latP99Us = m.writeLatP99Us + m.flushLatP99Us;
  }
  return m;
}
