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
  /** Unique per channel: a retried publish with the same key is committed once.
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

export interface PublishResult {
  /** The event's id. */
  id: string;
  channel: string;
}

/** Publishes one event; resolves once the gateway accepted it (202). Errors
 * are typed like the WebSocket's: `UnauthorizedError` (401), `ProtocolError`
 * (`forbidden`, `invalid_channel`, `message_too_large`, `rate_limited`
 * (retryable, with `retryAfterMs` and `scope`)…), `ServerError` (5xx,
 * retryable). With `retries`, retryable failures are retried (see there). */
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

export interface PublishBatchResult {
  channel: string;
  /** The events' ids, in the request's order (the given id or the gateway's). */
  ids: string[];
}

/** Publishes up to ten events in one request
 * (`POST {url}/v1/channels/{channel}/events:batch`), all or nothing: one
 * invalid event (400 `invalid_event`, its index in the message) or the
 * batch over a rate (429) and none is taken. Resolves once the gateway
 * accepted them (202), in order. Errors are typed as for {@link publish};
 * an empty batch or one of more than ten events is refused before sending
 * (`config`). */
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
    let body: { channel?: unknown; ids?: unknown } = {};
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      // checked below
    }
    if (!Array.isArray(body?.ids)) {
      throw new ProtocolError("decode", `unexpected answer to a batch publish: ${text.slice(0, 200)}`);
    }
    return { channel: String(body.channel ?? options.channel), ids: body.ids.map(String) };
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
  let body: Partial<PublishResult> = {};
  try {
    body = JSON.parse(text) as Partial<PublishResult>;
  } catch {
    // an answer without a body
  }
  return { id: String(body.id ?? ""), channel: String(body.channel ?? options.channel) };
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
