// check NAME: one Nagios status line and exit code 0/1/2/3 (status/check-model.ts).
import { AdmError, type Adm } from '../context.js';
import { readView } from '../status/read-view.js';
import { checkResource, DEFAULT_CHECK_LIMITS, NAGIOS } from '../status/check-model.js';

function seconds(text: string | undefined, fallback: number, what: string): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0) throw new AdmError(`invalid ${what} ${JSON.stringify(text)}: give seconds`, NAGIOS.UNKNOWN);
  return n;
}

export function check(adm: Adm, name: string, o: { warnLag?: string; critLag?: string }): void {
  let result: { code: number; line: string };
  try {
    adm.requireCluster();
    const res = adm.requireResource(name);
    const limits = { warnLagS: seconds(o.warnLag, DEFAULT_CHECK_LIMITS.warnLagS, '--warn-lag'), critLagS: seconds(o.critLag, DEFAULT_CHECK_LIMITS.critLagS, '--crit-lag') };
    result = checkResource(readView(adm, res), limits);
  } catch (err) {
    // A plugin that cannot tell says UNKNOWN (3), on stdout, in one line.
    result = { code: NAGIOS.UNKNOWN, line: `MARS UNKNOWN - ${(err as Error).message}` };
  }
  if (adm.json) adm.printJson({ resource: name, code: result.code, status: result.line });
  else adm.print(result.line);
  process.exitCode = result.code;
}
