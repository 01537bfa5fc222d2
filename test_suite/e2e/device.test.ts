// marsd makes /dev/mars/NAME itself (--device-mode fuse: nbdfuse + loop, as on hosts without
// nbd.ko): ext4 made on it, mounted, written; a planned handover with app hooks that unmount on
// the old primary and mount on the new one: the old host removes its device only after the
// stop hook unmounted it, the new one makes its device and mounts it, and the file is there.
// Needs root (FUSE, losetup, mount).
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster } from '../helpers/multi-host.js';
import type { MarsHost } from '../helpers/cluster.js';
import { ensureTools, TOOL_PATH } from '../helpers/prereqs.js';
import { detachDevice } from '../../kernel-shim/attach.js';

const RES = 'r0';
const SIZE = 32 << 20;
const env = { ...process.env, PATH: TOOL_PATH };
const devDir = (h: MarsHost) => join(h.dir, 'dev');
const mnt = (h: MarsHost) => join(h.dir, 'mnt');
const link = (h: MarsHost) => join(devDir(h), RES);

function mounted(dir: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === dir);
}

function isLink(path: string): boolean {
  try { return lstatSync(path).isSymbolicLink(); } catch { return false; }
}

const missing = ensureTools(['nbdfuse', 'fusermount3', 'losetup', 'mkfs.ext4', 'e2fsck']);
if (missing) {
  t.fail(missing);
} else if (process.getuid?.() !== 0) {
  t.test('marsd makes the block device', { skip: 'needs root (FUSE mount, losetup, mount); run the tests as root' }, async () => {});
} else {
  t.test('marsd makes /dev/mars/NAME; a handover moves the mounted filesystem', async (t) => {
    const c = await startCluster(t, {
      hosts: ['alpha', 'beta'], sizeBytes: SIZE, res: RES,
      hostArgs: (h) => ['--device-mode', 'fuse', '--device-dir', join(h.dir, 'dev')],
    });
    const [alpha, beta] = [c.host('alpha'), c.host('beta')];
    // Whatever happens: unmount, then remove devices marsd left (after marsd is gone).
    t.teardown(async () => {
      for (const h of c.hosts) {
        if (mounted(mnt(h))) spawnSync('umount', ['-l', mnt(h)], { env });
        await detachDevice({ name: RES, runDir: h.runDir, linkDir: devDir(h) }).catch(() => undefined);
      }
    });
    for (const h of c.hosts) mkdirSync(mnt(h), { recursive: true });

    await alpha.until('alpha made its device', () => isLink(link(alpha)) && alpha.actual(RES, 'device') === link(alpha), 30_000);
    const wait = await alpha.marsadm(['wait-resource', RES, 'device', '--timeout', '10']);
    t.equal(wait.code, 0, `wait-resource device succeeds: ${wait.stderr}`);
    t.match(readlinkSync(link(alpha)), /^\/dev\/loop\d+$/, 'the link points at a loop device');
    t.notOk(existsSync(link(beta)), 'the secondary has no device');
    const view = await alpha.marsadmOk(['view', RES]);
    t.match(view, new RegExp(`BlockDevice ${link(alpha)}`), 'view shows the device');
    t.equal((await alpha.marsadmOk(['view-device', RES])).trim(), link(alpha), 'view-device prints it');

    execFileSync('mkfs.ext4', ['-q', '-F', link(alpha)], { env });
    execFileSync('mount', [link(alpha), mnt(alpha)], { env });
    const payload = `written on alpha ${Date.now()}\n`;
    writeFileSync(join(mnt(alpha), 'hello.txt'), payload);
    execFileSync('sync', [], { env });
    await alpha.until('the mount counts as an opener', () => alpha.actual(RES, 'open-count') === '1', 20_000);

    for (const h of c.hosts) {
      await h.marsadmOk(['set-app-hooks', RES, '--start', `mount ${link(h)} ${mnt(h)}`, '--stop', `umount ${mnt(h)}`]);
    }
    await beta.until('beta knows alpha can stop its application', () => beta.link(`resource-${RES}/actual-alpha/has-app-stop`) === '1', 20_000);
    const out = await beta.marsadm(['primary', RES, '--timeout', '90']);
    t.equal(out.code, 0, `marsadm primary on beta succeeds${out.code !== 0 ? `: ${out.stderr}` : ''}`);
    t.notOk(mounted(mnt(alpha)), 'alpha\'s stop hook unmounted');
    await alpha.until('alpha removed its device', () => !existsSync(link(alpha)) && alpha.actual(RES, 'device') === '(none)', 30_000);
    await beta.until('beta made its device and its start hook mounted it', () => isLink(link(beta)) && mounted(mnt(beta)), 60_000);
    t.equal(readFileSync(join(mnt(beta), 'hello.txt'), 'utf8'), payload, 'the file written on alpha is on beta');
    writeFileSync(join(mnt(beta), 'second.txt'), 'on beta\n');

    // secondary: the stop hook unmounts, then the device goes, then the role.
    const sec = await beta.marsadm(['secondary', RES, '--timeout', '60']);
    t.equal(sec.code, 0, `secondary succeeds: ${sec.stderr}`);
    t.notOk(mounted(mnt(beta)), 'unmounted by the stop hook');
    await beta.until('beta removed its device', () => !existsSync(link(beta)), 30_000);
    t.notOk(existsSync(join(beta.runDir, 'attach', `${RES}.json`)), 'no attach state left');
  });
}
