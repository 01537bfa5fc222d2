// The cluster secret of a running marsd (docs/security.md "Rotating the cluster secret"): it
// holds the secrets of /mars/cluster-secret, reads the file again when it changed (an operator
// copied a current one to a host that missed a rotation), and serves the secret-ring requests
// of marsadm rotate-secret on another member (decide-secret-ring.ts), writing the file before
// it answers. Whoever needs the secrets is told through onChange (the peer server).
import { statSync } from 'node:fs';
import { failStopOnInvariant } from '../common/util/assert.js';
import type { LogFn } from '../common/util/log.js';
import { describeRing, readSecretRing, ringIds, sameRing, writeSecretRing, type SecretRing } from '../common/cluster/secret-ring.js';
import { decideSecretSet } from './net/decide-secret-ring.js';
import { PeerRequestError } from './net/errors.js';
import type { SecretRingRequest } from './net/messages.js';
import type { SessionInfo } from './net/service.js';

export class SecretKeeper {
  private current: SecretRing;
  /** What the file looked like when last read: a change makes the next check read it. */
  private signature: string;
  /** The last problem reported about the file (logged once, not at every check). */
  private reported: string | undefined;
  onChange: ((ring: SecretRing) => void) | undefined;

  /** Reads the file; throws SecretError when there is no usable secret. */
  constructor(private readonly path: string, private readonly log: LogFn) {
    this.signature = this.statSignature();
    this.current = readSecretRing(path);
    if (this.current.other) log('info', `cluster secret: a rotation is in progress here (${describeRing(this.current)})`);
  }

  get ring(): SecretRing {
    return this.current;
  }

  /** The secret this host dials with. */
  dialSecret(): Buffer {
    return this.current.dial;
  }

  /** Read the file again if it changed since the last read; a bad file keeps the secrets held. */
  reloadIfChanged(): void {
    const signature = this.statSignature();
    if (signature === this.signature) return;
    let ring: SecretRing;
    try {
      ring = readSecretRing(this.path);
    } catch (err) {
      failStopOnInvariant(err);
      const message = `cluster secret file changed but is not usable, keeping ${describeRing(this.current)}: ${(err as Error).message}`;
      if (message !== this.reported) this.log('error', message);
      this.reported = message;
      return;
    }
    this.signature = signature;
    this.reported = undefined;
    if (!sameRing(ring, this.current)) this.apply(ring, 'the file changed');
  }

  /** The secret-ring request of a peer. */
  async handle(peer: string, req: SecretRingRequest, session: SessionInfo): Promise<{ dial: string; next?: string; previous?: string }> {
    this.reloadIfChanged();
    if (req.op === 'status') return ringIds(this.current);
    // The schema guarantees these for op set.
    const decision = decideSecretSet(this.current, {
      phase: req.phase!, oldId: req.old!, newId: req.new!, secret: Buffer.from(req.secret!, 'hex'),
    }, { keyId: session.keyId, encrypted: session.cipher === 'chacha20-poly1305' });
    if ('refuse' in decision) {
      this.log('warn', `cluster secret rotation by ${peer} refused: ${decision.refuse}`);
      throw new PeerRequestError('EPERM', decision.refuse);
    }
    if (decision.changed) {
      writeSecretRing(this.path, decision.ring);
      this.signature = this.statSignature();
      this.apply(decision.ring, `${peer} moved the rotation to ${req.phase}`);
    }
    return ringIds(this.current);
  }

  private apply(ring: SecretRing, why: string): void {
    this.current = ring;
    this.log('info', `cluster secret now ${describeRing(ring)} (${why})`);
    this.onChange?.(ring);
  }

  private statSignature(): string {
    try {
      const st = statSync(this.path, { bigint: true });
      return `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    } catch (err) {
      return `missing: ${(err as NodeJS.ErrnoException).code ?? ''}`;
    }
  }
}
