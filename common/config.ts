// Options shared by marsd and marsadm (docs/design.md §6): --mars-dir, --host, --run-dir, with the
// environment variables MARS_DIR, MARS_HOST, MARS_RUN_DIR and the defaults /mars, the
// hostname and /run/mars. Sizes accept k/M/G suffixes (powers of 1024).
import { hostname, totalmem } from 'node:os';
import { resolve } from 'node:path';
import { validHost } from './tree/names.js';

export interface CommonOptions {
  marsDir: string;
  host: string;
  runDir: string;
}

export function resolveCommon(opts: { marsDir?: string; host?: string; runDir?: string }): CommonOptions {
  const marsDir = resolve(opts.marsDir ?? process.env.MARS_DIR ?? '/mars');
  const rawHost = opts.host ?? process.env.MARS_HOST ?? hostname().split('.')[0] ?? '';
  const runDir = resolve(opts.runDir ?? process.env.MARS_RUN_DIR ?? '/run/mars');
  return { marsDir, host: validHost(rawHost), runDir };
}

const SIZE = /^(\d+)\s*([kKmMgGtT]?)(i?[bB])?$/;

/** Parse `4096`, `64k`, `1M`, `2GiB` into bytes; throws a clear error otherwise. */
export function parseSize(text: string, what: string): number {
  const m = SIZE.exec(text.trim());
  if (!m) throw new Error(`invalid ${what} ${JSON.stringify(text)}: use a number of bytes with an optional k, M, G or T suffix`);
  const factor = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase()]!;
  const value = Number(m[1]) * factor;
  if (!Number.isSafeInteger(value)) throw new Error(`${what} ${text} is too large`);
  return value;
}

/** MARS keeps pending writeback data to 20 % of RAM; we cap it so the daemon stays small. */
export function defaultMemLimitBytes(): number {
  return Math.min(Math.floor(totalmem() * 0.2), 64 * 1024 * 1024);
}

export const DEFAULT_LOG_ROTATE_BYTES = 1024 ** 3;
export const DEFAULT_SCAN_INTERVAL_MS = 1000;
