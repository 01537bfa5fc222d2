// Names of the links in the /mars tree (docs/design.md §4; the MARS user manual: the /mars tree). Every builder
// validates the identifiers it embeds, so callers cannot construct an escaping path.
import { validHost, validResource } from './names.js';
import { logName, versionName } from './log-names.js';

// Each resource path is built once per argument list, and the same string is handed out after
// that: marsd reads the same links of every resource each round, the store looks each path up
// in a Map (store.ts), and a string built anew must be hashed anew (with 100 resources that
// was a tenth of an idle daemon's time); the names are validated once, too (an invalid one
// throws and is not kept). Bounded: past PATH_MEMO_MAX paths a builder's memory starts over.
const PATH_MEMO_MAX = 20_000;
type Key = string | number;

function memo1(build: (a: string) => string): (a: string) => string {
  let m = new Map<string, string>();
  return (a) => {
    let v = m.get(a);
    if (v === undefined) {
      v = build(a);
      if (m.size >= PATH_MEMO_MAX) m = new Map();
      m.set(a, v);
    }
    return v;
  };
}

function memo2<B extends Key>(build: (a: string, b: B) => string): (a: string, b: B) => string {
  let m = new Map<string, Map<B, string>>();
  let size = 0;
  return (a, b) => {
    let inner = m.get(a);
    let v = inner?.get(b);
    if (v === undefined) {
      v = build(a, b);
      if (++size > PATH_MEMO_MAX) { m = new Map(); size = 1; inner = undefined; }
      if (inner === undefined) m.set(a, (inner = new Map()));
      inner.set(b, v);
    }
    return v;
  };
}

function memo3<B extends Key, C extends Key>(build: (a: string, b: B, c: C) => string): (a: string, b: B, c: C) => string {
  const byLast = new Map<C, (a: string, b: B) => string>();
  return (a, b, c) => {
    let f = byLast.get(c);
    if (f === undefined) {
      if (byLast.size >= 1024) byLast.clear(); // the last arguments are a few keys, hosts or numbers per resource
      byLast.set(c, (f = memo2((x: string, y: B) => build(x, y, c))));
    }
    return f(a, b);
  };
}


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

export const resourceDir = memo1((res: string) => `resource-${validResource(res)}`);

export const resPaths = {
  dir: resourceDir,
  size: memo1((res: string) => `${resourceDir(res)}/size`),
  primary: memo1((res: string) => `${resourceDir(res)}/primary`),
  maxnr: memo1((res: string) => `${resourceDir(res)}/maxnr`),
  data: memo2((res: string, host: string) => `${resourceDir(res)}/data-${validHost(host)}`),
  device: memo2((res: string, host: string) => `${resourceDir(res)}/device-${validHost(host)}`),
  replay: memo2((res: string, host: string) => `${resourceDir(res)}/replay-${validHost(host)}`),
  syncstatus: memo2((res: string, host: string) => `${resourceDir(res)}/syncstatus-${validHost(host)}`),
  syncpos: memo2((res: string, host: string) => `${resourceDir(res)}/syncpos-${validHost(host)}`),
  skipCheck: memo2((res: string, host: string) => `${resourceDir(res)}/skip-check-${validHost(host)}`),
  actsize: memo2((res: string, host: string) => `${resourceDir(res)}/actsize-${validHost(host)}`),
  /**
   * The content mismatch HOST's replayer found and keeps (`log-SEQ-ORIGIN,POS`) until invalidate:
   * local, never propagated (ownership.ts: no owned prefix)
   */
  contentMismatch: memo2((res: string, host: string) => `${resourceDir(res)}/content-mismatch-${validHost(host)}`),
  /** removal marker of HOST in this resource (removal.ts) */
  removed: memo2((res: string, host: string) => `${resourceDir(res)}/removed-${validHost(host)}`),
  log: memo3((res: string, seq: number, origin: string) => `${resourceDir(res)}/${logName(seq, validHost(origin))}`),
  version: memo3((res: string, seq: number, host: string) => `${resourceDir(res)}/${versionName(seq, validHost(host))}`),
  todoDir: memo2((res: string, host: string) => `${resourceDir(res)}/todo-${validHost(host)}`),
  todo: memo3((res: string, host: string, key: TodoKey) => `${resourceDir(res)}/todo-${validHost(host)}/${key}`),
  /** stamp of a planned handover to HOST waiting for the current primary's application to stop */
  wantPrimary: memo2((res: string, host: string) => `${resourceDir(res)}/todo-${validHost(host)}/want-primary`),
  /** the stamp of the newest `marsadm invalidate` request for this host */
  invalidate: memo2((res: string, host: string) => `${resourceDir(res)}/todo-${validHost(host)}/invalidate`),
  /** how `marsadm primary` asked this host to take over: planned, ignore-sync or force */
  primaryMode: memo2((res: string, host: string) => `${resourceDir(res)}/todo-${validHost(host)}/primary-mode`),
  /** MARS's per-resource emergency limit on HOST: percent of /mars its logfiles may take (0 = off) */
  emergencyLimit: memo2((res: string, host: string) => `${resourceDir(res)}/todo-${validHost(host)}/emergency-limit`),
  actualDir: memo2((res: string, host: string) => `${resourceDir(res)}/actual-${validHost(host)}`),
  actual: memo3((res: string, host: string, key: string) => `${resourceDir(res)}/actual-${validHost(host)}/${key}`),
};

export const TODO_KEYS = ['attach', 'connect', 'sync', 'allow-replay'] as const;
export type TodoKey = (typeof TODO_KEYS)[number];
