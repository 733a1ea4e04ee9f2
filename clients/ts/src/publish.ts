/**
 * Publishing over the gateway's HTTP route, as an agent without AWS
 * credentials does: `POST {url}/v1/channels/{channel}/events` with a token
 * holding a `publish` grant.
 */
import { Backoff } from "./backoff.js";
import { AgentWireError, ProtocolError, ServerError, UnauthorizedError, parseErrorBody, retryAfterOf } from "./errors.js";

/** The `fetch` the HTTP calls use (a subset of the standard one). */
export type FetchLike = (
  input: string,
  init: { method: string; headers: Record<string, string>; body: string; signal?: AbortSignal },
) => Promise<{
  status: number;
  ok: boolean;
  text(): Promise<string>;
  /** Read for `Retry-After` when the body gives no `retry_after_ms`. */
  headers?: { get(name: string): string | null };
}>;

export interface PublishOptions {
  /** The gateway's HTTP base URL (`https://…/prod`, `http://127.0.0.1:8080`). */
  url: string;
  /** A token with a `publish` grant for the channel. */
  token: string;
  channel: string;
  kind: string;
  data?: unknown;
  /** Unique per channel: a retried publish with the same key is committed
   * once (a repeat of a committed key is answered 200 with the seq it has).
   * With `retries`, one is generated when none is given. */
  idempotencyKey?: string;
  /** Retry a retryable failure (429 `rate_limited`, 408, 5xx, network) up to
   * this many times (default 0: one attempt, the error says `retryable` and,
   * for 429, `retryAfterMs`). Each retry waits max(the gateway's
   * `retryAfterMs`, a full-jitter backoff of 200 ms doubling to 5 s). */
  retries?: number;
  /** Default `globalThis.fetch`. */
  fetch?: FetchLike;
  signal?: AbortSignal;
}

/** What the gateway took. `seq` and `epoch` are set when the event is
 * committed (201, or 200 for a repeat), `queued` when it is on the
 * gateway's queue (202). A gateway that answers only `{id, channel}` (202,
 * before it committed at once) leaves all three out. */
export interface PublishResult {
  /** The event's id. */
  id: string;
  channel: string;
  /** The event's seq on the channel: set when it is committed (201), or
   * was already (200, a repeat of its idempotency key: the seq it has). */
  seq?: number;
  /** The channel's epoch the `seq` belongs to; set with `seq`. */
  epoch?: string;
  /** `true` when the gateway could not commit at once and queued the event
   * (202): it is committed shortly, its seq is not known yet. */
  queued?: boolean;
}

/** Publishes one event; resolves once the gateway took it, on any 2xx:
 * - 201: committed now; the result has its `seq` and `epoch`.
 * - 200: the `idempotencyKey` was already committed (a repeat, such as a
 *   retry whose first answer was lost): nothing new is committed; `seq` and
 *   `epoch` are the ones the event already has.
 * - 202: queued (`queued: true`, no `seq`): the gateway could not commit at
 *   once; the event is committed shortly, once.
 *
 * Errors are typed like the WebSocket's: `UnauthorizedError` (401),
 * `ProtocolError` (`forbidden`, `invalid_channel`, `message_too_large`,
 * `rate_limited` (retryable, with `retryAfterMs` and `scope`)…),
 * `ServerError` (5xx, retryable). With `retries`, retryable failures are
 * retried (see there). */
export async function publish(options: PublishOptions): Promise<PublishResult> {
  const retries = retriesOf(options.retries);
  // A retry must never publish twice: every attempt carries the same key.
  const once: PublishOptions =
    retries === 0 ? options : { ...options, idempotencyKey: options.idempotencyKey ?? newKey() };
  return withRetries(retries, options.signal, () => publishOnce(once));
}

/** The most events one batch request carries. */
export const MAX_BATCH_EVENTS = 10;

/** One event of a batch. */
export interface BatchEvent {
  kind: string;
  data?: unknown;
  /** The idempotency key (1 to 115 characters), the publisher's own: the
   * event's id is `<tag>~<key>`, the tag one of the token's principal, and
   * the event is committed once however often it is sent. The gateway makes one when none
   * is given; with `retries`, the client does. */
  id?: string;
}

export interface PublishBatchOptions {
  /** The gateway's HTTP base URL. */
  url: string;
  /** A token with a `publish` grant for the channel. */
  token: string;
  channel: string;
  /** 1 to 10 events, published in this order. */
  events: BatchEvent[];
  /** As for {@link publish}: retry a retryable failure up to this many times
   * (default 0). Every event without an `id` is given one first, so a retry
   * (which resends them all) commits each event once. */
  retries?: number;
  /** Default `globalThis.fetch`. */
  fetch?: FetchLike;
  signal?: AbortSignal;
}

/** One committed event of a batch: its id, seq and the channel's epoch. */
export interface PublishedEvent {
  id: string;
  seq: number;
  epoch: string;
}

