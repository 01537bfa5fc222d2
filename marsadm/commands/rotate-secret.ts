// marsadm rotate-secret: replace the cluster secret on a running cluster without a moment in
// which members cannot talk (docs/security.md "Rotating the cluster secret"). This host makes
// the new secret and moves itself and every member, over encrypted peer sessions, through the
// phases of common/cluster/secret-ring.ts: all accept the new secret, then all dial with it,
// then the old one is dropped (only when every member confirmed, or with --finish --force).
// A member that cannot be reached stops the command unless --force; run it again to continue.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { AdmError, type Adm } from '../context.js';
import { rethrowInvariant } from '../../common/util/assert.js';
import { globalPaths, localPaths } from '../../common/tree/paths.js';
import { clusterMarkerPath, markerInForce } from '../../common/tree/removal.js';
import { isValidIdentifier } from '../../common/tree/names.js';
import { parseTransportSpec, type TransportSpec } from '../../common/cluster/transport-spec.js';
import {
  acceptedSecrets, keyId, phaseIndex, readSecretRing, ringKeyText, ringOfPhase, writeSecretRing, type SecretRing,
} from '../../common/cluster/secret-ring.js';
import { openRotationSession, type SecretState } from '../../daemon/client.js';

const PHASE_NAMES = ['prepared', 'switched', 'finished'] as const;
const STATE_TEXT = ['old secret only', 'accepts the new secret', 'uses the new secret', 'new secret only'];

interface Member {
  host: string;
  address: string;
  transport: TransportSpec;
}

export interface MemberReport {
  host: string;
  /** 0-3 (secret-ring.phaseIndex); undefined when unreachable or not in this rotation. */
  phase?: number;
  /** Why it could not be asked, or what it holds instead. */
  problem?: string;
}

/** The live members of the cluster other than this host; removed hosts never count. */
export function rotationMembers(adm: Adm): Member[] {
  const { tree, host } = adm;
  const lookup = (p: string) => tree.readRaw(p);
  const members: Member[] = [];
  for (const name of tree.list(globalPaths.ipsDir)) {
    if (!name.startsWith('ip-')) continue;
    const peer = name.slice(3);
    if (!isValidIdentifier(peer) || peer === host) continue;
    const path = `${globalPaths.ipsDir}/${name}`;
    const address = tree.value(path);
    if (address === undefined || markerInForce(lookup, clusterMarkerPath(peer), path)) continue;
    const spec = tree.value(localPaths.transport(peer));
    let transport: TransportSpec = { kind: 'tcp' };
    if (spec !== undefined) {
      try {
        transport = parseTransportSpec(spec);
      } catch (err) {
        rethrowInvariant(err);
        throw new AdmError(`the transport to ${peer} is unusable (${(err as Error).message}); fix it with marsadm set-transport`);
      }
    }
    members.push({ host: peer, address, transport });
  }
  return members.sort((a, b) => a.host.localeCompare(b.host));
}

/** The members that stop the command: unreachable, or holding keys of another rotation. */
export function blockers(reports: MemberReport[]): MemberReport[] {
  return reports.filter((r) => r.phase === undefined);
}

/** The first phase (1-3) not every counted member reached yet; 4 when all are finished. */
export function nextPhase(localPhase: number, reports: MemberReport[]): number {
  const phases = [localPhase, ...reports.filter((r) => r.phase !== undefined).map((r) => r.phase!)];
  return Math.min(...phases) + 1;
}

interface Rotation {
  oldSecret: Buffer;
  newSecret: Buffer;
  oldId: string;
  newId: string;
}

/** The rotation a ring is in; a one-line ring starts a new one (not written yet). */
function rotationOf(ring: SecretRing): Rotation {
  const [oldSecret, newSecret] = !ring.other ? [ring.dial, randomBytes(32)]
    : ring.other.role === 'next' ? [ring.dial, ring.other.secret] : [ring.other.secret, ring.dial];
  return { oldSecret, newSecret, oldId: keyId(oldSecret), newId: keyId(newSecret) };
}

function phaseOfState(state: SecretState, rot: Rotation): number | undefined {
  // phaseIndex works on secrets; rebuild the member's ring from its key ids.
  for (let i = 0; i <= 3; i++) {
    const ring = ringOfPhase(i, rot.oldSecret, rot.newSecret);
    const ids = { dial: keyId(ring.dial), ...(ring.other ? { [ring.other.role]: keyId(ring.other.secret) } : {}) } as SecretState;
    if (ids.dial === state.dial && ids.next === state.next && ids.previous === state.previous) return i;
  }
  return undefined;
}

/** Ask one member, optionally moving it to `phase` first. */
async function askMember(adm: Adm, m: Member, ring: SecretRing, rot: Rotation, phase?: number): Promise<MemberReport> {
  const uuid = adm.tree.value(globalPaths.uuid) ?? '';
  let session;
  try {
    session = await openRotationSession(m.transport, {
      address: m.address, host: adm.host, uuid, secrets: acceptedSecrets(ring), expectHost: m.host,
      timeoutMs: Math.max(1000, (adm.timeoutS > 0 ? Math.min(adm.timeoutS, 30) : 10) * 1000),
    });
  } catch (err) {
    rethrowInvariant(err);
    return { host: m.host, problem: `unreachable: ${(err as Error).message}` };
  }
  try {
    const state = phase === undefined ? await session.status() : await session.set(PHASE_NAMES[phase - 1]!, rot.oldId, rot.newId, rot.newSecret);
    const got = phaseOfState(state, rot);
    return got === undefined
      ? { host: m.host, problem: `holds key ${state.dial}${state.next ? ` next ${state.next}` : ''}${state.previous ? ` previous ${state.previous}` : ''}, not this rotation` }
      : { host: m.host, phase: got };
  } catch (err) {
    rethrowInvariant(err);
    return { host: m.host, problem: `refused: ${(err as Error).message}` };
  } finally {
    session.close('rotate-secret done');
  }
}

