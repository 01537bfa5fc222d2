// How far this host is behind the primary, in bytes and in seconds (the MARS user manual:
// view macros *-rest, *-lag, *-pos, *-size, *-percent, *-rate, *-remain, *-age), as a pure
// function of facts read from the tree and the local logfile copies (read-progress.ts).
//
// Everything is measured against the primary's newest logfile and position *as this host
// knows them* (the primary's own versionlink of its newest logfile, propagated with the
// primary's stamp), never against what the local fetcher happens to be copying: a log-rotate
// on the primary makes a new logfile that a secondary may not have started to fetch yet, and
// a rest computed from the local copies alone says 0 while data is missing. How old that
// knowledge is (the primary's heartbeat as seen here) is reported too: beyond --window the
// rests are only a lower bound (`stale`).

/** One logfile from the replay position on, as known here. */
export interface LogFact {
  seq: number;
  origin: string;
  /** size of the local copy, undefined when there is none */
  localBytes: number | undefined;
  /** the origin's own versionlink LOGPOS (its length as the origin published it) */
  originBytes: number | undefined;
}

export interface ProgressFacts {
  nowS: number;
  windowS: number;
  /** this host is the designated primary */
  isPrimaryHere: boolean;
  /** the designated primary's newest logfile and logged position, with the stamp it was published at */
  primaryEnd: { seq: number; origin: string; pos: number; stampS: number } | undefined;
  /** the primary's heartbeat (actual-PRIMARY/time) as last seen here: how current our view of it is */
  primaryHeartbeatS: number | undefined;
  /** logfiles from the replay link's on, ascending, one origin per number */
  logs: LogFact[];
  /** this host's replay link and its stamp */
  replay: { seq: number; origin: string; pos: number; stampS: number } | undefined;
  /** stamp of the first record after the replay position in the local copy (when it is here) */
  nextRecordStampS: number | undefined;
  /** when the local copies last grew (mtime of the newest local logfile) */
  lastFetchS: number | undefined;
  /** stamp of the newest complete record copied here (every older write is here too); read only when fetch-rest is not 0 */
  newestFetchedStampS?: () => number | undefined;
  sync: { doneBytes: number; sizeBytes: number; stampS: number | undefined; rateBytesPerS: number };
  /** rates the daemon measured over its window (actual-HOST/fetch-rate, replay-rate) */
  fetchRateBytesPerS: number;
  replayRateBytesPerS: number;
}

export interface Progress {
  /** bytes the primary logged (as known here) that are not copied here yet */
  fetchRest: number;
  /** bytes the primary logged (as known here) that are not applied here yet */
  replayRest: number;
  /** bytes copied here but not applied yet (MARS: fetch-size − replay-pos) */
  workRest: number;
  syncRest: number;
  /** total bytes from the start of the replay link's logfile up to the primary's end (the 100 % of fetch and replay) */
  totalSize: number;
  fetchPos: number;
  replayPos: number;
  fetchLagS: number;
  replayLagS: number;
  syncLagS: number;
  workLagS: number;
  fetchAgeS: number | undefined;
  replayAgeS: number | undefined;
  syncAgeS: number | undefined;
  /** seconds since the primary's state known here was current; undefined when unknown */
  primaryAgeS: number | undefined;
  /** the primary's state known here is older than --window: rests are lower bounds */
  stale: boolean;
}

function length(l: LogFact, facts: ProgressFacts): number {
  const end = facts.primaryEnd;
  const known = end && l.seq === end.seq && l.origin === end.origin ? Math.max(end.pos, l.originBytes ?? 0) : l.originBytes ?? 0;
  return Math.max(known, l.localBytes ?? 0);
}

function age(nowS: number, stampS: number | undefined): number | undefined {
  return stampS === undefined ? undefined : Math.max(0, nowS - stampS);
}

export function progress(f: ProgressFacts): Progress {
  const primaryAgeS = f.isPrimaryHere ? 0 : age(f.nowS, f.primaryHeartbeatS);
  const stale = !f.isPrimaryHere && (primaryAgeS === undefined || primaryAgeS > f.windowS);
  let totalSize = 0;
  let fetchPos = 0;
  let replayPos = 0;
  for (const l of f.logs) {
    const len = length(l, f);
    totalSize += len;
    let replayed = 0;
    if (f.replay && (l.seq < f.replay.seq || (l.seq === f.replay.seq && l.origin === f.replay.origin))) {
      replayed = l.seq < f.replay.seq ? len : Math.min(len, f.replay.pos);
    }
    replayPos += replayed;
    // What is replayed was fetched, even when its local copy is deleted by now.
    fetchPos += Math.max(replayed, Math.min(len, l.localBytes ?? 0));
  }
  const fetchRest = f.isPrimaryHere ? 0 : Math.max(0, totalSize - fetchPos);
  const replayRest = f.isPrimaryHere ? 0 : Math.max(0, totalSize - replayPos);
  const syncRest = Math.max(0, f.sync.sizeBytes - f.sync.doneBytes);
  // The oldest write not here came after the newest one that is: its age is at most the
  // newest fetched record's age, exact while the primary writes steadily (a fetcher trailing
  // behind a bandwidth limit or a backlog). Without that record: since the copies last grew.
  const fetchLagS = fetchRest === 0 ? 0 : age(f.nowS, f.newestFetchedStampS?.() ?? f.lastFetchS ?? f.replay?.stampS) ?? 0;
  // The oldest write not applied here: its record's stamp when the copy is here, else (not
  // fetched yet) as old as the fetch lag says.
  const replayLagS = replayRest === 0 ? 0 : replayPos < fetchPos && f.nextRecordStampS !== undefined ? age(f.nowS, f.nextRecordStampS)! : fetchLagS;
  return {
    fetchRest, replayRest, workRest: Math.max(0, replayRest - fetchRest), syncRest, totalSize, fetchPos, replayPos,
    fetchLagS, replayLagS, workLagS: Math.max(0, replayLagS - fetchLagS),
    syncLagS: syncRest === 0 ? 0 : age(f.nowS, f.sync.stampS) ?? 0,
    fetchAgeS: age(f.nowS, f.lastFetchS),
    replayAgeS: age(f.nowS, f.replay?.stampS),
    syncAgeS: age(f.nowS, f.sync.stampS),
    primaryAgeS,
    stale,
  };
}

/** Seconds until `restBytes` are done at `rateBytesPerS`; -1 when nothing moves (MARS prints --:--). */
export function remainS(restBytes: number, rateBytesPerS: number): number {
  if (restBytes === 0) return 0;
  return rateBytesPerS > 0 ? Math.ceil(restBytes / rateBytesPerS) : -1;
}

/** Percent done, 0..100 (integer, floor: 100 only when nothing is left). */
export function percent(doneBytes: number, totalBytes: number): number {
  if (totalBytes <= 0 || doneBytes >= totalBytes) return 100;
  return Math.floor((100 * Math.max(0, doneBytes)) / totalBytes);
}
