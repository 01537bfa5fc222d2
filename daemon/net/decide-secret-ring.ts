// What a member does with a secret-ring `set` from a peer (marsadm rotate-secret on another
// member; docs/security.md "Rotating the cluster secret"). Pure: the caller writes the file.
//
// A rotation from key OLD to key NEW moves every member through four phases (secret-ring.ts):
//   0 stable    OLD only                     2 switched  dial NEW, accept OLD too
//   1 prepared  dial OLD, accept NEW too     3 finished  NEW only
// A request only moves a member forward (a repeated or late request changes nothing), never
// retires the key its own session was authenticated with, and carries the new secret only on an
// encrypted session. A member holding keys of neither side of this rotation refuses: it is in
// another rotation, or its secret was replaced by hand, and an operator has to look.
import { acceptedSecrets, keyId, describeRing, phaseIndex, ringIds, ringOfPhase, type SecretRing } from '../../common/cluster/secret-ring.js';
import { ROTATION_PHASES } from './messages.js';

export type RotationPhase = (typeof ROTATION_PHASES)[number];

export interface SecretSetRequest {
  phase: RotationPhase;
  oldId: string;
  newId: string;
  /** The new secret (its key id must be newId). */
  secret: Buffer;
}

export interface SessionFacts {
  keyId: string;
  encrypted: boolean;
}

export type SecretSetDecision = { ring: SecretRing; changed: boolean } | { refuse: string };

export function decideSecretSet(ring: SecretRing, req: SecretSetRequest, session: SessionFacts): SecretSetDecision {
  if (!session.encrypted) return { refuse: 'a new cluster secret is accepted only on an encrypted session' };
  if (req.oldId === req.newId) return { refuse: 'the old and the new key are the same' };
  if (keyId(req.secret) !== req.newId) return { refuse: `the secret sent is not key ${req.newId}` };
  const current = phaseIndex(ring, req.oldId, req.newId);
  if (current === undefined) {
    return { refuse: `this host holds ${describeRing(ring)}, neither side of the rotation ${req.oldId} -> ${req.newId} (another rotation unfinished?)` };
  }
  const target = ROTATION_PHASES.indexOf(req.phase) + 1;
  if (target <= current) return { ring, changed: false };
  // Phases 0-2 hold the old secret: find it by its id.
  const oldSecret = acceptedSecrets(ring).find((s) => keyId(s) === req.oldId);
  if (oldSecret === undefined) return { refuse: `this host does not hold key ${req.oldId}` };
  const next = ringOfPhase(target, oldSecret, req.secret);
  const nextIds = Object.values(ringIds(next));
  if (!nextIds.includes(session.keyId)) {
    return { refuse: `a request authenticated with key ${session.keyId} may not retire that key (send it with the new secret)` };
  }
  return { ring: next, changed: true };
}
