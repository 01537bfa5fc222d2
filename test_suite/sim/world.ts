// One run of the control-plane simulation for one seed (docs/reliability.md): N hosts pull each
// other's trees over the faulty network, administrators and runners change their trees, faults
// come and go, then the network heals and the trees must converge. Everything random comes from
// the seed, so `runSeed(seed)` is a pure function of its arguments: a failing seed replays exactly.
import { mulberry32 } from '../helpers/prng.js';
import { SimHost } from './host.js';
import { InvariantChecker, type Violation } from './invariants.js';
import { SimClock, SimNetwork } from './net.js';
import { designate, fetch, joinLinks, logDelete, newLogfile, ownedDelete, ownedWrite, pick, removeHost, replay, type OpContext } from './ops.js';
import { RoleSim } from './roles.js';

export const HOST_NAMES = ['alpha', 'bravo', 'charlie', 'delta', 'echo'];

export interface SimOptions {
  hosts: number;
  /** simulated ms of faults and operations, then as long again healed and quiet */
  chaosMs: number;
  /** record every step's description (for replaying one seed) */
  trace?: boolean;
}

export const DEFAULT_OPTIONS: SimOptions = { hosts: 3, chaosMs: 3_000 };

export interface SimResult {
  seed: number;
  steps: number;
  ops: number;
  checks: number;
  messages: number;
  lost: number;
  purged: number;
  violation?: Violation & { step: number; atMs: number };
  trace: string[];
}

const PULL_INTERVAL_MS = 40;
const PULL_TIMEOUT_MS = 200;
const PURGE_INTERVAL_MS = 100;
const PURGE_MIN_AGE_MS = 50;
const SETTLE_MS = 1_000;

export function runSeed(seed: number, o: SimOptions = DEFAULT_OPTIONS): SimResult {
  const random = mulberry32(seed);
  const clock = new SimClock();
  const net = new SimNetwork(clock, random);
  const checker = new InvariantChecker();
  const names = HOST_NAMES.slice(0, Math.max(2, Math.min(o.hosts, HOST_NAMES.length)));
  // Clocks skewed up to ±50 ms: stamps of different hosts interleave as real ones do.
  const hosts = names.map((n) => new SimHost(n, () => clock.nowMs, Math.floor((random() - 0.5) * 100_000), checker));
  const removed = new Set<string>();
  let seq = 0;
  const ctx: OpContext = { random, removed, nextSeq: () => ++seq, hosts };
  const roles = new RoleSim(hosts, checker);
  const r: SimResult = { seed, steps: 0, ops: 0, checks: 0, messages: 0, lost: 0, purged: 0, trace: [] };
  const note = (what: string | undefined) => {
    if (what === undefined) return;
    r.ops++;
    if (o.trace) r.trace.push(`${clock.nowMs} ms: ${what}`);
  };
  let chaos = true;
  hosts.forEach((h, i) => joinLinks(h, names, i === 0));

  startPulls(hosts, clock, net, random);

  const roleLoop = () => {
    for (const h of hosts) note(roles.round(h, clock.nowMs));
    roles.checkRoles(clock.nowMs, chaos);
    clock.at(10, roleLoop);
  };
  clock.at(5, roleLoop);

  const opLoop = () => {
    if (!chaos) return;
    note(randomOp(ctx, hosts, removed, roles, net, random));
    clock.at(5 + Math.floor(random() * 25), opLoop);
  };
  clock.at(50, opLoop);
  clock.at(o.chaosMs, () => {
    chaos = false;
    net.heal();
    note('network healed; operations stop');
  });

  const endMs = o.chaosMs + SETTLE_MS;
  while (checker.violations.length === 0 && clock.step(endMs)) r.steps++;
  if (checker.violations.length === 0) {
    const alive = hosts.filter((h) => !removed.has(h.name));
    checker.checkConverged(alive, removed);
    for (const h of hosts) checker.checkFiles(h);
    roles.checkSettled(alive);
  }
  r.checks = checker.checks;
  r.messages = net.sent;
  r.lost = net.lost;
  r.purged = hosts.reduce((n, h) => n + h.purged, 0);
  const v = checker.violations[0];
  if (v) r.violation = { ...v, step: r.steps, atMs: clock.nowMs };
  return r;
}

/** Every host pulls every other (one pull in flight per pair, as PeerLink) and runs its tombstone keeper. */
function startPulls(hosts: readonly SimHost[], clock: SimClock, net: SimNetwork, random: () => number): void {
  let reqId = 0;
  const pull = (h: SimHost, peer: SimHost) => {
    const id = ++reqId;
    const requestedAtMs = clock.nowMs;
    const peerPulledAtMs = h.pulledBy.get(peer.name);
    h.inFlight.set(peer.name, id);
    net.send(h.name, peer.name, () => {
      peer.pulledBy.set(h.name, clock.nowMs); // PeerService.getents → PeerManager.notePulledBy
      const listing = peer.listing();
      net.send(peer.name, h.name, () => {
        if (h.inFlight.get(peer.name) !== id) return; // the connection that asked is gone
        h.inFlight.delete(peer.name);
        h.merge(peer.name, listing, requestedAtMs, peerPulledAtMs);
      });
    });
    // A pull that never answers ends its connection: the next one starts afresh.
    clock.at(PULL_TIMEOUT_MS, () => {
      if (h.inFlight.get(peer.name) === id) h.inFlight.delete(peer.name);
    });
  };
  for (const h of hosts) {
    for (const peer of hosts) {
      if (peer === h) continue;
      const loop = () => {
        if (!h.inFlight.has(peer.name)) pull(h, peer);
        clock.at(PULL_INTERVAL_MS + Math.floor(random() * 20), loop);
      };
      clock.at(Math.floor(random() * PULL_INTERVAL_MS), loop);
    }
    const purgeLoop = () => {
      h.purge(PURGE_MIN_AGE_MS);
      clock.at(PURGE_INTERVAL_MS, purgeLoop);
    };
    clock.at(Math.floor(random() * PURGE_INTERVAL_MS), purgeLoop);
  }
}

function randomOp(c: OpContext, hosts: SimHost[], removed: Set<string>, roles: RoleSim, net: SimNetwork, random: () => number): string | undefined {
  const h = pick(random, hosts)!;
  const x = random();
  if (x < 0.2) return ownedWrite(h, c);
  if (x < 0.25) return ownedDelete(h, c);
  if (x < 0.32) return designate(h, c);
  // The operator forces no host it removed (a removed host's runners go on, its admin does not).
  if (x < 0.36) return removed.has(h.name) ? undefined : roles.force(h);
  if (x < 0.46) return newLogfile(h, c);
  if (x < 0.6) return fetch(h, c);
  if (x < 0.7) return replay(h, c);
  if (x < 0.76) return logDelete(h, c);
  if (x < 0.77 && removed.size === 0 && hosts.length > 2) {
    const victim = pick(random, hosts.filter((v) => v !== h))!;
    removed.add(victim.name);
    return removeHost(h, victim.name);
  }
  if (x < 0.85) {
    const other = pick(random, hosts.filter((v) => v !== h))!;
    net.partition(h.name, other.name);
    return `cut ${h.name} | ${other.name}`;
  }
  if (x < 0.9) {
    net.heal();
    net.faults = { lossRate: random() * 0.3, minDelayMs: 1, maxDelayMs: 1 + Math.floor(random() * 150) };
    return `network: partitions healed, loss ${net.faults.lossRate.toFixed(2)}, delay up to ${net.faults.maxDelayMs} ms`;
  }
  return undefined;
}
