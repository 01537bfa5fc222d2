// Executing one fault of the torture schedule (docs/reliability.md, "Torture runner"): inject it,
// run a write burst on the primary while it lasts, heal it. Every wait has a deadline; a fault
// whose own check fails returns the violation (an unexpected error is thrown to the runner).
import type { MarsHost } from '../helpers/cluster.js';
import { writeWorkload } from '../helpers/multi-host.js';
import { fillUntilFull } from '../helpers/small-mars.js';
import { waitFor } from '../helpers/wait.js';
import { checkPausedPrefix, waitAllCaughtUp } from './checks.js';
import type { FaultKind, FaultStep } from './schedule.js';
import { dataOf, SIZE, type World } from './world.js';

type Fault = (w: World, s: FaultStep) => Promise<string[]>;

function pickOf<T>(list: T[], pick: number): T {
  if (list.length === 0) throw new Error('no eligible host');
  return list[pick % list.length]!;
}

async function adm(h: MarsHost, args: string[]): Promise<void> {
  await h.marsadmOk(args, { timeoutMs: 90_000 });
}

/** Runs `during` with a write burst on the primary, between `inject` and `heal`. */
async function around(w: World, s: FaultStep, inject: () => Promise<unknown> | unknown, heal: () => Promise<unknown> | unknown): Promise<string[]> {
  await inject();
  try {
    await w.burst(s.writeSeed);
  } finally {
    await heal();
  }
  return [];
}

const killSecondary: Fault = async (w, s) => {
  const h = pickOf(w.secondaries, s.pick);
  h.kill('SIGKILL');
  await h.waitExit();
  await w.burst(s.writeSeed);
  await h.start(60_000);
  return [];
};

/** Until `h` is primary of every resource and serves it. */
async function waitPrimaryAll(w: World, h: MarsHost): Promise<void> {
  for (const res of w.resources) await h.waitPrimary(res, 60_000);
}

/** SIGKILL the primary in the middle of FUA writes, after some FLUSH completed; restart it. */
const killPrimary: Fault = async (w, s) => {
  const p = w.primary;
  const oracle = w.oracles.get(w.resOf(s.writeSeed))!;
  const durable = oracle.durableSeq;
  const burst = w.burst(s.writeSeed, { fua: true, durationMs: 20_000 });
  try {
    await waitFor('a FLUSH completed on the primary', () => oracle.durableSeq > durable, 20_000, 10);
  } finally {
    p.kill('SIGKILL');
    await p.waitExit();
    await burst;
  }
  await p.start(60_000);
  await waitPrimaryAll(w, p);
  return [];
};

const linkCut: Fault = (w, s) => {
  const proxy = w.cluster.proxy(pickOf(w.hosts, s.pick).name);
  return around(w, s, () => proxy.cut(), () => proxy.heal());
};

const blackhole: Fault = (w, s) => {
  const proxy = w.cluster.proxy(pickOf(w.hosts, s.pick).name);
  return around(w, s, () => proxy.blackhole(), () => proxy.heal());
};

const slowLink: Fault = (w, s) => {
  const proxy = w.cluster.proxy(pickOf(w.hosts, s.pick).name);
  // reset(), not heal(): heal() keeps the delay and the bandwidth limit.
  return around(w, s, () => { proxy.setBandwidth(512 * 1024); proxy.setDelay(40); }, () => proxy.reset());
};

/** A planned handover: marsadm primary on a caught-up secondary. */
const handover: Fault = async (w, s) => {
  const to = pickOf(w.secondaries, s.pick);
  await waitAllCaughtUp(w);
  await adm(to, ['primary', w.resList, '--timeout', '60']);
  await waitPrimaryAll(w, to);
  w.primary = to;
  await w.burst(s.writeSeed);
  return [];
};

/**
 * Forced failover while every link is cut, both sides written, healed: both must report the split
 * brain; the old primary is invalidated, other hosts leave and join again. The target is caught
 * up first, so the oracle's history stays the new primary's (the old side's split writes are
 * untagged and given up).
 */
