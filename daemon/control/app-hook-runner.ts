// Runs an application hook (common/resource/app-hooks.ts says where they are configured):
// /bin/sh with the resource's environment, its own process group, a timeout, the output tail.
import { spawn } from 'node:child_process';

export const HOOK_TIMEOUT_MS = 120_000;
const OUTPUT_TAIL_BYTES = 2_000;

export interface HookResult {
  ok: boolean;
  /** exit code, signal, or why it could not run; with the tail of its output */
  detail: string;
}

/**
 * Run a hook through /bin/sh with MARS_RESOURCE, MARS_HOST and MARS_SOCKET set. Never throws;
 * a hook that outlives timeoutMs is killed (its process group) and reported as failed.
 */
export function runHook(cmd: string, env: { res: string; host: string; socket: string }, timeoutMs = HOOK_TIMEOUT_MS): Promise<HookResult> {
  return new Promise((resolve) => {
    let output = '';
    const child = spawn('/bin/sh', ['-c', cmd], {
      env: { ...process.env, MARS_RESOURCE: env.res, MARS_HOST: env.host, MARS_SOCKET: env.socket },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group: a timeout kills the whole hook
    });
    const keep = (chunk: Buffer) => { output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_BYTES); };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = setTimeout(() => {
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ }
    }, timeoutMs);
    child.on('error', (err) => { clearTimeout(timer); resolve({ ok: false, detail: `cannot run: ${err.message}` }); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const tail = output.trim().split('\n').slice(-3).join(' | ');
      const how = code === 0 ? 'exit 0' : code !== null ? `exit ${code}` : `killed by ${signal}${signal === 'SIGKILL' ? ` (timeout ${timeoutMs} ms?)` : ''}`;
      resolve({ ok: code === 0, detail: tail ? `${how}: ${tail}` : how });
    });
  });
}
