// Running libnbd's command-line clients (nbdinfo, nbdcopy, nbdsh) from tests. Asynchronous on
// purpose: the server under test may live in the test process and must keep serving.
import { execFile } from 'node:child_process';
import type { Test } from 'tap';
import { TOOL_PATH } from './prereqs.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function runTool(cmd: string, args: string[], timeoutMs = 120_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { ...process.env, PATH: TOOL_PATH }, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? Number((err as NodeJS.ErrnoException).code) : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** Runs a Python snippet in nbdsh connected to uri; en() and expect_err(name, fn, *args) are predefined. */
export function nbdsh(uri: string, script: string | string[]): Promise<RunResult> {
  return runTool('/usr/bin/nbdsh', [
    '-u',
    uri,
    '-c',
    [
      'import errno',
      'def en(e):',
      '    return e.errno if isinstance(e.errno, str) else errno.errorcode.get(e.errno, str(e.errno))',
      'def expect_err(name, fn, *args):',
      '    try:',
      '        fn(*args)',
      '    except nbd.Error as e:',
      '        assert en(e) == name, "expected %s, got %s (%s)" % (name, en(e), e.string)',
      '        return',
      '    raise AssertionError("expected %s, the call succeeded" % name)',
      Array.isArray(script) ? script.join('\n') : script,
    ].join('\n'),
  ]);
}

export function toolOk(t: Test, r: RunResult, what: string): void {
  t.equal(r.code, 0, `${what}${r.code !== 0 ? `: ${r.stderr.trim()}` : ''}`);
}