/** What the gateway took: `events` when the batch is committed (201, or
 * 200 for a repeat), `queued` when it is on the gateway's queue (202). A
 * gateway that answers only `{channel, ids}` leaves both out. */
export interface PublishBatchResult {
  channel: string;
  /** The events' ids, in the request's order (the given id or the gateway's). */
  ids: string[];
  /** Each event's id, seq and epoch, in the request's order: set when the
   * batch is committed (201: now; 200: every event's id was already
   * committed, these are the seqs they have). */
  events?: PublishedEvent[];
  /** `true` when the gateway could not commit at once and queued the batch
   * (202): committed shortly, in order; no seqs yet. */
  queued?: boolean;
}

/** Publishes up to ten events in one request
 * (`POST {url}/v1/channels/{channel}/events:batch`), all or nothing: one
 * invalid event (400 `invalid_event`, its index in the message) or the
 * batch over a rate (429) and none is taken. Resolves once the gateway took
 * them, in order, on any 2xx: 201 committed now (`events` with their seqs),
 * 200 every event's id already committed (a repeat: `events` with the seqs
 * they have), 202 queued (`queued: true`, no seqs yet; committed shortly).
 * Errors are typed as for {@link publish}; an empty batch or one of more
 * than ten events is refused before sending (`config`). */
export async function publishBatch(options: PublishBatchOptions): Promise<PublishBatchResult> {
  const retries = retriesOf(options.retries);
  const events = options.events as BatchEvent[] | undefined;
  if (!Array.isArray(events) || events.length < 1 || events.length > MAX_BATCH_EVENTS) {
    throw new AgentWireError(
      "config",
      `a batch holds 1 to ${MAX_BATCH_EVENTS} events, not ${Array.isArray(events) ? events.length : String(events)}`,
    );
  }
  events.forEach((e, i) => {
    if (!e || typeof e.kind !== "string" || !e.kind) throw new AgentWireError("config", `event ${i}: \`kind\` is needed`);
  });
  // A retry resends every event: each carries its id on every attempt.
  const sent = events.map((e) => ({
    kind: e.kind,
    data: e.data ?? null,
    ...(e.id !== undefined ? { id: e.id } : retries > 0 ? { id: newKey() } : {}),
  }));
  const f = fetchOf(options.fetch, "publishBatch()");
  const endpoint = `${channelUrl(options)}/events:batch`;
  const init: Parameters<FetchLike>[1] = {
    method: "POST",
    headers: { authorization: `Bearer ${options.token}`, "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify({ events: sent }),
  };
  if (options.signal) init.signal = options.signal;
  return withRetries(retries, options.signal, async () => {
    const text = await call(f, endpoint, init, options.signal);
    let body: { channel?: unknown; ids?: unknown; events?: unknown; queued?: unknown } = {};
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      // checked below
    }
    if (!Array.isArray(body?.ids)) {
      throw new ProtocolError("decode", `unexpected answer to a batch publish: ${text.slice(0, 200)}`);
    }
    const result: PublishBatchResult = { channel: String(body.channel ?? options.channel), ids: body.ids.map(String) };
    const committed = committedEvents(body.events, result.ids.length);
    if (committed) result.events = committed;
    if (typeof body.queued === "boolean") result.queued = body.queued;
    return result;
  });
}

/** `retries`, checked: a non-negative integer (default 0). */
export function retriesOf(retries: number | undefined): number {
  const n = retries ?? 0;
  if (!Number.isInteger(n) || n < 0) {
    throw new AgentWireError("config", "`retries` must be a non-negative integer");
  }
  return n;
}

/** Runs `attempt`, retrying a retryable `AgentWireError` up to `retries`
 * times, each after max(its `retryAfterMs`, a full-jitter backoff of 200 ms
 * doubling to 5 s). Only for requests that are safe to repeat (a read, a
 * publish with its idempotency keys). */
export async function withRetries<T>(retries: number, signal: AbortSignal | undefined, attempt: () => Promise<T>): Promise<T> {
  if (retries === 0) return attempt();
  const backoff = new Backoff({ min: 200, max: 5_000, maxAttempts: retries });
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof AgentWireError) || !err.retryable || signal?.aborted) throw err;
      const jitter = backoff.nextDelay(Math.random());
      if (jitter === undefined) throw err;
      await sleep(Math.max(jitter, err.retryAfterMs ?? 0), signal);
    }
  }
}

