// Invariant assertions that stay on in production (TIGER_STYLE): a broken invariant stops
// the daemon loudly instead of replicating corrupt state.
//
// The policy (docs/design.md §3): an InvariantError is never one of the "expected" errors a
// catch block may log and carry on from. Code that catches broadly (a control round, a
// connection handler, a background task) calls failStopOnInvariant(err) first; the error is
// then rethrown outside every try block, reaches the process's uncaught-exception handler
// (daemon/main.ts), and marsd exits with EXIT_INVARIANT after naming the invariant. Stopping
// like this is safe by design: it is a crash, and every invariant of the tree and the
// logfiles holds across crashes.
export class InvariantError extends Error {
  override name = 'InvariantError';
}

/** The exit code of a process stopped by a broken invariant (EX_SOFTWARE of sysexits.h). */
export const EXIT_INVARIANT = 70;

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new InvariantError(message);
}

/**
 * First line of a catch that turns errors into something else (a user message, a parse result,
 * a refusal): an invariant failure is our bug, not bad input, and leaves as what it is.
 */
export function rethrowInvariant(err: unknown): void {
  if (err instanceof InvariantError) throw err;
}

/**
 * If err is an invariant failure, make it fatal: it is thrown again from a fresh microtask, where
 * no caller's catch can swallow it. Other errors are left to the caller.
 */
export function failStopOnInvariant(err: unknown): void {
  if (err instanceof InvariantError) queueMicrotask(() => { throw err; });
}
