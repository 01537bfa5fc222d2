// The history chain covers the logfiles' bytes (docs/tree.md "History chain"): a secondary's
// copy of a logfile altered in one record's data, with the record's checksums recomputed so
// that replay accepts it, must not end up with a versionlink equal to the primary's. Once the
// primary's versionlink names the replayed position, the secondary stops with a clear message,
// its versionlink differs, and view reports the split brain; invalidate repairs it.
import t from 'tap';
import { statSync } from 'node:fs';
import { caughtUpWith, fileDigest, startCluster, writeWorkload } from '../helpers/multi-host.js';
import type { MarsHost } from '../helpers/cluster.js';
import { forgeFetchedCopy, logPosOf, newestOwnVersion as newestOwn } from '../helpers/forge-copy.js';

const RES = 'r0';
const SIZE = 16 << 20;

/** h's newest own versionlink: its number and value. */
const newestOwnVersion = (h: MarsHost) => newestOwn(h, RES);

t.test('a forged record with valid checksums in a fetched copy: refused at the primary\'s versionlink, split brain reported, invalidate repairs', async (t) => {
  const c = await startCluster(t, { hosts: ['alpha', 'beta'], sizeBytes: SIZE, res: RES });
  const [alpha, beta] = [c.host('alpha'), c.host('beta')];
  const { seq, end } = await forgeFetchedCopy(t, c, RES, SIZE);
  await beta.until('beta stops on the content mismatch', () => /content mismatch/.test(beta.actual(RES, 'msg-err-replay-stop') ?? ''), 30_000, 50);
  const msg = beta.actual(RES, 'msg-err-replay-stop')!;
  t.match(msg, new RegExp(`content mismatch in log-${seq}-alpha at offset ${end}: split brain or damaged copy`), 'the message names the logfile and the position');
  t.equal(beta.actual(RES, 'replay-code')?.split(',')[0], '-74', 'replay-code -74');
  const ours = beta.link(`resource-${RES}/version-${seq}-beta`)!;
  t.equal(logPosOf(ours), end, 'beta replayed the copy to the same position');
  t.not(ours, alpha.link(`resource-${RES}/version-${seq}-alpha`), 'but its versionlink differs from alpha\'s');
  for (const h of [beta, alpha]) {
    await h.until(`${h.name} reports the split brain`, async () => (await h.view('is-split-brain', RES)) === '1', 30_000, 200);
  }
  const view = JSON.parse(await beta.marsadmOk(['view', RES, '--json'])) as { splitBrain?: unknown; disk?: string } | { splitBrain?: unknown }[];
  const v = Array.isArray(view) ? view[0]! : view;
  t.ok(v.splitBrain, 'view --json names the split brain');
  t.match(await beta.marsadmOk(['view', RES]), /content mismatch/, 'view shows the stop message');

  // The stop holds while alpha goes on writing: beta applies nothing more.
  const replayLink = beta.link(`resource-${RES}/replay-beta`);
  await writeWorkload(alpha, RES, SIZE, 5, 3, 2);
  await alpha.until('beta fetched the new writes', () => {
    const now = newestOwnVersion(alpha);
    return now !== undefined && now.seq === seq && logPosOf(now.value) > end && statSync(`${beta.marsDir}/resource-${RES}/log-${seq}-alpha`).size === logPosOf(now.value);
  }, 60_000, 50);
  await beta.until('beta saw the new writes', () => (beta.actual(RES, 'replay-rest') ?? '0') !== '0', 30_000, 50);
  t.equal(beta.link(`resource-${RES}/replay-beta`), replayLink, 'beta\'s replay link did not move');
  t.match(beta.actual(RES, 'msg-err-replay-stop') ?? '', /content mismatch/, 'still stopped');

  // The way out: invalidate on beta fetches the copy again and resyncs what it touched.
  await beta.marsadmOk(['invalidate', RES]);
  await beta.until('beta synced and caught up', () => beta.link(`resource-${RES}/syncstatus-beta`) === String(SIZE) && caughtUpWith(beta, alpha, RES), 90_000, 50);
  t.equal(fileDigest(beta.dataPath, SIZE), fileDigest(alpha.dataPath, SIZE), 'beta\'s disk equals alpha\'s again');
  await beta.until('beta no longer reports a split brain', async () => (await beta.view('is-split-brain', RES)) === '0', 30_000, 200);
});
