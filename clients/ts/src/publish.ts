/**
 * Publishing over the gateway's HTTP route, as an agent without AWS
 * credentials does: `POST {url}/v1/channels/{channel}/events` with a token
 * holding a `publish` grant.
 */
import { Backoff } from "./backoff.js";
import { AgentWireError, ProtocolError, ServerError, UnauthorizedError, parseErrorBody, retryAfterOf } from "./errors.js";

type FetchLike = (
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
  const retries = options.retries ?? 0;
  if (!Number.isInteger(retries) || retries < 0) {
    throw new AgentWireError("config", "`retries` must be a non-negative integer");
  }
  if (retries === 0) return publishOnce(options);
  // A retry must never publish twice: every attempt carries the same key.
  const once: PublishOptions = { ...options, idempotencyKey: options.idempotencyKey ?? newKey() };
  const backoff = new Backoff({ min: 200, max: 5_000, maxAttempts: retries });
  for (;;) {
    try {
      return await publishOnce(once);
    } catch (err) {
      if (!(err instanceof AgentWireError) || !err.retryable || options.signal?.aborted) throw err;
      const jitter = backoff.nextDelay(Math.random());
      if (jitter === undefined) throw err;
      await sleep(Math.max(jitter, err.retryAfterMs ?? 0), options.signal);
    }
  }
}

function newKey(): string {
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
  const f = options.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
  if (typeof f !== "function") {
    throw new AgentWireError("config", "no fetch implementation: pass `fetch` to publish()");
  }
  if (!options.url) throw new AgentWireError("config", "`url` is needed");
  if (!options.channel) throw new AgentWireError("config", "`channel` is needed");
  if (!options.kind) throw new AgentWireError("config", "`kind` is needed");
  const base = options.url.replace(/\/+$/, "");
  const endpoint = `${base}/v1/channels/${encodeURIComponent(options.channel)}/events`;
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
  let res: Awaited<ReturnType<FetchLike>>;
  try {
    res = await f(endpoint, init);
  } catch (err) {
    if (options.signal?.aborted) throw err;
    throw new AgentWireError("network", `cannot reach ${endpoint}: ${err instanceof Error ? err.message : String(err)}`, {
      retryable: true,
      cause: err,
    });
  }
  const text = await res.text().catch(() => "");
  if (res.status >= 200 && res.status < 300) {
    let body: Partial<PublishResult> = {};
    try {
      body = JSON.parse(text) as Partial<PublishResult>;
    } catch {
      // an answer without a body
    }
    return { id: String(body.id ?? ""), channel: String(body.channel ?? options.channel) };
  }
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
  const fallback = status === 403 ? "forbidden" : status === 413 ? "message_too_large" : "invalid_frame";
  return new ProtocolError(code ?? fallback, message, { status });
}
