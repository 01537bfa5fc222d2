// What the replayer does with a content-mismatch stop (content-check.ts) before it keeps it: it
// is believed only after the own versionlink was computed again from the bytes on disk (an own
// link written by an older version, whose DIGEST did not cover the content, or before a copy
// was rewritten in place, would otherwise stop a correct replica). A believed stop is kept in
// the local link content-mismatch-HOST (the replayer writes it), from which the decision holds
// it: the origin writes on and its versionlink moves past the position, and marsd may restart,
// where the comparison alone would apply further.
import type { ContentMismatch, ReplayStep } from './switchover.js';
import { sameMismatch } from './content-check.js';

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
