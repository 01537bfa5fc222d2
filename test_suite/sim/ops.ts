// What the simulated administrators and runners do to a host's tree, each as marsadm or the
// runner would (docs/reliability.md, "Operations"). An operation acts only on the tree of the
// host it runs on; propagation carries it on. Choices come from the world's seeded PRNG.
import { formatReplayLink, formatVersionLink, ZERO_DIGEST } from '../../common/log/links.js';
import { LOG_NAME, logName, versionName } from '../../common/tree/log-names.js';
import { ownerOf } from '../../common/tree/ownership.js';
import { TOMBSTONE_VALUE } from '../../daemon/propagate/merge.js';
import type { SimHost } from './host.js';

export const RES = 'r0';
export const DIR = `resource-${RES}`;
export const SIZE_TEXT = '1048576';

export interface OpContext {
  random: () => number;
  /** hosts an administrator removed (the operator does not designate them again) */
  removed: ReadonlySet<string>;
  /** the next logfile number (the cluster's maxnr, kept by the world) */
  nextSeq: () => number;
  hosts: readonly SimHost[];
}

export function pick<T>(random: () => number, items: readonly T[]): T | undefined {
  return items.length === 0 ? undefined : items[Math.floor(random() * items.length)];
}

/** The links a host owns and changes while it runs: todo switches, status, sync progress. */
function ownedPaths(h: string): string[] {
  return [`${DIR}/todo-${h}/attach`, `${DIR}/todo-${h}/connect`, `${DIR}/actual-${h}/open-count`, `${DIR}/syncstatus-${h}`, `${DIR}/device-${h}`];
}

export function ownedWrite(h: SimHost, c: OpContext): string {
  const path = pick(c.random, ownedPaths(h.name))!;
  // syncstatus: complete (the size) or an interrupted sync; the others any small number.
  const value = path.endsWith(`syncstatus-${h.name}`) && c.random() < 0.7 ? SIZE_TEXT : String(Math.floor(c.random() * 4));
  h.write(path, value);
  return `${h.name} writes ${path} = ${value}`;
}

export function ownedDelete(h: SimHost, c: OpContext): string | undefined {
  const path = pick(c.random, ownedPaths(h.name).filter((p) => h.value(p) !== undefined));
  if (path === undefined) return undefined;
  h.write(path, TOMBSTONE_VALUE);
  return `${h.name} deletes ${path}`;
}

/** marsadm primary (planned) or marsadm secondary on h, for a member the operator has not removed. */
export function designate(h: SimHost, c: OpContext): string | undefined {
  if (h.value(`${DIR}/data-${h.name}`) === undefined || c.removed.has(h.name)) return undefined;
  if (c.random() < 0.25) {
    h.write(`${DIR}/primary`, '(none)');
    return `${h.name}: marsadm secondary`;
  }
  h.write(`${DIR}/todo-${h.name}/primary-mode`, 'planned');
  h.write(`${DIR}/primary`, h.name);
  return `${h.name}: marsadm primary`;
}

/** The designated primary (in its own view) opens the next logfile and writes its versionlink. */
export function newLogfile(h: SimHost, c: OpContext): string | undefined {
  if (h.value(`${DIR}/primary`) !== h.name || c.removed.has(h.name)) return undefined;
  const seq = c.nextSeq();
  const path = `${DIR}/${logName(seq, h.name)}`;
  h.addFile(path);
  h.write(`${DIR}/${versionName(seq, h.name)}`, formatVersionLink({ digest: ZERO_DIGEST, seq, origin: h.name, logPos: 0, prev: '' }));
  if (h.value(`${DIR}/replay-${h.name}`) === undefined) h.write(`${DIR}/replay-${h.name}`, formatReplayLink({ seq, origin: h.name, minPos: 0, len: 0 }));
  return `${h.name} opens ${path}`;
}

