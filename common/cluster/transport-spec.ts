// How this host reaches one peer: the value of the local-only link `userspace/transport-PEER`
// (never propagated; see propagate/ownership.ts), written by `marsadm set-transport`. Pure:
// parse, validate, format and describe; dial-transport.ts turns a spec into a connection.
//
//   tcp[,encrypt]                        plain TCP to ips/ip-PEER (the default when absent);
//                                        every frame is authenticated, with encrypt also
//                                        encrypted (chacha20-poly1305)
//   tls[,servername=NAME]                TLS to ips/ip-PEER; the certificate must name NAME,
//                                        or else the dialled address
//   ssh:[USER@]HOST[:PORT][,identity=/PATH][,known-hosts=/PATH][,command=WORD WORD ...]
//                                        the protocol over `ssh HOST -- COMMAND`; the command
//                                        defaults to `marsd --stdio` (which relays to the
//                                        running marsd of that host)
//
// Everything here ends up on ssh's command line, so validation is strict: nothing a spec says
// can become an ssh option (hosts, users and command words never start with '-'; paths are
// absolute), paths and words use a small character set without spaces, quotes or commas, and
// the ssh options are fixed by code, never taken from the spec.
import net from 'node:net';

/** The tree stores at most 1023 bytes per value; specs stay well below. */
export const MAX_TRANSPORT_SPEC_CHARS = 1000;
const MAX_PATH_CHARS = 255;
const MAX_COMMAND_WORDS = 32;
const MAX_WORD_CHARS = 255;
export const DEFAULT_REMOTE_COMMAND: readonly string[] = ['marsd', '--stdio'];

export type TransportSpec =
  | { kind: 'tcp'; encrypt?: boolean }
  | { kind: 'tls'; servername?: string }
  | {
    kind: 'ssh';
    user?: string;
    /** host name, IPv4 address, or bare IPv6 address */
    host: string;
    port?: number;
    identityFile?: string;
    knownHostsFile?: string;
    /** the remote command, word by word (default DEFAULT_REMOTE_COMMAND) */
    command?: string[];
  };

export class TransportSpecError extends Error {
  override name = 'TransportSpecError';
}

const DNS_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$/;
const SSH_USER = /^[A-Za-z0-9_][-A-Za-z0-9_.]{0,31}$/;
/** Absolute local paths: no spaces (ssh splits -o values on them), no quotes, no commas. */
const SAFE_PATH = /^\/[A-Za-z0-9_.@%+:/=-]*$/;
/** Words of the remote command: passed through shellQuote, but kept plain anyway. */
const SAFE_WORD = /^[A-Za-z0-9_.@%+:/=-]+$/;
const PRINTABLE = /^[\x20-\x7e]*$/;