const forceFailover: Fault = async (w, s) => {
  const from = w.primary;
  const to = pickOf(w.secondaries, s.pick);
  await waitAllCaughtUp(w);
  for (const p of w.cluster.proxies.values()) p.cut();
  try {
    await to.until(`${to.name} lost ${from.name}`, () => (to.link(`actual-${to.name}/peer-${from.name}`) ?? '').startsWith('down'), 30_000);
    await adm(to, ['primary', w.resList, '--force', '--timeout', '60']);
    await waitPrimaryAll(w, to);
    // Every resource written on both sides: each must report its split brain.
    for (const res of w.resources) await writeWorkload(from, res, SIZE, 20, s.writeSeed, 4);
    w.primary = to;
    for (const res of w.resources) await w.burst(s.writeSeed, { res });
  } finally {
    for (const p of w.cluster.proxies.values()) p.heal();
  }
  const out: string[] = [];
  for (const res of w.resources) {
    for (const h of [from, to]) {
      try {
        await h.until(`${h.name} reports the split brain of ${res}`, async () => (await h.view('is-split-brain', res)) === '1', 30_000, 200);
      } catch {
        out.push(`${h.name}: no split brain of ${res} reported after a forced failover with writes on both sides`);
      }
    }
    await from.until(`${from.name} stepped down in ${res}`, () => from.actual(res, 'is-primary') === '0', 30_000);
  }
  await adm(from, ['invalidate', w.resList]);
  for (const h of w.secondaries.filter((x) => x !== from)) await rejoin(w, h);
  await waitAllCaughtUp(w, 90_000);
  for (const res of w.resources) {
    for (const h of w.hosts) {
      await h.until(`${h.name} no longer reports a split brain of ${res}`, async () => (await h.view('is-split-brain', res)) === '0', 30_000, 200);
    }
  }
  return out;
};

/** down, leave-resource, join-resource (a fast full sync) of every resource on `h`. */
async function rejoin(w: World, h: MarsHost): Promise<void> {
  await adm(h, ['down', w.resList]);
  await adm(h, ['leave-resource', w.resList]);
  for (const res of w.resources) await adm(h, ['join-resource', res, dataOf(h, res)]);
}

const pauseFetch: Fault = (w, s) => {
  const h = pickOf(w.secondaries, s.pick);
  const res = w.resOf(s.writeSeed);
  return around(w, s, () => adm(h, ['pause-fetch', res]), () => adm(h, ['resume-fetch', res]));
};

/** Replay paused: the disk must be a prefix of the history, before and after more writes. */
const pauseReplay: Fault = async (w, s) => {
  const h = pickOf(w.secondaries, s.pick);
  const res = w.resOf(s.writeSeed);
  await adm(h, ['pause-replay', res]);
  try {
    await h.until(`${h.name}'s replay paused`, () => h.actual(res, 'is-replaying') === '0', 30_000);
    const out = await checkPausedPrefix(w, h, res);
    await w.burst(s.writeSeed);
    out.push(...await checkPausedPrefix(w, h, res));
    return out;
  } finally {
    await adm(h, ['resume-replay', res]);
  }
};

/** A resync (invalidate) paused and resumed while the primary writes. */
const pauseSync: Fault = async (w, s) => {
  const h = pickOf(w.secondaries, s.pick);
  const res = w.resOf(s.writeSeed);
  await waitAllCaughtUp(w);
  await adm(h, ['invalidate', res]);
  await adm(h, ['pause-sync', res]);
  try {
    await w.burst(s.writeSeed);
  } finally {
    await adm(h, ['resume-sync', res]);
  }
  return [];
};

const logRotate: Fault = async (w, s) => {
  await adm(w.primary, ['log-rotate', w.resOf(s.writeSeed)]);
  await w.burst(s.writeSeed);
  return [];
};

const logDelete: Fault = async (w, s) => {
  const res = w.resOf(s.writeSeed);
  await waitAllCaughtUp(w);
  await adm(w.primary, ['log-rotate', res]);
  await w.burst(s.writeSeed);
  await adm(w.primary, ['log-delete', res]);
  return [];
};

