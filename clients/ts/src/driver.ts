/**
 * The connection loop behind `AgentWire` (as clients/rust/src/driver.rs is
 * behind the Rust client): connects, negotiates, (re)joins every channel
 * from the last delivered seq, feeds frames through each channel's
 * Sequencer, pings, acknowledges, rolls over ahead of the gateway's age
 * limit, refreshes the token in band, and reconnects with full-jitter
 * backoff when anything breaks. `AgentWire` (client.ts) checks the options
 * and hands this class what they come to; nothing here is exported from the
 * package.
 */
import { Backoff } from "./backoff.js";
import { Channel, sinceOf, type ChannelCore } from "./channel.js";
import { Reassembler } from "./chunks.js";
import {
  classifyRefusal,
  isSeq,
  isTokenCode,
  message,
  refreshDelay,
  versionError,
  type Conn,
  type HttpResponseLike,
  type JoinedFrame,
  type NodeWs,
  type Outcome,
  type ServerFrame,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./connection.js";
import { Emitter } from "./emitter.js";
import { AgentWireError, ProtocolError, ServerError, UnauthorizedError, retryAfterOf, type ErrorBody } from "./errors.js";
import type { ClientEvents, ConnectionState, ResyncInfo, StateChange } from "./events.js";
import { GZIP_FEATURE, decodeData } from "./gzip.js";
import {
  CHANNEL_NAME,
  DEFAULT_RETRY_AFTER_MS,
  MAX_CHANNELS_PER_JOIN,
  MAX_TIMER_MS,
  PROTOCOL,
  type AgentWireOptions,
  type ChannelOptions,
} from "./options.js";
import { Sequencer, type Delivery } from "./sequencer.js";
import type { AgentWireEvent, JoinedInfo, Since } from "./types.js";

/** The timing and ack options, checked and defaulted (client.ts). */
/** At least this long between two in-band refreshes of one connection. */
const MIN_REFRESH_GAP_MS = 1_000;

export type DriverOptions = Required<
  Pick<AgentWireOptions, "pingInterval" | "pingTimeout" | "handshakeTimeout" | "clientName">
> & { maxConnectionAge: number | null; ackDebounce: number | null; autoAck: boolean; refreshLead: number; holeGrace?: number };

/** The bounds of each channel's sequencer. */
export type SequencerLimits = { maxPending?: number; maxPendingBytes?: number };

/** What the client's options come to, checked (client.ts builds it). */
export interface DriverConfig {
  url: string;
  WebSocket: WebSocketConstructor;
  token: string | undefined;
  getToken: AgentWireOptions["getToken"];
  opts: DriverOptions;
  backoff: Backoff;
  seqOptions: SequencerLimits;
  messages: Reassembler;
}

/** One client's connection loop and channel state; `AgentWire` is its face. */
export class Driver {
  readonly url: string;
  readonly #WS: WebSocketConstructor;
  readonly #opts: DriverOptions;
  readonly #token: string | undefined;
  readonly #getToken: AgentWireOptions["getToken"];
  readonly #backoff: Backoff;
  readonly #emitter: Emitter<ClientEvents>;
  readonly #channels = new Map<string, ChannelCore>();
  readonly #seqOptions: SequencerLimits;
  readonly #messages: Reassembler;
  /** Join request id → its channels, until `joined` or an error answers. */
  readonly #pendingJoins = new Map<string, string[]>();
  /** Leave request id → its waiters. */
  readonly #pendingLeaves = new Map<string, () => void>();
  #queuedJoins: string[] = [];
  #joinFlushScheduled = false;
  #state: ConnectionState = "idle";
  #conn: Conn | undefined;
  #started = false;
  #closed = false;
  #attempts = 0;
  #nextId = 0;
  #readyWaiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  #sleepCancel: (() => void) | undefined;
  readonly #abort = new AbortController();
  #finished: Promise<void>;
  #finish!: () => void;
  #fatalError: AgentWireError | undefined;


  constructor(config: DriverConfig) {
    this.url = config.url;
    this.#WS = config.WebSocket;
    this.#token = config.token;
    this.#getToken = config.getToken;
    this.#opts = config.opts;
    this.#backoff = config.backoff;
    this.#seqOptions = config.seqOptions;
    this.#messages = config.messages;
    this.#emitter = new Emitter<ClientEvents>((err, event) => this.#listenerFailed(err, event));
    this.#finished = new Promise((resolve) => {
      this.#finish = resolve;
    });
  }

  /** `idle` (before `connect()`), `connecting`, `connected`, `reconnecting` or `closed`. */
  get state(): ConnectionState {
    return this.#state;
  }

  /** Listens to `state` changes and `error`s; returns the function that stops listening. */
  on<K extends keyof ClientEvents>(event: K, listener: (value: ClientEvents[K]) => void): () => void {
    return this.#emitter.on(event, listener);
  }

  /** Starts connecting (and reconnecting, until `close()` or a fatal error). */
  connect(): this {
    if (this.#started || this.#closed) return this;
    this.#started = true;
    this.#setState("connecting", "connecting");
    void this.#run();
    return this;
  }

  /** Resolves once connected (at once if connected now); rejects if the client ends first. */
  ready(): Promise<void> {
    if (this.#state === "connected") return Promise.resolve();
    if (this.#closed) {
      return Promise.reject(this.#fatalError ?? new AgentWireError("closed", "the client is closed"));
    }
    return new Promise((resolve, reject) => this.#readyWaiters.push({ resolve, reject }));
  }

  /** The channel `name`, joined now (or with the next connection). Calling it
   * again for a channel already joined returns the same channel. */
  channel(name: string, options: ChannelOptions = {}): Channel {
    const existing = this.#channels.get(name);
    if (existing) return existing.channel;
    if (this.#closed) throw new AgentWireError("closed", "the client is closed");
    if (typeof name !== "string" || !CHANNEL_NAME.test(name)) {
      throw new ProtocolError(
        "invalid_channel",
        `invalid channel name ${JSON.stringify(name)}: 1 to 128 characters of A-Z a-z 0-9 - _ . : / @`,
      );
    }
    const since = options.since;
    let seq: Sequencer;
    if (since === undefined || since === null) seq = new Sequencer(name, this.#seqOptions);
    else if (since === "head") seq = new Sequencer(name, this.#seqOptions);
    else if (typeof since === "object" && typeof since.epoch === "string" && Number.isInteger(since.seq) && since.seq >= 0) {
      seq = Sequencer.resuming(name, since.epoch, since.seq, this.#seqOptions);
    } else {
      throw new AgentWireError("config", '`since` must be "head" or {epoch, seq}');
    }
    const channel = new Channel(name, (err, event) => this.#listenerFailed(err, event), {
      position: () => {
        const core = this.#channels.get(name);
        const s = core?.seq ?? seq;
        return s.epoch !== undefined && s.last !== undefined ? { epoch: s.epoch, seq: s.last } : undefined;
      },
      ack: (n) => this.#ack(name, n),
      leave: () => this.#leave(name),
      pause: () => this.#pause(name),
      resume: () => this.#resume(name),
      resync: () => this.resync(name),
      taken: () => this.#taken(name),
    });
    const core: ChannelCore = {
      name,
      seq,
      initial: since ?? undefined,
      acked: undefined,
      ackWanted: undefined,
      paused: false,
      channel,
    };
    this.#channels.set(name, core);
    if (this.#conn?.welcomed) this.#queueJoin(name);
    return channel;
  }

  /** Drops the local position of channel `name` (or, without a name, of
   * every channel): its last delivered seq, the events it holds and its last
   * ack are forgotten, the reset is reported on the channel (`resync`, after
   * what was delivered before), and the channel joins again from the head
   * (at once when connected, else with the next connection; a paused
   * channel when resumed). A channel not joined is ignored. */
  resync(name?: string): void {
    const names = name === undefined ? [...this.#channels.keys()] : this.#channels.has(name) ? [name] : [];
    for (const n of names) {
      const core = this.#channels.get(n);
      if (!core) continue;
      const previous = sinceOf(core);
      core.seq = new Sequencer(n, this.#seqOptions);
      core.initial = "head";
      core.acked = undefined;
      core.ackWanted = undefined;
      const info: ResyncInfo = { channel: n };
      if (previous !== undefined && previous !== "head") info.previous = previous;
      core.channel._emit("resync", info);
      if (!core.paused && this.#conn?.welcomed && !this.#conn.settled) this.#queueJoin(n);
    }
  }

  /** The channels joined (or to be joined with the next connection). */
  get channels(): Channel[] {
    return [...this.#channels.values()].map((c) => c.channel);
  }

  /** Acknowledges what was delivered (unless acks are off), closes the
   * connection and stops. Resolves once the socket is closed. */
  close(): Promise<void> {
    if (this.#closed) return this.#finished;
    this.#closed = true;
    this.#abort.abort();
    const conn = this.#conn;
    if (!this.#started) {
      this.#end();
      return this.#finished;
    }
    let socketDone: Promise<void> = Promise.resolve();
    if (conn && !conn.settled) {
      if (conn.welcomed) this.#flushAcks(conn);
      socketDone = new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1_000);
        conn.closedWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      this.#settle(conn, { kind: "closed" });
    }
    this.#sleepCancel?.();
    return Promise.all([socketDone, this.#finished]).then(() => undefined);
  }

  // ---- the connection loop ----

  async #run(): Promise<void> {
    let tokenRefusedOnce = false;
    for (;;) {
      const out = await this.#attempt();
      if (this.#closed || out.kind === "closed") return this.#end();
      let failure: string;
      switch (out.kind) {
        case "fatal":
          return this.#end(out.error);
        case "rollover":
          tokenRefusedOnce = false;
          this.#setState("reconnecting", out.reason);
          continue;
        case "lost":
          tokenRefusedOnce = false;
          if (out.immediate) {
            this.#setState("reconnecting", out.reason);
            continue;
          }
          failure = out.reason;
          break;
        case "failed":
          failure = out.reason;
          break;
        case "token_refused":
          // A provider is asked for a fresh token once; a fresh token refused
          // as well means retrying would only hammer.
          if (!this.#getToken || tokenRefusedOnce) return this.#end(out.error);
          tokenRefusedOnce = true;
          failure = out.error.message;
          break;
      }
      const delay = this.#backoff.nextDelay(Math.random());
      if (delay === undefined) {
        const attempts = this.#backoff.attempt;
        return this.#end(
          new AgentWireError("exhausted", `gave up after ${attempts} reconnect attempts; last failure: ${failure}`),
        );
      }
      this.#setState("reconnecting", failure, { attempt: this.#backoff.attempt, delay });
      const slept = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          this.#sleepCancel = undefined;
          resolve(true);
        }, delay);
        this.#sleepCancel = () => {
          clearTimeout(timer);
          this.#sleepCancel = undefined;
          resolve(false);
        };
      });
      if (!slept || this.#closed) return this.#end();
    }
  }

  async #attempt(): Promise<Outcome> {
    this.#attempts += 1;
    let token: string;
    if (this.#getToken) {
      try {
        token = await this.#getToken({ attempt: this.#attempts, signal: this.#abort.signal });
      } catch (err) {
        if (this.#closed) return { kind: "closed" };
        if (err instanceof UnauthorizedError) return { kind: "fatal", error: err };
        return { kind: "failed", reason: `the token provider failed: ${message(err)}` };
      }
      if (typeof token !== "string" || token === "") {
        return { kind: "failed", reason: "the token provider returned no token" };
      }
    } else {
      token = this.#token!;
    }
    if (this.#closed) return { kind: "closed" };
    return new Promise<Outcome>((resolve) => this.#open(token, resolve));
  }

  #open(token: string, resolve: (o: Outcome) => void): void {
    const u = new URL(this.url);
    u.searchParams.set("token", token);
    const protocols: string[] = [];
    for (let v = PROTOCOL.max; v >= PROTOCOL.min; v--) protocols.push(`agentwire.v${v}`);
    let ws: WebSocketLike;
    try {
      ws = new this.#WS(u.toString(), protocols);
    } catch (err) {
      resolve({ kind: "fatal", error: new AgentWireError("config", `cannot open ${this.url}: ${message(err)}`, { cause: err }) });
      return;
    }
    const c: Conn = {
      ws,
      opened: false,
      welcomed: false,
      settled: false,
      startedAt: Date.now(),
      resolve,
      joinRetryTimers: new Set(),
      closedWaiters: [],
      socketClosed: false,
    };
    this.#conn = c;
    c.handshakeTimer = setTimeout(
      () => this.#settle(c, { kind: "failed", reason: `the WebSocket handshake took longer than ${this.#opts.handshakeTimeout} ms` }),
      this.#opts.handshakeTimeout,
    );
    const nodeWs = ws as unknown as Partial<NodeWs>;
    if (typeof nodeWs.on === "function") {
      // `ws` tells the HTTP answer of a refused upgrade; browsers do not.
      nodeWs.on("unexpected-response", (_req: unknown, res: HttpResponseLike) => {
        const chunks: string[] = [];
        let size = 0;
        const done = () => {
          this.#settle(c, classifyRefusal(res.statusCode ?? 0, chunks.join("")));
          try {
            nodeWs.terminate?.();
          } catch {
            // already gone
          }
        };
        try {
          res.setEncoding?.("utf8");
          res.on("data", (d: string) => {
            if (size < 65_536) chunks.push(String(d));
            size += String(d).length;
          });
          res.on("end", done);
          res.on("error", done);
        } catch {
          done();
        }
      });
    }
    ws.onopen = () => {
      if (c.settled) return;
      c.opened = true;
      c.startedAt = Date.now();
      clearTimeout(c.handshakeTimer);
      c.handshakeTimer = setTimeout(
        () => this.#settle(c, { kind: "lost", reason: `no \`welcome\` within ${this.#opts.handshakeTimeout} ms` }),
        this.#opts.handshakeTimeout,
      );
      this.#send(c, {
        action: "hello",
        protocol: { min: PROTOCOL.min, max: PROTOCOL.max },
        client: this.#opts.clientName,
        // Compressed payloads are decoded (decodeData, in #onEvent).
        features: [GZIP_FEATURE],
      });
    };
    ws.onmessage = (ev: { data: unknown }) => {
      if (c.settled) return;
      if (c.pongTimer !== undefined) {
        clearTimeout(c.pongTimer);
        c.pongTimer = undefined;
      }
      if (typeof ev.data !== "string") return; // the protocol is text frames only
      let frame: ServerFrame;
      try {
        frame = JSON.parse(ev.data) as ServerFrame;
        if (!frame || typeof frame !== "object" || typeof frame.type !== "string") throw new Error("no `type`");
      } catch (err) {
        this.#emitError(new ProtocolError("decode", `unreadable frame from the gateway: ${message(err)}: ${ev.data.slice(0, 200)}`));
        return;
      }
      try {
        if (!c.welcomed) this.#onHandshakeFrame(c, frame);
        else {
          this.#onFrame(c, frame);
          if (!c.settled) this.#rejoinLagging(c);
        }
      } catch (err) {
        // A frame of a shape the client cannot use: reported, and the client goes on.
        this.#emitError(new ProtocolError("decode", `unusable frame from the gateway: ${message(err)}: ${ev.data.slice(0, 200)}`));
      }
    };
    ws.onerror = (ev: { message?: string; error?: unknown }) => {
      c.lastError = ev?.message || (ev?.error ? message(ev.error) : undefined) || c.lastError;
    };
    ws.onclose = (ev: { code?: number; reason?: string }) => {
      c.socketClosed = true;
      for (const w of c.closedWaiters.splice(0)) w();
      if (c.settled) return;
      if (!c.opened) {
        this.#settle(c, {
          kind: "failed",
          reason: `could not connect to ${this.url}${c.lastError ? `: ${c.lastError}` : ""}`,
        });
      } else {
        const why = ev?.code ? ` (${ev.code}${ev.reason ? ` ${ev.reason}` : ""})` : "";
        this.#settle(c, {
          kind: "lost",
          reason: c.welcomed ? `the gateway closed the connection${why}` : "the connection ended before `welcome`",
        });
      }
    };
  }

  /** Ends one connection (once): timers, socket, and the attempt's outcome. */
  #settle(c: Conn, o: Outcome): void {
    if (c.settled) return;
    c.settled = true;
    clearTimeout(c.handshakeTimer);
    clearInterval(c.pingTimer);
    clearTimeout(c.pongTimer);
    clearTimeout(c.ackTimer);
    clearTimeout(c.rolloverTimer);
    clearTimeout(c.refreshTimer);
    c.refreshTimer = undefined;
    clearTimeout(c.holeTimer);
    c.holeTimer = undefined;
    c.refreshId = undefined;
    for (const t of c.joinRetryTimers) clearTimeout(t);
    c.joinRetryTimers.clear();
    if (!c.socketClosed) {
      try {
        if (o.kind === "closed" || o.kind === "rollover") {
          c.ws.close(1000, o.kind === "rollover" ? "rollover" : "closed by the client");
        } else {
          const t = (c.ws as unknown as Partial<NodeWs>).terminate;
          if (typeof t === "function") t.call(c.ws);
          else c.ws.close();
        }
      } catch {
        // closing a socket that is already going
      }
    }
    if (c.welcomed) this.#backoff.connectionEnded(Date.now() - c.startedAt);
    this.#pendingJoins.clear();
    for (const done of this.#pendingLeaves.values()) done();
    this.#pendingLeaves.clear();
    this.#queuedJoins = [];
    if (this.#conn === c) this.#conn = undefined;
    c.resolve(o);
  }

  /** `hello` → `welcome` (or the typed refusal). */
  #onHandshakeFrame(c: Conn, frame: ServerFrame): void {
    if (frame.type === "welcome") {
      clearTimeout(c.handshakeTimer);
      c.welcomed = true;
      this.#setState("connected", "connected", {
        protocol: frame.protocol as number,
        connectionId: frame.connection_id as string,
      });
      for (const w of this.#readyWaiters.splice(0)) w.resolve();
      if (c.settled) return; // a listener closed the client
      this.#sendJoins(c, [...this.#channels.keys()]);
      this.#sendWantedAcks(c);
      c.pingTimer = setInterval(() => {
        if (c.settled) return;
        this.#send(c, { action: "ping" });
        if (c.pongTimer === undefined) {
          c.pongTimer = setTimeout(
            () =>
              this.#settle(c, {
                kind: "lost",
                reason: `no answer to ping within ${this.#opts.pingTimeout} ms: the connection is dead`,
              }),
            this.#opts.pingTimeout,
          );
        }
      }, this.#opts.pingInterval);
      const age = this.#opts.maxConnectionAge;
      if (age !== null) {
        c.rolloverTimer = setTimeout(() => {
          if (c.settled) return;
          this.#flushAcks(c);
          this.#settle(c, { kind: "rollover", reason: `connection age limit (${age} ms) reached: reconnecting` });
        }, Math.max(0, age - (Date.now() - c.startedAt)));
      }
      // In-band refresh: only with a provider to ask (a fixed token has nothing new to send).
      const features = frame.features;
      if (
        this.#getToken &&
        Array.isArray(features) &&
        features.includes("refresh") &&
        typeof frame.token_exp === "number" &&
        Number.isFinite(frame.token_exp)
      ) {
        c.tokenExp = frame.token_exp;
        this.#scheduleRefresh(c, frame.token_exp);
      }
      return;
    }
    if (frame.type === "error") {
      const e = frame as unknown as ErrorBody;
      if (e.code === "version_unsupported") {
        this.#settle(c, { kind: "fatal", error: versionError(e) });
      } else {
        this.#settle(c, { kind: "lost", reason: `\`hello\` refused (${e.code}): ${e.message ?? ""}` });
      }
    }
    // anything else before `welcome` is ignored
  }

  #onFrame(c: Conn, frame: ServerFrame): void {
    switch (frame.type) {
      case "joined":
        return this.#onJoined(c, frame as unknown as JoinedFrame);
      case "event":
        return this.#onEvent(c, frame as unknown as AgentWireEvent);
      case "batch": {
        const events = (frame as unknown as { events?: AgentWireEvent[] }).events;
        if (!Array.isArray(events)) return;
        for (const e of events) {
          if (c.settled) return;
          this.#onEvent(c, e);
        }
        return;
      }
      case "gap": {
        const g = frame as unknown as { channel: string; from: number; to: number };
        const core = this.#channels.get(g.channel);
        if (core && isSeq(g.from) && isSeq(g.to)) this.#deliver(c, core, core.seq.gap(g.from, g.to));
        return;
      }
      case "left": {
        const id = (frame as unknown as { id?: string }).id;
        if (id !== undefined) {
          const done = this.#pendingLeaves.get(id);
          this.#pendingLeaves.delete(id);
          done?.();
        }
        return;
      }
      case "error":
        return this.#onError(c, frame as unknown as ErrorBody);
      case "refreshed": {
        const { id, exp } = frame as unknown as { id?: unknown; exp?: unknown };
        if (id === undefined || id !== c.refreshId) return;
        c.refreshId = undefined;
        if (typeof exp !== "number" || !Number.isFinite(exp)) return;
        // A token that expires no later than the one it replaces gives
        // nothing to refresh again: no refresh loop towards `exp` (the
        // connection ends on token_expired and reconnects with a fresh one).
        if (c.tokenExp !== undefined && exp <= c.tokenExp) return;
        c.tokenExp = exp;
        // The next refresh is planned from the new token's `exp`, at least
        // MIN_REFRESH_GAP_MS from now.
        this.#scheduleRefresh(c, exp, MIN_REFRESH_GAP_MS);
        return;
      }
      default:
        return; // welcome, pong, and frames of a later protocol
    }
  }

  #onJoined(c: Conn, frame: JoinedFrame): void {
    if (frame.id !== undefined) this.#pendingJoins.delete(frame.id);
    const deliveries: [ChannelCore, Delivery[]][] = [];
    for (const jc of frame.channels ?? []) {
      const core = this.#channels.get(jc.name);
      if (!core || typeof jc.epoch !== "string" || !isSeq(jc.head) || !isSeq(jc.replayed)) continue;
      const ds = core.seq.joined(jc.epoch, jc.head, jc.replayed, isSeq(jc.until) ? jc.until : undefined);
      deliveries.push([core, ds]);
      const info: JoinedInfo = {
        channel: jc.name,
        epoch: jc.epoch,
        head: jc.head,
        replayed: jc.replayed,
        recovered: jc.recovered,
      };
      if (jc.until !== undefined && jc.until !== null) info.until = jc.until;
      const presence = frame.presence?.[jc.name];
      if (presence) info.presence = presence;
      if (frame.health) {
        const h = frame.health;
        info.health = { server: h.server, protocol: h.protocol, time: h.time, ...(h.channels?.[jc.name] ?? {}) };
      }
      core.channel._emit("joined", info);
    }
    // Like the Rust client: every channel's `joined` first, then what it allows.
    for (const [core, ds] of deliveries) {
      if (c.settled) return;
      this.#deliver(c, core, ds);
    }
  }

  #onEvent(c: Conn, e: AgentWireEvent): void {
    if (!e || typeof e.channel !== "string" || !isSeq(e.seq) || typeof e.epoch !== "string") return;
    const core = this.#channels.get(e.channel);
    if (!core || core.suspended) return; // a suspended channel fetches them again when it goes on
    // Exactly the event's fields (an `event` frame also carries `type`), a
    // compressed text decoded before anything else sees it. A chunk's part is
    // bounded by what the reassembly takes of one message (twice
    // maxMessageBytes: room for base64).
    const event: AgentWireEvent = {
      channel: e.channel,
      seq: e.seq,
      epoch: e.epoch,
      id: e.id,
      kind: e.kind,
      data: decodeData(e.data, this.#messages.maxMessageBytes * 2),
      ts: e.ts,
    };
    this.#deliver(c, core, core.seq.event(event));
  }

  /** Plans the next in-band refresh of `c`'s token, which expires at `expS` (Unix seconds). */
  #scheduleRefresh(c: Conn, expS: number, floorMs = 0): void {
    clearTimeout(c.refreshTimer);
    c.refreshTimer = undefined;
    if (c.settled) return;
    const at = Date.now() + Math.max(floorMs, refreshDelay(expS, Date.now(), this.#opts.refreshLead));
    const arm = () => {
      const wait = Math.max(0, at - Date.now());
      c.refreshTimer = setTimeout(() => {
        c.refreshTimer = undefined;
        if (c.settled) return;
        if (wait > MAX_TIMER_MS) arm(); // beyond one timer's reach: wait again
        else void this.#refresh(c);
      }, Math.min(wait, MAX_TIMER_MS));
    };
    arm();
  }

  /** Asks the token provider for a fresh token and sends it in a `refresh`.
   * A provider that fails ends the connection: the reconnect asks it again. */
  async #refresh(c: Conn): Promise<void> {
    const getToken = this.#getToken;
    if (!getToken || c.settled) return;
    let token: string;
    try {
      token = await getToken({ attempt: this.#attempts, signal: this.#abort.signal });
    } catch (err) {
      if (this.#closed) return;
      return this.#settle(c, { kind: "lost", reason: `the token provider failed to refresh the token: ${message(err)}` });
    }
    if (c.settled) return;
    if (typeof token !== "string" || token === "") {
      return this.#settle(c, { kind: "lost", reason: "the token provider returned no token to refresh with" });
    }
    const id = `r${++this.#nextId}`;
    c.refreshId = id;
    this.#send(c, { action: "refresh", id, token });
  }

  /** A channel the gateway refused for good (a join, or a token that no longer
   * grants it): dropped, its streams ended with `err`; never joined again. */
  #dropChannel(name: string, err: AgentWireError): void {
    const core = this.#channels.get(name);
    if (!core) return;
    this.#channels.delete(name);
    this.#queuedJoins = this.#queuedJoins.filter((n) => n !== name);
    core.channel._emit("error", err);
    core.channel._end(err);
  }

  #onError(c: Conn, e: ErrorBody): void {
    const msg = e.message ?? "";
    if (e.id !== undefined && e.id === c.refreshId) {
      // The refresh was refused (the connection keeps its old token): a new
      // connection, with a token the provider is asked for again, resumes.
      c.refreshId = undefined;
      const code = e.code ?? "unknown";
      this.#emitError(
        isTokenCode(code)
          ? new UnauthorizedError(msg, { code, requestId: e.id })
          : new ProtocolError(code, msg, { requestId: e.id }),
      );
      return this.#settle(c, {
        kind: "lost",
        reason: `the token refresh was refused (${code}): ${msg}; reconnecting with a fresh token`,
      });
    }
    const request = e.id !== undefined ? this.#pendingJoins.get(e.id) : undefined;
    if (e.id !== undefined) this.#pendingJoins.delete(e.id);
    if (request === undefined && e.code === "forbidden" && Array.isArray(e.channels)) {
      // A refreshed token that no longer grants these channels: the gateway
      // left them; they are dropped like a channel whose join was refused.
      const names = e.channels.filter((n): n is string => typeof n === "string");
      const err = new ProtocolError("forbidden", msg, {
        ...(e.id !== undefined ? { requestId: e.id } : {}),
        channels: names,
      });
      for (const name of names) this.#dropChannel(name, err);
      this.#emitError(err);
      return;
    }
    const opts = {
      ...(e.id !== undefined ? { requestId: e.id } : {}),
      ...(request ? { channels: request } : {}),
      ...(typeof e.scope === "string" ? { scope: e.scope } : {}),
    };
    switch (e.code) {
      case "rate_limited": {
        // Not a refusal: the join is sent again, or acks wait, for the
        // gateway's delay (1 s when it gives none), on this connection.
        const wait = retryAfterOf(e) ?? DEFAULT_RETRY_AFTER_MS;
        if (request) this.#retryJoin(c, request, wait);
        else this.#pauseAcks(c, wait);
        this.#emitError(new ProtocolError("rate_limited", msg, { ...opts, retryable: true, retryAfterMs: wait }));
        return;
      }
      case "version_unsupported":
        return this.#settle(c, { kind: "fatal", error: versionError(e) });
      case "token_expired":
        // A new connection with a fresh token resumes from the last seq.
        return this.#settle(c, {
          kind: "lost",
          reason: `the token expired: ${msg}; reconnecting with a fresh token`,
          immediate: true,
        });
      case "not_connected":
        return this.#settle(c, { kind: "lost", reason: `the gateway no longer knows this connection: ${msg}` });
      case "internal":
        if (request) return this.#settle(c, { kind: "lost", reason: `a join failed: ${msg}` });
        break;
    }
    const err =
      e.code === "internal"
        ? new ServerError("internal", msg, opts)
        : e.code !== undefined && isTokenCode(e.code)
          ? new UnauthorizedError(msg, { ...opts, code: e.code })
          : new ProtocolError(e.code ?? "unknown", msg, opts);
    if (request) {
      // Refused for good (forbidden, invalid channel, too many channels): not joined again.
      for (const name of request) this.#dropChannel(name, err);
    }
    this.#emitError(err);
  }

  /** A join answered `rate_limited`: its channels (those still wanted and not
   * in another join by then) are joined again on this connection after `wait`
   * ms. A new connection re-joins everything anyway, so the timer dies with it. */
  #retryJoin(c: Conn, names: string[], wait: number): void {
    const timer = setTimeout(() => {
      c.joinRetryTimers.delete(timer);
      if (c.settled) return;
      const inFlight = new Set<string>();
      for (const list of this.#pendingJoins.values()) for (const n of list) inFlight.add(n);
      const again = names.filter((n) => this.#channels.has(n) && !inFlight.has(n));
      if (again.length) this.#sendJoins(c, again);
    }, wait);
    c.joinRetryTimers.add(timer);
  }

  /** An ack answered `rate_limited`: no ack for `wait` ms; what falls due
   * meanwhile goes out when the pause ends. */
  #pauseAcks(c: Conn, wait: number): void {
    c.ackPausedUntil = Math.max(c.ackPausedUntil ?? 0, Date.now() + wait);
    this.#ackPaused(c);
  }

  /** Whether acks are paused on `c`; if so, a flush is scheduled for the end of the pause. */
  #ackPaused(c: Conn): boolean {
    const until = c.ackPausedUntil;
    if (until === undefined) return false;
    const left = until - Date.now();
    if (left <= 0) {
      c.ackPausedUntil = undefined;
      return false;
    }
    if (c.ackTimer === undefined && !c.settled) {
      c.ackTimer = setTimeout(() => {
        c.ackTimer = undefined;
        if (!c.settled) this.#flushAcks(c);
      }, left);
    }
    return true;
  }

  #deliver(c: Conn, core: ChannelCore, ds: Delivery[]): void {
    if (ds.length === 0) return;
    for (const d of ds) {
      if (this.#channels.get(core.name) !== core) return; // left by a listener
      let room: boolean;
      let pos: number;
      if (d.type === "event") {
        pos = d.event.seq;
        const a = this.#messages.accept(d.event);
        for (const lost of this.#messages.takeEvicted()) {
          // Lost to the bound on messages in progress: reported on its own channel.
          const owner = this.#channels.get(lost.channel);
          owner?.channel._emit("message_lost", lost);
          owner?.channel._push({ type: "message_lost", ...lost });
        }
        if (a.type === "pending") continue;
        if (a.type === "message") {
          core.channel._emit("message", a.message);
          room = core.channel._push({ type: "message", ...a.message }, pos);
        } else if (a.type === "lost") {
          core.channel._emit("message_lost", a.lost);
          room = core.channel._push({ type: "message_lost", ...a.lost }, pos);
        } else {
          core.channel._emit("event", d.event);
          room = core.channel._push({ type: "event", ...d.event }, pos);
        }
      } else {
        pos = d.gap.to;
        core.channel._emit("gap", d.gap);
        room = core.channel._push({ type: "gap", ...d.gap }, pos);
      }
      if (!room && this.#channels.get(core.name) === core) {
        // A stream is full: take nothing more on this channel until its consumer
        // caught up by half, then re-join from here (nothing lost, no gap).
        core.seq.rewind(pos);
        core.suspended = true;
        break;
      }
    }
    this.#scheduleAck(c);
  }

  #scheduleAck(c: Conn): void {
    if (this.#autoAck && c.ackTimer === undefined && !c.settled) {
      c.ackTimer = setTimeout(() => {
        c.ackTimer = undefined;
        if (!c.settled) this.#flushAcks(c);
      }, this.#opts.ackDebounce!);
    }
  }

  /** A stream consumer took an item of channel `name`. */
  #taken(name: string): void {
    const core = this.#channels.get(name);
    if (!core) return;
    const c = this.#conn;
    if (core.suspended && core.channel._drained()) {
      core.suspended = false;
      if (c?.welcomed && !c.settled && !core.paused) this.#sendJoins(c, [name]);
    }
    if (c?.welcomed) this.#scheduleAck(c);
  }

  get #autoAck(): boolean {
    return this.#opts.autoAck && this.#opts.ackDebounce !== null;
  }

  /** Joins, each from where its delivery stands, in frames of at most 50 channels. */
  #sendJoins(c: Conn, names: string[]): void {
    for (let i = 0; i < names.length; i += MAX_CHANNELS_PER_JOIN) {
      const list: (string | { name: string; since: Since })[] = [];
      const chunk: string[] = [];
      for (const name of names.slice(i, i + MAX_CHANNELS_PER_JOIN)) {
        const core = this.#channels.get(name);
        if (!core || core.paused || core.suspended) continue;
        core.seq.rejoining();
        core.holeSince = undefined;
        const since = sinceOf(core);
        list.push(since === undefined ? name : { name, since });
        chunk.push(name);
      }
      if (list.length === 0) continue;
      const id = `j${++this.#nextId}`;
      this.#pendingJoins.set(id, chunk);
      this.#send(c, { action: "join", id, channels: list });
      if (c.settled) return;
    }
  }

  #queueJoin(name: string): void {
    this.#queuedJoins.push(name);
    if (this.#joinFlushScheduled) return;
    this.#joinFlushScheduled = true;
    // Channels added in the same tick share join frames.
    queueMicrotask(() => {
      this.#joinFlushScheduled = false;
      const names = this.#queuedJoins;
      this.#queuedJoins = [];
      const c = this.#conn;
      if (c && c.welcomed && !c.settled && names.length) this.#sendJoins(c, names);
    });
  }

  /** Joins again, from their last delivered seq, the channels whose sequencer
   * knows of seqs that did not arrive: the log still has them. A live hole
   * (events held after a missing seq) first waits `holeGrace` for the missing
   * frames: frames that fill it meanwhile cancel the re-join. */
  #rejoinLagging(c: Conn): void {
    const now = Date.now();
    const grace = this.#opts.holeGrace ?? 250;
    const lagging: string[] = [];
    let wait: number | undefined;
    for (const [name, core] of this.#channels) {
      if (core.paused || core.suspended || !core.seq.wantsRejoin()) {
        core.holeSince = undefined;
        continue;
      }
      if (core.seq.pending > 0 && grace > 0) {
        core.holeSince ??= now;
        const left = core.holeSince + grace - now;
        if (left > 0) {
          wait = Math.min(wait ?? left, left);
          continue;
        }
      }
      core.holeSince = undefined;
      lagging.push(name);
    }
    if (lagging.length) this.#sendJoins(c, lagging);
    if (wait !== undefined && c.holeTimer === undefined && !c.settled) {
      c.holeTimer = setTimeout(() => {
        c.holeTimer = undefined;
        if (!c.settled) this.#rejoinLagging(c);
      }, wait);
    }
  }

  /** The ack each channel should send now, if it moved. */
  #ackTarget(core: ChannelCore): number | undefined {
    const last = core.seq.last;
    if (last === undefined || last <= 0) return undefined;
    // Never past what every open stream's consumer took.
    let target = this.#autoAck ? Math.min(last, core.channel._ackable() ?? last) : 0;
    if (core.ackWanted !== undefined) target = Math.max(target, Math.min(core.ackWanted, last));
    if (target <= 0 || (core.acked !== undefined && target <= core.acked)) return undefined;
    return target;
  }

  #sendAck(c: Conn, core: ChannelCore): void {
    if (this.#ackPaused(c)) return; // sent (ackWanted kept) when the pause ends
    const target = this.#ackTarget(core);
    core.ackWanted = undefined;
    if (target === undefined) return;
    core.acked = target;
    this.#send(c, { action: "ack", channel: core.name, seq: target });
  }

  /** Acknowledges each channel's last delivered seq, if it moved. */
  #flushAcks(c: Conn): void {
    clearTimeout(c.ackTimer);
    c.ackTimer = undefined;
    if (this.#ackPaused(c)) return;
    for (const core of this.#channels.values()) {
      if (c.settled) return;
      this.#sendAck(c, core);
    }
  }

  /** Explicit acks asked for while disconnected. */
  #sendWantedAcks(c: Conn): void {
    for (const core of this.#channels.values()) {
      if (core.ackWanted !== undefined && !c.settled) this.#sendAck(c, core);
    }
  }

  #ack(name: string, seq: number): Promise<void> {
    const core = this.#channels.get(name);
    if (!core) return Promise.reject(new AgentWireError("closed", `not joined to ${name}`));
    if (!isSeq(seq)) return Promise.reject(new AgentWireError("config", "`seq` must be a non-negative integer"));
    core.ackWanted = Math.max(core.ackWanted ?? 0, seq);
    const c = this.#conn;
    if (c?.welcomed && !c.settled) this.#sendAck(c, core);
    return Promise.resolve();
  }

  #leave(name: string): Promise<void> {
    const core = this.#channels.get(name);
    if (!core) return Promise.resolve();
    const c = this.#conn;
    let answered: Promise<void> = Promise.resolve();
    if (c?.welcomed && !c.settled) {
      // What was delivered on it is acknowledged before leaving.
      this.#sendAck(c, core);
      const id = `l${++this.#nextId}`;
      answered = new Promise<void>((resolve) => this.#pendingLeaves.set(id, resolve));
      this.#channels.delete(name);
      this.#queuedJoins = this.#queuedJoins.filter((n) => n !== name);
      this.#send(c, { action: "leave", id, channels: [name] });
    } else {
      // Not connected: the next connection's re-join simply leaves it out.
      this.#channels.delete(name);
    }
    core.channel._end();
    return answered;
  }

  #pause(name: string): Promise<void> {
    const core = this.#channels.get(name);
    if (!core || core.paused) return Promise.resolve();
    core.paused = true;
    this.#queuedJoins = this.#queuedJoins.filter((n) => n !== name);
    const c = this.#conn;
    if (!c?.welcomed || c.settled) return Promise.resolve(); // the next connection leaves it out
    this.#sendAck(c, core);
    const id = `l${++this.#nextId}`;
    const answered = new Promise<void>((resolve) => this.#pendingLeaves.set(id, resolve));
    this.#send(c, { action: "leave", id, channels: [name] });
    return answered;
  }

  #resume(name: string): void {
    const core = this.#channels.get(name);
    if (!core || !core.paused) return;
    core.paused = false;
    // Joined from its position (the last seq delivered before the pause).
    if (this.#conn?.welcomed && !this.#conn.settled) this.#queueJoin(name);
  }

  #send(c: Conn, frame: object): void {
    if (c.settled) return;
    try {
      c.ws.send(JSON.stringify(frame));
    } catch (err) {
      this.#settle(c, { kind: "lost", reason: `send failed: ${message(err)}` });
    }
  }

  // ---- state, errors, the end ----

  #setState(current: ConnectionState, reason: string, extra: Partial<StateChange> = {}): void {
    const previous = this.#state;
    if (previous === current && current !== "reconnecting") return;
    this.#state = current;
    this.#emitter.emit("state", { previous, current, reason, ...extra });
  }

  #emitError(err: AgentWireError): void {
    this.#emitter.emit("error", err);
  }

  #listenerFailed(err: unknown, event: string): void {
    if (event === "error") return; // an error listener that throws: nowhere left to report it
    const e =
      err instanceof AgentWireError
        ? err
        : new AgentWireError("listener", `a \`${event}\` listener threw: ${message(err)}`, { cause: err });
    this.#emitError(e);
  }

  /** The client stops: closed by the application (no error) or a fatal error. */
  #end(error?: AgentWireError): void {
    if (this.#state === "closed") return;
    this.#closed = true;
    this.#abort.abort();
    const c = this.#conn;
    if (c) this.#settle(c, { kind: "closed" });
    if (error) {
      this.#fatalError = error;
      this.#emitError(error);
    }
    this.#setState("closed", error ? error.message : "closed by the application", error ? { error } : {});
    const rejection = error ?? new AgentWireError("closed", "the client is closed");
    for (const w of this.#readyWaiters.splice(0)) w.reject(rejection);
    for (const core of this.#channels.values()) core.channel._end(error);
    this.#finish();
  }
}
