// `marsadm check NAME`: a Nagios/Icinga plugin result (exit 0 OK, 1 WARNING, 2 CRITICAL,
// 3 UNKNOWN, one status line with performance data) decided from the view macros by a pure
// function, so each state is unit-tested.
import { MACROS } from './macros.js';
import { isEmergency, primaryUnreachable, type ViewSnapshot } from './view-model.js';

export const NAGIOS = { OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3 } as const;
export type NagiosCode = (typeof NAGIOS)[keyof typeof NAGIOS];
const NAMES = ['OK', 'WARNING', 'CRITICAL', 'UNKNOWN'] as const;

export interface CheckLimits {
  warnLagS: number;
  critLagS: number;
}

export const DEFAULT_CHECK_LIMITS: CheckLimits = { warnLagS: 60, critLagS: 300 };

export function checkResource(v: ViewSnapshot, limits: CheckLimits = DEFAULT_CHECK_LIMITS): { code: NagiosCode; line: string } {
  const m = (name: string) => MACROS[name]!(v);
  const problems: { code: NagiosCode; text: string }[] = [];
  const add = (code: NagiosCode, text: string) => problems.push({ code, text });
  if (!v.member) add(NAGIOS.UNKNOWN, `${v.host} is not a member of ${v.res}`);
  if (!v.daemonRunning) add(NAGIOS.CRITICAL, 'marsd is not running');
  if (v.splitBrain) add(NAGIOS.CRITICAL, 'split brain');
  if (isEmergency(v)) add(NAGIOS.CRITICAL, 'emergency mode (writes not logged)');
  if (/^(DefectiveLog|Orphan|IncompleteLog)/.test(m('diskstate'))) add(NAGIOS.CRITICAL, `disk ${m('diskstate')}`);
  if (primaryUnreachable(v)) add(NAGIOS.CRITICAL, `primary unreachable (${m('commstate')})`);
  const level = Number(m('emergency-level'));
  if (level >= 3) add(NAGIOS.CRITICAL, `/mars space level ${level}`);
  else if (level >= 1) add(NAGIOS.WARNING, `/mars space level ${level}`);
  const lag = Math.max(Number(m('replay-lag')) || 0, Number(m('fetch-lag')) || 0);
  if (lag >= limits.critLagS) add(NAGIOS.CRITICAL, `lag ${lag} s >= ${limits.critLagS} s`);
  else if (lag >= limits.warnLagS) add(NAGIOS.WARNING, `lag ${lag} s >= ${limits.warnLagS} s`);
  if (v.member && m('is-consistent') === '0') add(NAGIOS.WARNING, `not consistent (${m('diskstate')})`);
  if (v.member && /-/.test(m('flags').slice(2))) add(NAGIOS.WARNING, `a switch is off (flags ${m('flags')})`);
  const code = problems.reduce<NagiosCode>((worst, p) => (rank(p.code) > rank(worst) ? p.code : worst), NAGIOS.OK);
  const summary = problems.length > 0 ? problems.map((p) => p.text).join('; ') : `${m('diskstate')} ${m('replstate')} ${m('role')}`;
  const perf = `replay_lag=${m('replay-lag') || 0}s;${limits.warnLagS};${limits.critLagS} fetch_rest=${m('fetch-rest')}B replay_rest=${m('replay-rest')}B sync_rest=${m('sync-rest')}B`;
  return { code, line: `MARS ${NAMES[code]} - ${v.res}: ${summary} | ${perf}` };
}

/** UNKNOWN outranks nothing but OK: a known CRITICAL must not hide behind it. */
function rank(code: NagiosCode): number {
  return code === NAGIOS.UNKNOWN ? 0.5 : code;
}
