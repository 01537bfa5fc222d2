// Which of our queued requests to one peer may be sent next (docs/protocol.md §6, flow control).
// The serving side runs at most maxConcurrentRequests of a connection's requests at once and
// refuses more with EBUSY; with many resources a secondary asks for far more than that (a
// following log-read per fetcher, sync reads, listings, pings). So requests wait here, on the
// requesting side, and are sent only while fewer than `maxInFlight` (below the server's limit)
// are open. Two classes: control requests (listings, link pushes, positions, pings: small and
// latency-bound) go ahead of bulk ones (log streams, sync digests and reads), and bulk ones
// may hold at most `maxBulkInFlight` slots, so a control request always finds a free slot
// soon even when every fetcher follows a growing logfile. Within a class, resources take
// turns (round robin), so one resource's deep queue of sync reads cannot starve another's.
//
// Pure logic, no I/O and no time: a grant is a callback; the caller releases a slot when the
// request's final reply arrived (or the connection closed).
//
// Invariants: inFlight <= maxInFlight and bulkInFlight <= maxBulkInFlight at every moment; a
// job is granted at most once; a cancelled job is never granted.
import { assert } from '../../common/util/assert.js';

export type RequestClass = 'control' | 'bulk';

export interface SchedulerLimits {
  /** requests open at once on the connection (below the server's maxConcurrentRequests) */
  maxInFlight: number;
  /** of those, at most this many bulk requests, so control requests keep a free slot */
  maxBulkInFlight: number;
}

/** What a queued request holds: cancel it while queued, release its slot once granted. */
export interface Ticket {
  readonly cls: RequestClass;
  readonly key: string;
  /** true once granted (its slot is taken until release) */
  granted: boolean;
  /** true once cancelled or released */
  done: boolean;
}

interface Job {
  ticket: Ticket;
  grant: (ticket: Ticket) => void;
}

/** Per class: one FIFO per key; Map order is the round-robin order of the keys. */
class FairQueue {
  private readonly byKey = new Map<string, Job[]>();
  length = 0;

  push(job: Job): void {
    const q = this.byKey.get(job.ticket.key);
    if (q) q.push(job);
    else this.byKey.set(job.ticket.key, [job]);
    this.length++;
  }

  /** The next job in turn: the first key's oldest job; that key then goes to the back. */
  shift(): Job | undefined {
    for (const [key, q] of this.byKey) {
      const job = q.shift()!;
      this.byKey.delete(key);
      if (q.length > 0) this.byKey.set(key, q);
      this.length--;
      return job;
    }
    return undefined;
  }

  remove(ticket: Ticket): boolean {
    const q = this.byKey.get(ticket.key);
    const i = q ? q.findIndex((j) => j.ticket === ticket) : -1;
    if (!q || i < 0) return false;
    q.splice(i, 1);
    if (q.length === 0) this.byKey.delete(ticket.key);
    this.length--;
    return true;
  }

  drain(): Job[] {
    const all = [...this.byKey.values()].flat();
    this.byKey.clear();
    this.length = 0;
    return all;
  }
}

export const DEFAULT_SCHEDULER_LIMITS: SchedulerLimits = { maxInFlight: 48, maxBulkInFlight: 32 };

export class RequestScheduler {
  private readonly control = new FairQueue();
  private readonly bulk = new FairQueue();
  inFlight = 0;
  bulkInFlight = 0;

  constructor(private readonly limits: SchedulerLimits = DEFAULT_SCHEDULER_LIMITS) {
    assert(limits.maxInFlight >= 2 && limits.maxBulkInFlight >= 1 && limits.maxBulkInFlight < limits.maxInFlight,
      'the scheduler needs at least one slot for bulk and one kept for control requests');
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.control.length + this.bulk.length;
  }

  /** Queue a request of `key` (its resource; '' for the tree); grant() runs when it may be sent (maybe at once). */
  submit(cls: RequestClass, key: string, grant: (ticket: Ticket) => void): Ticket {
    const ticket: Ticket = { cls, key, granted: false, done: false };
    (cls === 'control' ? this.control : this.bulk).push({ ticket, grant });
    this.dispatch();
    return ticket;
  }

  /** The request's final reply arrived (or it was given up while queued): free its slot. */
  release(ticket: Ticket): void {
    if (ticket.done) return;
    ticket.done = true;
    if (!ticket.granted) {
      (ticket.cls === 'control' ? this.control : this.bulk).remove(ticket);
      return;
    }
    this.inFlight--;
    if (ticket.cls === 'bulk') this.bulkInFlight--;
    assert(this.inFlight >= 0 && this.bulkInFlight >= 0, 'scheduler slot accounting went negative');
    this.dispatch();
  }

  /** The connection closed: every queued ticket is returned (not granted), every slot freed. */
  clear(): Ticket[] {
    const jobs = [...this.control.drain(), ...this.bulk.drain()];
    for (const j of jobs) j.ticket.done = true;
    this.inFlight = 0;
    this.bulkInFlight = 0;
    return jobs.map((j) => j.ticket);
  }

  private dispatch(): void {
    while (this.inFlight < this.limits.maxInFlight) {
      let job: Job | undefined;
      if (this.control.length > 0) job = this.control.shift();
      else if (this.bulk.length > 0 && this.bulkInFlight < this.limits.maxBulkInFlight) job = this.bulk.shift();
      if (!job) return;
      job.ticket.granted = true;
      this.inFlight++;
      if (job.ticket.cls === 'bulk') this.bulkInFlight++;
      assert(this.inFlight <= this.limits.maxInFlight && this.bulkInFlight <= this.limits.maxBulkInFlight, 'scheduler above its limit');
      job.grant(job.ticket);
    }
  }
}
