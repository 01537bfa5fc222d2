// A description of the machine and tool versions, for the report.
import { execFileSync } from 'node:child_process';
import { readFileSync, statfsSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { benchDirTemplate, REPO_ROOT } from './paths.js';
import { toolEnv } from './proc.js';

export interface Machine {
  cpuModel: string;
  cores: number;
  ramBytes: number;
  kernel: string;
  os: string;
  /** the run's temporary directory; $BENCHDIR in the reports */
  benchDir: string;
  /** where it was made, as mkdtemp's template (e.g. /tmp/mars-bench-XXXXXX); absent in older data */
  benchDirTemplate?: string;
  filesystem: string;
  freeBytesAtStart: number;
  loadAvgAtStart: number[];
  node: string;
  fio: string;
  nbdkit: string;
  nbdcopy: string;
  gitCommit: string;
}

function firstLine(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { env: toolEnv(), encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 }).trim().split('\n')[0] ?? '';
  } catch {
    return '(unknown)';
  }
}

export function freeBytes(dir: string): number {
  const s = statfsSync(dir);
  return Number(s.bavail) * Number(s.bsize);
}

export function describeMachine(benchDir: string): Machine {
  const cpuinfo = (() => {
    try { return readFileSync('/proc/cpuinfo', 'utf8'); } catch { return ''; }
  })();
  const os = (() => {
    try { return /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? ''; } catch { return ''; }
  })();
  const fs = firstLine('findmnt', ['-n', '-o', 'FSTYPE,SOURCE,OPTIONS', '--target', benchDir]).replace(/\s+/g, ' ');
  let git = firstLine('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD']);
  const dirty = firstLine('git', ['-C', REPO_ROOT, 'status', '--porcelain', '--untracked-files=no']);
  if (dirty && dirty !== '(unknown)') git += ' (with uncommitted changes)';
  return {
    cpuModel: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? cpus()[0]?.model ?? '(unknown)',
    cores: cpus().length,
    ramBytes: totalmem(),
    kernel: release(),
    os,
    benchDir,
    benchDirTemplate: benchDirTemplate(benchDir),
    filesystem: fs,
    freeBytesAtStart: freeBytes(benchDir),
    loadAvgAtStart: loadavg().map((x) => Math.round(x * 100) / 100),
    node: process.version,
    fio: firstLine('fio', ['--version']),
    nbdkit: firstLine('nbdkit', ['--version']),
    nbdcopy: firstLine('nbdcopy', ['--version']),
    gitCommit: git,
  };
}
