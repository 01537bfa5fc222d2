// `npm run package` end to end, as an administrator would use it: the .deb is built, installed
// with dpkg -i into this (throwaway, root) system, its units pass systemd-analyze verify, its man
// pages and completion are found, and a one-host smoke test runs from the installed files only:
// create-cluster, create-resource, marsd (READY=1 over a NOTIFY_SOCKET, /dev/mars/NAME made with
// nbdfuse + loop), a write through the device read back, view. dpkg -r removes the program and
// leaves the tree alone. Every tree and device of the test lives in a temporary directory.
import t from 'tap';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, freePort } from '../helpers/cluster.js';
import { ensureTools, hasTool, TOOL_PATH } from '../helpers/prereqs.js';
import { tempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { detachDevice } from '../../kernel-shim/attach.js';
import { MARSD_VERSION } from '../../common/version.js';

const env = { ...process.env, PATH: TOOL_PATH };
const run = (cmd: string, args: string[], timeoutMs = 120_000) => spawnSync(cmd, args, { env, encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 });
const isLink = (p: string) => { try { return lstatSync(p).isSymbolicLink(); } catch { return false; } };
const installed = () => run('dpkg-query', ['-W', '-f=${Status}', 'mars']).stdout.includes('install ok installed');

const missing = ensureTools(['nbdfuse', 'fusermount3', 'losetup', 'python3']);
if (missing) {
  t.fail(missing);
} else if (process.getuid?.() !== 0) {
  t.test('the Debian package', { skip: 'dpkg -i needs root; run the tests as root' }, async () => {});
} else if (!hasTool('dpkg-deb') || !hasTool('systemd-analyze') || !hasTool('man')) {
  t.fail('dpkg-deb, systemd-analyze and man are needed: apt-get install dpkg systemd man-db (.ci/run installs them)');
} else if (installed()) {
  t.fail('a package named mars is installed already; remove it (dpkg -r mars) before this test, which installs and removes its own');
} else {
  t.test('npm run package: install, verify, smoke test, remove', async (t) => {
    const dir = tempDir(t, 'mars-package-');
    const out = join(dir, 'out');
    let marsd: ChildProcess | undefined;
    let receiver: ChildProcess | undefined;
    const [marsDir, runDir, devDir] = [join(dir, 'mars'), join(dir, 'run'), join(dir, 'dev')];
    t.teardown(async () => {
      for (const p of [marsd, receiver]) if (p?.pid !== undefined && p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
      await detachDevice({ name: 'smoke', runDir, linkDir: devDir }).catch(() => undefined);
      // Purge: the conffiles dpkg -r keeps (/etc/default/mars, /etc/cron.d/mars) go too.
      run('dpkg', ['-P', 'mars']);
    });

    const built = run(process.execPath, [join(REPO_ROOT, 'scripts/package.mjs'), out, '--no-build'], 300_000);
    t.equal(built.status, 0, `npm run package builds${built.status !== 0 ? `: ${built.stderr}` : ''}`);
    const deb = readdirSync(out).find((f) => /^mars_.*\.deb$/.test(f));
    if (!deb) return t.fail('no .deb was built');
    const info = run('dpkg-deb', ['-f', join(out, deb), 'Depends', 'Recommends']).stdout;
    t.match(info, /Depends: nodejs \(>= 20\)/);
    t.match(info, /Recommends: .*nbd-client.*libnbd-bin/);

    const inst = run('dpkg', ['-i', join(out, deb)]);
    t.equal(inst.status, 0, `dpkg -i installs${inst.status !== 0 ? `: ${inst.stderr}` : ''}`);
    t.equal(run('/usr/sbin/marsadm', ['--version']).stdout.trim(), MARSD_VERSION, 'the installed marsadm runs');
    t.match(run('/usr/sbin/marsd', ['--help']).stdout, /--device-mode/, 'the installed marsd runs');
    for (const f of ['/lib/systemd/system/marsd.service', '/lib/systemd/system/mars-cron.timer', '/etc/cron.d/mars', '/etc/default/mars']) t.ok(existsSync(f), `${f} installed`);
    const verify = run('systemd-analyze', ['verify', ...['marsd.service', 'mars-cron.service', 'mars-cron.timer', 'mars-mount@.service'].map((u) => `/lib/systemd/system/${u}`)]);
    t.equal(verify.status, 0, `systemd-analyze verify is clean: ${verify.stderr}`);
    t.equal(verify.stderr.trim(), '', 'no warnings');
    t.match(run('man', ['-w', 'marsadm']).stdout, /marsadm\.8/, 'man marsadm is found');
    t.match(run('man', ['-P', 'cat', 'marsd']).stdout, /--device-mode/, 'marsd(8) lists the options of --help');

    // One host, from the installed files only.
    const adm = (args: string[]) => run('/usr/sbin/marsadm', ['--mars-dir', marsDir, '--host', 'smoke', '--run-dir', runDir, ...args]);
    const port = await freePort();
    const cc = adm(['create-cluster', '--listen', `127.0.0.1:${port}`]);
    t.equal(cc.status, 0, `create-cluster: ${cc.stderr}`);
    const data = join(dir, 'data.img');
    writeFileSync(data, Buffer.alloc(0));
    execFileSync('truncate', ['-s', '16M', data]);
    const notify = join(dir, 'notify.sock');
    receiver = spawn('python3', ['-c', 'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\ns.settimeout(120)\nprint(s.recv(4096).decode(),flush=True)', notify], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let notified = '';
    receiver.stdout!.on('data', (b: Buffer) => { notified += b.toString(); });
    await waitFor('the notify socket', () => existsSync(notify), 20_000);
    marsd = spawn('/usr/sbin/marsd', ['--mars-dir', marsDir, '--host', 'smoke', '--run-dir', runDir, '--device-mode', 'fuse', '--device-dir', devDir],
      { env: { ...env, NOTIFY_SOCKET: notify }, stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    marsd.stderr!.on('data', (b: Buffer) => { log += b.toString(); });
    await waitFor('READY=1 from marsd', () => notified.includes('READY=1'), 30_000);
    t.match(notified, new RegExp(`MAINPID=${marsd.pid}`), 'sent by marsd itself');
    const cr = adm(['create-resource', 'smoke', data]);
    t.equal(cr.status, 0, `create-resource: ${cr.stderr}`);
    const link = join(devDir, 'smoke');
    await waitFor('/dev/mars/smoke (in the temp dir)', () => isLink(link), 30_000).catch((e) => { throw new Error(`${(e as Error).message}; marsd log: ${log}`); });
    const block = randomBytes(1 << 20);
    writeFileSync(join(dir, 'block'), block);
    const dd = run('dd', [`if=${join(dir, 'block')}`, `of=${link}`, 'bs=1M', 'count=1', 'seek=3', 'oflag=direct', 'conv=fsync,notrunc', 'status=none']);
    t.equal(dd.status, 0, `dd through the device: ${dd.stderr}`);
    const back = run('dd', [`if=${link}`, `of=${join(dir, 'back')}`, 'bs=1M', 'count=1', 'skip=3', 'iflag=direct', 'status=none']);
    t.equal(back.status, 0);
    t.ok(readFileSync(join(dir, 'back')).equals(block), 'read back what was written');
    const complete = (words: string[]) => run('bash', ['-c', `source /usr/share/bash-completion/completions/marsadm; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _marsadm; echo "\${COMPREPLY[*]}"`]).stdout.trim();
    t.equal(complete(['marsadm', 'set-sync-l']), 'set-sync-limit-value', 'completion: commands');
    t.equal(complete(['marsadm', '--mars-dir', marsDir, 'primary', '']), 'smoke all', 'completion: resources of --mars-dir');
    t.match(complete(['marsadm', 'wait-resource', 'smoke', 'dev']), /device/, 'completion: wait conditions');
    t.match(complete(['marsadm', 'view-']), /view-role/, 'completion: view macros');
    const view = adm(['view', 'smoke']);
    t.match(view.stdout, /smoke .*Primary smoke/, 'view shows the primary');
    t.match(view.stdout, /BlockDevice /, 'view shows the device');

    marsd.kill('SIGTERM');
    await waitFor('marsd to exit', () => marsd!.exitCode !== null || marsd!.signalCode !== null, 60_000);
    t.equal(marsd.exitCode, 0, 'marsd stops cleanly');
    t.notOk(existsSync(link), 'marsd removed its unused device on stop');

    // dpkg -r: the program goes, the tree stays.
    mkdirSync(join(dir, 'probe'), { recursive: true });
    const rm = run('dpkg', ['-r', 'mars']);
    t.equal(rm.status, 0, `dpkg -r: ${rm.stderr}`);
    t.notOk(existsSync('/usr/sbin/marsadm'), 'marsadm removed');
    t.ok(isLink(join(marsDir, 'uuid')) && existsSync(join(marsDir, 'resource-smoke')), 'the tree is untouched');
  });
}
