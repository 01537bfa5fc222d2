// The primary role in the simulation: each round, each host builds its ResourceSnapshot from its
// own tree (as common/resource/snapshot.ts reads it from /mars) and runs the real round planner,
// planResource (daemon/control/plan.ts: decide.ts, decide-handover.ts, decide-secondary.ts,
// decide-emergency.ts, decide-device.ts), then executes its primary action: start the role
// (actual-HOST/is-primary 1) or stop it (0). The data path is not simulated; what is checked is
// the role logic: who may take the role, from which tree, and where it settles.
import { LOG_NAME, VERSION_NAME } from '../../common/tree/log-names.js';
import { isValidIdentifier } from '../../common/tree/names.js';
import { PRIMARY_MODES, type PrimaryMode } from '../../common/resource/links.js';
import type { ResourceSnapshot } from '../../common/resource/snapshot.js';
import { planResource, type RunnerState } from '../../daemon/control/plan.js';
import type { SimHost } from './host.js';
import { removedIn, type InvariantChecker } from './invariants.js';
import { DIR, RES } from './ops.js';

interface Role {
  phase: 'down' | 'primary';
  mode: PrimaryMode;
  sinceUs: number | undefined;
}

function intValue(text: string | undefined): number | undefined {
  return text !== undefined && /^\d{1,16}$/.test(text) ? Number(text) : undefined;
}

/** The ResourceSnapshot of h's tree, read as readResourceSnapshot reads /mars. */
export function snapshotOf(h: SimHost, members: readonly string[]): ResourceSnapshot {
  const primary = h.value(`${DIR}/primary`);
  const mode = h.value(`${DIR}/todo-${h.name}/primary-mode`);
  const logfiles = [...h.files].map((f) => LOG_NAME.exec(f.split('/')[1]!)!).map((m) => ({ seq: Number(m[1]), origin: m[2]!, sizeBytes: 0 }))
    .sort((a, b) => a.seq - b.seq || a.origin.localeCompare(b.origin));
  const versionLinks: { seq: number; host: string; value: string }[] = [];
  for (const [p, e] of h.tree) {
    const m = p.startsWith(`${DIR}/`) ? VERSION_NAME.exec(p.slice(DIR.length + 1)) : null;
    if (m && h.value(p) !== undefined) versionLinks.push({ seq: Number(m[1]), host: m[2]!, value: e.v });
  }
  const activePrimaries = members.filter((m) => m !== h.name && h.value(`${DIR}/data-${m}`) !== undefined && h.value(`${DIR}/actual-${m}/is-primary`) === '1').sort();
  const removed = removedIn(h, h.name, `${DIR}/x`) ? `${h.name} was removed` : undefined;
  const s: ResourceSnapshot = {
    name: RES,
    sizeBytes: intValue(h.value(`${DIR}/size`)),
    designatedPrimary: primary !== undefined && isValidIdentifier(primary) ? primary : undefined,
    dataPath: h.value(`${DIR}/data-${h.name}`),
    todo: { attach: h.value(`${DIR}/todo-${h.name}/attach`) === '1', connect: true, sync: true, 'allow-replay': true },
    replayLink: h.value(`${DIR}/replay-${h.name}`),
    syncstatusBytes: intValue(h.value(`${DIR}/syncstatus-${h.name}`)),
    logfiles,
    emergencyLimitPercent: 0,
    primaryMode: PRIMARY_MODES.includes(mode as PrimaryMode) ? mode as PrimaryMode : 'planned',
    activePrimaries,
    versionLinks,
    maxnr: 0,
    wantPrimaryRequest: undefined,
    invalidateRequest: undefined,
    removed,
    signature: '',
  };
  s.signature = JSON.stringify([primary, s.todo.attach, s.replayLink, s.syncstatusBytes, logfiles, mode, activePrimaries, removed]);
  return s;
}

