// set-app-hooks: the commands marsd runs for the application on top of a resource on this
// host (common/resource/app-hooks.ts): start when it becomes primary, stop before it gives the
// role up with the device open. Local to this host, never propagated.
import { AdmError, type Adm } from '../context.js';
import { hookPath, readHook, type HookKind } from '../../common/resource/app-hooks.js';

const MAX_HOOK_CHARS = 1000;

function checkCommand(kind: HookKind, cmd: string): string {
  if (cmd.length > MAX_HOOK_CHARS) throw new AdmError(`the ${kind} command is longer than ${MAX_HOOK_CHARS} characters: put it in a script`, 2);
  if (/[\0\n\r]/.test(cmd)) throw new AdmError(`the ${kind} command must be one line without NUL characters`, 2);
  return cmd.trim();
}

export function setAppHooks(adm: Adm, name: string, opts: { start?: string; stop?: string }): void {
  const res = adm.requireResource(name);
  adm.requireMember(res);
  const { tree } = adm;
  tree.ensureDir('userspace');
  for (const kind of ['start', 'stop'] as const) {
    const cmd = opts[kind];
    if (cmd === undefined) continue;
    const clean = checkCommand(kind, cmd);
    if (clean === '') tree.remove(hookPath(kind, res));
    else tree.write(hookPath(kind, res), clean, { durable: true });
  }
  adm.trigger();
  const start = readHook(tree, 'start', res);
  const stop = readHook(tree, 'stop', res);
  adm.result(`${res} on ${adm.host}: start hook ${start ? JSON.stringify(start) : '(none)'}; stop hook ${stop ? JSON.stringify(stop) : '(none)'}`, { resource: res, host: adm.host, start: start ?? null, stop: stop ?? null });
}
