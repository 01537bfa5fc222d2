// A content-mismatch stop (docs/tree.md "History chain") must survive a crash of the
// secondary's marsd: after SIGKILL and a restart the secondary still reports the mismatch at the
// same position (replay-code -74, view DefectiveLog and, while the links name the same position,
// SPLIT BRAIN), its replay link does not move and its disk receives none of the origin's later
// writes, also when the origin's versionlink has meanwhile moved past the position (then the
// content check alone no longer sees the difference). invalidate still repairs it.
import t from 'tap';
import { statSync, unlinkSync } from 'node:fs';
import { caughtUpWith, fileDigest, startCluster, writeWorkload } from '../helpers/multi-host.js';
import type { MarsHost } from '../helpers/cluster.js';
import { forgeFetchedCopy, logPosOf, newestOwnVersion } from '../helpers/forge-copy.js';

const RES = 'r0';
const SIZE = 16 << 20;

/**
 * SIGKILL h's marsd and start it again. The status links that say whether replay stopped are
 * removed while it is down, so what is read afterwards was published by the new marsd.
 */
async function crashAndRestart(h: MarsHost): Promise<void> {
  const oldPid = h.link(`actual-${h.name}/pid`);
  if (!h.kill('SIGKILL')) throw new Error(`marsd of ${h.name} was not running`);
  const exit = await h.waitExit();
  if (exit.signal !== 'SIGKILL') throw new Error(`marsd of ${h.name} exited with ${JSON.stringify(exit)}, not by SIGKILL`);
  for (const key of ['replay-code', 'msg-err-replay-stop']) {
    try { unlinkSync(`${h.marsDir}/resource-${RES}/actual-${h.name}/${key}`); } catch { /* not there */ }
  }
  await h.start();
  if (h.link(`actual-${h.name}/pid`) === oldPid) throw new Error(`marsd of ${h.name} still has the old pid ${oldPid}`);
}

