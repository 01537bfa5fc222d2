// Every name that reaches the filesystem is validated here (docs/design.md §3.10): host and resource
// identifiers follow MARS's rule `[A-Za-z0-9_][-A-Za-z0-9_]*`, at most 63 characters, so no
// name from a command line or a peer can contain '/', '..', or be empty.
import { z } from 'zod';

const IDENTIFIER = /^[A-Za-z0-9_][-A-Za-z0-9_]{0,62}$/;

export const hostNameSchema = z
  .string()
  .regex(IDENTIFIER, 'a host name is 1-63 characters of letters, digits, "_" and "-", not starting with "-"');

export const resourceNameSchema = z
  .string()
  .regex(IDENTIFIER, 'a resource name is 1-63 characters of letters, digits, "_" and "-", not starting with "-"');

export class NameError extends Error {
  override name = 'NameError';
}

function check(schema: z.ZodString, kind: string, value: unknown): string {
  const result = schema.safeParse(value);
  if (!result.success) {
    const shown = typeof value === 'string' ? JSON.stringify(value) : String(value);
    throw new NameError(`invalid ${kind} name ${shown}: ${result.error.issues[0]?.message ?? 'rejected'}`);
  }
  return result.data;
}

export function validHost(value: unknown): string {
  return check(hostNameSchema, 'host', value);
}

export function validResource(value: unknown): string {
  return check(resourceNameSchema, 'resource', value);
}

export function isValidIdentifier(value: string): boolean {
  return IDENTIFIER.test(value);
}

/**
 * A relative path inside the /mars tree: one to three components, each a plain name
 * (no '.', '..', empty, or '/'), so a joined path can never leave the tree.
 */
const COMPONENT = /^[A-Za-z0-9_][-A-Za-z0-9_.,]{0,127}$/;

/** One component of a tree path (a name inside a tree directory). */
export function isValidTreeComponent(name: string): boolean {
  return COMPONENT.test(name) && name !== '.' && name !== '..';
}

export function validTreePath(rel: string): string {
  const parts = rel.split('/');
  if (parts.length < 1 || parts.length > 3 || !parts.every(isValidTreeComponent)) {
    throw new NameError(`invalid /mars path ${JSON.stringify(rel)}: must be 1-3 plain name components`);
  }
  return rel;
}
