// `marsd --stdio`, the remote command of the SSH transport: relay stdin/stdout to the running
// marsd's RUN_DIR/peer.sock (net/stdio-relay.ts). It starts once per SSH connection, so it
// loads only what it needs (node's parseArgs, not the daemon and its dependencies). The run
// directory is --run-dir, else MARS_RUN_DIR, else the one the marsd of the /mars tree
// (--mars-dir, MARS_DIR, /mars) recorded in userspace/run-dir, else /run/mars. Other daemon
// options are refused. Errors go to stderr (ssh hands them to the dialling marsd) with exit
// code 1 (2 for bad arguments); stdout carries nothing but protocol bytes.
import { parseArgs } from 'node:util';
import { readlinkSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { RelayError, runStdioRelay } from './net/stdio-relay.js';

const DEFAULT_RUN_DIR = '/run/mars';

/** The run dir the marsd of `marsDir` recorded (the link's value), if any and absolute. */
function recordedRunDir(marsDir: string): string | undefined {
  try {
    const value = readlinkSync(join(marsDir, 'userspace', 'run-dir'));
    return isAbsolute(value) ? value : undefined; // a tombstone or garbage: not a directory
  } catch {
    return undefined;
  }
}

function fail(message: string, code: number): never {
  process.stderr.write(`marsd --stdio: ${message}\n`);
  process.exit(code);
}

export function runStdioMain(argv: string[]): void {
  let values: { 'run-dir'?: string; 'mars-dir'?: string; host?: string };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        stdio: { type: 'boolean' },
        'run-dir': { type: 'string' },
        'mars-dir': { type: 'string' },
        host: { type: 'string' }, // accepted for symmetry with marsd; the relay needs no name
        quiet: { type: 'boolean' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    fail(`${(err as Error).message} (with --stdio only --run-dir, --mars-dir, --host and --quiet apply)`, 2);
  }
  const marsDir = resolve(values['mars-dir'] ?? process.env.MARS_DIR ?? '/mars');
  const runDir = resolve(values['run-dir'] ?? process.env.MARS_RUN_DIR ?? recordedRunDir(marsDir) ?? DEFAULT_RUN_DIR);
  runStdioRelay({ runDir, input: process.stdin, output: process.stdout }).then(
    () => process.exit(0),
    async (err: Error) => {
      let hint = '';
      if (err instanceof RelayError && (err.code === 'ENOENT' || err.code === 'ECONNREFUSED')) {
        // Loaded only here: the lock module pulls in a native addon.
        const { isLocked, lockHolderPid } = await import('../common/lock.js');
        hint = isLocked(marsDir)
          ? `; a marsd (pid ${lockHolderPid(marsDir) ?? '?'}) runs on ${marsDir}: give its --run-dir, or check that it has a cluster secret`
          : `; start marsd (no marsd holds ${marsDir} either)`;
      }
      fail(`${err.message}${hint}`, 1);
    });
}