export async function rotateSecret(adm: Adm, opts: { finish?: boolean; status?: boolean }): Promise<void> {
  adm.requireCluster();
  const path = join(adm.marsDir, 'cluster-secret');
  let ring: SecretRing;
  try {
    ring = readSecretRing(path);
  } catch (err) {
    rethrowInvariant(err);
    throw new AdmError((err as Error).message);
  }
  if (opts.finish && !ring.other) throw new AdmError('no rotation of the cluster secret is in progress here; nothing to finish');
  const rot = rotationOf(ring);
  const members = rotationMembers(adm);
  let reports = await Promise.all(members.map((m) => askMember(adm, m, ring, rot)));
  let localPhase = phaseIndex(ring, rot.oldId, rot.newId)!;
  if (opts.status) return report(adm, rot, ring.other ? localPhase : undefined, reports, undefined);
  const stuck = blockers(reports);
  if (stuck.length > 0 && !adm.force) throw new AdmError(refusalText(reports));
  if (adm.dryRun) return report(adm, rot, localPhase, reports, 'dry run: nothing changed');
  const reachable = members.filter((m) => !stuck.some((s) => s.host === m.host));
  // Finish only when every member is in (or with --finish --force, without the missing ones).
  const lastPhase = stuck.length === 0 || opts.finish ? 3 : 2;
  for (let phase = Math.max(1, nextPhase(localPhase, reports)); phase <= lastPhase; phase++) {
    // Others dial the new secret only once we accept it; we drop the old one only after them.
    if (phase < 3 && localPhase < phase) localPhase = await setLocal(adm, path, phase, rot);
    ring = readSecretRing(path);
    const moved = await Promise.all(reachable.map((m) => askMember(adm, m, ring, rot, phase)));
    reports = reports.map((r) => moved.find((x) => x.host === r.host) ?? r);
    const failed = moved.filter((r) => r.phase === undefined || r.phase < phase);
    if (failed.length > 0) {
      report(adm, rot, localPhase, reports, `stopped before ${PHASE_NAMES[phase - 1]}: ${failed.map((r) => `${r.host} (${r.problem ?? 'did not move'})`).join(', ')}; fix and run marsadm rotate-secret again`);
      throw new AdmError('the rotation did not complete', 1);
    }
    if (phase === 3) localPhase = await setLocal(adm, path, 3, rot);
  }
  adm.trigger();
  report(adm, rot, localPhase, reports, localPhase === 3 ? undefined : unfinishedText(stuck));
}

/** Write our own phase and wait until our marsd uses it (it publishes the key ids it holds). */
async function setLocal(adm: Adm, path: string, phase: number, rot: Rotation): Promise<number> {
  const ring = ringOfPhase(phase, rot.oldSecret, rot.newSecret);
  writeSecretRing(path, ring);
  const expected = ringKeyText(ring);
  await adm.waitFor(`marsd on ${adm.host} uses the ${PHASE_NAMES[phase - 1]} secrets`, () => adm.tree.value(globalPaths.actual(adm.host, 'cluster-key')) === expected);
  return phase;
}

function refusalText(reports: MemberReport[]): string {
  return `cannot rotate the cluster secret: ${blockers(reports).map((r) => `${r.host} ${r.problem}`).join('; ')}; nothing changed (--force rotates without them: they must then get the new secret later)`;
}

function unfinishedText(stuck: MemberReport[]): string {
  return `the old secret is still accepted: ${stuck.map((r) => r.host).join(', ')} did not get the new one. When they are back, run marsadm rotate-secret again; or drop the old secret now with marsadm rotate-secret --finish --force and copy /mars/cluster-secret to them by hand`;
}

function report(adm: Adm, rot: Rotation, localPhase: number | undefined, reports: MemberReport[], note: string | undefined): void {
  const members = [{ host: adm.host, phase: localPhase ?? 0 } as MemberReport, ...reports];
  const lines = members.map((r) => `  ${r.host.padEnd(20)} ${r.phase !== undefined ? STATE_TEXT[r.phase] : r.problem}`);
  const inRotation = localPhase !== undefined;
  const head = inRotation ? `cluster secret rotation from key ${rot.oldId} to key ${rot.newId}${localPhase === 3 ? ': done' : ''}` : `cluster secret key ${rot.oldId}, no rotation in progress`;
  adm.result([head, ...lines, ...(note ? [note] : [])].join('\n'), {
    oldKey: rot.oldId, ...(inRotation ? { newKey: rot.newId } : {}), finished: localPhase === 3,
    members: members.map((r) => ({ host: r.host, ...(r.phase !== undefined ? { phase: r.phase, state: STATE_TEXT[r.phase] } : { problem: r.problem }) })),
    ...(note ? { note } : {}),
  });
}