function runtimeOf(r: Role): RunnerState {
  return {
    phase: r.phase, actionInFlight: false, loggingMode: r.phase === 'primary' ? 'logging' : undefined,
    holeUnwritten: false, invalidating: false, openCount: 0, primarySinceUs: r.sinceUs, wantHandled: undefined,
    stopHookConfigured: false, splitBrainChecking: false, splitBrainCheckedMs: 0,
  };
}

export class RoleSim {
  private readonly roles = new Map<string, Role>();
  starts = 0;
  forcedStarts = 0;
  /** rounds in which two hosts acted as primary at once, by the mode of the later start */
  overlaps = { planned: 0, forced: 0 };

  constructor(private readonly hosts: readonly SimHost[], private readonly checker: InvariantChecker) {
    for (const h of hosts) this.roles.set(h.name, { phase: 'down', mode: 'planned', sinceUs: undefined });
  }

  isPrimary(name: string): boolean {
    return this.roles.get(name)?.phase === 'primary';
  }

  /** marsadm primary --force on h. */
  force(h: SimHost): string {
    h.write(`${DIR}/todo-${h.name}/primary-mode`, 'force');
    h.write(`${DIR}/primary`, h.name);
    return `${h.name} takes over by force`;
  }

  /** One control-loop round of h for the resource. */
  round(h: SimHost, nowMs: number): string | undefined {
    const role = this.roles.get(h.name)!;
    const s = snapshotOf(h, this.hosts.map((x) => x.name));
    const plan = planResource({ snapshot: s, runtime: runtimeOf(role), present: true, spaceLevel: 0, nowMs, config: { host: h.name, logRotateBytes: 0 } });
    this.checker.checks++;
    if (plan.primary.kind === 'start-primary') {
      if ((s.syncstatusBytes ?? 0) < (s.sizeBytes ?? Infinity)) this.checker.violations.push({ invariant: 'consistent-primary', detail: `${h.name} starts the primary role with syncstatus ${s.syncstatusBytes} of ${s.sizeBytes} (mode ${s.primaryMode})` });
      if (s.removed !== undefined) this.checker.violations.push({ invariant: 'removed-no-role', detail: `${h.name} starts the primary role although its tree says it was removed` });
      if (s.primaryMode === 'planned' && s.activePrimaries.length > 0) this.checker.violations.push({ invariant: 'planned-waits', detail: `${h.name} starts a planned takeover while ${s.activePrimaries.join(', ')} acts as primary in its tree` });
      Object.assign(role, { phase: 'primary', mode: s.primaryMode, sinceUs: h.lamport.tick() });
      this.starts++;
      if (s.primaryMode === 'force') this.forcedStarts++;
      h.write(`${DIR}/actual-${h.name}/is-primary`, '1');
      return `${h.name} starts the primary role (${s.primaryMode})`;
    }
    if (plan.primary.kind === 'stop-primary') {
      role.phase = 'down';
      h.write(`${DIR}/actual-${h.name}/is-primary`, '0');
      return `${h.name} stops the primary role: ${plan.primary.reason}`;
    }
    return undefined;
  }

  /** Count rounds with two acting primaries (a stale tree or a forced failover: the split brain of docs/design.md §3.7). */
  checkRoles(_nowMs: number, _chaos: boolean): void {
    const acting = [...this.roles].filter(([, r]) => r.phase === 'primary');
    if (acting.length < 2) return;
    if (acting.some(([, r]) => r.mode === 'force')) this.overlaps.forced++;
    else this.overlaps.planned++;
  }

  /** After healing: at most one acting primary, and only the designated one. */
  checkSettled(alive: readonly SimHost[]): void {
    const acting = alive.filter((h) => this.isPrimary(h.name));
    this.checker.checks++;
    if (acting.length > 1) this.checker.violations.push({ invariant: 'one-primary', detail: `after healing ${acting.map((h) => h.name).join(' and ')} both act as primary` });
    for (const h of acting) {
      const designated = h.value(`${DIR}/primary`);
      if (designated !== h.name) this.checker.violations.push({ invariant: 'one-primary', detail: `after healing ${h.name} acts as primary although ${designated ?? '(none)'} is designated` });
    }
  }
}
