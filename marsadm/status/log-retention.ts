// Which logfiles of a resource may be deleted cluster-wide, and who holds the rest back
// (the MARS user manual: logdelete; docs/manual.md "Log deletion across the cluster"), as a pure
// function of what this host's tree says. `log-delete`, `cron` and `view` share it.
//
// A logfile is deleted everywhere at once (its tombstone propagates and replaces every copy),
// so it may go only when no replica will ever read it again:
//   - every member of the resource (a live data-HOST link) states how far it got in its replay
//     link; a member whose replay link is missing here (join-resource unfinished, or not yet
//     propagated) or unparsable blocks every deletion: we cannot know what it still needs;
//   - a replica on logfile N needs N and everything after it, and version-(N-1) links for the
//     chain check when it switches (versionlinks below N-1 may go);
//   - a replica whose sync is not finished replays from its join point, which is its replay
//     link until the sync is through (and never past its syncpos): it needs all of that;
//   - the newest logfile is never deleted, nor one modified within 2 x window (unless --force).
// The replay links we see may be stale (a peer we have not heard from recently). That is safe:
// replay links only move forward, so a stale link holds back more, never less.

export interface RetentionLogfile {
  seq: number;
  origin: string;
  name: string;
  sizeBytes: number;
  mtimeMs: number;
}

export interface RetentionInput {
  /** hosts with a live data-HOST link */
  members: readonly string[];
  /** live replay-HOST values, raw (members and any other host that has one) */
  replay: ReadonlyMap<string, string>;
  /** hosts whose sync is not finished (syncstatus below the size) */
  syncing: ReadonlySet<string>;
  /** live syncpos-HOST values, raw */
  syncpos: ReadonlyMap<string, string>;
  /** seconds since each host's heartbeat (actual-HOST/time); undefined when never seen */
  heartbeatAgeS: ReadonlyMap<string, number | undefined>;
  /** this host: its own links are never stale */
  self: string;
  windowS: number;
  /** regular logfiles present on this host */
  logfiles: readonly RetentionLogfile[];
  nowMs: number;
  force: boolean;
}

export interface Need {
  host: string;
  /** lowest logfile number this host still needs; undefined: unknown, so nothing may go */
  seq: number | undefined;
  /** why, for humans: "replay at log 3", "no replay link here (...)", ... */
  why: string;
  /** seconds since we last heard from the host, when that is longer than the window */
  staleS: number | undefined;
}

export interface HeldBack {
  hosts: string[];
  /** the logfiles (here) that only these hosts still need */
  fromSeq: number;
  toSeq: number;
  count: number;
  bytes: number;
  /** "logfiles 3-7 (1.2 GiB) kept for beta (replay at log 3)" */
  text: string;
}

export interface RetentionPlan {
  needs: Need[];
  /** lowest logfile number any replica needs; undefined when some need is unknown or no replica exists */
  keepFromSeq: number | undefined;
  deletable: RetentionLogfile[];
  /** logfiles every replica is past, kept only because they were modified within 2 x window */
  keptRecent: RetentionLogfile[];
  heldBack: HeldBack | undefined;
  /** versionlinks numbered below this may be deleted; undefined: none */
  versionsBelow: number | undefined;
  /** one line for log-delete when nothing can be deleted */
  reason: string;
}

const REPLAY = /^log-(\d{9})-([A-Za-z0-9_][-A-Za-z0-9_]{0,62}),(0|[1-9]\d{0,15}),(0|[1-9]\d{0,15})$/;

function replaySeq(value: string): number | undefined {
  const m = REPLAY.exec(value);
  return m ? Number(m[1]) : undefined;
}

