/**
 * One channel's delivery order: each seq exactly once, in order.
 *
 * The gateway subscribes before it replays, so a live event may overtake the
 * replay (even the `joined` answer), and a seq may come twice. The sequencer
 * holds events that arrive early and drops what it already delivered. A hole
 * is never guessed to be lost: only the server's `gap` frame (the range is
 * gone from the log) becomes a gap delivery. A hole in the live stream, a
 * replay that stops short of the head (`until`) or held events given up to
 * stay within bounds instead make the channel ask for a re-join from
 * `last` (`wantsRejoin`): the events are still in the log.
 *
 * A port of clients/rust/src/sequencer.rs: keep the two in step.
 */
import type { AgentWireEvent, AgentWireGap } from "./types.js";

export type Delivery =
  | { type: "event"; event: AgentWireEvent }
  | { type: "gap"; gap: AgentWireGap };

/** Held events beyond which they are dropped (and fetched again by a re-join). */
export const DEFAULT_MAX_PENDING = 10_000;
/** The same bound in bytes (the events' approximate JSON size). */
export const DEFAULT_MAX_PENDING_BYTES = 32 * 1024 * 1024;

export interface SequencerOptions {
  maxPending?: number;
  maxPendingBytes?: number;
}

export class Sequencer {
  readonly channel: string;
  #epoch: string | undefined;
  #last: number | undefined;
  /** Where the current replay ends: seqs up to it come from the replay. */
  #replayUntil = 0;
  /** The highest seq known to exist in this epoch. */
  #known = 0;
  /** A join was sent and its `joined` has not come. */
  #awaitingJoin = true;
  /** Held events by seq, and their seqs in ascending order. */
  #pending = new Map<number, { e: AgentWireEvent; size: number }>();
  #keys: number[] = [];
  #pendingBytes = 0;
  #maxPending: number;
  #maxPendingBytes: number;

  constructor(channel: string, options: SequencerOptions = {}) {
    this.channel = channel;
    this.#maxPending = Math.max(1, options.maxPending ?? DEFAULT_MAX_PENDING);
    this.#maxPendingBytes = Math.max(1, options.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES);
  }

  /** A channel resumed from a position the client kept. */
  static resuming(channel: string, epoch: string, last: number, options: SequencerOptions = {}): Sequencer {
    const s = new Sequencer(channel, options);
    s.#epoch = epoch;
    s.#last = last;
    return s;
  }

  /** The last delivered seq: where a re-join resumes. */
  get last(): number | undefined {
    return this.#last;
  }

  get epoch(): string | undefined {
    return this.#epoch;
  }

  /** Events held back, waiting for earlier seqs. */
  get pending(): number {
    return this.#keys.length;
  }

  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  /** A (re)join is about to be sent: until its `joined`, early events wait. */
  /** Delivery stops after `last` (a stream's buffer is full): held events are
   * dropped; a later re-join from `last` fetches the rest. */
  rewind(last: number): void {
    this.#last = last;
    this.#pending.clear();
    this.#keys = [];
    this.#pendingBytes = 0;
  }

  rejoining(): void {
    this.#awaitingJoin = true;
  }

  /** Whether the channel should be joined again from `last`: no join under
   * way, the replay complete, and seqs after `last` known to exist. */
  wantsRejoin(): boolean {
    const last = this.#last;
    if (last === undefined) return false;
    return !this.#awaitingJoin && last >= this.#replayUntil && last < this.#known;
  }

