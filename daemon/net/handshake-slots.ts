// Slots for connections that have not authenticated yet, one pool per listener kind (TCP and
// the peer.sock Unix socket never share a cap). Unauthenticated connections are capped in
// total and per source address, separately from the members' authenticated connections, so
// idle sockets cannot lock members out:
//   - an address already holding maxPerAddress handshakes gets no more (refused at once);
//   - when the pool is full, the oldest handshake of the address holding the most is dropped
//     to make room: a flood from a few addresses evicts itself, while a real peer finishes
//     its handshake within milliseconds of connecting.
import { assert } from '../../common/util/assert.js';

export const DEFAULT_MAX_HANDSHAKES = 32;
export const DEFAULT_MAX_HANDSHAKES_PER_ADDRESS = 4;

export interface Slot {
  readonly address: string;
  /** Drop this connection (it was evicted). */
  evict(): void;
}

export type SlotDecision = { ok: true } | { ok: false; why: string };

export class HandshakeSlots {
  /** In arrival order per address: the first is the oldest. */
  private readonly byAddress = new Map<string, Slot[]>();
  private count = 0;

  constructor(readonly maxTotal: number = DEFAULT_MAX_HANDSHAKES, readonly maxPerAddress: number = DEFAULT_MAX_HANDSHAKES_PER_ADDRESS) {
    assert(Number.isSafeInteger(maxTotal) && maxTotal >= 1, `bad handshake cap ${maxTotal}`);
    assert(Number.isSafeInteger(maxPerAddress) && maxPerAddress >= 1 && maxPerAddress <= maxTotal, `bad per-address handshake cap ${maxPerAddress}`);
  }

  get size(): number {
    return this.count;
  }

  /** Take a slot for `slot`, evicting another when the pool is full; or say why not. */
  acquire(slot: Slot): SlotDecision {
    const mine = this.byAddress.get(slot.address) ?? [];
    if (mine.length >= this.maxPerAddress) {
      return { ok: false, why: `already ${this.maxPerAddress} unauthenticated connections from ${slot.address}` };
    }
    if (this.count >= this.maxTotal) {
      const victim = this.oldestOfBusiestAddress();
      assert(victim !== undefined, 'a full handshake pool without a slot');
      this.release(victim);
      victim.evict();
    }
    mine.push(slot);
    this.byAddress.set(slot.address, mine);
    this.count += 1;
    return { ok: true };
  }

  /** Give the slot back (idempotent). */
  release(slot: Slot): void {
    const list = this.byAddress.get(slot.address);
    const index = list?.indexOf(slot) ?? -1;
    if (list === undefined || index < 0) return;
    list.splice(index, 1);
    if (list.length === 0) this.byAddress.delete(slot.address);
    this.count -= 1;
  }

  private oldestOfBusiestAddress(): Slot | undefined {
    let busiest: Slot[] | undefined;
    for (const list of this.byAddress.values()) if (busiest === undefined || list.length > busiest.length) busiest = list;
    return busiest?.[0];
  }
}