function fail(text: string, why: string): never {
  throw new TransportSpecError(`invalid transport ${JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}...` : text)}: ${why}`);
}

/** Parse and validate a transport spec; throws TransportSpecError saying what is wrong. */
export function parseTransportSpec(text: string): TransportSpec {
  if (typeof text !== 'string' || text.length === 0) fail(String(text), 'empty; use tcp, tls[,servername=NAME] or ssh:[USER@]HOST[:PORT][,OPTION=VALUE...]');
  if (text.length > MAX_TRANSPORT_SPEC_CHARS) fail(text, `longer than ${MAX_TRANSPORT_SPEC_CHARS} characters`);
  if (!PRINTABLE.test(text)) fail(text, 'only printable ASCII characters are allowed');
  const [head, ...optionParts] = text.split(',');
  if (head === 'tcp') {
    if (optionParts.length === 0) return { kind: 'tcp' };
    if (optionParts.length === 1 && optionParts[0] === 'encrypt') return { kind: 'tcp', encrypt: true };
    fail(text, 'tcp takes only the flag encrypt (tcp,encrypt)');
  }
  const options = parseOptions(text, optionParts);
  if (head === 'tls') {
    for (const key of options.keys()) if (key !== 'servername') fail(text, `unknown tls option ${JSON.stringify(key)} (known: servername)`);
    const servername = options.get('servername');
    if (servername === undefined) return { kind: 'tls' };
    if (!DNS_NAME.test(servername)) fail(text, `servername ${JSON.stringify(servername)} is not a DNS name`);
    return { kind: 'tls', servername };
  }
  if (head !== undefined && head.startsWith('ssh:')) return parseSsh(text, head.slice('ssh:'.length), options);
  fail(text, 'must start with tcp, tls or ssh:');
}

function parseOptions(text: string, parts: string[]): Map<string, string> {
  const options = new Map<string, string>();
  for (const part of parts) {
    const eq = part.indexOf('=');
    if (eq <= 0) fail(text, `option ${JSON.stringify(part)} is not KEY=VALUE`);
    const key = part.slice(0, eq);
    const value = part.slice(eq + 1);
    if (!/^[a-z][-a-z]*$/.test(key)) fail(text, `bad option name ${JSON.stringify(key)}`);
    if (options.has(key)) fail(text, `option ${key} given twice`);
    if (value.length === 0) fail(text, `option ${key} has an empty value`);
    options.set(key, value);
  }
  return options;
}

function parseSsh(text: string, target: string, options: Map<string, string>): TransportSpec {
  for (const key of options.keys()) {
    if (key !== 'identity' && key !== 'known-hosts' && key !== 'command') fail(text, `unknown ssh option ${JSON.stringify(key)} (known: identity, known-hosts, command)`);
  }
  // USER@HOST:PORT, USER@[IPv6]:PORT; the user part is optional, and so is the port.
  const m = /^(?:([^@]*)@)?(?:\[([^\]]*)\]|([^:[\]@]*))(?::([0-9]*))?$/.exec(target);
  if (!m) fail(text, 'the ssh target must be [USER@]HOST[:PORT], with IPv6 in brackets');
  const [, user, v6, name, portText] = m;
  if (user !== undefined && !SSH_USER.test(user)) fail(text, `ssh user ${JSON.stringify(user)} must be letters, digits, "_", "-", "." and not start with "-"`);
  let host: string;
  if (v6 !== undefined) {
    if (!net.isIPv6(v6)) fail(text, `${JSON.stringify(v6)} is not an IPv6 address`);
    host = v6;
  } else {
    host = name ?? '';
    if (!net.isIPv4(host) && !DNS_NAME.test(host)) fail(text, `ssh host ${JSON.stringify(host)} is not a host name or IP address`);
  }
  const spec: Extract<TransportSpec, { kind: 'ssh' }> = { kind: 'ssh', host };
  if (user !== undefined) spec.user = user;
  if (portText !== undefined) {
    if (!/^[1-9][0-9]{0,4}$/.test(portText) || Number(portText) > 65535) fail(text, `ssh port ${JSON.stringify(portText)} must be 1-65535`);
    spec.port = Number(portText);
  }
  const identity = options.get('identity');
  if (identity !== undefined) spec.identityFile = checkPath(text, 'identity', identity);
  const knownHosts = options.get('known-hosts');
  if (knownHosts !== undefined) spec.knownHostsFile = checkPath(text, 'known-hosts', knownHosts);
  const command = options.get('command');
  if (command !== undefined) spec.command = checkCommand(text, command);
  return spec;
}

function checkPath(text: string, key: string, path: string): string {
  if (path.length > MAX_PATH_CHARS) fail(text, `${key} path longer than ${MAX_PATH_CHARS} characters`);
  if (!SAFE_PATH.test(path)) fail(text, `${key} must be an absolute path of letters, digits and _.@%+:/=- (no spaces, quotes or commas)`);
  if (path.split('/').some((c) => c === '..')) fail(text, `${key} must not contain ".."`);
  return path;
}

function checkCommand(text: string, command: string): string[] {
  const words = command.split(' ');
  if (words.some((w) => w.length === 0)) fail(text, 'command words are separated by single spaces');
  if (words.length > MAX_COMMAND_WORDS) fail(text, `command has more than ${MAX_COMMAND_WORDS} words`);
  for (const w of words) {
    if (w.length > MAX_WORD_CHARS || !SAFE_WORD.test(w)) fail(text, `command word ${JSON.stringify(w)} must be letters, digits and _.@%+:/=- (no quotes, commas or shell characters)`);
  }
  if (words[0]!.startsWith('-')) fail(text, 'the command must start with a program, not an option');
  return words;
}

/** The canonical text of a spec (what set-transport stores); parse(format(s)) equals s. */
export function formatTransportSpec(spec: TransportSpec): string {
  switch (spec.kind) {
    case 'tcp':
      return spec.encrypt ? 'tcp,encrypt' : 'tcp';
    case 'tls':
      return spec.servername === undefined ? 'tls' : `tls,servername=${spec.servername}`;
    case 'ssh': {
      let text = `ssh:${sshTarget(spec)}`;
      if (spec.port !== undefined) text += `:${spec.port}`;
      if (spec.identityFile !== undefined) text += `,identity=${spec.identityFile}`;
      if (spec.knownHostsFile !== undefined) text += `,known-hosts=${spec.knownHostsFile}`;
      if (spec.command !== undefined) text += `,command=${spec.command.join(' ')}`;
      return text;
    }
  }
}

/** `[USER@]HOST` with IPv6 bracketed (the spec's and the status's notation). */
function sshTarget(spec: Extract<TransportSpec, { kind: 'ssh' }>): string {
  const host = net.isIPv6(spec.host) ? `[${spec.host}]` : spec.host;
  return spec.user === undefined ? host : `${spec.user}@${host}`;
}

/**
 * How a link is reached, for status and logs: `tcp ADDR`, `tls ADDR`, `ssh [USER@]HOST[:PORT]`.
 * `address` is ips/ip-PEER (not used by ssh, which goes to its own host).
 */
export function describeTransport(spec: TransportSpec, address: string): string {
  switch (spec.kind) {
    case 'tcp':
      return `tcp ${address}${spec.encrypt ? ' (encrypted)' : ''}`;
    case 'tls':
      return spec.servername === undefined ? `tls ${address}` : `tls ${address} (servername ${spec.servername})`;
    case 'ssh':
      return `ssh ${sshTarget(spec)}${spec.port !== undefined ? `:${spec.port}` : ''}`;
  }
}
