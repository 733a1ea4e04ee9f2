/**
 * What the console connects to, from its link:
 * `?url=WS_URL&token=TOKEN&channels=a,b[&http=HTTP_API_BASE][&tokenUrl=URL]`.
 * A token in the link is moved out of the address bar and out of history
 * (history.replaceState) as soon as it is read, and kept in sessionStorage
 * (this tab only) so that a reload works.
 */

export interface Config {
  /** The gateway's WebSocket URL. */
  url: string;
  /** The HTTP API's base URL (reads). */
  http: string;
  channels: string[];
  token?: string;
  tokenUrl?: string;
  /** Events shown from history when a channel opens. */
  backlog: number;
  scrollback: number;
  /** Terminal flow control: characters written but not parsed. */
  flowHigh: number;
  flowLow: number;
  /** Timeline items kept in the DOM per channel. */
  maxItems: number;
  /** How often presence is read, ms. */
  presenceMs: number;
  /** Events per older-history page. */
  olderPage: number;
}

export const TOKEN_KEY = "agentwire-console:token";

export const DEFAULTS = {
  backlog: 200,
  scrollback: 5000,
  flowHigh: 2 * 1024 * 1024,
  flowLow: 256 * 1024,
  maxItems: 500,
  presenceMs: 10_000,
  olderPage: 100,
} as const;

/** ws://h/p → http://h/p, wss:// → https:// (no trailing slash). */
export function httpOf(wsUrl: string): string {
  const u = new URL(wsUrl);
  if (u.protocol === "ws:") u.protocol = "http:";
  else if (u.protocol === "wss:") u.protocol = "https:";
  u.search = "";
  u.hash = "";
  return u.href.replace(/\/+$/, "");
}

function int(v: string | null, d: number, min: number, max: number): number {
  if (v === null || v.trim() === "") return d;
  const n = Number(v);
  return Number.isFinite(n) ? Math.min(max, Math.max(min, Math.floor(n))) : d;
}

export function parseChannels(v: string | null): string[] {
  if (!v) return [];
  const seen = new Set<string>();
  for (const c of v.split(",")) {
    const t = c.trim();
    if (t && /^[A-Za-z0-9\-_.:/@]{1,128}$/.test(t)) seen.add(t);
  }
  return [...seen].slice(0, 16);
}

export type Loaded = { ok: true; config: Config } | { ok: false; partial: Partial<Config>; why: string };

/**
 * Reads the link, removes a token from it (replacing the history entry) and
 * keeps it in sessionStorage. `loc`/`storage`/`history` are the page's.
 */
export function loadConfig(loc: Location, storage: Storage, hist: History): Loaded {
  const q = new URLSearchParams(loc.search);
  const fromLink = q.get("token");
  if (fromLink !== null) {
    if (fromLink) storage.setItem(TOKEN_KEY, fromLink);
    q.delete("token");
    const rest = q.toString();
    hist.replaceState(hist.state, "", `${loc.pathname}${rest ? `?${rest}` : ""}${loc.hash}`);
  }
  const token = storage.getItem(TOKEN_KEY) ?? undefined;
  const url = q.get("url") ?? "";
  const channels = parseChannels(q.get("channels") ?? q.get("channel"));
  const tokenUrl = q.get("tokenUrl") ?? undefined;
  const partial: Partial<Config> = { channels };
  if (url) partial.url = url;
  if (token) partial.token = token;
  if (tokenUrl) partial.tokenUrl = tokenUrl;
  let wsOk = false;
  try {
    wsOk = /^wss?:$/.test(new URL(url).protocol);
  } catch {
    wsOk = false;
  }
  if (!wsOk) return { ok: false, partial, why: url ? `not a ws:// or wss:// URL: ${url}` : "" };
  if (channels.length === 0) return { ok: false, partial, why: "" };
  if (!token && !tokenUrl) return { ok: false, partial, why: "" };
  const http = q.get("http") || httpOf(url);
  const config: Config = {
    url,
    http: http.replace(/\/+$/, ""),
    channels,
    backlog: int(q.get("backlog"), DEFAULTS.backlog, 0, 1000),
    scrollback: int(q.get("scrollback"), DEFAULTS.scrollback, 100, 100_000),
    flowHigh: int(q.get("flowHigh"), DEFAULTS.flowHigh, 1, 64 * 1024 * 1024),
    flowLow: 0,
    maxItems: int(q.get("maxItems"), DEFAULTS.maxItems, 10, 10_000),
    presenceMs: int(q.get("presenceMs"), DEFAULTS.presenceMs, 250, 600_000),
    olderPage: int(q.get("olderPage"), DEFAULTS.olderPage, 1, 1000),
  };
  config.flowLow = int(q.get("flowLow"), Math.min(DEFAULTS.flowLow, Math.floor(config.flowHigh / 4)), 0, config.flowHigh);
  if (token) config.token = token;
  if (tokenUrl) config.tokenUrl = tokenUrl;
  return { ok: true, config };
}
