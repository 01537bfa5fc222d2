// Loads the native helper (native/build/Release/mars_io.node, built by `npm install`) once per
// process, for the modules that use parts of it: common/disk/native-io.ts (disk I/O, digests,
// memory, inotify) and common/log/crc32c.ts (the log records' checksums). Here only the
// loading; each user checks for the functions it needs, since a build older than the
// JavaScript lacks the newer ones. MARS_NO_NATIVE_IO=1 in the environment turns it off.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ADDON_PATH = join('native', 'build', 'Release', 'mars_io.node');

export type NativeAddon = { ok: true; loaded: unknown; path: string } | { ok: false; loaded: null; why: string };

let cached: NativeAddon | undefined;

/** The checkout or install root holds native/; dist/ adds one level to the source layout. */
function findAddon(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let up = 0; up < 5; up++) {
    const candidate = join(dir, ADDON_PATH);
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  return null;
}

function load(): NativeAddon {
  if (process.env.MARS_NO_NATIVE_IO === '1') return { ok: false, loaded: null, why: 'disabled by MARS_NO_NATIVE_IO=1' };
  const path = findAddon();
  if (!path) return { ok: false, loaded: null, why: `${ADDON_PATH} not built (npm install builds it; needs make and a C compiler)` };
  try {
    return { ok: true, loaded: createRequire(import.meta.url)(path) as unknown, path };
  } catch (err) {
    return { ok: false, loaded: null, why: `cannot load ${path}: ${(err as Error).message}` };
  }
}

/** The helper's exports (loaded at the first call), or why there are none. */
export function nativeAddon(): NativeAddon {
  cached ??= load();
  return cached;
}

/** Whether a loaded helper exports a function of this name. */
export function hasNativeFunction(loaded: unknown, name: string): boolean {
  return typeof (loaded as Record<string, unknown> | null)?.[name] === 'function';
}
