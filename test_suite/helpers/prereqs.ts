// Debian tools that the integration tests drive for real. As root we install what is missing
// (CI starts from a bare machine); otherwise we stop with a message naming the packages.
import { execFileSync, spawnSync } from 'node:child_process';

/** command -> Debian package that provides it */
export const TOOL_PACKAGES: Record<string, string> = {
  nbdinfo: 'libnbd-bin',
  nbdcopy: 'libnbd-bin',
  nbdfuse: 'libnbd-bin',
  nbdsh: 'python3-libnbd',
  nbdkit: 'nbdkit',
  fio: 'fio',
  fusermount3: 'fuse3',
  'mkfs.ext4': 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  losetup: 'mount',
  rsync: 'rsync',
  ssh: 'openssh-client',
  'ssh-keygen': 'openssh-client',
  sshd: 'openssh-server',
  python3: 'python3',
  'systemd-analyze': 'systemd',
  man: 'man-db',
};

export function hasTool(tool: string): boolean {
  if (tool === 'nbdsh') {
    // nbdsh needs Debian's python3 with the nbd module, not a pyenv python earlier on PATH.
    return spawnSync('/usr/bin/python3', ['-c', 'import nbd'], { stdio: 'ignore' }).status === 0
      && spawnSync('sh', ['-c', 'command -v nbdsh'], { stdio: 'ignore' }).status === 0;
  }
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore', env: { PATH: `/usr/sbin:/sbin:${process.env.PATH}` } }).status === 0;
}

/** Returns null when all tools are present (installing them as root), else an error message. */
export function ensureTools(tools: string[]): string | null {
  let missing = tools.filter((t) => !hasTool(t));
  if (missing.length === 0) return null;
  const packages = [...new Set(missing.map((t) => TOOL_PACKAGES[t] ?? t))];
  if (process.getuid?.() !== 0) {
    return `missing tools ${missing.join(', ')}: install the Debian packages ${packages.join(' ')} (apt-get install ${packages.join(' ')})`;
  }
  try {
    execFileSync('sh', ['-c', `apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${packages.join(' ')}`], { stdio: 'ignore', timeout: 600_000 });
  } catch (err) {
    return `installing ${packages.join(' ')} failed: ${(err as Error).message}`;
  }
  missing = tools.filter((t) => !hasTool(t));
  return missing.length === 0 ? null : `still missing after install: ${missing.join(', ')}`;
}

/** PATH for child processes: Debian's python3 first so nbdsh finds its module. */
export const TOOL_PATH = `/usr/bin:/usr/sbin:/sbin:${process.env.PATH ?? ''}`;
