/**
 * One connection's state and the helpers around it: the WebSocket the
 * client drives, how a connection ended, the frames it reads, how a refused
 * upgrade is classified (like clients/rust/src/socket.rs), the URL and the
 * refresh timing.
 */
import { AgentWireError, ProtocolError, UnauthorizedError, parseErrorBody, type ErrorBody } from "./errors.js";
import { PROTOCOL } from "./options.js";
import type { ChannelHealth, Presence } from "./types.js";

/** The part of the WebSocket API the client uses: the standard (browser,
 * Node 22+) `WebSocket`, or `ws`'s (`import { WebSocket } from "ws"`). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  onopen: ((ev: any) => unknown) | null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  onmessage: ((ev: any) => unknown) | null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  onclose: ((ev: any) => unknown) | null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  onerror: ((ev: any) => unknown) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** `ws`'s extras, used when present: the HTTP answer of a refused upgrade. */
export interface NodeWs {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  on(event: string, listener: (...args: any[]) => void): unknown;
  terminate(): void;
}

export type Outcome =
  | { kind: "closed" }
  | { kind: "lost"; reason: string; immediate?: boolean }
  | { kind: "rollover"; reason: string }
  | { kind: "failed"; reason: string }
  | { kind: "token_refused"; error: UnauthorizedError }
  | { kind: "fatal"; error: AgentWireError };

export interface Conn {
  ws: WebSocketLike;
  opened: boolean;
  welcomed: boolean;
  settled: boolean;
  startedAt: number;
  lastError?: string;
  resolve: (o: Outcome) => void;
  handshakeTimer?: ReturnType<typeof setTimeout>;
  pingTimer?: ReturnType<typeof setInterval>;
  pongTimer?: ReturnType<typeof setTimeout>;
  ackTimer?: ReturnType<typeof setTimeout>;
  rolloverTimer?: ReturnType<typeof setTimeout>;
  /** The next in-band token refresh. */
  refreshTimer?: ReturnType<typeof setTimeout>;
  /** Fires when the first live hole's grace ends (a re-join fetches what is missing). */
  holeTimer?: ReturnType<typeof setTimeout>;
  /** The id of the `refresh` sent and not answered yet. */
  refreshId?: string;
  /** The `exp` (Unix seconds) of this connection's token, as the gateway said. */
  tokenExp?: number;
  /** Joins answered `rate_limited`, to be sent again after the gateway's delay. */
  joinRetryTimers: Set<ReturnType<typeof setTimeout>>;
  /** An ack answered `rate_limited`: no ack is sent before this time (Date.now() ms). */
  ackPausedUntil?: number;
  closedWaiters: (() => void)[];
  socketClosed: boolean;
}


export type ServerFrame = { type: string; [k: string]: unknown };

export interface JoinedFrame {
  type: "joined";
  id?: string;
  channels?: {
    name: string;
    epoch: string;
    head: number;
    replayed: number;
    recovered: boolean;
    until?: number | null;
  }[];
  presence?: Record<string, Presence>;
  health?: { server?: string; protocol?: number; time?: string; channels?: Record<string, ChannelHealth> };
}

export interface HttpResponseLike {
  statusCode?: number;
  setEncoding?(enc: string): void;
  on(event: string, listener: (...args: never[]) => void): unknown;
}

/** The codes of a refused token: `unauthorized`, `token_expired`, `token_revoked`. */
export function isTokenCode(code: string): boolean {
  return code === "unauthorized" || code === "token_expired" || code === "token_revoked";
}

/**
 * How long (ms) from `nowMs` until the in-band refresh of a token that expires
 * at `expS` (Unix seconds): `exp` minus the lead, the lead being the smaller
 * of `leadMs` and half the time left; at once when the token has expired.
 */
export function refreshDelay(expS: number, nowMs: number, leadMs: number): number {
  const left = expS * 1000 - nowMs;
  if (!(left > 0)) return 0;
  return Math.max(0, Math.floor(left - Math.min(leadMs, left / 2)));
}

export function isSeq(n: unknown): n is number {
  return typeof n === "number" && Number.isInteger(n) && n >= 0;
}

export function message(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

export function versionError(e: ErrorBody): ProtocolError {
  const range = e.supported ? `, gateway speaks ${e.supported.min}..=${e.supported.max}` : "";
  return new ProtocolError(
    "version_unsupported",
    `no protocol version in common (client offers ${PROTOCOL.min}..=${PROTOCOL.max}${range}): ${e.message ?? ""}`,
    e.supported ? { supported: e.supported } : {},
  );
}

/** What a refused upgrade means: fatal, a token to renew, or worth a retry. */
export function classifyRefusal(
  status: number,
  body: string,
): Extract<Outcome, { kind: "fatal" | "token_refused" | "failed" }> {
  const e = parseErrorBody(body);
  const msg = e?.message ?? body.trim().slice(0, 300);
  if (e?.code === "version_unsupported") return { kind: "fatal", error: versionError(e) };
  if (status === 401) {
    return { kind: "token_refused", error: new UnauthorizedError(msg, { code: e?.code ?? "unauthorized", status }) };
  }
  if (status === 408 || status === 429 || (status >= 500 && status <= 599) || status === 0) {
    return { kind: "failed", reason: `the gateway answered HTTP ${status}: ${msg}` };
  }
  return {
    kind: "fatal",
    error: new AgentWireError("refused", `the gateway refused the connection: HTTP ${status}: ${msg}`, { status }),
  };
}

export function normaliseUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new AgentWireError("config", `bad url ${JSON.stringify(url)}`);
  }
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.protocol !== "ws:" && u.protocol !== "wss:") {
    throw new AgentWireError("config", `bad url ${JSON.stringify(url)}: use ws:// or wss://`);
  }
  return u.toString();
}
