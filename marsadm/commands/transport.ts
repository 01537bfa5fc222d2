// set-transport / get-transport: how this host reaches one peer (tcp, tls or ssh), stored in
// the local-only link userspace/transport-PEER (never propagated: each host chooses its own
// way to each peer). marsd follows a change by reconnecting that peer's link.
import { existsSync } from 'node:fs';
import { AdmError, type Adm } from '../context.js';
import { globalPaths, localPaths } from '../../common/tree/paths.js';
import { validHost } from '../../common/tree/names.js';
import { describeTransport, formatTransportSpec, parseTransportSpec, type TransportSpec } from '../../common/cluster/transport-spec.js';
import { rethrowInvariant } from '../../common/util/assert.js';

/** A spec from the command line, or an AdmError (exit code 2) saying what is wrong with it. */
export function parseSpecArgument(text: string): TransportSpec {
  try {
    return parseTransportSpec(text);
  } catch (err) {
    rethrowInvariant(err);
    throw new AdmError(`${(err as Error).message}; see "marsadm set-transport --help" and docs/manual.md`, 2);
  }
}

/** The canonical stored form; tcp is the default and is stored as no link at all. */
function storedText(spec: TransportSpec): string | undefined {
  return spec.kind === 'tcp' && !spec.encrypt ? undefined : formatTransportSpec(spec);
}

/** Files the ssh client on this host will need: missing ones are a mistake, unless --force. */
function checkLocalFiles(adm: Adm, spec: TransportSpec): void {
  if (spec.kind !== 'ssh' || adm.force) return;
  for (const [what, path] of [['identity', spec.identityFile], ['known-hosts', spec.knownHostsFile]] as const) {
    if (path !== undefined && !existsSync(path)) {
      throw new AdmError(`${what} file ${path} does not exist on this host (ssh runs here); create it first, or use --force to set the transport anyway`);
    }
  }
}

function canonicalOrRaw(stored: string): string | undefined {
  try {
    return storedText(parseTransportSpec(stored));
  } catch (err) {
    rethrowInvariant(err);
    return stored; // a hand-written invalid value: anything valid differs from it
  }
}

function peerArgument(adm: Adm, text: string): string {
  const peer = validHost(text);
  if (peer === adm.host) throw new AdmError(`${peer} is this host; a transport is chosen for each other host`, 2);
  return peer;
}

export async function setTransport(adm: Adm, peerText: string, specText: string): Promise<void> {
  adm.requireCluster();
  const peer = peerArgument(adm, peerText);
  const spec = parseSpecArgument(specText);
  checkLocalFiles(adm, spec);
  const { tree } = adm;
  const path = localPaths.transport(peer);
  const before = tree.value(path);
  const wanted = storedText(spec);
  // marsd compares canonical forms: rewriting an equivalent spec does not reconnect.
  const beforeCanonical = before === undefined ? undefined : canonicalOrRaw(before);
  const address = tree.value(globalPaths.ip(peer));
  const via = describeTransport(spec, address ?? '(no address yet)');
  const canonical = formatTransportSpec(spec);
  if (before === wanted) {
    const status = tree.value(globalPaths.actual(adm.host, `peer-${peer}`));
    adm.result(`transport to ${peer} is already ${canonical}${status ? `; status: ${status}` : ''}`, { peer, transport: canonical, changed: false, ...(status ? { status } : {}) });
    return;
  }
  tree.ensureDir(localPaths.dir);
  if (wanted === undefined) tree.remove(path, { durable: true });
  else tree.write(path, wanted, { durable: true });
  const writtenUs = tree.readRaw(path)?.stampUs ?? 0;
  adm.trigger();
  let status: string | undefined;
  if (address === undefined) {
    if (!adm.json) adm.print(`note: ${peer} is not (yet) a member of this cluster (no ips/ip-${peer}); the transport applies once it is`);
  } else if (beforeCanonical !== wanted) {
    // Wait until marsd's link tried the new transport: a status newer than our write that is
    // past `connecting` (a fresh link writes `connecting VIA` first).
    const statusPath = globalPaths.actual(adm.host, `peer-${peer}`);
    const fresh = () => {
      const st = tree.read(statusPath);
      return st !== undefined && st.stampUs > writtenUs && !st.value.startsWith('connecting ') && st.value.includes(via) ? st.value : undefined;
    };
    if (await adm.waitFor(`marsd tried ${via} to ${peer}`, () => fresh() !== undefined)) status = fresh();
  }
  const text = `transport to ${peer} set to ${canonical}${status !== undefined ? `\nstatus: ${status}` : ''}`;
  adm.result(text, { peer, transport: canonical, changed: true, ...(address !== undefined ? { address } : {}), ...(status !== undefined ? { status } : {}) });
}

export function getTransport(adm: Adm, peerText: string): void {
  adm.requireCluster();
  const peer = peerArgument(adm, peerText);
  const stored = adm.tree.value(localPaths.transport(peer));
  let transport = 'tcp';
  let invalid: string | undefined;
  if (stored !== undefined) {
    try {
      transport = formatTransportSpec(parseTransportSpec(stored));
    } catch (err) {
      rethrowInvariant(err);
      transport = stored;
      invalid = (err as Error).message;
    }
  }
  const status = adm.tree.value(globalPaths.actual(adm.host, `peer-${peer}`));
  const lines = [transport];
  if (invalid !== undefined) lines.push(`INVALID: ${invalid}`);
  if (status !== undefined) lines.push(`status: ${status}`);
  adm.result(lines.join('\n'), { peer, transport, default: stored === undefined, ...(invalid !== undefined ? { invalid } : {}), ...(status !== undefined ? { status } : {}) });
}
