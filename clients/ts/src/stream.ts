/**
 * Streams and outputs of any size over the HTTP API (docs/protocol.md,
 * "Streams" and "Messages larger than one event").
 *
 * - `Coalescer`: what is written within a window (default 50 ms) or up to
 *   a size bound (default 64 KiB) goes as one event `{stream, index, text}`;
 *   `finish()` adds `{stream, index, end: true}`.
 * - `openStream()`: a stream that publishes as it goes, what is pending
 *   sent as one batch request (`publishBatch`), in order.
 * - `publishMessage()`: data of any size, one event when it fits, else its
 *   chunk events, ten per batch request.
 */
import { AgentWireError } from "./errors.js";
import { type Payload, asEventData, escapedLen, MAX_MESSAGE_ID, splitMessage } from "./chunks.js";
import { type FetchLike, newKey, publish, publishBatch } from "./publish.js";

export const DEFAULT_WINDOW_MS = 50;
export const DEFAULT_MAX_BYTES = 64 * 1024;

export type StreamEventData =
  | { stream: string; index: number; text: string }
  | { stream: string; index: number; end: true };

/** Coalesces one stream's pieces into event data; the clock is the caller's. */
export class Coalescer {
  #buf = "";
  #size = 0;
  #since: number | undefined;
  #index = 0;
  #ended = false;
  readonly maxBytes: number;

  constructor(
    readonly stream: string,
    readonly windowMs = DEFAULT_WINDOW_MS,
    maxBytes = DEFAULT_MAX_BYTES,
  ) {
    this.maxBytes = Math.min(Math.max(1, maxBytes), 64 * 1024);
  }

  /** Adds `text`; the events due now because the buffer reached the bound. */
  push(text: string, now = Date.now()): StreamEventData[] {
    const out: StreamEventData[] = [];
    for (const ch of text) {
      const n = escapedLen(ch.codePointAt(0) ?? 0);
      if (this.#size + n > this.maxBytes) {
        const e = this.flush();
        if (e) out.push(e);
      }
      if (this.#buf === "") this.#since = now;
      this.#buf += ch;
      this.#size += n;
    }
    return out;
  }

  /** When the buffered text must go (ms since the epoch), if any is buffered. */
  deadline(): number | undefined {
    return this.#since === undefined ? undefined : this.#since + this.windowMs;
  }

  flush(): StreamEventData | undefined {
    if (this.#buf === "") return undefined;
    const text = this.#buf;
    this.#buf = "";
    this.#size = 0;
    this.#since = undefined;
    return { stream: this.stream, index: this.#index++, text };
  }

  /** The buffered text and the end marker (once). */
  finish(): StreamEventData[] {
    if (this.#ended) return [];
    this.#ended = true;
    const out: StreamEventData[] = [];
    const last = this.flush();
    if (last) out.push(last);
    out.push({ stream: this.stream, index: this.#index++, end: true });
    return out;
  }
}

export interface HttpTarget {
  /** The gateway's HTTP base URL. */
  url: string;
  /** A token with a `publish` grant for the channel. */
  token: string;
  channel: string;
  kind: string;
  /** Default `globalThis.fetch`. */
  fetch?: FetchLike;
}

/** `POST …/events:batch` of up to ten `{id, data}` events of `t.kind`, in order. */
function sendBatch(t: HttpTarget, events: { id: string; data: unknown }[]): Promise<unknown> {
  const options: Parameters<typeof publishBatch>[0] = {
    url: t.url,
    token: t.token,
    channel: t.channel,
    events: events.map((e) => ({ kind: t.kind, data: e.data, id: e.id })),
  };
  if (t.fetch) options.fetch = t.fetch;
  return publishBatch(options);
}

/** A stream being published; write pieces, then `close()`. */
export interface PublishStream {
  readonly id: string;
  /** Adds a piece (a token, a line); throws the error that stopped the stream. */
  write(text: string): void;
  /** Sends what is buffered now and waits until everything written was sent. */
  flush(): Promise<void>;
  /** Sends the rest and the end marker; resolves when all were accepted
   * (rejects with the first failure). */
  close(): Promise<void>;
}

export interface StreamOptions extends HttpTarget {
  /** The stream id (default a new UUID); each event's idempotency key is `<id>:<index>`. */
  id?: string;
  windowMs?: number;
  maxBytes?: number;
}

/** Opens a stream to `channel`: pieces coalesced, sent in order as they come. */
export function openStream(options: StreamOptions): PublishStream {
  const id = options.id ?? newKey();
  const c = new Coalescer(id, options.windowMs ?? DEFAULT_WINDOW_MS, options.maxBytes ?? DEFAULT_MAX_BYTES);
  const queue: StreamEventData[] = [];
  let sending: Promise<void> = Promise.resolve();
  let failure: unknown;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const pump = () => {
    sending = sending.then(async () => {
      while (queue.length && failure === undefined) {
        const batch = queue.splice(0, 10);
        try {
          await sendBatch(options, batch.map((data) => ({ id: `${id}:${data.index}`, data })));
        } catch (err) {
          failure = err;
        }
      }
    });
  };
  const enqueue = (items: StreamEventData[]) => {
    if (items.length === 0) return;
    queue.push(...items);
    pump();
  };
  const arm = () => {
    const d = c.deadline();
    if (d === undefined || timer !== undefined) return;
    timer = setTimeout(() => {
      timer = undefined;
      const e = c.flush();
      if (e) enqueue([e]);
    }, Math.max(0, d - Date.now()));
  };
  const check = () => {
    if (failure !== undefined) throw failure;
  };
  return {
    id,
    write(text: string) {
      check();
      enqueue(c.push(text));
      arm();
    },
    async flush() {
      clearTimeout(timer);
      timer = undefined;
      const e = c.flush();
      if (e) enqueue([e]);
      await sending;
      check();
    },
    async close() {
      clearTimeout(timer);
      timer = undefined;
      enqueue(c.finish());
      await sending;
      check();
    },
  };
}

export interface MessageOptions extends HttpTarget {
  /** The message id (at most 112 bytes; default a new UUID): sending the same message again makes it once. */
  id?: string;
  payload: Payload;
}

/** Publishes data of any size: one event when it fits (and is not bytes),
 * else its chunk events, ten per batch request, in order. */
export async function publishMessage(options: MessageOptions): Promise<{ id: string; events: number }> {
  const id = options.id ?? newKey();
  const data = asEventData(options.payload);
  if (data !== undefined) {
    await publish({ ...options, data, idempotencyKey: id } as Parameters<typeof publish>[0]);
    return { id, events: 1 };
  }
  if (new TextEncoder().encode(id).length > MAX_MESSAGE_ID) {
    throw new AgentWireError("config", `a message id is at most ${MAX_MESSAGE_ID} bytes`);
  }
  const chunks = splitMessage(id, options.payload);
  for (let i = 0; i < chunks.length; i += 10) await sendBatch(options, chunks.slice(i, i + 10));
  return { id, events: chunks.length };
}
