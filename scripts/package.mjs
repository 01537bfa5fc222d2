#!/usr/bin/env node
// `npm run package`: builds the Debian package build/mars_VERSION_ARCH.deb with dpkg-deb.
// /usr/lib/mars holds the compiled program (dist/ without the tests) and its production
// node_modules (those `npm ls --omit=dev` names, copied from this checkout: native modules as
// built here, hence the architecture of this machine); /usr/sbin/marsd and marsadm run it with
// the nodejs package's node. Units, cron file, /etc/default/mars, man pages and bash completion
// come from packaging/ and the generators beside this script. Nothing in the package touches
// /mars: removing it leaves the tree and the data alone.
import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const sh = (cmd, args, opts = {}) => execFileSync(cmd, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20, ...opts });
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
const arch = sh('dpkg', ['--print-architecture']).trim();
const OUT = resolve(process.argv.slice(2).find((a) => !a.startsWith('--')) ?? join(ROOT, 'build'));
const STAGE = join(OUT, 'deb-root');
const LIB = join(STAGE, 'usr/lib/mars');

function write(path, text, mode = 0o644) {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
  chmodSync(path, mode);
}

function copyFile(from, to, mode = 0o644) {
  mkdirSync(dirname(to), { recursive: true });
  cpSync(join(ROOT, from), to);
  chmodSync(to, mode);
}

/** The production packages as directories relative to the checkout (nested ones included). */
function productionModules() {
  const lines = sh('npm', ['ls', '--omit=dev', '--all', '--parseable']).split('\n').map((l) => l.trim()).filter(Boolean);
  return lines.map((l) => relative(ROOT, l)).filter((p) => p.startsWith('node_modules'));
}

function stageProgram() {
  for (const dir of ['common', 'daemon', 'kernel-shim', 'marsadm']) cpSync(join(ROOT, 'dist', dir), join(LIB, 'dist', dir), { recursive: true });
  cpSync(join(ROOT, 'bin'), join(LIB, 'bin'), { recursive: true });
  // The native read helper (common/disk/nowait-read.ts), when npm install could build it.
  const addon = 'native/build/Release/mars_io.node';
  if (existsSync(join(ROOT, addon))) copyFile(addon, join(LIB, addon));
  for (const f of ['package.json', 'package-lock.json', 'COPYING']) copyFile(f, join(LIB, f));
  const modules = productionModules();
  for (const m of modules) {
    // Each package without its own node_modules: its nested production packages are listed too.
    const src = join(ROOT, m);
    cpSync(src, join(LIB, m), { recursive: true, dereference: true, filter: (p) => p === src || !p.startsWith(join(src, 'node_modules')) });
  }
  return modules.length;
}

function stageSystem() {
  for (const [name, cmd] of [['marsd', 'marsd'], ['marsadm', 'marsadm']]) {
    write(join(STAGE, 'usr/sbin', name), `#!/bin/sh\n# ${name} of the mars package: the program lives in /usr/lib/mars.\nexec /usr/bin/node /usr/lib/mars/bin/${cmd}.js "$@"\n`, 0o755);
  }
  for (const unit of readdirSync(join(ROOT, 'packaging/systemd'))) copyFile(`packaging/systemd/${unit}`, join(STAGE, 'lib/systemd/system', unit));
  copyFile('packaging/cron/mars', join(STAGE, 'etc/cron.d/mars'));
  copyFile('packaging/default/mars', join(STAGE, 'etc/default/mars'));
  sh(process.execPath, ['scripts/gen-man.mjs', join(OUT, 'man')], { stdio: ['ignore', 'ignore', 'inherit'] });
  for (const page of ['marsd.8', 'marsadm.8']) {
    write(join(STAGE, 'usr/share/man/man8', `${page}.gz`), gzipSync(readFileSync(join(OUT, 'man', page)), { level: 9 }));
  }
  const completions = join(STAGE, 'usr/share/bash-completion/completions');
  sh(process.execPath, ['scripts/gen-completion.mjs', join(completions, 'marsadm')], { stdio: ['ignore', 'ignore', 'inherit'] });
  symlinkSync('marsadm', join(completions, 'marsd'));
  const docs = join(STAGE, 'usr/share/doc/mars');
  copyFile('README.md', join(docs, 'README.md'));
  copyFile('docs/manual.md', join(docs, 'manual.md'));
  write(join(docs, 'copyright'), `mars-userspace ${pkg.version}\nLicense: ${pkg.license}\nThe full text is in /usr/lib/mars/COPYING.\n`);
  write(join(docs, 'changelog.gz'), gzipSync(readFileSync(join(ROOT, 'ChangeLog')), { level: 9 }));
}

function duKiB(dir) {
  let bytes = 0;
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) bytes += statSync(p).size;
    }
  };
  walk(dir);
  return Math.ceil(bytes / 1024);
}

function stageControl() {
  const control = [
    'Package: mars',
    `Version: ${pkg.version}`,
    `Architecture: ${arch}`,
    'Maintainer: mars-userspace developers <root@localhost>',
    `Installed-Size: ${duKiB(STAGE)}`,
    'Depends: nodejs (>= 20)',
    'Recommends: nbd-client | libnbd-bin, fuse3, mount',
    'Section: admin',
    'Priority: optional',
    `Description: ${pkg.description}`,
    ' marsd (the daemon: transaction logger, replication, /dev/mars devices) and',
    ' marsadm (the admin tool), with systemd units, a cron file, man pages and',
    ' bash completion. Removing the package leaves /mars alone.',
    '',
  ].join('\n');
  write(join(STAGE, 'DEBIAN/control'), control);
  write(join(STAGE, 'DEBIAN/conffiles'), '/etc/cron.d/mars\n/etc/default/mars\n');
  const reload = 'if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || true; fi\n';
  // Nothing is enabled or started by the package: the admin does that (docs/manual.md).
  write(join(STAGE, 'DEBIAN/postinst'), `#!/bin/sh\nset -e\n${reload}exit 0\n`, 0o755);
  write(join(STAGE, 'DEBIAN/prerm'), '#!/bin/sh\nset -e\nif [ "$1" = remove ] && [ -d /run/systemd/system ]; then\n  systemctl stop mars-cron.timer marsd.service >/dev/null 2>&1 || true\nfi\nexit 0\n', 0o755);
  write(join(STAGE, 'DEBIAN/postrm'), `#!/bin/sh\nset -e\n${reload}exit 0\n`, 0o755);
}

function main() {
  // The tests set --no-build: dist/ is built already, and rewriting it would race other tests.
  if (!process.argv.includes('--no-build')) {
    process.stderr.write('package: building dist/\n');
    sh('npx', ['tsc', '-p', 'tsconfig.json'], { stdio: ['ignore', 'inherit', 'inherit'] });
  }
  rmSync(STAGE, { recursive: true, force: true });
  mkdirSync(STAGE, { recursive: true });
  const modules = stageProgram();
  stageSystem();
  stageControl();
  const deb = join(OUT, `mars_${pkg.version}_${arch}.deb`);
  sh('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', STAGE, deb], { stdio: ['ignore', 'ignore', 'inherit'] });
  rmSync(STAGE, { recursive: true, force: true });
  process.stdout.write(`${deb} (${Math.round(statSync(deb).size / 1024)} KiB, ${modules} production packages)\n`);
  if (!existsSync(deb)) process.exit(1);
}

main();
