// Dial a peer the way its transport spec says (transport-spec.ts): plain TCP or TLS to its
// ips/ip-PEER address, or ssh to the host named in the spec, whose remote command (`marsd
// --stdio`) relays to the marsd there. The mutual handshake runs end to end in every case.
import { dialPeer, dialSsh, type DialAuthOptions } from './dial.js';
import type { PeerConnection } from './connection.js';
import { DEFAULT_REMOTE_COMMAND, type TransportSpec } from '../../common/cluster/transport-spec.js';

export interface TransportDialOptions extends DialAuthOptions {
  /** ips/ip-PEER: where tcp and tls connect (ssh connects to its own host). */
  address: string;
  /** The CA file for verifying TLS servers (marsd --tls-ca); the system CAs without it. */
  tlsCaFile?: string;
  /** The ssh binary (default "ssh"). */
  sshCommand?: string;
}

export function dialTransport(spec: TransportSpec, opts: TransportDialOptions): Promise<PeerConnection> {
  switch (spec.kind) {
    case 'tcp':
      return dialPeer(spec.encrypt ? { ...opts, encrypt: true } : opts);
    case 'tls':
      return dialPeer({
        ...opts,
        tls: {
          ...(opts.tlsCaFile !== undefined ? { caFile: opts.tlsCaFile } : {}),
          ...(spec.servername !== undefined ? { servername: spec.servername } : {}),
        },
      });
    case 'ssh':
      return dialSsh({
        ...opts,
        target: spec.user === undefined ? spec.host : `${spec.user}@${spec.host}`,
        ...(spec.port !== undefined ? { port: spec.port } : {}),
        ...(spec.identityFile !== undefined ? { identityFile: spec.identityFile } : {}),
        sshOptions: sshOptions(spec),
        remoteCommand: spec.command ?? [...DEFAULT_REMOTE_COMMAND],
      });
  }
}

/**
 * Fixed ssh options (never from the spec): with an identity file only that key is offered (an
 * agent's keys would otherwise be tried first), with a known-hosts file the host key must be
 * in it, and a dead host fails the dial instead of hanging.
 */
function sshOptions(spec: Extract<TransportSpec, { kind: 'ssh' }>): string[] {
  const options = ['-o', 'ConnectTimeout=10'];
  if (spec.identityFile !== undefined) options.push('-o', 'IdentitiesOnly=yes');
  if (spec.knownHostsFile !== undefined) {
    options.push('-o', `UserKnownHostsFile=${spec.knownHostsFile}`, '-o', 'StrictHostKeyChecking=yes');
  }
  return options;
}
