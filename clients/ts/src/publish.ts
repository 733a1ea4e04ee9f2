/**
 * Publishing over the gateway's HTTP route, as an agent without AWS
 * credentials does: `POST {url}/v1/channels/{channel}/events` with a token
 * holding a `publish` grant.
 */
import { AgentWireError, ProtocolError, ServerError, UnauthorizedError, parseErrorBody } from "./errors.js";

type FetchLike = (
  input: string,
  init: { method: string; headers: Record<string, string>; body: string; signal?: AbortSignal },
) => Promise<{ status: number; ok: boolean; text(): Promise<string> }>;

export interface PublishOptions {
  /** The gateway's HTTP base URL (`https://…/prod`, `http://127.0.0.1:8080`). */
  url: string;
  /** A token with a `publish` grant for the channel. */
  token: string;
  channel: string;
  kind: string;
  data?: unknown;
  /** Unique per channel: a retried publish with the same key is committed once. */
  idempotencyKey?: string;
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
 * (retryable)…), `ServerError` (5xx, retryable). */
export async function publish(options: PublishOptions): Promise<PublishResult> {
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
  throw publishError(res.status, text);
}

/** The typed error for a publish answered `status` with `text`. */
export function publishError(status: number, text: string): AgentWireError {
  const e = parseErrorBody(text);
  const message = e?.message ?? (text.trim().slice(0, 300) || `HTTP ${status}`);
  const code = e?.code;
  if (status === 401) return new UnauthorizedError(message, { code: code ?? "unauthorized", status });
  if (status >= 500) return new ServerError(code ?? "internal", message, { status });
  if (status === 429) return new ProtocolError(code ?? "rate_limited", message, { status, retryable: true });
  if (status === 408) return new ProtocolError(code ?? "timeout", message, { status, retryable: true });
  const fallback = status === 403 ? "forbidden" : status === 413 ? "message_too_large" : "invalid_frame";
  return new ProtocolError(code ?? fallback, message, { status });
}
