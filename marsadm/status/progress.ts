// Progress lines for commands that wait on long operations (sync, replay catch-up): bytes,
// rate and ETA, from the links marsd publishes.
import type { Adm } from '../context.js';
import { resPaths } from '../../common/tree/paths.js';

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/** "sync 42 % [########------] 430.0 MiB of 1.0 GiB, 120.0 MiB/s, ETA 5 s" */
export function progressBar(doneBytes: number, totalBytes: number, rateBytesPerS: number, label: string): string {
  const fraction = totalBytes > 0 ? Math.min(1, doneBytes / totalBytes) : 1;
  const width = 20;
  const filled = Math.round(fraction * width);
  const eta = rateBytesPerS > 0 ? formatDuration((totalBytes - doneBytes) / rateBytesPerS) : '?';
  return `${label} ${Math.floor(fraction * 100)} % [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${formatBytes(doneBytes)} of ${formatBytes(totalBytes)}, ${formatBytes(rateBytesPerS)}/s, ETA ${eta}`;
}

export function syncProgressText(adm: Adm, res: string): string {
  const size = Number(adm.tree.value(resPaths.size(res)) ?? '0');
  const done = Number(adm.tree.value(resPaths.syncstatus(res, adm.host)) ?? '0');
  const rate = Number(adm.actual(res, 'sync-rate') ?? '0');
  return progressBar(done, size, rate, 'sync');
}
