// A resource in a /mars tree as create-resource leaves it on a host alone, with every todo
// switch on: a ResourceRunner's first round starts the primary role (on a disk file written
// here). For tests that drive ResourceRunner rounds by hand.
import { closeSync, constants as fsc, openSync, writeFileSync } from 'node:fs';
import type { TreeStore } from '../../common/tree/store.js';
import { resPaths, TODO_KEYS } from '../../common/tree/paths.js';
import { formatReplayLink, initialVersionLinks } from '../../common/log/links.js';

export function writeLonePrimary(tree: TreeStore, res: string, host: string, diskPath: string, sizeBytes: number): void {
  writeFileSync(diskPath, Buffer.alloc(sizeBytes));
  tree.ensureDir(resPaths.dir(res));
  tree.ensureDir(resPaths.todoDir(res, host));
  tree.write(resPaths.data(res, host), diskPath);
  tree.write(resPaths.primary(res), host);
  tree.write(resPaths.syncstatus(res, host), String(sizeBytes));
  const v = initialVersionLinks(1, host);
  tree.write(resPaths.version(res, v.previous.seq, host), v.previous.value);
  tree.write(resPaths.version(res, v.current.seq, host), v.current.value);
  closeSync(openSync(tree.abs(resPaths.log(res, 1, host)), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644));
  tree.write(resPaths.replay(res, host), formatReplayLink({ seq: 1, origin: host, minPos: 0, len: 0 }));
  tree.write(resPaths.maxnr(res), '1');
  for (const key of TODO_KEYS) tree.write(resPaths.todo(res, host, key), '1');
  tree.write(resPaths.size(res), String(sizeBytes));
}
