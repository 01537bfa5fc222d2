// resize NAME [SIZE] (the MARS user manual: resize): grow a resource, on its primary, to SIZE or
// to the smallest member disk. The decision is pure (common/resource/resize-plan.ts); here the
// inputs are read from the tree and, when it says ok, two links are written in MARS's order:
// syncstatus-PRIMARY (the primary's own disk is complete at the new size), then `size`. marsd on
// the primary grows its export at once (new NBD connections see the new size); every secondary
// sees syncstatus < size and copies the new area by a partial sync (docs/design.md, "Resize").
import { AdmError, type Adm } from '../context.js';
import { resPaths } from '../../common/tree/paths.js';
import { resourceMembers } from '../../common/cluster/members.js';
import { parseSize } from '../../common/config.js';
import { planResize, type ResizeMember } from '../../common/resource/resize-plan.js';
import { rethrowInvariant } from '../../common/util/assert.js';

/** A decimal byte count from a link, or undefined (missing or not a number). */
function bytesOf(value: string | undefined): number | undefined {
  return value !== undefined && /^\d+$/.test(value) && Number.isSafeInteger(Number(value)) ? Number(value) : undefined;
}

function parseRequested(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  try {
    return parseSize(text, 'SIZE');
  } catch (err) {
    rethrowInvariant(err);
    throw new AdmError((err as Error).message, 2);
  }
}

function members(adm: Adm, res: string): ResizeMember[] {
  const { tree } = adm;
  return resourceMembers(tree, res)
    .map((host) => ({ host, actsizeBytes: bytesOf(tree.value(resPaths.actsize(res, host))) }));
}

export async function resize(adm: Adm, name: string, sizeText: string | undefined): Promise<void> {
  const requestedSizeBytes = parseRequested(sizeText);
  const res = adm.requireResource(name);
  adm.requireMember(res);
  const { tree, host } = adm;
  const currentSizeBytes = bytesOf(tree.value(resPaths.size(res)));
  if (currentSizeBytes === undefined) throw new AdmError(`the size link of ${res} is not a byte count: ${tree.value(resPaths.size(res))}`);
  const list = members(adm, res);
  const decision = planResize({ res, host, designatedPrimary: tree.value(resPaths.primary(res)), currentSizeBytes, requestedSizeBytes, members: list });
  if (!decision.ok) throw new AdmError(`resize ${res}: ${decision.error}`);
  const json = { resource: res, host, fromSizeBytes: decision.fromSizeBytes, toSizeBytes: decision.toSizeBytes, members: list };
  if (decision.unchanged) {
    adm.result(`${res} already has ${decision.toSizeBytes} bytes: nothing to do`, { ...json, changed: false, done: true });
    return;
  }
  if (adm.actual(res, 'is-primary') !== '1' && !adm.json) {
    adm.print(`note: ${host} is designated primary of ${res} but not primary yet; the export grows when it starts`);
  }
  // MARS's order: the primary's own syncstatus first, so it is never behind the new size.
  tree.write(resPaths.syncstatus(res, host), String(decision.toSizeBytes), { durable: true });
  tree.write(resPaths.size(res), String(decision.toSizeBytes), { durable: true });
  adm.trigger();
  const grown = () => (bytesOf(adm.actual(res, 'export-size')) ?? 0) >= decision.toSizeBytes;
  const done = adm.actual(res, 'is-primary') === '1' ? await adm.waitFor(`the export of ${res} has ${decision.toSizeBytes} bytes`, grown) : false;
  const others = list.filter((m) => m.host !== host).map((m) => m.host);
  const text = `${res}: grown from ${decision.fromSizeBytes} to ${decision.toSizeBytes} bytes`
    + (done ? '; new NBD connections see the new size (reconnect, then grow the filesystem, e.g. resize2fs)' : '; the export grows when marsd picks it up')
    + (others.length > 0 ? `. ${others.join(', ')} copy the new ${decision.toSizeBytes - decision.fromSizeBytes} bytes by a partial sync ("marsadm view ${res}")` : '');
  adm.result(text, { ...json, changed: true, done });
}
