// What other processes do to a /mars tree behind a TreeStore's back, for the listing cache's
// tests (dir-cache, dir-watch).
import { renameSync, symlinkSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { RACY_WINDOW_MS } from '../../common/tree/dir-cache.js';

/** Age a directory's mtime beyond the racy window, as if it had not changed for a while. */
export function age(dir: string): void {
  const seconds = (Date.now() - 10 * RACY_WINDOW_MS) / 1000;
  utimesSync(dir, seconds, seconds);
}

/** What another process (marsadm) does: a new link renamed over the old one. */
export function replaceLink(dir: string, name: string, value: string): void {
  symlinkSync(value, join(dir, '.tmp.other'));
  renameSync(join(dir, '.tmp.other'), join(dir, name));
}
