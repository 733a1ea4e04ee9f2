/** One channel of a client: its listeners, its streams, its state inside the client. */
import { Emitter } from "./emitter.js";
import type { AgentWireError } from "./errors.js";
import type { ChannelEvents } from "./events.js";
import type { Sequencer } from "./sequencer.js";
import type { Position, Since, StreamItem } from "./types.js";

/** One subscribed channel's state inside the client. */
export interface ChannelCore {
  name: string;
  seq: Sequencer;
  initial: Since | undefined;
  acked: number | undefined;
  /** An explicit `ack(seq)` not yet sent. */
  ackWanted: number | undefined;
  /** Paused: left, kept, not joined until resumed. */
  paused: boolean;
  /** A stream's buffer reached its high-water mark: the channel takes no
   * events until the stream drained to half, then re-joins from its last seq. */
  suspended?: boolean;
  /** Since when (ms) a live hole waits for its missing frames, before a re-join fetches them. */
  holeSince?: number | undefined;
  channel: Channel;
}

export interface ChannelOps {
  position(): Position | undefined;
  ack(seq: number): Promise<void>;
  leave(): Promise<void>;
  pause(): Promise<void>;
  resume(): void;
  resync(): void;
  /** A stream consumer took an item (an ack may be due; a suspended channel may go on). */
  taken?(): void;
}

/** Items a `stream()` buffers before the channel stops taking events (default). */
export const DEFAULT_STREAM_HIGH_WATER_MARK = 1024;

type Sink = {
  /** Queues an item whose delivery brings the channel to seq `pos`; false when the queue is full. */
  push(item: StreamItem, pos: number | undefined): boolean;
  end(err?: AgentWireError): void;
  /** The last seq this stream's consumer has taken everything up to (undefined: all pushed). */
  ackable(): number | undefined;
  /** The queue is at most half full. */
  drained(): boolean;
};


/**
 * One channel of a client: events in order, each seq once; gaps the gateway
 * reports; `joined` answers. Get it from `client.channel(name)`.
 */
export class Channel {
  readonly name: string;
  readonly #emitter: Emitter<ChannelEvents>;
  readonly #sinks = new Set<Sink>();
  readonly #ops: ChannelOps;
  #ended: AgentWireError | null | undefined = undefined;

  /** @internal */
  constructor(
    name: string,
    onListenerError: (err: unknown, event: string) => void,
    ops: ChannelOps,
  ) {
    this.name = name;
    this.#emitter = new Emitter<ChannelEvents>(onListenerError);
    this.#ops = ops;
  }

  /** Listens; returns the function that stops listening. */
  on<K extends keyof ChannelEvents>(event: K, listener: (value: ChannelEvents[K]) => void): () => void {
    return this.#emitter.on(event, listener);
  }

  /** Where delivery stands: the log's epoch and the last delivered seq. */
  get position(): Position | undefined {
    return this.#ops.position();
  }

  /** Moves the durable cursor to `seq`, never past the last delivered seq.
   * Sent at once when connected, else with the next connection. */
  ack(seq: number): Promise<void> {
    return this.#ops.ack(seq);
  }

  /** Acknowledges what was delivered (unless acks are off), leaves, and ends
   * the channel's streams. Resolves when the gateway answered (or the
   * connection ended). */
  leave(): Promise<void> {
    return this.#ops.leave();
  }

  /** Pauses live delivery: acknowledges what was delivered (unless acks are
   * off) and leaves the channel, keeping its position and its streams; it
   * is not joined on reconnect. Resolves when the gateway answered. */
  pause(): Promise<void> {
    return this.#ops.pause();
  }

  /** Resumes a paused channel from the last seq delivered before the pause:
   * the replay brings what was published meanwhile. */
  resume(): void {
    this.#ops.resume();
  }

  /** Drops the channel's position (its last delivered seq, held events, the
   * last ack), reports it (`resync`) and joins again from the head: delivery
   * goes on after the head that the new `joined` names. */
  resync(): void {
    this.#ops.resync();
  }

