// The invariants the simulation checks (docs/reliability.md lists them with the code they
// exercise). Local ones are checked on every change of a host's tree, as it happens; the global
// ones (convergence, at most one acting primary) by the world after each step or at the end.
// A violation is recorded with the step that made it; the run stops at the first one.
import { ownerOf } from '../../common/tree/ownership.js';
import { clusterMarkerPath, markerInForce, resourceMarkerPath, type LinkLookup } from '../../common/tree/removal.js';
import { LOG_NAME, VERSION_NAME } from '../../common/tree/log-names.js';
import { TOMBSTONE_VALUE, type MergePlan } from '../../daemon/propagate/merge.js';
import type { HostObserver, SimHost, Stamped } from './host.js';

export interface Violation {
  invariant: string;
  detail: string;
}

export function lookupOf(h: SimHost): LinkLookup {
  return (p) => {
    const e = h.tree.get(p);
    return e === undefined ? undefined : { value: e.v, stampUs: e.s, deleted: e.v === TOMBSTONE_VALUE };
  };
}

/** Is `host` removed from the cluster or from the resource of `path`, as h's tree says? */
export function removedIn(h: SimHost, host: string, path: string): boolean {
  const lookup = lookupOf(h);
  if (markerInForce(lookup, clusterMarkerPath(host), `ips/ip-${host}`)) return true;
  const dir = path.startsWith('resource-') && path.includes('/') ? path.split('/')[0]! : undefined;
  return dir !== undefined && markerInForce(lookup, resourceMarkerPath(dir, host), `${dir}/data-${host}`) !== undefined;
}

export class InvariantChecker implements HostObserver {
  violations: Violation[] = [];
  checks = 0;
  /** per host: the newest tombstone stamp it ever held at each path (purges do not forget it) */
  private readonly deletedAt = new Map<string, Map<string, number>>();

  private fail(invariant: string, detail: string): void {
    this.violations.push({ invariant, detail });
  }

  afterWrite(h: SimHost, path: string, before: Stamped | undefined, after: Stamped): void {
    this.checks++;
    if (before !== undefined && after.s < before.s) {
      this.fail('stamps-forward', `${h.name}: ${path} went from stamp ${before.s} (${before.v}) back to ${after.s} (${after.v})`);
    }
    if (before !== undefined && after.s === before.s && after.v !== before.v) {
      this.fail('stamps-unique', `${h.name}: ${path} holds two values with one stamp ${after.s}: ${before.v} and ${after.v}`);
    }
    let del = this.deletedAt.get(h.name);
    if (!del) this.deletedAt.set(h.name, (del = new Map()));
    const deletedStamp = del.get(path);
    if (after.v === TOMBSTONE_VALUE) {
      if (deletedStamp === undefined || after.s > deletedStamp) del.set(path, after.s);
    } else if (deletedStamp !== undefined && after.s <= deletedStamp) {
      this.fail('no-resurrection', `${h.name}: ${path} = ${after.v} (stamp ${after.s}) came back after its tombstone (stamp ${deletedStamp})`);
    }
  }

  beforeApply(h: SimHost, sender: string, plan: MergePlan): void {
    for (const w of plan.writes) {
      this.checks++;
      const rejoin = w.p === `ips/ip-${sender}` && w.v !== TOMBSTONE_VALUE;
      if (removedIn(h, sender, w.p) && !rejoin) {
        this.fail('removed-host-ignored', `${h.name} accepted ${w.p} = ${w.v} from ${sender}, which its tree says was removed`);
      }
      const owner = ownerOf(w.p);
      if (owner.kind === 'host' && owner.host !== sender && w.v !== TOMBSTONE_VALUE) {
        this.fail('owner-writes', `${h.name} accepted ${w.p} = ${w.v} from ${sender}; only ${owner.host} writes it`);
      }
      if (owner.kind === 'host' && w.v !== TOMBSTONE_VALUE && removedIn(h, owner.host, w.p)) {
        this.fail('removed-host-ignored', `${h.name} accepted ${w.p} = ${w.v} of removed ${owner.host}`);
      }
      // log-delete cleans old versionlinks of every host everywhere (ownership.ts mayWrite).
      const oldVersion = w.v === TOMBSTONE_VALUE && VERSION_NAME.test(w.p.split('/')[1] ?? '');
      if (owner.kind === 'host' && owner.host === h.name && !oldVersion) {
        this.fail('owner-writes', `${h.name} let ${sender} write its own link ${w.p} = ${w.v}`);
      }
      const parts = w.p.split('/');
      const log = parts.length === 2 ? LOG_NAME.exec(parts[1]!) : null;
      if (log && w.replaceFile && Number(log[1]) >= h.replayFloor(parts[0]!.slice('resource-'.length))) {
        this.fail('needed-log-kept', `${h.name} deleted ${w.p} although it replays from logfile ${h.replayFloor(parts[0]!.slice('resource-'.length))}`);
      }
    }
  }

  /**
   * After the network healed and every host pulled from every other: the same live links
   * everywhere. Versionlinks of removed hosts are left out: a zombie's versionlink that reached
   * a survivor before the marker stays there (versionlinks are kept on removal, other members
   * may replay their logfiles) until log-delete removes it (docs/reliability.md).
   */
  checkConverged(hosts: readonly SimHost[], removed: ReadonlySet<string> = new Set()): void {
    const removedVersion = (p: string) => {
      const v = VERSION_NAME.exec(p.split('/')[1] ?? '');
      return v !== null && removed.has(v[2]!);
    };
    const norm = (h: SimHost) => {
      const live = new Map<string, string>();
      for (const [p, e] of h.tree) if (e.v !== TOMBSTONE_VALUE && !removedVersion(p)) live.set(p, `${e.v}@${e.s}`);
      return live;
    };
    const [first, ...rest] = hosts;
    if (!first) return;
    const a = norm(first);
    for (const h of rest) {
      this.checks++;
      const b = norm(h);
      const paths = new Set([...a.keys(), ...b.keys()]);
      const diff = [...paths].filter((p) => a.get(p) !== b.get(p)).sort();
      if (diff.length > 0) {
        const p = diff[0]!;
        this.fail('convergence', `${first.name} and ${h.name} differ at ${diff.length} path(s) after healing, first ${p}: ${a.get(p) ?? 'absent'} vs ${b.get(p) ?? 'absent'}`);
      }
    }
  }

  /** A logfile copy whose tombstone the host holds would be served again (a resurrected logfile). */
  checkFiles(h: SimHost): void {
    for (const f of h.files) {
      this.checks++;
      if (h.tree.get(f)?.v === TOMBSTONE_VALUE) this.fail('no-resurrection', `${h.name} holds ${f} and its tombstone`);
    }
  }
}
