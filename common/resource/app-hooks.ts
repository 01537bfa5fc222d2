// The application on top of a resource (a filesystem mount, a database unit): commands this
// host runs when it becomes primary (start) and before it gives the role up while the device is
// open (stop), so that a handover is one `marsadm primary` on the new host. Configured per host
// and resource in the local, never propagated `userspace/app-start-NAME` and
// `userspace/app-stop-NAME` links (`marsadm set-app-hooks`); typically `systemctl start/stop UNIT`.
import type { TreeStore } from '../tree/store.js';

export type HookKind = 'start' | 'stop';

export function hookPath(kind: HookKind, res: string): string {
  return `userspace/app-${kind}-${res}`;
}

export function readHook(tree: TreeStore, kind: HookKind, res: string): string | undefined {
  const cmd = tree.value(hookPath(kind, res));
  return cmd === undefined || cmd.trim() === '' ? undefined : cmd;
}
