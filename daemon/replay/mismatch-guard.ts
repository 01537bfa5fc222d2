// What the replayer does with a content-mismatch stop (content-check.ts): it is believed only
// after the own versionlink was computed again from the bytes on disk (an own link written by
// an older version, whose DIGEST did not cover the content, or before a copy was rewritten in
// place, would otherwise stop a correct replica), and then it holds: the origin writes on and
// its versionlink moves past the position, where the decision alone would apply further.
import type { ReplayLink } from '../../common/log/links.js';
import type { ContentMismatch, ReplayStep } from './switchover.js';

type StopStep = Extract<ReplayStep, { kind: 'stop' }>;

export class ContentMismatchGuard {
  private held: StopStep | undefined;
  private rehashedAt: string | undefined;

  /**
   * The step to carry out instead of `step`, or 'again' after rewriteOwn() wrote the own
   * versionlink of the mismatch position again: decide once more.
   */
  filter(step: ReplayStep, link: ReplayLink | undefined, rewriteOwn: (m: ContentMismatch) => void): ReplayStep | 'again' {
    if (step.kind === 'stop' && step.contentMismatch) {
      const m = step.contentMismatch;
      const key = `${m.seq},${m.origin},${m.pos}`;
      if (this.held === undefined && this.rehashedAt !== key) {
        this.rehashedAt = key;
        rewriteOwn(m);
        return 'again';
      }
      this.held = step;
      return step;
    }
    const m = this.held?.contentMismatch;
    // Held while replay stays in that logfile at or beyond the position (invalidate moves it back).
    if (m && link && link.seq === m.seq && link.origin === m.origin && link.minPos >= m.pos) return this.held!;
    this.held = undefined;
    return step;
  }
}