  /**
   * The channel's events and gaps as an async iterator, from the moment it
   * is called (call it right after `client.channel()` to miss nothing). It
   * ends when the channel is left, the client closes, or `signal` aborts;
   * it throws the error that ended the client or refused the channel.
   */
  stream(options: { signal?: AbortSignal; highWaterMark?: number } = {}): AsyncIterableIterator<StreamItem> {
    const queue: StreamItem[] = [];
    // For each queued item, the seq delivery stood at before it: what may be acknowledged
    // while that item waits for the consumer.
    const before: number[] = [];
    const hwm = Math.max(1, options.highWaterMark ?? DEFAULT_STREAM_HIGH_WATER_MARK);
    let pushedPos = this.#ops.position()?.seq ?? 0;
    const take = (): StreamItem => {
      before.shift();
      const item = queue.shift()!;
      this.#ops.taken?.();
      return item;
    };
    let waiting: { resolve: (r: IteratorResult<StreamItem>) => void; reject: (e: unknown) => void } | undefined;
    let done = false;
    let failure: AgentWireError | undefined;
    const signal = options.signal;
    const finish = (err?: AgentWireError) => {
      if (done) return;
      done = true;
      failure = err;
      this.#sinks.delete(sink);
      signal?.removeEventListener("abort", onAbort);
      if (waiting) {
        const w = waiting;
        waiting = undefined;
        if (err && queue.length === 0) w.reject(err);
        else if (queue.length) w.resolve({ value: take(), done: false });
        else w.resolve({ value: undefined, done: true });
      }
    };
    const onAbort = () => finish();
    const sink: Sink = {
      push: (item, pos) => {
        if (done) return true;
        const prev = pushedPos;
        if (pos !== undefined) pushedPos = pos;
        if (waiting) {
          const w = waiting;
          waiting = undefined;
          w.resolve({ value: item, done: false });
          queueMicrotask(() => this.#ops.taken?.());
          return true;
        }
        queue.push(item);
        before.push(prev);
        return queue.length < hwm;
      },
      end: (err) => finish(err),
      ackable: () => (queue.length ? before[0] : undefined),
      drained: () => queue.length <= hwm / 2,
    };
    if (this.#ended !== undefined) {
      done = true;
      failure = this.#ended ?? undefined;
    } else if (signal?.aborted) {
      done = true;
    } else {
      this.#sinks.add(sink);
      signal?.addEventListener("abort", onAbort, { once: true });
    }
    const iterator: AsyncIterableIterator<StreamItem> = {
      next: () => {
        if (queue.length) return Promise.resolve({ value: take(), done: false });
        if (done) {
          if (failure) {
            const err = failure;
            failure = undefined; // thrown once, then the iterator is done
            return Promise.reject(err);
          }
          return Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => {
          waiting = { resolve, reject };
        });
      },
      return: () => {
        finish();
        queue.length = 0;
        before.length = 0;
        failure = undefined;
        this.#ops.taken?.();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }

  /** @internal */
  _emit<K extends keyof ChannelEvents>(event: K, value: ChannelEvents[K]): void {
    this.#emitter.emit(event, value);
  }

  /** @internal */
  _push(item: StreamItem, pos?: number): boolean {
    let room = true;
    for (const s of [...this.#sinks]) if (!s.push(item, pos)) room = false;
    return room;
  }

  /** @internal: the last seq every open stream's consumer has taken (undefined: no stream waits). */
  _ackable(): number | undefined {
    let min: number | undefined;
    for (const s of this.#sinks) {
      const a = s.ackable();
      if (a !== undefined) min = min === undefined ? a : Math.min(min, a);
    }
    return min;
  }

  /** @internal: every open stream is at most half full. */
  _drained(): boolean {
    for (const s of this.#sinks) if (!s.drained()) return false;
    return true;
  }

  /** @internal: the channel is over (left: no error; refused or the client failed: the error). */
  _end(err?: AgentWireError): void {
    if (this.#ended !== undefined) return;
    this.#ended = err ?? null;
    for (const s of [...this.#sinks]) s.end(err);
    this.#sinks.clear();
  }
}

export function sinceOf(core: ChannelCore): Since | undefined {
  const { epoch, last } = core.seq;
  if (epoch !== undefined && last !== undefined) return { epoch, seq: last };
  return core.initial;
}
