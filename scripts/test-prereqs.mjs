// Runs before `npm test`: installs, once and up front, the Debian packages the integration
// tests drive (only as root; otherwise the tests that need them stop with a message naming them).
import { execFileSync, spawnSync } from 'node:child_process';

const packages = ['libnbd-bin', 'python3-libnbd', 'nbdkit', 'fio', 'fuse3', 'e2fsprogs', 'openssh-server', 'openssh-client', 'openssl', 'prometheus'];
const missing = packages.filter((p) => spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8' }).stdout?.includes('install ok installed') !== true);
if (missing.length === 0) process.exit(0);
if (process.getuid?.() !== 0) {
  console.error(`note: Debian packages missing: ${missing.join(' ')}. Tests that need them will stop and name them; as root they install automatically.`);
  process.exit(0);
}
console.error(`installing Debian packages for the tests: ${missing.join(' ')}`);
try {
  execFileSync('sh', ['-c', `apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${missing.join(' ')} >/dev/null`], { stdio: 'inherit', timeout: 900_000 });
} catch (err) {
  console.error(`apt-get failed: ${err.message}; tests that need these packages will report it`);
}