export function newKey(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (typeof c?.randomUUID === "function") return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

async function publishOnce(options: PublishOptions): Promise<PublishResult> {
  const f = fetchOf(options.fetch, "publish()");
  const endpoint = `${channelUrl(options)}/events`;
  if (!options.kind) throw new AgentWireError("config", "`kind` is needed");
  const headers: Record<string, string> = {
    authorization: `Bearer ${options.token}`,
    "content-type": "application/json",
    accept: "application/json",
  };
  if (options.idempotencyKey !== undefined) headers["idempotency-key"] = options.idempotencyKey;
  const init: Parameters<FetchLike>[1] = {
    method: "POST",
    headers,
    body: JSON.stringify({ kind: options.kind, data: options.data ?? null }),
  };
  if (options.signal) init.signal = options.signal;
  const text = await call(f, endpoint, init, options.signal);
  let body: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === "object") body = parsed as Record<string, unknown>;
  } catch {
    // an answer without a body
  }
  const result: PublishResult = { id: String(body.id ?? ""), channel: String(body.channel ?? options.channel) };
  // What the gateway says it committed (201/200) or queued (202); other fields are ignored.
  if (isSeq(body.seq)) result.seq = body.seq;
  if (typeof body.epoch === "string") result.epoch = body.epoch;
  if (typeof body.queued === "boolean") result.queued = body.queued;
  return result;
}

function isSeq(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** A batch answer's `events`, when it is a list of `n` committed events
 * (each with an id, a seq and an epoch), else `undefined`. */
function committedEvents(events: unknown, n: number): PublishedEvent[] | undefined {
  if (!Array.isArray(events) || events.length !== n) return undefined;
  const out: PublishedEvent[] = [];
  for (const e of events as unknown[]) {
    if (!e || typeof e !== "object") return undefined;
    const { id, seq, epoch } = e as Record<string, unknown>;
    if (typeof id !== "string" || !isSeq(seq) || typeof epoch !== "string") return undefined;
    out.push({ id, seq, epoch });
  }
  return out;
}

/** The `fetch` to use: the one passed, else `globalThis.fetch`. */
export function fetchOf<F>(given: F | undefined, what: string): F {
  const f = given ?? (globalThis as unknown as { fetch?: F }).fetch;
  if (typeof f !== "function") {
    throw new AgentWireError("config", `no fetch implementation: pass \`fetch\` to ${what}`);
  }
  return f;
}

/** `{url}/v1/channels/{channel}`, after checking both are given. */
export function channelUrl(options: { url: string; channel: string }): string {
  if (!options.url) throw new AgentWireError("config", "`url` is needed");
  if (!options.channel) throw new AgentWireError("config", "`channel` is needed");
  return `${options.url.replace(/\/+$/, "")}/v1/channels/${encodeURIComponent(options.channel)}`;
}

/** What a `fetch` answers, as far as these calls read it. */
export interface FetchAnswer {
  status: number;
  text(): Promise<string>;
  /** Read for `Retry-After` when the body gives no `retry_after_ms`. */
  headers?: { get(name: string): string | null };
}

/** One request: the body's text on a 2xx, else the typed error
 * ({@link publishError}); an unreachable gateway is a retryable `network` error. */
export async function call<I>(
  f: (input: string, init: I) => Promise<FetchAnswer>,
  endpoint: string,
  init: I,
  signal: AbortSignal | undefined,
): Promise<string> {
  let res: FetchAnswer;
  try {
    res = await f(endpoint, init);
  } catch (err) {
    if (signal?.aborted) throw err;
    throw new AgentWireError("network", `cannot reach ${endpoint}: ${err instanceof Error ? err.message : String(err)}`, {
      retryable: true,
      cause: err,
    });
  }
  const text = await res.text().catch(() => "");
  if (res.status >= 200 && res.status < 300) return text;
  let retryAfter: string | null = null;
  try {
    retryAfter = res.headers?.get("retry-after") ?? null;
  } catch {
    // a fetch without headers
  }
  throw publishError(res.status, text, retryAfter);
}

/** The typed error for a publish answered `status` with `text` (and the
 * `Retry-After` header `retryAfter`, if any). */
export function publishError(status: number, text: string, retryAfter?: string | null): AgentWireError {
  const e = parseErrorBody(text);
  const message = e?.message ?? (text.trim().slice(0, 300) || `HTTP ${status}`);
  const code = e?.code;
  if (status === 429) {
    // The body's `retry_after_ms`, else `Retry-After` (seconds) × 1000.
    let retryAfterMs = retryAfterOf(e);
    if (retryAfterMs === undefined && retryAfter != null && /^\s*\d+(\.\d+)?\s*$/.test(retryAfter)) {
      retryAfterMs = Math.round(Number(retryAfter) * 1000);
    }
    return new ProtocolError(code ?? "rate_limited", message, {
      status,
      retryable: true,
      ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
      ...(typeof e?.scope === "string" ? { scope: e.scope } : {}),
    });
  }
  if (status === 401) return new UnauthorizedError(message, { code: code ?? "unauthorized", status });
  if (status >= 500) return new ServerError(code ?? "internal", message, { status });
  if (status === 408) return new ProtocolError(code ?? "timeout", message, { status, retryable: true });
  const fallback =
    status === 403 ? "forbidden" : status === 404 ? "not_found" : status === 413 ? "message_too_large" : "invalid_frame";
  return new ProtocolError(code ?? fallback, message, { status });
}
