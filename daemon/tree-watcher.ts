// Watches the directories of /mars that admins and marsadm write to (the root, userspace/ with
// marsadm's trigger links, ips/, each resource's todo-HOST/) with one inotify watch each
// (fs.watch), and reports that something changed there. Not the resource directories
// themselves: they change with every logfile append and link update, and marsadm triggers
// after changing them anyway; the periodic scan catches everything else.
//
// Why not a recursive watcher library: the tree's values are dangling symlinks, so such a
// library's own add/change events never fire for them, and to watch todo-HOST/ it also
// watches the resource directory above it and re-reads that whole directory (an lstat and a
// realpath per link) at each change: on a secondary under load that was 5 % of marsd's main
// thread. Only the raw events were ever used.
//
// A directory that does not exist yet is tried again at each retry() (marsd: every control
// round); one whose watch fails later is dropped and tried again the same way.
import { existsSync, watch, type FSWatcher } from 'node:fs';
import { basename } from 'node:path';
import type { LogFn } from '../common/util/log.js';

/** Names that are links being written (.tmp...) or other hidden files change nothing by themselves. */
function isInteresting(name: string): boolean {
  return !basename(name).startsWith('.');
}

export class TreeWatcher {
  private readonly watching = new Map<string, FSWatcher>();
  private readonly missing = new Set<string>();
  /** directories whose watch failed and was reported (once until a watch of it succeeds) */
  private readonly warned = new Set<string>();
  private closed = false;

  constructor(private readonly onChange: () => void, private readonly log: LogFn) {}

  /** Watch dir from now on (again after a failure; nothing when it is watched already). */
  add(dir: string): void {
    if (this.closed || this.watching.has(dir)) return;
    if (!existsSync(dir)) {
      this.missing.add(dir);
      return;
    }
    let w: FSWatcher;
    try {
      w = watch(dir, { persistent: false }, (event, name) => {
        // The directory itself deleted or moved: inotify reports a rename of its own name and
        // nothing after it; watch it again once it exists again.
        if (event === 'rename' && name === basename(dir) && !existsSync(dir)) this.lost(dir);
        if (name === null || isInteresting(String(name))) this.onChange();
      });
    } catch (err) {
      this.lost(dir, `cannot watch ${dir}: ${(err as Error).message}`); // gone meanwhile, or out of watches
      return;
    }
    w.on('error', (err) => this.lost(dir, `${dir}: ${err.message}`));
    this.missing.delete(dir);
    this.warned.delete(dir);
    this.watching.set(dir, w);
  }

  /** Drop dir's watch and try it again at each retry(); a failure is logged once until a watch succeeds. */
  private lost(dir: string, why?: string): void {
    this.remove(dir);
    this.missing.add(dir);
    if (why !== undefined && !this.warned.has(dir)) {
      this.warned.add(dir);
      this.log('warn', `tree watcher: ${why}`);
    }
  }

  /** Stop watching dir (its resource is gone). */
  remove(dir: string): void {
    this.missing.delete(dir);
    this.watching.get(dir)?.close();
    this.watching.delete(dir);
  }

  /** Try the directories that did not exist (or failed) again; one existence check each. */
  retry(): void {
    for (const dir of [...this.missing]) this.add(dir);
  }

  /** directories watched now (for tests) */
  get watchedDirs(): string[] {
    return [...this.watching.keys()];
  }

  close(): void {
    this.closed = true;
    for (const w of this.watching.values()) w.close();
    this.watching.clear();
    this.missing.clear();
  }
}
