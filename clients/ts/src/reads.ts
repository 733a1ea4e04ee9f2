/**
 * Reading a channel over the gateway's HTTP API, with a token holding a
 * `channels` (read/join) grant for it:
 *
 * - `history()`: `GET {url}/v1/channels/{channel}/events?after=&limit=`, one
 *   page of the retained events after a seq; `historyPages()` follows
 *   `nextAfter` to the head.
 * - `presence()`: `GET {url}/v1/channels/{channel}/presence`.
 * - `channelInfo()`: `GET {url}/v1/channels/{channel}`.
 *
 * Errors are typed as for `publish()`: `UnauthorizedError` (401),
 * `ProtocolError` (`forbidden`, `invalid_channel`, `invalid_request`,
 * `rate_limited` (retryable, with `retryAfterMs`)…), `ServerError` (5xx,
 * retryable). Reads are safe to repeat: with `retries`, retryable failures
 * are retried like a publish's.
 */
import { AgentWireError, ProtocolError } from "./errors.js";
import { type FetchAnswer, call, channelUrl, fetchOf, retriesOf, withRetries } from "./publish.js";
import type { AgentWireEvent } from "./types.js";

/** The `fetch` the reads call (a GET: no body). */
export type ReadFetch = (
  input: string,
  init: { method: string; headers: Record<string, string>; signal?: AbortSignal },
) => Promise<FetchAnswer>;

/** The most events one history page holds. */
export const MAX_HISTORY_LIMIT = 1000;
/** The page size when none is given (the gateway's default too). */
export const DEFAULT_HISTORY_LIMIT = 100;

export interface ReadOptions {
  /** The gateway's HTTP base URL (`https://…/prod`, `http://127.0.0.1:8080`). */
  url: string;
  /** A token with a `channels` grant for the channel. */
  token: string;
  channel: string;
  /** Retry a retryable failure (429, 408, 5xx, network) up to this many
   * times (default 0), as `publish()` does. */
  retries?: number;
  /** Default `globalThis.fetch`. */
  fetch?: ReadFetch;
  signal?: AbortSignal;
}

export interface HistoryOptions extends ReadOptions {
  /** Return the events with a seq greater than this (default 0: from the start). */
  after?: number;
  /** At most this many events, 1 to 1000 (default 100). */
  limit?: number;
}

/** Seqs `from..=to` after `after` are no longer retained. */
export interface HistoryGap {
  from: number;
  to: number;
}

/** One page of a channel's history. */
export interface HistoryPage {
  channel: string;
  /** The channel's log epoch ("" for a channel with no event yet). */
  epoch: string;
  /** The channel's last seq (0: no event yet). */
  head: number;
  /** The oldest retained seq; `null` when none is. */
  oldest: number | null;
  /** The retained events after `after`, ascending, at most `limit`; each
   * with the page's `channel` and `epoch`, like a live event. */
  events: AgentWireEvent[];
  /** What after `after` is gone (expired), if anything. */
  gap: HistoryGap | null;
  /** The `after` of the next page; `null` when this page reaches the head. */
  nextAfter: number | null;
}

/** Who is on a channel. */
export interface ChannelPresence {
  channel: string;
  /** How many connections have the channel joined. */
  count: number;
  /** A sample of their principals (the tokens' `sub`), at most 32. */
  principals: string[];
}

/** The webhook that applies to a channel (never its URL or secret). */
export interface WebhookInfo {
  mode: "fallback" | "always" | "off";
  /** `channel`: the channel's own; `tenant`: the tenant's default. */
  scope: "channel" | "tenant";
}

/** A channel's state. */
export interface ChannelInfo {
  channel: string;
  epoch: string;
  head: number;
  oldest: number | null;
  /** How long its events are kept, in seconds. */
  retentionS: number;
  webhook: WebhookInfo | null;
}

/** One page of the channel's history: the retained events with a seq
 * greater than `after` (default 0), at most `limit` (default 100, at most
 * 1000), and the `gap` when the range after `after` starts before the
 * oldest retained event. A channel with no event yet is an empty page
 * (head 0), not an error. `after` and `limit` are checked before sending
 * (`config`). */
export async function history(options: HistoryOptions): Promise<HistoryPage> {
  const after = options.after ?? 0;
  const limit = options.limit ?? DEFAULT_HISTORY_LIMIT;
  if (!Number.isSafeInteger(after) || after < 0) {
    throw new AgentWireError("config", `\`after\` must be an integer of 0 or more, not ${String(after)}`);
  }
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_HISTORY_LIMIT) {
    throw new AgentWireError("config", `\`limit\` must be an integer from 1 to ${MAX_HISTORY_LIMIT}, not ${String(limit)}`);
  }
  const body = await get(options, `/events?after=${after}&limit=${limit}`, "history()");
  return parsePage(body, options.channel);
}

