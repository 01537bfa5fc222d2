// primary and secondary (the MARS user manual: planned handover; forced failover): the designated primary link and
// waiting until this host's marsd really changed its role.
import { AdmError, type Adm } from '../context.js';
import { resPaths, resourceDir } from '../../common/tree/paths.js';
import { VERSION_NAME } from '../../common/tree/log-names.js';
import { resourceMembers } from '../../common/cluster/members.js';
import { formatStamp } from '../../common/tree/lamport.js';
import { parseVersionLink } from '../../common/log/links.js';
import type { PrimaryMode } from '../../common/resource/links.js';
import { bytesBehind, inconsistency } from '../../common/resource/consistency.js';
import { isAlive } from './hosts.js';

export interface PrimaryOptions {
  /** hand over although another member is still syncing (MARS's meaning; never an inconsistent disk here) */
  ignoreSync?: boolean;
}

/**
 * Planned handover (without --force): refused while another host's device is open or this
 * replica's sync runs; waits until this host has fetched and replayed exactly as far as the
 * current primary (equal versionlinks), and only then moves the role, so a timeout changes
 * nothing. The old primary then steps down (its writers get EPERM), this host replays what is
 * left and starts its own logfile (daemon/control/decide-handover.ts).
 *
 * Forced failover (--force): the role moves at once; this host starts from the history it has.
 * Either way an inconsistent replica (sync incomplete, replay not past the sync's end) is refused.
 */
export async function primary(adm: Adm, name: string, opts: PrimaryOptions = {}): Promise<void> {
  const res = adm.requireResource(name);
  adm.requireMember(res);
  try {
    await takeOver(adm, res, opts);
  } finally {
    // A stop request for the old primary's application is only valid during this handover.
    if (adm.tree.value(resPaths.wantPrimary(res, adm.host)) !== undefined) adm.tree.remove(resPaths.wantPrimary(res, adm.host));
  }
}

/**
 * Why this host is designated primary but not active yet. The status links are only as fresh as
 * the marsd that wrote them: a marsd that stopped (killed during the handover) leaves its last
 * `primary-wait` ("OK") behind, so a stopped marsd is named first.
 */
function notYetPrimaryReason(adm: Adm, res: string): string {
  if (!adm.daemonRunning()) return `marsd is not running on ${adm.host} (it stopped while this command waited); it starts the resource when it runs again`;
  const wait = adm.actual(res, 'primary-wait');
  return wait !== undefined && wait !== 'OK' ? wait : 'waiting for marsd to start the resource';
}

