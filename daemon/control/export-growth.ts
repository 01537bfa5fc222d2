// resize on the actual primary (an imperative shell around decideExportGrowth,
// common/resource/resize-plan.ts): when the size link grew, the disk is measured again and, if
// it is large enough, the export grows; the NBD server reads the backend's size at every
// handshake, so new connections see the new size, while open ones keep the size they were told
// (NBD has no size-change notification; docs/nbd.md). A refusal is logged once per size.
import type { DataDisk } from '../../common/disk/data-disk.js';
import type { EmergencyBackend } from '../logger/emergency-backend.js';
import { decideExportGrowth } from '../../common/resource/resize-plan.js';
import type { LogFn } from '../../common/util/log.js';

export class ExportGrowth {
  private refusedFor: number | undefined;

  constructor(private readonly res: string, private readonly log: LogFn) {}

  /** Called every round while the export runs; cheap unless the size link grew. */
  follow(backend: EmergencyBackend, disk: DataDisk, sizeLinkBytes: number | undefined): boolean {
    if (sizeLinkBytes === undefined || sizeLinkBytes <= backend.sizeBytes) return false;
    const decision = decideExportGrowth(backend.sizeBytes, sizeLinkBytes, disk.refreshSize());
    if (decision.kind === 'refuse') {
      if (this.refusedFor !== sizeLinkBytes) this.log('error', `${this.res}: resize: ${decision.reason}`);
      this.refusedFor = sizeLinkBytes;
      return false;
    }
    if (decision.kind === 'none') return false;
    const from = backend.sizeBytes;
    backend.grow(decision.toSizeBytes);
    this.refusedFor = undefined;
    this.log('info', `${this.res}: resize: the export grew from ${from} to ${decision.toSizeBytes} bytes; new NBD connections see the new size`);
    return true;
  }
}
