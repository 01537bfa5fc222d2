// view --watch [SECONDS]: the view refreshed in place in one process, with progress bars for
// sync, fetch and replay; rates are measured here between two refreshes (bytes/s), ETAs from them.
import { AdmError, type Adm } from '../context.js';
import { expandResources } from './common.js';
import { readView } from '../status/read-view.js';
import { syncPos, viewLines, type ViewSnapshot } from '../status/view-model.js';
import { progressBar } from '../status/progress.js';
import { systemClock } from '../../common/util/clock.js';

interface Sample { atMs: number; sync: number; fetch: number; replay: number }

/** The lines of one refresh: the view, and a bar for every kind of work that is not done. */
export function watchLines(v: ViewSnapshot, prev: Sample | undefined, now: Sample): string[] {
  const between = (k: 'sync' | 'fetch' | 'replay') => (prev && now.atMs > prev.atMs ? Math.max(0, ((now[k] - prev[k]) * 1000) / (now.atMs - prev.atMs)) : 0);
  // Work moves in chunks (sync: 16 MiB), so two refreshes often see no change: the daemon's
  // rate over its window counts first, the change between refreshes when it has none.
  const daemonRate = { sync: v.actual.syncRateBytesPerS, fetch: v.rates?.fetch ?? 0, replay: v.rates?.replay ?? 0 };
  const rate = (k: 'sync' | 'fetch' | 'replay') => (daemonRate[k] > 0 ? daemonRate[k] : between(k));
  const lines = viewLines(v);
  const p = v.progress;
  if (syncPos(v) < v.sizeBytes) lines.push(`    ${progressBar(syncPos(v), v.sizeBytes, rate('sync'), 'sync  ')}`);
  if (p && p.fetchRest > 0) lines.push(`    ${progressBar(p.fetchPos, p.totalSize, rate('fetch'), 'fetch ')}, lag ${p.fetchLagS.toFixed(1)} s`);
  if (p && p.replayRest > 0) lines.push(`    ${progressBar(p.replayPos, p.totalSize, rate('replay'), 'replay')}, lag ${p.replayLagS.toFixed(1)} s`);
  return lines;
}

export function sampleOf(v: ViewSnapshot, atMs: number): Sample {
  return { atMs, sync: syncPos(v), fetch: v.progress?.fetchPos ?? 0, replay: v.progress?.replayPos ?? 0 };
}

export async function watchView(adm: Adm, spec: string | undefined, secondsText: string | undefined): Promise<void> {
  adm.requireCluster();
  const intervalS = secondsText === undefined ? 2 : Number(secondsText);
  if (!(intervalS >= 0.1 && intervalS <= 3600)) throw new AdmError(`invalid --watch interval ${JSON.stringify(secondsText)}: 0.1 to 3600 seconds`, 2);
  const prev = new Map<string, Sample>();
  const tty = process.stdout.isTTY === true;
  let stop = false;
  const onInt = () => { stop = true; };
  process.once('SIGINT', onInt);
  try {
    while (!stop) {
      const nowMs = systemClock.nowMs();
      const out: string[] = [`every ${intervalS} s on ${adm.host}: ${new Date(nowMs).toISOString()}   (Ctrl-C ends)`];
      for (const res of expandResources(adm, spec ?? 'all')) {
        const v = readView(adm, res);
        const s = sampleOf(v, nowMs);
        out.push(...watchLines(v, prev.get(res), s));
        prev.set(res, s);
      }
      // In place: cursor home and clear below, so the screen does not scroll.
      process.stdout.write(`${tty ? '\x1b[H\x1b[J' : ''}${out.join('\n')}\n`);
      await systemClock.sleep(intervalS * 1000);
    }
  } finally {
    process.off('SIGINT', onInt);
  }
}
