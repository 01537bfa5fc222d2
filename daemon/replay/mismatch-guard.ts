// What the replayer does with a content-mismatch stop (content-check.ts) before it keeps it: it
// is believed only after the own versionlink was computed again from the bytes on disk (an own
// link written by an older version, whose DIGEST did not cover the content, or before a copy
// was rewritten in place, would otherwise stop a correct replica). A believed stop is kept in
// the local link content-mismatch-HOST (the replayer writes it), from which the decision holds
// it: the origin writes on and its versionlink moves past the position, and marsd may restart,
// where the comparison alone would apply further.
import type { ContentMismatch, ReplayStep } from './switchover.js';
import { formatContentMismatch, keptMismatchHolds, sameMismatch } from './content-check.js';
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths } from '../../common/tree/paths.js';
import { logName } from '../../common/tree/log-names.js';
import { writeVersionLink } from '../../common/resource/links.js';
import { logDigests } from '../../common/log/content-digest.js';
import type { LogFn } from '../../common/util/log.js';
import type { ReplayTreeView } from './tree-view.js';

export type GuardVerdict =
  /** carry out the step; keep: write content-mismatch-HOST first (a new, believed mismatch) */
  | { step: ReplayStep; keep: ContentMismatch | undefined }
  /** rewriteOwn() wrote the own versionlink of the mismatch position again: decide once more */
  | 'again';

export class ContentMismatchGuard {
  private rehashedAt: string | undefined;

  /** `kept`: the mismatch already kept in the tree (the decision's input). */
  filter(step: ReplayStep, kept: ContentMismatch | 'malformed' | undefined, rewriteOwn: (m: ContentMismatch) => void): GuardVerdict {
    if (step.kind !== 'stop' || step.contentMismatch === undefined || sameMismatch(kept, step.contentMismatch)) return { step, keep: undefined };
    const m = step.contentMismatch;
    const key = `${m.seq},${m.origin},${m.pos}`;
    if (this.rehashedAt !== key) {
      this.rehashedAt = key;
      rewriteOwn(m);
      return 'again';
    }
    return { step, keep: m };
  }
}

/** The own versionlink at a content mismatch, computed again from the whole copy on disk. */
export function rehashOwnVersion(tree: TreeStore, res: string, host: string, m: ContentMismatch): void {
  logDigests.forget(tree.abs(resPaths.log(res, m.seq, m.origin)));
  writeVersionLink(tree, res, host, m.seq, m.origin, m.pos, true);
}

/** Keep a believed content mismatch across restarts (durable before the stop is published). */
export function keepMismatch(tree: TreeStore, res: string, host: string, m: ContentMismatch, log: LogFn): void {
  tree.write(resPaths.contentMismatch(res, host), formatContentMismatch(m), { durable: true });
  log('warn', `${res}: keeping the content mismatch in ${logName(m.seq, m.origin)} at offset ${m.pos} in content-mismatch-${host} until "marsadm invalidate"`);
}

/**
 * A kept mismatch that no longer holds (invalidate moved replay back and crashed before it
 * removed the link) is over: remove the link and decide without it.
 */
export function dropStaleMismatch(tree: TreeStore, res: string, host: string, view: ReplayTreeView): ReplayTreeView {
  const kept = view.keptMismatch;
  if (!view.replay || kept === undefined || kept === 'malformed' || keptMismatchHolds(view.replay, kept)) return view;
  tree.remove(resPaths.contentMismatch(res, host), { durable: true });
  return { ...view, keptMismatch: undefined };
}
