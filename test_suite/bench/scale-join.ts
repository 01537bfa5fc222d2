// The join part of the scale suite (issue 11: "join-resource of 100 resources and their full
// syncs finish without a single dropped peer connection"). A fresh two-host cluster: h1
// creates N resources on data files of random bytes (create-resource takes a disk's content
// as the initial content), h2 joins each with join-resource onto a zero-filled file, and all
// N full syncs then run at once. Counted in both daemons' logs from their start to the end
// of the syncs: lost peer connections, refused requests (EBUSY), syncs that restarted, and
// every warning or error line. Every wait polls a state with a deadline.
import { closeSync, openSync, readFileSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { BenchCluster, type BenchHost } from './cluster.js';

export interface ScaleJoinRun {
  resources: number;
  deviceBytes: number;
  /** wall seconds: creating the N-1 resources after r0 on h1; join-resource of all N on h2; from the last join until every sync was complete */
  createS: number;
  joinS: number;
  syncAfterJoinS: number;
  /** "connection lost" lines of both daemons (target 0) */
  connectionsLost: number;
  /** requests refused for too many at once */
  busyRefusals: number;
  /** syncs that started again after an interruption */
  syncRestarts: number;
  warnLines: number;
  errorLines: number;
  /** the first few distinct problem lines, without time stamps */
  sampleLines: string[];
  loadAvgStart: number[];
  loadAvgEnd: number[];
  error?: string;
}

const LOST = /: connection lost/;
const BUSY = /EBUSY|requests at once/;
const RESTART = /interrupted|resuming at/;
const PROBLEM = / (warn|error): /;

function dataFile(h: BenchHost, res: string): string {
  return res === 'r0' ? h.dataPath : join(h.dir, `data-${res}.img`);
}

function fillRandom(path: string, bytes: number): void {
  const fd = openSync(path, 'w');
  try {
    const chunk = 1 << 20;
    for (let pos = 0; pos < bytes; pos += chunk) writeSync(fd, randomBytes(Math.min(chunk, bytes - pos)), 0, Math.min(chunk, bytes - pos), pos);
  } finally {
    closeSync(fd);
  }
}

/** Problem lines counted over both daemons' whole logs. */
export function countJoinProblems(logs: readonly string[]): Pick<ScaleJoinRun, 'connectionsLost' | 'busyRefusals' | 'syncRestarts' | 'warnLines' | 'errorLines' | 'sampleLines'> {
  const lines = logs.flatMap((l) => l.split('\n')).filter((l) => PROBLEM.test(l));
  return {
    connectionsLost: lines.filter((l) => LOST.test(l)).length,
    busyRefusals: lines.filter((l) => BUSY.test(l)).length,
    syncRestarts: lines.filter((l) => RESTART.test(l)).length,
    warnLines: lines.filter((l) => l.includes(' warn: ')).length,
    errorLines: lines.filter((l) => l.includes(' error: ')).length,
    sampleLines: [...new Set(lines.map((l) => l.replace(/^\S+ marsd\[\d+\] /, '')))].slice(0, 5),
  };
}

export async function runScaleJoin(o: { dir: string; resources: number; deviceBytes: number; timeoutS: number; log: (m: string) => void; loadavg: () => number[] }): Promise<ScaleJoinRun> {
  const names = Array.from({ length: o.resources }, (_, i) => `r${i}`);
  const c = await BenchCluster.create({ dir: o.dir, hosts: ['h1', 'h2'], sizeBytes: o.deviceBytes, join: false });
  const [h1, h2] = [c.primary, c.secondary];
  const loadAvgStart = o.loadavg();
  try {
    h1.prepare();
    fillRandom(h1.dataPath, o.deviceBytes);
    await c.start();
    let t0 = Date.now();
    for (const res of names.slice(1)) {
      fillRandom(dataFile(h1, res), o.deviceBytes);
      await h1.marsadm(['create-resource', res, dataFile(h1, res)]);
    }
    const createS = (Date.now() - t0) / 1000;
    o.log(`join: ${o.resources} resources created on h1 in ${createS.toFixed(1)} s; h2 joins each`);
    t0 = Date.now();
    for (const res of names) {
      await h2.until(`h2 learned ${res}`, () => h2.link(`resource-${res}/primary`) === 'h1' && h2.link(`resource-${res}/size`) !== undefined, o.timeoutS * 1000, 50);
      const file = dataFile(h2, res);
      writeFileSync(file, '');
      truncateSync(file, o.deviceBytes);
      await h2.marsadm(['join-resource', res, file]);
    }
    const joinS = (Date.now() - t0) / 1000;
    o.log(`join: ${o.resources} join-resource on h2 in ${joinS.toFixed(1)} s; waiting for every sync`);
    t0 = Date.now();
    const synced = () => names.filter((res) => h2.link(`resource-${res}/syncstatus-h2`) === String(o.deviceBytes)).length;
    await h2.until(`h2 synced all ${o.resources} resources`, () => synced() === o.resources, o.timeoutS * 1000, 500);
    const syncAfterJoinS = (Date.now() - t0) / 1000;
    const problems = countJoinProblems([readFileSync(h1.logPath, 'utf8'), readFileSync(h2.logPath, 'utf8')]);
    o.log(`join: every sync complete ${syncAfterJoinS.toFixed(1)} s after the last join; ${problems.connectionsLost} connections lost, ${problems.busyRefusals} EBUSY, ${problems.syncRestarts} sync restarts, ${problems.warnLines} warning / ${problems.errorLines} error lines`);
    return { resources: o.resources, deviceBytes: o.deviceBytes, createS, joinS, syncAfterJoinS, ...problems, loadAvgStart, loadAvgEnd: o.loadavg() };
  } catch (err) {
    const problems = countJoinProblems([h1, h2].map((h) => { try { return readFileSync(h.logPath, 'utf8'); } catch { return ''; } }));
    return { resources: o.resources, deviceBytes: o.deviceBytes, createS: 0, joinS: 0, syncAfterJoinS: 0, ...problems, loadAvgStart, loadAvgEnd: o.loadavg(), error: (err as Error).message };
  } finally {
    await c.stop();
  }
}