const cron: Fault = async (w, s) => {
  await w.burst(s.writeSeed);
  await adm(pickOf(w.hosts, s.pick), ['cron']);
  return [];
};

/** Jitter of 0-60 ms per chunk (seeded by the step) on the proxy in front of any host. */
const jitterLink: Fault = (w, s) => {
  const proxy = w.cluster.proxy(pickOf(w.hosts, s.pick).name);
  return around(w, s, () => proxy.setJitter(60, s.writeSeed), () => proxy.reset());
};

/** A link's files may be gone or tombstoned (docs/tree.md). */
function gone(h: MarsHost, rel: string): boolean {
  return [undefined, '.deleted'].includes(h.link(rel));
}

/**
 * /mars of any host fills up (a filler file until ENOSPC), a burst, the filler deleted. The
 * documented outcome (docs/manual.md, "Emergency mode: /mars is full"): a full primary enters
 * emergency mode, never fails a write, leaves it by itself once the space is back; its
 * secondaries stop at the hole and need the documented recovery (down, leave-resource,
 * join-resource: a fast full sync). A full secondary stops fetching (space level 3 or 4) and
 * catches up once the space is back.
 */
const marsFull: Fault = async (w, s) => {
  const h = pickOf(w.hosts, s.pick);
  const p = w.primary;
  const out: string[] = [];
  w.note(`/mars of ${h.name} full`);
  w.noteFillers(h, fillUntilFull(h.marsDir));
  try {
    if (h === p) {
      try {
        await p.until(`${p.name} in emergency mode`, () => w.resources.every((res) => p.actual(res, 'is-emergency') === '1'), 30_000, 50);
      } catch {
        out.push(`${p.name} (primary): /mars full but not every resource in emergency mode within 30 s (space level ${p.link(`actual-${p.name}/emergency`)})`);
      }
    } else {
      try {
        await h.until(`${h.name} at space level 3 or 4`, () => Number(h.link(`actual-${h.name}/emergency`) ?? '0') >= 3, 30_000, 50);
      } catch {
        out.push(`${h.name}: /mars full but space level ${h.link(`actual-${h.name}/emergency`)} (not 3 or 4) after 30 s`);
      }
    }
    const r = await w.burst(s.writeSeed);
    if (r.failed > 0 || r.flushesFailed > 0) {
      out.push(`${p.name} (primary): ${r.failed} writes and ${r.flushesFailed} FLUSHes failed with /mars of ${h.name} full${r.error ? ` (${r.error})` : ''}`);
    }
  } finally {
    w.drainMars(h);
  }
  if (h !== p) return out;
  await p.until(`${p.name} logging again`, () => w.resources.every((res) => p.actual(res, 'is-emergency') === '0' && p.actual(res, 'has-emergency') === '0'), 60_000, 100);
  for (const x of w.secondaries) {
    for (const res of w.resources) {
      try {
        await x.until(`${x.name} stopped at the hole of ${res}`, () => x.actual(res, 'replay-code') === '-61', 60_000, 100);
      } catch {
        out.push(`${x.name}: replay of ${res} did not stop at the hole of ${p.name}'s emergency mode (replay-code ${x.actual(res, 'replay-code')})`);
      }
    }
    await x.until(`${x.name} saw ${p.name} logging again`, () => w.resources.every((res) => x.link(`resource-${res}/actual-${p.name}/is-emergency`) === '0'), 30_000);
    await rejoin(w, x);
  }
  return out;
};

/**
 * A secondary leaves the resource and the cluster, its marsd stopped and its directories
 * removed; a fresh host joins the cluster and the resource (a full sync while the primary
 * writes) and takes its place in the world.
 */
