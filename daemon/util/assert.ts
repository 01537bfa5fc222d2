// Invariant assertions that stay on in production (TIGER_STYLE): a broken invariant stops
// the daemon loudly instead of replicating corrupt state.
export class InvariantError extends Error {
  override name = 'InvariantError';
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new InvariantError(message);
}