async function takeOver(adm: Adm, res: string, opts: PrimaryOptions): Promise<void> {
  const { tree, host } = adm;
  const current = tree.value(resPaths.primary(res));
  const previous = current !== undefined && current !== '(none)' && current !== host ? current : undefined;
  if (current === host && adm.actual(res, 'is-primary') === '1') {
    adm.result(`${host} is already primary of ${res}; block device on ${adm.actual(res, 'socket')}`, { resource: res, primary: host, active: true, socket: adm.actual(res, 'socket') ?? null });
    return;
  }
  let mode: PrimaryMode = 'planned';
  let warning: string | undefined;
  refuseInconsistent(adm, res);
  if (adm.force) {
    mode = 'force';
    warning = forcedFailoverWarning(adm, res, previous);
    process.stderr.write(`warning: ${warning}\n`);
  } else {
    await checkHandoverPreconditions(adm, res, opts);
    if (!adm.daemonRunning()) throw new AdmError(`marsd is not running on ${host}: a handover needs it to fetch and replay the current primary's logfiles; start marsd first`);
    const target = catchUpTarget(adm, res);
    try {
      await adm.waitFor(`${host} has replayed everything ${target?.origin ?? 'the primary'} logged`, () => caughtUp(adm, res, catchUpTarget(adm, res)), () => lagText(adm, res));
    } catch (err) {
      if (!(err instanceof AdmError) || !/timed out/.test(err.message)) throw err;
      throw new AdmError(`${err.message.split(';')[0]}: ${host} has not caught up with ${target?.origin ?? 'the primary'} (${lagText(adm, res)}). `
        + `Nothing was changed${previous ? `: ${previous} is still the primary` : ''}. Check "marsadm view ${res}" (link down? fetch or replay paused?)`);
    }
  }
  tree.write(resPaths.primaryMode(res, host), mode, { durable: true });
  if (tree.value(resPaths.todo(res, host, 'attach')) !== '1') tree.write(resPaths.todo(res, host, 'attach'), '1');
  if (current !== host) tree.write(resPaths.primary(res), host, { durable: true });
  adm.trigger();
  const failed = () => (adm.actual(res, 'replay-code') ?? '0').startsWith('-') && adm.actual(res, 'is-primary') !== '1';
  let up: boolean;
  try {
    up = await adm.waitFor(`${host} is primary of ${res}`, () => adm.actual(res, 'is-primary') === '1' || failed(), () => {
      const rest = Number(adm.actual(res, 'recovery-rest') ?? '0');
      if (rest > 0) return `recovery: ${rest} bytes left to replay`;
      return notYetPrimaryReason(adm, res);
    });
  } catch (err) {
    if (!(err instanceof AdmError) || !/timed out/.test(err.message)) throw err;
    throw new AdmError(`${host} is now the designated primary of ${res} but not yet active: ${notYetPrimaryReason(adm, res)}. `
      + `It becomes primary by itself once that is resolved; "marsadm wait-resource ${res} primary" waits for it`);
  }
  if (up && failed()) {
    throw new AdmError(`${host} is designated primary of ${res} but cannot start it: ${adm.actual(res, 'msg-err-replay-stop')}`);
  }
  const socket = adm.actual(res, 'socket');
  adm.result(up ? `${host} is primary of ${res}; block device on ${socket}` : `${host} is designated primary of ${res}`, {
    resource: res, primary: host, previous: previous ?? null, mode, active: up, socket: up ? socket ?? null : null,
    ...(mode === 'force' ? { lackingBytes: lackingBytes(adm, res, host) ?? null } : {}),
    ...(warning ? { warning } : {}),
  });
}

/** How long a device closed on another host may take to be seen closed here (a few pulls). */
const OPEN_COUNT_GRACE_MS = 3_000;

