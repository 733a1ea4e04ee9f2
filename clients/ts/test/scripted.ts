// The scripted gateway of the conformance suite (conformance/README.md):
// an HTTP server whose upgrades are accepted or refused one by one, as the
// scenario says, and a queue of what the client sends on each connection.
import { STATUS_CODES, createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";

/** A queue whose `next()` waits (with a time-out) for the next item. */
export class Waitable<T> {
  #items: T[] = [];
  #waiters: ((v: T) => void)[] = [];
  push(v: T): void {
    const w = this.#waiters.shift();
    if (w) w(v);
    else this.#items.push(v);
  }
  get size(): number {
    return this.#items.length;
  }
  peekAll(): T[] {
    return [...this.#items];
  }
  next(timeoutMs: number, what: string): Promise<T> {
    if (this.#items.length) return Promise.resolve(this.#items.shift()!);
    return new Promise<T>((resolve, reject) => {
      const waiter = (v: T) => {
        clearTimeout(timer);
        resolve(v);
      };
      const timer = setTimeout(() => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(new Error(`waited ${timeoutMs} ms for ${what}`));
      }, timeoutMs);
      this.#waiters.push(waiter);
    });
  }
}

/** When each frame of a connection arrived (`performance.now()`), for `notBeforeMs`. */
export const arrivedAt = new WeakMap<object, number>();

export interface Upgrade {
  req: IncomingMessage;
  socket: Duplex;
  head: Buffer;
  /** The subprotocols offered. */
  offered: string[];
  /** The token carried (Authorization: Bearer, or the `token` query parameter). */
  token: string | undefined;
}

export interface Connection {
  ws: WebSocket;
  frames: Waitable<Record<string, unknown>>;
}

export class ScriptedServer {
  readonly upgrades = new Waitable<Upgrade>();
  upgradeCount = 0;
  #http: Server;
  #wss: WebSocketServer;
  #sockets = new Set<Duplex>();
  url = "";

  private constructor() {
    this.#wss = new WebSocketServer({
      noServer: true,
      handleProtocols: (protocols) => (protocols.has("agentwire.v1") ? "agentwire.v1" : false),
    });
    this.#http = createServer((_req, res) => {
      res.writeHead(404).end();
    });
    this.#http.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.upgradeCount += 1;
      this.#sockets.add(socket);
      socket.on("close", () => this.#sockets.delete(socket));
      socket.on("error", () => {});
      const offered = String(req.headers["sec-websocket-protocol"] ?? "")
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
      const auth = String(req.headers.authorization ?? "");
      const query = new URL(req.url ?? "/", "http://x").searchParams.get("token");
      const token = auth.startsWith("Bearer ") ? auth.slice(7) : (query ?? undefined);
      this.upgrades.push({ req, socket, head, offered, token });
    });
  }

  static async start(): Promise<ScriptedServer> {
    const s = new ScriptedServer();
    await new Promise<void>((resolve) => s.#http.listen(0, "127.0.0.1", resolve));
    const { port } = s.#http.address() as AddressInfo;
    s.url = `ws://127.0.0.1:${port}`;
    return s;
  }

  accept(u: Upgrade): Promise<Connection> {
    return new Promise((resolve) => {
      this.#wss.handleUpgrade(u.req, u.socket, u.head, (ws) => {
        const frames = new Waitable<Record<string, unknown>>();
        ws.on("message", (data, isBinary) => {
          const at = performance.now();
          let frame: Record<string, unknown>;
          if (isBinary) frame = { binary: true };
          else {
            try {
              frame = JSON.parse(data.toString()) as Record<string, unknown>;
            } catch {
              frame = { unparsable: data.toString() };
            }
          }
          if (frame !== null && typeof frame === "object") arrivedAt.set(frame, at);
          frames.push(frame);
        });
        ws.on("error", () => {});
        resolve({ ws, frames });
      });
    });
  }

  refuse(u: Upgrade, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    u.socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Refused"}\r\n` +
        "Content-Type: application/json\r\n" +
        `Content-Length: ${Buffer.byteLength(text)}\r\n` +
        "Connection: close\r\n\r\n" +
        text,
    );
  }

  async stop(): Promise<void> {
    for (const ws of this.#wss.clients) ws.terminate();
    for (const s of this.#sockets) s.destroy();
    this.#wss.close();
    await new Promise<void>((resolve) => this.#http.close(() => resolve()));
  }
}

/** Subset match (conformance/README.md, Matching); returns where it differs. */
export function mismatch(pattern: unknown, actual: unknown, path = "$"): string | undefined {
  if (pattern === "*") return actual === undefined ? `${path}: missing` : undefined;
  if (Array.isArray(pattern)) {
    if (!Array.isArray(actual)) return `${path}: expected an array, got ${JSON.stringify(actual)}`;
    if (pattern.length !== actual.length) {
      return `${path}: expected ${pattern.length} elements, got ${actual.length} (${JSON.stringify(actual)})`;
    }
    for (let i = 0; i < pattern.length; i++) {
      const m = mismatch(pattern[i], actual[i], `${path}[${i}]`);
      if (m) return m;
    }
    return undefined;
  }
  if (pattern !== null && typeof pattern === "object") {
    if (actual === null || typeof actual !== "object" || Array.isArray(actual)) {
      return `${path}: expected an object, got ${JSON.stringify(actual)}`;
    }
    for (const [k, v] of Object.entries(pattern)) {
      if (!(k in (actual as object))) return `${path}.${k}: missing in ${JSON.stringify(actual)}`;
      const m = mismatch(v, (actual as Record<string, unknown>)[k], `${path}.${k}`);
      if (m) return m;
    }
    return undefined;
  }
  return pattern === actual ? undefined : `${path}: expected ${JSON.stringify(pattern)}, got ${JSON.stringify(actual)}`;
}

const NOW_PLUS = /^\$now\+(\d+)$/;

/** Replaces `"$id"` anywhere in `v` by `id`, and a string `"$now+N"` by the
 * Unix seconds N from now (`nowMs`: the wall clock when the frame is sent). */
export function substitute(v: unknown, id: string | undefined, nowMs: number = Date.now()): unknown {
  if (v === "$id") return id;
  if (typeof v === "string") {
    const m = NOW_PLUS.exec(v);
    return m ? Math.floor(nowMs / 1000) + Number(m[1]) : v;
  }
  if (Array.isArray(v)) return v.map((x) => substitute(x, id, nowMs));
  if (v !== null && typeof v === "object") {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, substitute(x, id, nowMs)]));
  }
  return v;
}
