/** The client's options, its version and the protocol's limits it keeps. */
import type { WebSocketConstructor } from "./connection.js";
import type { Since } from "./types.js";

/** The client's version, sent in `hello`. */
export const VERSION = "0.1.0";
/** The protocol versions this client speaks. */
export const PROTOCOL = { min: 1, max: 1 } as const;
/** Channels per `join` frame (the protocol's limit). */
export const MAX_CHANNELS_PER_JOIN = 50;
export const CHANNEL_NAME = /^[A-Za-z0-9\-_.:/@]{1,128}$/;
/** The wait after a `rate_limited` answer that carries no `retry_after_ms`. */
export const DEFAULT_RETRY_AFTER_MS = 1_000;
/** The longest delay a timer takes (setTimeout fires at once beyond it). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface TokenContext {
  /** The connection attempt this token is for (from 1; counts every attempt). */
  attempt: number;
  /** Aborted when the client closes. */
  signal: AbortSignal;
}

export interface AgentWireOptions {
  /** A fixed token: refused (401) ends the client. */
  token?: string;
  /** Asked before every connection attempt. A token it gave that is refused
   * makes the client ask again; a second refusal in a row, or an
   * `UnauthorizedError` thrown by it, ends the client; other failures are retried.
   * Also asked for the in-band refresh when the gateway offers it (see `refreshLead`). */
  getToken?: (ctx: TokenContext) => string | Promise<string>;
  /** With `getToken`, when the gateway's `welcome` offers `refresh` and names
   * the token's `exp`: send a fresh token this long before `exp`, ms (default
   * 60,000; at most half the time left when the `welcome` or `refreshed` arrived). */
  refreshLead?: number;
  /** The WebSocket constructor (default `globalThis.WebSocket`; pass `ws`'s on Node 20). */
  WebSocket?: WebSocketConstructor;
  /** The first reconnect ceiling, ms (default 500). */
  minReconnectDelay?: number;
  /** The largest reconnect ceiling, ms (default 30,000). */
  maxReconnectDelay?: number;
  /** Give up after this many reconnect attempts in a row (default: never). */
  maxAttempts?: number;
  /** The jitter fraction of the reconnect delays, 0 to 1 (default 1, full
   * jitter: uniform in 0..=ceiling; 0: the ceiling itself). */
  jitter?: number;
  /** Roll over to a new connection after this long, ms (default 115 min;
   * `null` leaves it to the gateway's 2-hour cut). */
  maxConnectionAge?: number | null;
  /** A `ping` every this many ms (default 30,000). */
  pingInterval?: number;
  /** Nothing received within this long after a ping: the connection is dead (default 20,000). */
  pingTimeout?: number;
  /** The longest the upgrade, and then `welcome`, may take, ms (default 10,000). */
  handshakeTimeout?: number;
  /** Acknowledge the last delivered seq this long after the first unacknowledged
   * delivery, ms (default 1,000); `null` never acknowledges by itself. */
  ackDebounce?: number | null;
  /** `false`: no automatic acks (explicit `channel.ack()` still works). */
  autoAck?: boolean;
  /** Aborting it closes the client. */
  signal?: AbortSignal;
  /** Sent in `hello` (default `@agentwire/client/<version>`). */
  clientName?: string;
  /** Held (out-of-order) events per channel before they are dropped and fetched again. */
  maxPending?: number;
  maxPendingBytes?: number;
  /** The largest message reassembled from chunk events (default 64 MiB);
   * a larger one is `message_lost` `too_large`. */
  maxMessageBytes?: number;
  /** The most held at once in messages being reassembled (default 128 MiB). */
  maxHeldMessageBytes?: number;
  /** The most messages being reassembled at once, over all channels (default 64): starting
   * one more makes the oldest `message_lost` `too_large`. Ids over 128 bytes are lost (`invalid`). */
  maxPartialMessages?: number;
  /** How long (ms) a hole in the live stream (an event after a missing seq) waits for the
   * missing frames before the channel re-joins to fetch them (default 250; 0: at once).
   * Frames that fill the hole meanwhile cancel the re-join. */
  holeGrace?: number;
}

export interface ChannelOptions {
  /** `"head"`, a position `{epoch, seq}` (the last seq already seen), or
   * absent: the principal's durable cursor. */
  since?: Since;
}

