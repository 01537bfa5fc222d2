// log-truncate: the explicit way out of a defective logfile at primary recovery. It cuts the
// logfile at the last good record and moves everything after it (the rest of that file and any
// later logfiles) aside, so recovery can start with a consistent prefix of the history. It
// never runs implicitly: the operator accepts the loss of the records it names.
import { copyFileSync, renameSync, statSync, truncateSync } from 'node:fs';
import { AdmError, type Adm } from '../context.js';
import { resourceDir } from '../../common/tree/paths.js';
import { listLogfiles, readReplayLink } from '../../common/resource/links.js';
import { readLogBatches } from '../../common/log/scanner.js';

export async function logTruncate(adm: Adm, name: string): Promise<void> {
  const res = adm.requireResource(name);
  const { tree, host } = adm;
  if (adm.actual(res, 'is-primary') === '1') throw new AdmError(`${res} is running as primary; log-truncate is only for a resource that cannot start`);
  const link = readReplayLink(tree, res, host);
  if (!link) throw new AdmError(`replay-${host} of ${res} is missing or malformed`);
  const dir = resourceDir(res);
  const logs = listLogfiles(tree, res).filter((l) => l.seq >= link.seq);
  for (let i = 0; i < logs.length; i++) {
    const l = logs[i]!;
    const path = tree.abs(`${dir}/${l.name}`);
    const fromPos = l.seq === link.seq ? link.minPos : 0;
    let stop;
    let records = 0;
    for await (const item of readLogBatches(path, fromPos)) {
      if (item.type === 'end') stop = item.stop;
      else records += item.records.length;
    }
    if (!stop || !stop.defect) continue;
    const sizeBytes = statSync(path).size;
    const stamp = Date.now();
    const aside = tree.abs(`${dir}`) + `/.damaged-${l.name}-${stamp}`;
    copyFileSync(path, aside);
    truncateSync(path, stop.offset);
    const later = logs.slice(i + 1);
    for (const m of later) renameSync(tree.abs(`${dir}/${m.name}`), tree.abs(dir) + `/.damaged-${m.name}-${stamp}`);
    tree.fsyncDir(dir);
    adm.trigger();
    adm.result(
      `${res}: cut ${l.name} at offset ${stop.offset} (${stop.kind}: ${stop.detail}); dropped ${sizeBytes - stop.offset} bytes of it`
      + `${later.length ? ` and the later logfiles ${later.map((m) => m.name).join(', ')}` : ''}. `
      + `The original is kept as ${aside}. marsd now recovers up to the cut.`,
      { resource: res, logfile: l.name, cutAt: stop.offset, droppedBytes: sizeBytes - stop.offset, droppedLogfiles: later.map((m) => m.name), savedAs: aside, goodRecords: records },
    );
    return;
  }
  adm.result(`${res}: no defective record found after the replay position; nothing changed`, { resource: res, changed: false });
}
