// invalidate (the MARS user manual: split brain): give up this replica's own history since a split brain
// and resynchronise it from the primary. marsadm shows what that costs, then marsd carries it
// out (daemon/control/invalidate.ts) while no fetch, sync or replay runs.
import { AdmError, type Adm } from '../context.js';
import { resPaths } from '../../common/tree/paths.js';
import { formatStamp } from '../../common/tree/lamport.js';
import { previewInvalidate } from '../../common/resource/resync.js';
import { logName } from '../../common/tree/log-names.js';
import { rethrowInvariant } from '../../common/util/assert.js';

export async function invalidate(adm: Adm, name: string): Promise<void> {
  const res = adm.requireResource(name);
  adm.requireMember(res);
  const { tree, host } = adm;
  const primary = tree.value(resPaths.primary(res));
  if (primary === undefined || primary === '(none)') {
    throw new AdmError(`${res} has no designated primary: make the host whose data wins primary first ("marsadm primary ${res}" there), then invalidate the others`);
  }
  if (primary === host) {
    throw new AdmError(`${host} is the designated primary of ${res}: its data is what the others resynchronise from. Run invalidate on the hosts whose writes are given up`);
  }
  const open = Number(adm.actual(res, 'open-count') ?? '0');
  if (adm.actual(res, 'is-primary') === '1' || open > 0) {
    throw new AdmError(`${host} still serves the device of ${res} (${open} open connection${open === 1 ? '' : 's'}): unmount it here first`);
  }
  const sizeBytes = Number(tree.value(resPaths.size(res)));
  let preview;
  try {
    preview = await previewInvalidate(tree, res, host, sizeBytes);
  } catch (err) {
    rethrowInvariant(err);
    throw new AdmError(`invalidate ${res}: ${(err as Error).message}`);
  }
  const { plan, resyncBytes } = preview;
  const summary = plan.kind === 'incremental'
    ? `incremental resync: the ${resyncBytes} bytes of the disk that ${host} wrote to since the split at ${logName(plan.common.seq, plan.common.origin)}:${plan.common.pos} are compared with ${primary} and differing blocks copied; then ${plan.primaryBytesSince} bytes ${primary} logged since the split are fetched and replayed`
    : `full sync: all ${resyncBytes} bytes of the disk are compared with ${primary} (${plan.reason})`;
  if (!adm.json) adm.print(`invalidate ${res} on ${host}: ${summary}. ${host}'s own writes since then are discarded`);

  const stamp = formatStamp(tree.clock.tick());
  tree.write(resPaths.invalidate(res, host), stamp, { durable: true });
  adm.trigger();
  const answer = () => adm.actual(res, 'invalidate');
  const done = await adm.waitFor(`marsd carried out the invalidate of ${res}`, () => answer()?.split(' ')[0] === stamp);
  const text = answer() ?? '';
  if (done && !text.startsWith(`${stamp} OK`)) throw new AdmError(`invalidate ${res}: ${text.slice(stamp.length + 1)}`);
  adm.result(done ? `${res}: invalidated; the resync runs now (watch it with "marsadm view ${res}")` : `${res}: invalidate requested; marsd carries it out when it runs`, {
    resource: res, host, primary, kind: plan.kind, resyncBytes,
    ...(plan.kind === 'incremental' ? { common: plan.common, primaryBytesSince: plan.primaryBytesSince } : { reason: plan.reason }),
    done,
  });
}