  /** The channel's `joined` entry. Returns what the held events now allow. */
  joined(epoch: string, head: number, replayed: number, until?: number): Delivery[] {
    const end = Math.min(until ?? head, head);
    // Same epoch: the same log (`last` may even be past `head`: live events
    // can overtake the `joined` whose head was read before they were committed).
    const sameLog = this.#epoch === epoch && this.#last !== undefined;
    if (!sameLog) {
      // A new client, another epoch, or a reset log: the replay starts right
      // after `end - replayed`.
      for (const seq of [...this.#keys]) {
        if (this.#pending.get(seq)!.e.epoch !== epoch) this.#remove(seq);
      }
      this.#last = Math.max(0, end - replayed);
      this.#known = 0;
    }
    this.#epoch = epoch;
    this.#replayUntil = end;
    const heldMax = this.#keys.length ? this.#keys[this.#keys.length - 1]! : 0;
    this.#known = Math.max(this.#known, head, heldMax);
    this.#awaitingJoin = false;
    return this.#drain();
  }

  /** The server's `gap` frame: only the part after the last delivered seq,
   * and before the first held event inside it, is surfaced. */
  gap(from: number, to: number): Delivery[] {
    if (this.#last !== undefined) from = Math.max(from, this.#last + 1);
    if (from > to) return this.#drain();
    const held = this.#firstHeldIn(from, to);
    if (held !== undefined) to = held - 1;
    const out: Delivery[] = [];
    if (from <= to) {
      out.push({ type: "gap", gap: { channel: this.channel, from, to, reason: "expired" } });
      this.#last = to;
    }
    out.push(...this.#drain());
    return out;
  }

  /** One event (from an `event` frame or a `batch`). */
  event(e: AgentWireEvent): Delivery[] {
    if (this.#epoch === "" && this.#last === 0) {
      // Joined before the channel had a log (the empty epoch): adopt it.
      this.#epoch = e.epoch;
    }
    if (this.#epoch !== undefined && this.#epoch !== e.epoch && this.#last !== undefined) {
      // Another incarnation of the log: the next `joined` decides.
      this.#hold(e);
      return [];
    }
    const last = this.#last;
    if (last === undefined) {
      this.#hold(e);
      return [];
    }
    if (e.seq <= last) return [];
    this.#known = Math.max(this.#known, e.seq);
    if (e.seq === last + 1) {
      this.#last = e.seq;
      return [{ type: "event", event: e }, ...this.#drain()];
    }
    this.#hold(e);
    return [];
  }

  #hold(e: AgentWireEvent): void {
    if (this.#pending.has(e.seq)) return;
    if (this.#epoch === e.epoch) this.#known = Math.max(this.#known, e.seq);
    const size = approxSize(e);
    this.#pendingBytes += size;
    this.#pending.set(e.seq, { e, size });
    insertSorted(this.#keys, e.seq);
    if (this.#keys.length > this.#maxPending || this.#pendingBytes > this.#maxPendingBytes) {
      this.#pending.clear();
      this.#keys = [];
      this.#pendingBytes = 0;
    }
  }

  #remove(seq: number): void {
    const held = this.#pending.get(seq);
    if (!held) return;
    this.#pending.delete(seq);
    const i = lowerBound(this.#keys, seq);
    if (this.#keys[i] === seq) this.#keys.splice(i, 1);
    this.#pendingBytes = Math.max(0, this.#pendingBytes - held.size);
  }

  #firstHeldIn(from: number, to: number): number | undefined {
    const i = lowerBound(this.#keys, from);
    const seq = this.#keys[i];
    return seq !== undefined && seq <= to ? seq : undefined;
  }

  /** Delivers held events that are next in line; drops held duplicates. */
  #drain(): Delivery[] {
    const out: Delivery[] = [];
    let last = this.#last;
    if (last === undefined) return out;
    let taken = 0;
    while (taken < this.#keys.length) {
      const seq = this.#keys[taken]!;
      if (seq > last + 1) break;
      const { e, size } = this.#pending.get(seq)!;
      this.#pending.delete(seq);
      this.#pendingBytes = Math.max(0, this.#pendingBytes - size);
      taken += 1;
      if (seq === last + 1) {
        out.push({ type: "event", event: e });
        last = seq;
      }
    }
    if (taken) this.#keys.splice(0, taken);
    this.#last = last;
    return out;
  }
}

/** An event's approximate size in memory: its JSON text. */
export function approxSize(e: AgentWireEvent): number {
  let data = 0;
  try {
    data = JSON.stringify(e.data)?.length ?? 0;
  } catch {
    data = 0;
  }
  return data + e.id.length + e.kind.length + e.channel.length + e.epoch.length + e.ts.length + 64;
}

function lowerBound(a: number[], x: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function insertSorted(a: number[], x: number): void {
  if (a.length === 0 || a[a.length - 1]! < x) {
    a.push(x);
    return;
  }
  a.splice(lowerBound(a, x), 0, x);
}
