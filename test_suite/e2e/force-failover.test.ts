// primary --force never promotes a torn disk (issue 12): a replica whose sync is paused half
// way is refused whatever the flags, and nothing changes; the refusal names the consistent
// member that could take over. On a consistent replica behind the primary, --force says how
// many bytes of the old primary's history it lacks, and takes over.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { startCluster, writeWorkload } from '../helpers/multi-host.js';

const RES = 'r0';
const SIZE = 32 << 20;

t.test('--force refused on a half-synced replica, accepted on a consistent one', async (t) => {
  const c = await startCluster(t, { hosts: ['fa', 'fb', 'fc'], sizeBytes: SIZE, res: RES, proxied: true, joinResource: false,
    // Real data on fa: a fast sync of zeros against zeros would finish before it can be paused.
    initData: (h) => { if (h.name === 'fa') writeFileSync(h.dataPath, randomBytes(SIZE)); } });
  const [a, b, cc] = c.hosts as [typeof c.hosts[0], typeof c.hosts[0], typeof c.hosts[0]];
  await writeWorkload(a, RES, SIZE, 100, 1);
  // fc joins normally and becomes consistent.
  await cc.until('fc learned r0', () => cc.link(`resource-${RES}/replay-${a.name}`) !== undefined, 30_000);
  await cc.marsadmOk(['join-resource', RES, cc.dataPath]);
  await cc.until('fc synced', () => cc.link(`resource-${RES}/syncstatus-${cc.name}`) === String(SIZE), 60_000, 50);
  // fb's sync runs through a slow link into fa and is paused half way.
  for (const h of [a, b]) c.proxy(h.name).setBandwidth(1 << 20);
  await b.until('fb learned r0', () => b.link(`resource-${RES}/replay-${a.name}`) !== undefined, 30_000);
  await b.marsadmOk(['join-resource', RES, b.dataPath]);
  // syncstatus is persisted every 64 MiB, so on this 32 MiB disk the copying shows in sync-rate.
  await b.until('fb synced a part', () => Number(b.actual(RES, 'sync-rate') ?? '0') > 0, 30_000, 20);
  await b.marsadmOk(['pause-sync', RES]);
  for (const h of [a, b]) c.proxy(h.name).setBandwidth(0);
  const synced = Number(b.link(`resource-${RES}/syncstatus-${b.name}`));
  t.ok(synced < SIZE, `fb's sync stopped half way (${synced} of ${SIZE} bytes recorded)`);

  // fa is lost for good.
  a.kill('SIGKILL');
  await a.waitExit();
  const before = b.link(`resource-${RES}/primary`);
  for (const flags of [['--force'], ['--force', '--ignore-sync'], ['--ignore-sync']]) {
    const r = await b.marsadm(['primary', RES, ...flags, '--timeout', '5']);
    t.equal(r.code, 1, `primary ${flags.join(' ')} refused on the half-synced fb`);
    t.match(r.stderr, /refusing to make fb primary of r0.*sync is not complete/);
    t.match(r.stderr, /Consistent members that could be promoted instead: fc \(replayed to log-\d{9}-fa,\d+,\d+/, 'names fc and its replayed position');
  }
  t.equal(b.link(`resource-${RES}/primary`), before, 'nothing changed: the primary link is untouched');
  t.equal(b.link(`resource-${RES}/todo-${b.name}/primary-mode`), undefined, 'no primary mode recorded');
  t.not(b.actual(RES, 'is-primary'), '1');

  const forced = await cc.marsadm(['primary', RES, '--force', '--json', '--timeout', '60']);
  t.equal(forced.code, 0, `primary --force accepted on the consistent fc${forced.code ? `: ${forced.stderr}` : ''}`);
  const out = JSON.parse(forced.stdout) as { active: boolean; lackingBytes: number | null };
  t.ok(out.active, 'fc is primary');
  t.type(out.lackingBytes, 'number', 'it says how many bytes of fa\'s history it lacks');
  await cc.waitPrimary(RES);
});
