// `marsadm resize NAME [SIZE]` (the MARS user manual: resize) as pure functions: which size a
// resource may grow to, given its current size link, its designated primary and the disk size
// every member publishes in actsize-HOST; and, in marsd, whether the primary's export grows now.
//
// Rules (MARS's resize): only the designated primary resizes; only growth; the new size is a
// multiple of 4096 and fits every member's disk (a member that has not published its disk size
// cannot be checked, so it blocks the resize). Without SIZE the resource grows to the smallest
// member disk. The caller (marsadm/commands/resize.ts) changes nothing unless this says ok.

/** The resource size is a multiple of this (as at create-resource). */
export const RESIZE_ALIGN_BYTES = 4096;

export interface ResizeMember {
  host: string;
  /** actsize-HOST: the size of HOST's data disk as its marsd last published it */
  actsizeBytes: number | undefined;
}

export interface ResizeInput {
  res: string;
  /** the host marsadm runs on */
  host: string;
  designatedPrimary: string | undefined;
  currentSizeBytes: number;
  /** SIZE as given (already parsed), or undefined: grow to the smallest member disk */
  requestedSizeBytes: number | undefined;
  /** every storage member (data-HOST exists) */
  members: readonly ResizeMember[];
}

export type ResizeDecision =
  | { ok: true; fromSizeBytes: number; toSizeBytes: number; smallestDiskBytes: number; unchanged: boolean }
  | { ok: false; error: string };

const refuse = (error: string): ResizeDecision => ({ ok: false, error });

export function planResize(i: ResizeInput): ResizeDecision {
  if (i.designatedPrimary === undefined || i.designatedPrimary === '(none)') {
    return refuse(`${i.res} has no designated primary: resize runs on the primary ("marsadm primary ${i.res}" first)`);
  }
  if (i.designatedPrimary !== i.host) {
    return refuse(`${i.host} is not the primary of ${i.res}: run "marsadm resize ${i.res}" on ${i.designatedPrimary}`);
  }
  if (!i.members.some((m) => m.host === i.host)) return refuse(`${i.host} is not a member of ${i.res}`);
  const unknown = i.members.filter((m) => m.actsizeBytes === undefined).map((m) => m.host);
  if (unknown.length > 0) {
    return refuse(`the disk size of ${unknown.join(', ')} is not known (no actsize-HOST link): marsd must run there and its state reach this host; check "marsadm view ${i.res}"`);
  }
  const smallest = i.members.reduce((min, m) => (m.actsizeBytes! < min.actsizeBytes! ? m : min));
  const smallestDiskBytes = smallest.actsizeBytes!;
  const target = i.requestedSizeBytes ?? smallestDiskBytes - (smallestDiskBytes % RESIZE_ALIGN_BYTES);
  if (i.requestedSizeBytes !== undefined && target % RESIZE_ALIGN_BYTES !== 0) {
    return refuse(`the new size ${target} is not a multiple of ${RESIZE_ALIGN_BYTES} bytes`);
  }
  if (target < i.currentSizeBytes) {
    return refuse(i.requestedSizeBytes === undefined
      ? `the smallest member disk (${smallest.host}, ${smallestDiskBytes} bytes) is smaller than ${i.res} (${i.currentSizeBytes} bytes): grow that disk first`
      : `${i.res} has ${i.currentSizeBytes} bytes; resize only grows, it never shrinks (requested ${target})`);
  }
  const tooSmall = i.members.filter((m) => m.actsizeBytes! < target);
  if (tooSmall.length > 0) {
    const list = tooSmall.map((m) => `${m.host} has ${m.actsizeBytes} bytes`).join(', ');
    return refuse(`the new size ${target} does not fit every member's disk (${list}): grow those disks first, or give at most ${smallestDiskBytes - (smallestDiskBytes % RESIZE_ALIGN_BYTES)}`);
  }
  return { ok: true, fromSizeBytes: i.currentSizeBytes, toSizeBytes: target, smallestDiskBytes, unchanged: target === i.currentSizeBytes };
}

export type ExportGrowth =
  | { kind: 'none' }
  | { kind: 'grow'; toSizeBytes: number }
  /** the size link grew beyond this host's disk: the export keeps its size, the reason is logged */
  | { kind: 'refuse'; reason: string };

/**
 * marsd on the actual primary, every round: the export (and the logger's bound) follows the size
 * link upwards once it grew; it never shrinks (a smaller size link is not a resize). A disk
 * smaller than the new size (grown elsewhere, or marsadm --force) keeps the old size.
 */
export function decideExportGrowth(exportSizeBytes: number, sizeLinkBytes: number | undefined, diskSizeBytes: number): ExportGrowth {
  if (sizeLinkBytes === undefined || sizeLinkBytes <= exportSizeBytes) return { kind: 'none' };
  if (sizeLinkBytes > diskSizeBytes) {
    return { kind: 'refuse', reason: `the size link says ${sizeLinkBytes} bytes, but the data disk here has only ${diskSizeBytes}: the export stays at ${exportSizeBytes} bytes until the disk is grown` };
  }
  return { kind: 'grow', toSizeBytes: sizeLinkBytes };
}
