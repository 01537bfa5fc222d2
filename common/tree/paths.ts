// Names of the links in the /mars tree (docs/design.md §4; the MARS user manual: the /mars tree). Every builder
// validates the identifiers it embeds, so callers cannot construct an escaping path.
import { validHost, validResource } from './names.js';
import { logName, versionName } from './log-names.js';


export const globalPaths = {
  uuid: 'uuid',
  ipsDir: 'ips',
  ip: (host: string) => `ips/ip-${validHost(host)}`,
  actualDir: (host: string) => `actual-${validHost(host)}`,
  actual: (host: string, key: string) => `actual-${validHost(host)}/${key}`,
  defaultsDir: (host: string) => `defaults-${validHost(host)}`,
  /** removal marker of HOST (removal.ts) */
  removed: (host: string) => `ips/removed-${validHost(host)}`,
};

/** HOST's heartbeat link, `actual-HOST/time`: read by view and metrics, no decision depends on it. */
export function isHeartbeatPath(path: string): boolean {
  return /^actual-[^/]+\/time$/.test(path);
}

/** Links under userspace/: this host's own settings, never propagated (propagate/ownership.ts). */
export const localPaths = {
  dir: 'userspace',
  /** How this host reaches PEER (net/transport-spec.ts); absent means tcp. */
  transport: (peer: string) => `userspace/transport-${validHost(peer)}`,
  /** The running marsd's run directory, so `marsd --stdio --mars-dir DIR` finds peer.sock. */
  runDir: 'userspace/run-dir',
  /** The host this /mars belongs to (create-cluster, join-cluster, marsd): `--host DEAD` acts for another. */
  host: 'userspace/host',
};

export function resourceDir(res: string): string {
  return `resource-${validResource(res)}`;
}

export const resPaths = {
  dir: resourceDir,
  size: (res: string) => `${resourceDir(res)}/size`,
  primary: (res: string) => `${resourceDir(res)}/primary`,
  maxnr: (res: string) => `${resourceDir(res)}/maxnr`,
  data: (res: string, host: string) => `${resourceDir(res)}/data-${validHost(host)}`,
  device: (res: string, host: string) => `${resourceDir(res)}/device-${validHost(host)}`,
  replay: (res: string, host: string) => `${resourceDir(res)}/replay-${validHost(host)}`,
  syncstatus: (res: string, host: string) => `${resourceDir(res)}/syncstatus-${validHost(host)}`,
  syncpos: (res: string, host: string) => `${resourceDir(res)}/syncpos-${validHost(host)}`,
  skipCheck: (res: string, host: string) => `${resourceDir(res)}/skip-check-${validHost(host)}`,
  actsize: (res: string, host: string) => `${resourceDir(res)}/actsize-${validHost(host)}`,
  /**
   * The content mismatch HOST's replayer found and keeps (`log-SEQ-ORIGIN,POS`) until invalidate:
   * local, never propagated (ownership.ts: no owned prefix)
   */
  contentMismatch: (res: string, host: string) => `${resourceDir(res)}/content-mismatch-${validHost(host)}`,
  /** removal marker of HOST in this resource (removal.ts) */
  removed: (res: string, host: string) => `${resourceDir(res)}/removed-${validHost(host)}`,
  log: (res: string, seq: number, origin: string) => `${resourceDir(res)}/${logName(seq, validHost(origin))}`,
  version: (res: string, seq: number, host: string) => `${resourceDir(res)}/${versionName(seq, validHost(host))}`,
  todoDir: (res: string, host: string) => `${resourceDir(res)}/todo-${validHost(host)}`,
  todo: (res: string, host: string, key: TodoKey) => `${resourceDir(res)}/todo-${validHost(host)}/${key}`,
  /** stamp of a planned handover to HOST waiting for the current primary's application to stop */
  wantPrimary: (res: string, host: string) => `${resourceDir(res)}/todo-${validHost(host)}/want-primary`,
  /** the stamp of the newest `marsadm invalidate` request for this host */
  invalidate: (res: string, host: string) => `${resourceDir(res)}/todo-${validHost(host)}/invalidate`,
  /** how `marsadm primary` asked this host to take over: planned, ignore-sync or force */
  primaryMode: (res: string, host: string) => `${resourceDir(res)}/todo-${validHost(host)}/primary-mode`,
  /** MARS's per-resource emergency limit on HOST: percent of /mars its logfiles may take (0 = off) */
  emergencyLimit: (res: string, host: string) => `${resourceDir(res)}/todo-${validHost(host)}/emergency-limit`,
  actualDir: (res: string, host: string) => `${resourceDir(res)}/actual-${validHost(host)}`,
  actual: (res: string, host: string, key: string) => `${resourceDir(res)}/actual-${validHost(host)}/${key}`,
};

export const TODO_KEYS = ['attach', 'connect', 'sync', 'allow-replay'] as const;
export type TodoKey = (typeof TODO_KEYS)[number];