const replaceHost: Fault = async (w, s) => {
  const old = pickOf(w.secondaries, s.pick);
  await adm(old, ['down', w.resList]);
  await adm(old, ['leave-resource', w.resList]);
  await adm(old, ['leave-cluster']);
  // The others must have its tombstones before its marsd stops: nobody else can send them.
  for (const h of w.hosts.filter((x) => x !== old)) {
    await h.until(`${h.name} saw ${old.name} leave`, () => gone(h, `ips/ip-${old.name}`) && w.resources.every((res) =>
      gone(h, `resource-${res}/data-${old.name}`) && gone(h, `resource-${res}/replay-${old.name}`)), 30_000, 50);
  }
  await w.removeHost(old);
  const [fresh] = await Promise.all([w.addHost(), w.burst(s.writeSeed)]);
  w.note(`${old.name} replaced by ${fresh.name}`);
  return [];
};

/**
 * A planned handover with a SIGKILL of the old or the new primary (by the pick) once the
 * designated primary link names the new one; the killed marsd starts again while the command
 * still waits, so the command should complete; if it fails it is issued again (docs/manual.md:
 * the designated primary becomes primary by itself once it can, and `primary` on the primary
 * answers "already primary").
 */
const killDuringHandover: Fault = async (w, s) => {
  const from = w.primary;
  const to = pickOf(w.secondaries, s.pick);
  const victim = Math.floor(s.pick / 0x1_0000) % 2 === 0 ? from : to;
  await waitAllCaughtUp(w);
  w.note(`${from.name} to ${to.name}, ${victim.name} killed`);
  let done = false;
  const first = to.marsadm(['primary', w.resList, '--timeout', '60']).finally(() => { done = true; });
  const last = w.resources.at(-1)!;
  try {
    // With several resources the command takes them in turn: the last one named marks its last wait.
    await waitFor(`${to.name} designated primary`, () => done || to.link(`resource-${last}/primary`) === to.name, 60_000, 5);
  } finally {
    victim.kill('SIGKILL');
    await victim.waitExit();
  }
  // Started again while the command still waits: it should complete by itself.
  await victim.start(60_000);
  const r = await first;
  if (r.code !== 0) {
    // The documented way on: the command again (on the primary it answers "already primary").
    w.note(`the command failed (${r.stderr.trim().split('\n').at(-1)}), issued again`);
    await adm(to, ['primary', w.resList, '--timeout', '60']);
  }
  await waitPrimaryAll(w, to);
  w.primary = to;
  await w.burst(s.writeSeed);
  return [];
};

/**
 * A resync (invalidate) of a secondary, its marsd SIGKILLed while the sync runs (the primary's
 * link slowed to 1 MiB/s so that it lasts), restarted; the checks wait until it synced.
 */
const killDuringSync: Fault = async (w, s) => {
  const h = pickOf(w.secondaries, s.pick);
  const res = w.resOf(s.writeSeed);
  await waitAllCaughtUp(w);
  const proxy = w.cluster.proxy(w.primary.name);
  proxy.setBandwidth(1 << 20);
  try {
    const burst = w.burst(s.writeSeed);
    try {
      await adm(h, ['invalidate', res]);
      await h.until(`${h.name} syncing`, () => h.actual(res, 'is-syncing') === '1'
        || h.link(`resource-${res}/syncstatus-${h.name}`) === String(SIZE), 30_000, 5);
      w.note(h.actual(res, 'is-syncing') === '1' ? `${h.name} killed while syncing ${res}` : `${h.name}'s sync of ${res} was done before the kill`);
    } finally {
      h.kill('SIGKILL');
      await h.waitExit();
      await burst;
    }
  } finally {
    proxy.reset();
  }
  await h.start(60_000);
  return [];
};

export const FAULTS: Record<FaultKind, Fault> = {
  'kill-secondary': killSecondary, 'kill-primary': killPrimary, 'link-cut': linkCut, blackhole,
  'slow-link': slowLink, handover, 'force-failover': forceFailover, 'pause-fetch': pauseFetch,
  'pause-replay': pauseReplay, 'pause-sync': pauseSync, 'log-rotate': logRotate, 'log-delete': logDelete, cron,
  'jitter-link': jitterLink, 'mars-full': marsFull, 'replace-host': replaceHost,
  'kill-during-handover': killDuringHandover, 'kill-during-sync': killDuringSync,
};