t.test('a content-mismatch stop survives SIGKILL and restart of the secondary; invalidate still repairs it', async (t) => {
  const c = await startCluster(t, { hosts: ['alpha', 'beta'], sizeBytes: SIZE, res: RES });
  const [alpha, beta] = [c.host('alpha'), c.host('beta')];
  // The mismatch, produced as in content-chain.test.ts.
  const { seq, end } = await forgeFetchedCopy(t, c, RES, SIZE);

  const mismatchAtEnd = new RegExp(`content mismatch in log-${seq}-alpha at offset ${end}: split brain or damaged copy`);
  const stoppedLink = `log-${seq}-alpha,${end},0`;
  const replayLink = () => beta.link(`resource-${RES}/replay-beta`);
  /** beta (re)publishes the stop at `end`; once stopped there, fails at once if its replay link moves. */
  const mismatchReported = (when: string, stoppedAlready = true) => beta.until(`beta reports the content mismatch at ${end} (${when})`, () => {
    const link = replayLink();
    if (!stoppedAlready && link !== stoppedLink) return false;
    if (link !== stoppedLink) throw new Error(`${when}: beta's replay link moved to ${link}, the mismatch was at ${stoppedLink}; msg: ${beta.actual(RES, 'msg-err-replay-stop')}`);
    return mismatchAtEnd.test(beta.actual(RES, 'msg-err-replay-stop') ?? '') && beta.actual(RES, 'replay-code')?.split(',')[0] === '-74';
  }, 30_000, 50);
  await mismatchReported('before any restart', false);
  const keptLink = `resource-${RES}/content-mismatch-beta`;
  t.equal(beta.link(keptLink), `log-${seq}-alpha,${end}`, 'beta keeps the stop in its local link content-mismatch-beta');
  const disk = fileDigest(beta.dataPath, SIZE);
  t.not(disk, fileDigest(alpha.dataPath, SIZE), 'beta\'s disk holds the forged write (it differs from alpha\'s)');
  await beta.until('beta reports the split brain', async () => (await beta.view('is-split-brain', RES)) === '1', 30_000, 200);

  /** What must hold after every restart. */
  const stillStopped = async (when: string) => {
    await mismatchReported(when);
    t.match(beta.actual(RES, 'msg-err-replay-stop') ?? '', mismatchAtEnd, `${when}: the message names the logfile and the position`);
    t.equal(beta.actual(RES, 'replay-code')?.split(',')[0], '-74', `${when}: replay-code -74`);
    t.match(await beta.view('diskstate', RES), /^DefectiveLog\[code=-74\]/, `${when}: view shows DefectiveLog, not UpToDate`);
    t.equal(replayLink(), stoppedLink, `${when}: the replay link stays at the mismatch`);
    t.equal(logPosOf(beta.link(`resource-${RES}/version-${seq}-beta`) ?? ''), end, `${when}: beta's versionlink stays at the mismatch`);
    t.equal(fileDigest(beta.dataPath, SIZE), disk, `${when}: beta's disk received nothing more`);
  };

  // Restart 1: both versionlinks still name the mismatch position.
  await crashAndRestart(beta);
  await stillStopped('after the first restart');
  await beta.until('beta reports the split brain after the first restart', async () => (await beta.view('is-split-brain', RES)) === '1', 30_000, 200);
  t.equal(await beta.view('is-split-brain', RES), '1', 'after the first restart: is-split-brain 1');

  // alpha writes on; beta fetches the bytes and alpha's newer versionlink and applies nothing.
  const fetchedUpTo = async (what: string, min: number): Promise<number> => {
    let logPos = 0;
    await alpha.until(what, () => {
      const now = newestOwnVersion(alpha, RES);
      if (now === undefined || now.seq !== seq) return false;
      logPos = logPosOf(now.value);
      const betaKnows = beta.link(`resource-${RES}/version-${seq}-alpha`);
      return logPos > min && statSync(`${beta.marsDir}/resource-${RES}/log-${seq}-alpha`).size === logPos && betaKnows !== undefined && logPosOf(betaKnows) === logPos;
    }, 60_000, 50);
    return logPos;
  };
  await writeWorkload(alpha, RES, SIZE, 5, 3, 2);
  const end2 = await fetchedUpTo('beta fetched alpha\'s new writes and its versionlink', end);
  await beta.until('beta saw the new writes', () => (beta.actual(RES, 'replay-rest') ?? '0') !== '0', 30_000, 50);
  t.equal(replayLink(), stoppedLink, 'before the second restart: the replay link did not move');

  // Restart 2: alpha's versionlink names a later position, so only the kept stop holds replay.
  await crashAndRestart(beta);
  await stillStopped('after the second restart');
  // More writes arrive after the restart: still nothing applied.
  await writeWorkload(alpha, RES, SIZE, 5, 4, 2);
  await fetchedUpTo('beta fetched alpha\'s writes after the restart', end2);
  await beta.until('beta saw the writes after the restart', () => Number(beta.actual(RES, 'replay-rest') ?? '0') > end2 - end, 30_000, 50);
  await stillStopped('after writes following the second restart');

  t.equal(beta.link(keptLink), `log-${seq}-alpha,${end}`, 'the kept link is unchanged after the restarts');
  t.equal(alpha.link(keptLink), undefined, 'and local: never propagated to alpha');

  // invalidate still repairs it after the restarts.
  await beta.marsadmOk(['invalidate', RES]);
  await beta.until('beta synced and caught up', () => beta.link(`resource-${RES}/syncstatus-beta`) === String(SIZE) && caughtUpWith(beta, alpha, RES), 90_000, 50);
  t.equal(fileDigest(beta.dataPath, SIZE), fileDigest(alpha.dataPath, SIZE), 'beta\'s disk equals alpha\'s again');
  await beta.until('beta no longer reports a split brain', async () => (await beta.view('is-split-brain', RES)) === '0', 30_000, 200);
  t.equal(beta.actual(RES, 'msg-err-replay-stop'), 'OK', 'the stop is gone');
  t.ok([undefined, '.deleted'].includes(beta.link(keptLink)), `invalidate removed content-mismatch-beta (${beta.link(keptLink)})`);
  t.match(await beta.view('diskstate', RES), /^UpToDate/, 'view: UpToDate');
});