/** The channel's history page by page, from `after`, following `nextAfter`
 * until a page reaches the head (the last page yielded has `nextAfter`
 * `null`). The head is the one of each request: events published meanwhile
 * are read too.
 *
 * ```ts
 * for await (const page of historyPages({ url, token, channel, limit: 500 })) {
 *   if (page.gap) console.warn(`seqs ${page.gap.from}..=${page.gap.to} expired`);
 *   for (const e of page.events) render(e);
 * }
 * ```
 */
export async function* historyPages(options: HistoryOptions): AsyncGenerator<HistoryPage, void, undefined> {
  let after = options.after ?? 0;
  for (;;) {
    const page = await history({ ...options, after });
    yield page;
    if (page.nextAfter === null) return;
    if (page.nextAfter <= after) {
      throw new ProtocolError("decode", `history page after ${after} gave next_after ${page.nextAfter}: not going forward`);
    }
    after = page.nextAfter;
  }
}

/** Who is on the channel: the number of connections that joined it and a
 * sample of their principals. */
export async function presence(options: ReadOptions): Promise<ChannelPresence> {
  const v = object(await get(options, "/presence", "presence()"), "presence");
  return {
    channel: str(v.channel, options.channel),
    count: num(v.count, "count"),
    principals: Array.isArray(v.principals) ? v.principals.map(String) : [],
  };
}

/** The channel's state: its epoch, head, oldest retained seq, retention and
 * the webhook mode that applies (`null` when none does). */
export async function channelInfo(options: ReadOptions): Promise<ChannelInfo> {
  const v = object(await get(options, "", "channelInfo()"), "channel info");
  let webhook: WebhookInfo | null = null;
  if (v.webhook && typeof v.webhook === "object") {
    const w = v.webhook as Record<string, unknown>;
    webhook = { mode: String(w.mode) as WebhookInfo["mode"], scope: String(w.scope) as WebhookInfo["scope"] };
  }
  return {
    channel: str(v.channel, options.channel),
    epoch: str(v.epoch, ""),
    head: num(v.head, "head"),
    oldest: optNum(v.oldest, "oldest"),
    retentionS: num(v.retention_s, "retention_s"),
    webhook,
  };
}

async function get(options: ReadOptions, path: string, what: string): Promise<unknown> {
  const retries = retriesOf(options.retries);
  const f = fetchOf(options.fetch, what);
  const endpoint = `${channelUrl(options)}${path}`;
  const init: Parameters<ReadFetch>[1] = {
    method: "GET",
    headers: { authorization: `Bearer ${options.token}`, accept: "application/json" },
  };
  if (options.signal) init.signal = options.signal;
  const text = await withRetries(retries, options.signal, () => call(f, endpoint, init, options.signal));
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new ProtocolError("decode", `unreadable answer from ${endpoint}: ${text.slice(0, 200)}`);
  }
}

function parsePage(body: unknown, channel: string): HistoryPage {
  const v = object(body, "history page");
  const c = str(v.channel, channel);
  const epoch = str(v.epoch, "");
  if (!Array.isArray(v.events)) throw new ProtocolError("decode", "a history page without `events`");
  const events: AgentWireEvent[] = v.events.map((raw) => {
    const e = object(raw, "history event");
    return {
      channel: c,
      epoch,
      seq: num(e.seq, "seq"),
      id: str(e.id, ""),
      kind: str(e.kind, ""),
      data: e.data ?? null,
      ts: str(e.ts, ""),
    };
  });
  let gap: HistoryGap | null = null;
  if (v.gap != null) {
    const g = object(v.gap, "gap");
    gap = { from: num(g.from, "gap.from"), to: num(g.to, "gap.to") };
  }
  return {
    channel: c,
    epoch,
    head: num(v.head, "head"),
    oldest: optNum(v.oldest, "oldest"),
    events,
    gap,
    nextAfter: optNum(v.next_after, "next_after"),
  };
}

function object(v: unknown, what: string): Record<string, unknown> {
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new ProtocolError("decode", `unexpected ${what}: ${JSON.stringify(v)}`);
  return v as Record<string, unknown>;
}

function num(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw new ProtocolError("decode", `\`${what}\` is not a number: ${JSON.stringify(v)}`);
  return v;
}

function optNum(v: unknown, what: string): number | null {
  return v == null ? null : num(v, what);
}

function str(v: unknown, fallback: string): string {
  return typeof v === "string" ? v : fallback;
}