async function checkHandoverPreconditions(adm: Adm, res: string, opts: PrimaryOptions): Promise<void> {
  const { tree, host } = adm;
  const openElsewhere = () => members(adm, res).filter((m) => m !== host)
    .map((member) => ({ member, open: Number(tree.value(resPaths.actual(res, member, 'open-count')) ?? '0') }))
    .filter((x) => x.open > 0);
  // A host whose application has a stop hook closes the device itself when asked; an
  // application stopped a moment ago may not be visible here yet.
  const stoppable = openElsewhere().filter((x) => tree.value(resPaths.actual(res, x.member, 'has-app-stop')) === '1');
  if (stoppable.length > 0) {
    tree.write(resPaths.wantPrimary(res, host), formatStamp(tree.clock.tick()));
    if (!adm.json) process.stderr.write(`  asking ${stoppable.map((x) => x.member).join(', ')} to stop the application (stop hook)\n`);
  }
  const graceMs = stoppable.length > 0 ? (adm.timeoutS < 0 ? Infinity : adm.timeoutS * 1000)
    : adm.timeoutS < 0 ? OPEN_COUNT_GRACE_MS : Math.min(OPEN_COUNT_GRACE_MS, adm.timeoutS * 1000);
  let lastProgressMs = Date.now();
  for (const deadline = Date.now() + graceMs; openElsewhere().length > 0 && Date.now() < deadline;) {
    await new Promise((r) => setTimeout(r, 100));
    if (stoppable.length > 0 && Date.now() - lastProgressMs > 2000 && !adm.json) {
      process.stderr.write(`  waiting for the application to close the device on ${stoppable.map((x) => `${x.member} (${tree.value(resPaths.actual(res, x.member, 'app-state')) ?? '?'})`).join(', ')}\n`);
      lastProgressMs = Date.now();
    }
  }
  for (const { member, open } of openElsewhere()) {
    throw new AdmError(`the device of ${res} is in use on ${member} (${open} NBD connection${open > 1 ? 's' : ''}): unmount it there first `
      + `(or stop the application). If ${member} is lost, "marsadm primary --force ${res}" takes over without it`);
  }
  const size = Number(tree.value(resPaths.size(res)));
  const syncing = members(adm, res).filter((m) => m !== host && isAlive(tree, m, adm.windowS)
    && Number(tree.value(resPaths.syncstatus(res, m)) ?? '0') < size);
  if (syncing.length > 0 && !opts.ignoreSync) {
    throw new AdmError(`${syncing.join(', ')} ${syncing.length > 1 ? 'are' : 'is'} still syncing ${res}: after the handover ${syncing.length > 1 ? 'they' : 'it'} would have to sync again from ${host}. `
      + 'Wait for the sync ("marsadm view"), or give --ignore-sync to hand over anyway. Nothing was changed');
  }
  const code = Number(adm.actual(res, 'replay-code') ?? '0');
  if (code < 0) {
    throw new AdmError(`replay of ${res} on ${host} is stopped (code ${code}): ${adm.actual(res, 'msg-err-replay-stop') ?? ''}. `
      + 'Resolve that first (see "marsadm view"), or use --force to take over with the history this host has');
  }
}

/**
 * No flag makes an inconsistent disk (sync incomplete, replay not yet past the sync's end) a
 * primary: its content is a mix of old and new blocks. Names the members that could take over.
 */
function refuseInconsistent(adm: Adm, res: string): void {
  const why = replicaInconsistency(adm, res, adm.host);
  if (why === undefined) return;
  const primaryNow = adm.tree.value(resPaths.primary(res));
  const candidates = members(adm, res).filter((m) => m !== adm.host && m !== primaryNow && replicaInconsistency(adm, res, m) === undefined)
    .map((m) => `${m} (replayed to ${adm.tree.value(resPaths.replay(res, m)) ?? '?'}${lackingText(adm, res, m)}${isAlive(adm.tree, m, adm.windowS) ? '' : ', no heartbeat'})`);
  throw new AdmError(`refusing to make ${adm.host} primary of ${res}${adm.force ? ', even with --force' : ''}: ${why}, so its disk is not consistent (a mix of old and new blocks). `
    + `Nothing was changed. ${candidates.length > 0 ? `Consistent members that could be promoted instead: ${candidates.join(', ')}` : 'No other member is known to be consistent'}`, 1);
}

function replicaInconsistency(adm: Adm, res: string, host: string): string | undefined {
  const { tree } = adm;
  const synced = tree.value(resPaths.syncstatus(res, host));
  return inconsistency({
    sizeBytes: Number(tree.value(resPaths.size(res))),
    syncstatusBytes: synced !== undefined && /^\d+$/.test(synced) ? Number(synced) : undefined,
    syncpos: tree.value(resPaths.syncpos(res, host)),
    replayLink: tree.value(resPaths.replay(res, host)),
  });
}

/** Bytes of logged history `host` has not replayed, as far as the versionlinks here say. */
function lackingBytes(adm: Adm, res: string, host: string): number | undefined {
  const dir = resourceDir(res);
  const versions = adm.tree.list(dir).filter((n) => VERSION_NAME.test(n)).map((n) => adm.tree.value(`${dir}/${n}`)).filter((v): v is string => v !== undefined);
  return bytesBehind(adm.tree.value(resPaths.replay(res, host)), versions);
}