/** The fetcher: copy a logfile a peer listed, from this host's replay position on, unless deleted here. */
export function fetch(h: SimHost, c: OpContext): string | undefined {
  const floor = h.replayFloor(RES);
  const candidates: string[] = [];
  for (const l of h.listings.values()) {
    for (const f of l.files) {
      const m = LOG_NAME.exec(f.split('/')[1] ?? '');
      if (!m || h.files.has(f) || h.tree.has(f)) continue;
      if (floor !== Infinity && Number(m[1]) < floor) continue;
      candidates.push(f);
    }
  }
  const f = pick(c.random, candidates.sort());
  if (f === undefined) return undefined;
  h.addFile(f);
  return `${h.name} fetches ${f}`;
}

/** The replayer moves the replay link forward to a logfile present here. */
export function replay(h: SimHost, c: OpContext): string | undefined {
  const floor = h.replayFloor(RES);
  const ahead = [...h.files].map((f) => LOG_NAME.exec(f.split('/')[1] ?? '')).filter((m) => m && (floor === Infinity || Number(m[1]) > floor));
  const m = pick(c.random, ahead.sort((a, b) => Number(a![1]) - Number(b![1])).slice(0, 1));
  if (!m) return undefined;
  h.write(`${DIR}/replay-${h.name}`, formatReplayLink({ seq: Number(m[1]), origin: m[2]!, minPos: 0, len: 0 }));
  return `${h.name} replays ${m[0]}`;
}

/** marsadm log-delete on h: logfiles every member (in h's view) has replayed past. */
export function logDelete(h: SimHost, c: OpContext): string | undefined {
  const members = c.hosts.map((x) => x.name).filter((m) => h.value(`${DIR}/data-${m}`) !== undefined);
  const floors = members.map((m) => {
    const v = h.value(`${DIR}/replay-${m}`);
    const seq = v === undefined ? undefined : Number(/^log-(\d{9})-/.exec(v)?.[1]);
    return seq === undefined || Number.isNaN(seq) ? 0 : seq;
  });
  const below = Math.min(...floors);
  const known = [...new Set([...h.files, ...[...h.tree.keys()].filter((p) => LOG_NAME.test(p.split('/')[1] ?? ''))])]
    .filter((p) => h.tree.get(p)?.v !== TOMBSTONE_VALUE && Number(LOG_NAME.exec(p.split('/')[1]!)![1]) < below);
  const path = pick(c.random, known.sort());
  if (path === undefined) return undefined;
  h.deleteLog(path);
  return `${h.name} deletes ${path}`;
}

/** marsadm leave-cluster --host=X on survivor h: the removal marker, then X's links tombstoned. */
export function removeHost(h: SimHost, x: string): string {
  h.write(`ips/removed-${x}`, `by ${h.name}`);
  h.write(`ips/ip-${x}`, TOMBSTONE_VALUE);
  for (const [p, e] of [...h.tree]) {
    const owner = ownerOf(p);
    if (owner.kind === 'host' && owner.host === x && e.v !== TOMBSTONE_VALUE) h.write(p, TOMBSTONE_VALUE);
  }
  if (h.value(`${DIR}/primary`) === x) h.write(`${DIR}/primary`, h.name);
  return `${h.name} removes ${x}`;
}

/** What a host writes when it joins the cluster and the resource (join-cluster, join-resource). */
export function joinLinks(h: SimHost, all: readonly string[], first: boolean): void {
  if (first) {
    h.write('uuid', 'sim-cluster');
    for (const m of all) h.write(`ips/ip-${m}`, `127.0.0.${all.indexOf(m) + 1}`);
    h.write(`${DIR}/size`, SIZE_TEXT);
    h.write(`${DIR}/primary`, h.name);
  }
  h.write(`${DIR}/data-${h.name}`, `/dev/sim-${h.name}`);
  h.write(`${DIR}/todo-${h.name}/attach`, '1');
  h.write(`${DIR}/syncstatus-${h.name}`, SIZE_TEXT);
}
