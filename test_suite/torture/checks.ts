// The invariants the torture runner checks after every step (docs/reliability.md, "Torture
// runner"; docs/design.md §3). Each check returns the violations it found (empty: it holds).
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { NbdClient } from '../../kernel-shim/nbd-client.js';
import { caughtUpWith, fileDigest, waitWritebackDone } from '../helpers/multi-host.js';
import type { MarsHost } from '../helpers/cluster.js';
import { readImage } from '../helpers/oracle.js';
import { waitFor } from '../helpers/wait.js';
import { dataOf, RES, SIZE, type World } from './world.js';

/** " of rN" in a message when the world has more than one resource. */
function ofRes(w: World, res: string): string {
  return w.resources.length > 1 ? ` of ${res}` : '';
}

/** Every write the primary acknowledged (all were flushed or FUA) is on its device, in write order (each resource). */
export async function checkPrimaryData(w: World): Promise<string[]> {
  const out: string[] = [];
  for (const res of w.resources) out.push(...await checkPrimaryDataOf(w, res));
  return out;
}

async function checkPrimaryDataOf(w: World, res: string): Promise<string[]> {
  const client = await NbdClient.connect(w.primary.socketPath(res), res, { timeoutMs: 10_000 });
  const p = `${w.primary.name} (primary${ofRes(w, res)})`;
  try {
    const r = await w.oracles.get(res)!.checkImage((pos, len) => client.read(pos, len));
    if (!r.ok) return [`${p}: its device is no consistent state of the history: ${r.reason}`];
    const m = r.firstMissingAcked;
    if (m) return [`${p}: lost acknowledged and flushed write #${m.seq} (block ${m.block} ${m.holds === 0 ? 'was never written' : `holds write #${m.holds}`})`];
    return [];
  } finally {
    await client.disconnect(5_000).catch(() => client.destroy());
  }
}

/**
 * A secondary whose replay is paused has a disk equal to a prefix of the primary's history. Its
 * replay link must stay put while the disk is read (else the pause has not taken hold yet: retry).
 */
export async function checkPausedPrefix(w: World, h: MarsHost, res = RES): Promise<string[]> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const before = h.link(`resource-${res}/replay-${h.name}`);
    const r = await w.oracles.get(res)!.checkImage(readImage(dataOf(h, res)));
    if (h.link(`resource-${res}/replay-${h.name}`) !== before) continue;
    return r.ok ? [] : [`${h.name} (replay${ofRes(w, res)} paused): its disk is no prefix of the primary's history: ${r.reason}`];
  }
  return [`${h.name}: replay kept advancing for 10 reads after pause-replay took effect`];
}

/** At most one running host is primary of each resource, unless a split brain is reported. */
export async function checkSinglePrimary(w: World): Promise<string[]> {
  const out: string[] = [];
  for (const res of w.resources) out.push(...await checkSinglePrimaryOf(w, res));
  return out;
}

async function checkSinglePrimaryOf(w: World, res: string): Promise<string[]> {
  const primaries = () => w.hosts.filter((h) => h.running && h.actual(res, 'is-primary') === '1');
  try {
    // Status links are published periodically: a host that just stepped down may still read 1.
    await waitFor('at most one primary', () => primaries().length <= 1, 10_000, 100);
    return [];
  } catch {
    const names = primaries().map((h) => h.name);
    for (const h of primaries()) {
      if ((await h.view('is-split-brain', res).catch(() => '0')) === '1') return [];
    }
    return [`hosts ${names.join(', ')} all accept writes${ofRes(w, res)} and none reports a split brain`];
  }
}

/** Byte offsets already scanned in each marsd log. */
export class LogScanner {
  private readonly seen = new Map<string, number>();

  /** New lines naming an InvariantError or an invariant, in any marsd log. */
  scan(w: World): string[] {
    const out: string[] = [];
    for (const h of w.hosts) {
      let size = 0;
      try { size = statSync(h.logPath).size; } catch { continue; }
      const from = this.seen.get(h.name) ?? 0;
      if (size <= from) continue;
      const buf = Buffer.alloc(size - from);
      const fd = openSync(h.logPath, 'r');
      try { readSync(fd, buf, 0, buf.length, from); } finally { closeSync(fd); }
      this.seen.set(h.name, size);
      for (const line of buf.toString('utf8').split('\n')) {
        if (/InvariantError|invariant/i.test(line)) out.push(`${h.name}'s marsd log: ${line.slice(0, 300)}`);
      }
    }
    return out;
  }
}

/** Every secondary replays everything the primary logged, in every resource (within the deadline). */
export async function waitAllCaughtUp(w: World, timeoutMs = 60_000): Promise<void> {
  for (const res of w.resources) {
    await waitWritebackDone(w.primary, res, timeoutMs);
    for (const h of w.secondaries) {
      await h.until(`${h.name} synced and caught up with ${w.primary.name}${ofRes(w, res)}`,
        () => h.link(`resource-${res}/syncstatus-${h.name}`) === String(SIZE) && caughtUpWith(h, w.primary, res), timeoutMs, 50);
    }
  }
}

/** At the end: every disk equals the primary's, in every resource. */
export function checkAllEqual(w: World): string[] {
  const out: string[] = [];
  for (const res of w.resources) {
    const want = fileDigest(dataOf(w.primary, res), SIZE);
    out.push(...w.secondaries.filter((h) => fileDigest(dataOf(h, res), SIZE) !== want)
      .map((h) => `${h.name}'s disk${ofRes(w, res)} differs from the primary ${w.primary.name}'s after everything healed`));
  }
  return out;
}