function lackingText(adm: Adm, res: string, host: string): string {
  const n = lackingBytes(adm, res, host);
  return n === undefined ? '' : `, ${n} bytes behind`;
}

/** Live members only: a host that left keeps a tombstone data-HOST, and counted as syncing. */
function members(adm: Adm, res: string): string[] {
  return resourceMembers(adm.tree, res);
}

interface CatchUpTarget {
  seq: number;
  origin: string;
  value: string;
}

/** The newest logfile anyone has a versionlink for, and its origin's versionlink. */
function catchUpTarget(adm: Adm, res: string): CatchUpTarget | undefined {
  const { tree } = adm;
  let best: { seq: number; origin: string } | undefined;
  for (const n of tree.list(resourceDir(res))) {
    const m = VERSION_NAME.exec(n);
    if (!m) continue;
    const link = parseVersionLink(tree.value(`${resourceDir(res)}/${n}`) ?? '');
    if (link && (best === undefined || link.seq > best.seq)) best = { seq: link.seq, origin: link.origin };
  }
  if (!best) return undefined;
  const value = tree.value(resPaths.version(res, best.seq, best.origin));
  return value === undefined ? undefined : { ...best, value };
}

/** Equal versionlinks for the newest logfile: the same history, replayed exactly as far. */
function caughtUp(adm: Adm, res: string, target: CatchUpTarget | undefined): boolean {
  if (!target) return true;
  return adm.tree.value(resPaths.version(res, target.seq, adm.host)) === target.value;
}

function lagText(adm: Adm, res: string): string {
  return `fetch-rest ${adm.actual(res, 'fetch-rest') ?? '?'} bytes, replay-rest ${adm.actual(res, 'replay-rest') ?? '?'} bytes`;
}

/** What a forced failover gives up, in plain words. */
function forcedFailoverWarning(adm: Adm, res: string, previous: string | undefined): string {
  const target = catchUpTarget(adm, res);
  const lacking = lackingBytes(adm, res, adm.host);
  const behind = target && !caughtUp(adm, res, target)
    ? `${adm.host} lacks ${lacking ?? '?'} bytes of the history ${target.origin} logged (as far as known here: ${lagText(adm, res)}); those writes are lost on ${adm.host}, and a torn last record is dropped. `
    : `${adm.host} has replayed everything it knows of; writes ${previous ?? 'the old primary'} made after that are lost on ${adm.host}. `;
  return `forced failover of ${res}: ${behind}`
    + `If ${previous ?? 'the old primary'} is still running and writing, its data and ours now diverge: a split brain. `
    + `Once the hosts see each other again, "marsadm view ${res}" reports it; repair it with "marsadm invalidate ${res}" on the host whose writes you give up`;
}

export async function secondary(adm: Adm, name: string): Promise<void> {
  const res = adm.requireResource(name);
  adm.requireMember(res);
  const { tree, host } = adm;
  const open = Number(adm.actual(res, 'open-count') ?? '0');
  // With a stop hook, marsd stops the application (which closes the device) before stepping down.
  if (open > 0 && !adm.force && adm.actual(res, 'has-app-stop') !== '1') {
    throw new AdmError(`the device of ${res} is in use (${open} NBD connection${open > 1 ? 's' : ''}): unmount it first; with --force its writers get EPERM`);
  }
  tree.write(resPaths.primary(res), '(none)', { durable: true });
  if ((tree.value(resPaths.primaryMode(res, host)) ?? 'planned') !== 'planned') tree.write(resPaths.primaryMode(res, host), 'planned');
  adm.trigger();
  const done = await adm.waitFor(`${host} left the primary role of ${res}`, () => adm.actual(res, 'is-primary') !== '1',
    () => `writeback: ${adm.actual(res, 'writeback-rest') ?? '?'} bytes left`);
  adm.result(`${res} has no designated primary now${done ? '; the export is closed and everything is written back' : ''}`, { resource: res, primary: null, stopped: done });
}