export function formatBytesShort(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

function needOf(i: RetentionInput, host: string, member: boolean): Need {
  const age = host === i.self ? undefined : i.heartbeatAgeS.get(host);
  const staleS = host === i.self ? undefined : age === undefined ? Infinity : age > i.windowS ? Math.round(age) : undefined;
  const value = i.replay.get(host);
  if (value === undefined) {
    return { host, seq: undefined, why: 'no replay link here: join-resource unfinished, or not yet propagated', staleS };
  }
  let seq = replaySeq(value);
  if (seq === undefined) return { host, seq: undefined, why: `replay-${host} is unparsable (${JSON.stringify(value.slice(0, 80))})`, staleS };
  let why = `replay at log ${seq}`;
  if (i.syncing.has(host)) {
    // Replay waits for the sync and then starts at the join point (the replay link); the sync
    // point can only lie later, but take whichever is lower to be sure.
    const sp = i.syncpos.get(host);
    const spSeq = sp === undefined ? undefined : replaySeq(sp);
    if (spSeq !== undefined && spSeq < seq) seq = spSeq;
    why = `sync not finished, replays from log ${seq}`;
  }
  if (!member) why += `, not a member any more`;
  return { host, seq, why, staleS };
}

function span(files: readonly RetentionLogfile[]): string {
  if (files.length === 0) return 'no logfiles';
  const first = files[0]!.seq;
  const last = files[files.length - 1]!.seq;
  return first === last ? `logfile ${first}` : `logfiles ${first}-${last}`;
}

function describe(n: Need): string {
  const stale = n.staleS === undefined ? '' : n.staleS === Infinity
    ? `; never heard from ${n.host}`
    : `; not heard from for ${n.staleS} s, so its replay link here may be stale: that only holds back more`;
  return `${n.host} (${n.why}${stale})`;
}

export function planLogRetention(i: RetentionInput): RetentionPlan {
  const hosts = new Set<string>([...i.members, ...i.replay.keys()]);
  const memberSet = new Set(i.members);
  const needs = [...hosts].sort().map((h) => needOf(i, h, memberSet.has(h)));
  const logs = [...i.logfiles].sort((a, b) => a.seq - b.seq || a.origin.localeCompare(b.origin));
  const newest = logs[logs.length - 1]?.seq;
  const unknown = needs.filter((n) => n.seq === undefined);
  const known = needs.filter((n) => n.seq !== undefined) as (Need & { seq: number })[];
  const keepFromSeq = needs.length === 0 || unknown.length > 0 ? undefined : Math.min(...known.map((n) => n.seq));

  const deletable: RetentionLogfile[] = [];
  const keptRecent: RetentionLogfile[] = [];
  if (keepFromSeq !== undefined) {
    const recentMs = i.nowMs - 2 * i.windowS * 1000;
    for (const l of logs) {
      if (l.seq >= keepFromSeq || l.seq === newest) continue;
      if (!i.force && l.mtimeMs > recentMs) keptRecent.push(l);
      else deletable.push(l);
    }
  }

  // Who holds space back: the hosts with the lowest need (or an unknown one), and the
  // logfiles that would go without them: up to the next host's need, never the newest.
  let heldBack: HeldBack | undefined;
  const holders = unknown.length > 0 ? unknown : known.filter((n) => n.seq === keepFromSeq);
  if (holders.length > 0 && needs.length > 0) {
    const holderSet = new Set(holders.map((h) => h.host));
    const others = known.filter((n) => !holderSet.has(n.host)).map((n) => n.seq);
    const upTo = others.length > 0 ? Math.min(...others) : Infinity;
    const from = unknown.length > 0 ? -Infinity : keepFromSeq!;
    const held = logs.filter((l) => l.seq >= from && l.seq < upTo && l.seq !== newest);
    if (held.length > 0) {
      const bytes = held.reduce((s, l) => s + l.sizeBytes, 0);
      heldBack = {
        hosts: holders.map((h) => h.host),
        fromSeq: held[0]!.seq,
        toSeq: held[held.length - 1]!.seq,
        count: held.length,
        bytes,
        text: `${span(held)} (${formatBytesShort(bytes)}) kept for ${holders.map(describe).join(', ')}`,
      };
    }
  }

  let reason = '';
  if (deletable.length === 0) {
    if (needs.length === 0) reason = 'no member has a replay link: nothing is known to be replayed';
    else if (heldBack) reason = heldBack.text;
    else if (keptRecent.length > 0) reason = `${span(keptRecent)} modified within the last ${2 * i.windowS} s (kept unless --force)`;
    else if (unknown.length > 0) reason = `nothing can be known to be replayed: ${unknown.map(describe).join(', ')}`;
    else reason = `every logfile here is still needed (lowest needed: log ${keepFromSeq}) or the newest`;
  }
  return {
    needs,
    keepFromSeq,
    deletable,
    keptRecent,
    heldBack,
    versionsBelow: keepFromSeq === undefined ? undefined : keepFromSeq - 1,
    reason,
  };
}

/** The JSON shape `view --json` and `log-delete --json` print. */
export function retentionJson(p: RetentionPlan): Record<string, unknown> {
  return {
    keepFromSeq: p.keepFromSeq ?? null,
    needs: p.needs.map((n) => ({ host: n.host, seq: n.seq ?? null, why: n.why, staleSeconds: n.staleS === undefined ? null : n.staleS === Infinity ? -1 : n.staleS })),
    deletable: p.deletable.map((l) => l.name),
    deletableBytes: p.deletable.reduce((s, l) => s + l.sizeBytes, 0),
    heldBack: p.heldBack === undefined ? null : {
      hosts: p.heldBack.hosts, fromSeq: p.heldBack.fromSeq, toSeq: p.heldBack.toSeq, count: p.heldBack.count, bytes: p.heldBack.bytes, text: p.heldBack.text,
    },
  };
}
