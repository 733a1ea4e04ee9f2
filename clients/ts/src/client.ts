/**
 * The reconnecting, resuming client's public face: `AgentWire` checks its
 * options and hands them to the connection loop in driver.ts (as the Rust
 * client's client.rs fronts driver.rs); its methods are the driver's.
 *
 * The behaviour follows clients/rust/src/driver.rs (see docs/client.md).
 */
import { Backoff } from "./backoff.js";
import type { Channel } from "./channel.js";
import { Reassembler } from "./chunks.js";
import { normaliseUrl, type WebSocketConstructor } from "./connection.js";
import { Driver, type DriverOptions, type SequencerLimits } from "./driver.js";
import { AgentWireError } from "./errors.js";
import type { ClientEvents, ConnectionState } from "./events.js";
import { VERSION, type AgentWireOptions, type ChannelOptions } from "./options.js";

// The public names that lived here before the split, still importable from this module.
export { Channel } from "./channel.js";
export { classifyRefusal, refreshDelay } from "./connection.js";
export type { WebSocketConstructor, WebSocketLike } from "./connection.js";
export type { ChannelEvents, ClientEvents, ConnectionState, ResyncInfo, StateChange } from "./events.js";
export { PROTOCOL, VERSION } from "./options.js";
export type { AgentWireOptions, ChannelOptions, TokenContext } from "./options.js";

/**
 * An agentwire client: one WebSocket to the gateway, any number of channels.
 *
 * ```ts
 * const client = new AgentWire("wss://…", { getToken: async () => fetchToken() });
 * const ch = client.channel("agent-1");
 * ch.on("event", (e) => console.log(e.seq, e.data));
 * client.connect();
 * ```
 */
export class AgentWire {
  readonly url: string;
  readonly #driver: Driver;

  constructor(url: string, options: AgentWireOptions = {}) {
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (typeof WS !== "function") {
      throw new AgentWireError(
        "config",
        "no WebSocket implementation: this runtime has no global WebSocket (Node 20 has none without a flag); " +
          'pass one: new AgentWire(url, { WebSocket }) with `import { WebSocket } from "ws"`',
      );
    }
    if (options.token === undefined && options.getToken === undefined) {
      throw new AgentWireError("config", "a token is needed: pass `token` or `getToken`");
    }
    if (options.token !== undefined && typeof options.token !== "string") {
      throw new AgentWireError("config", "`token` must be a string");
    }
    const num = (v: number | undefined, d: number, name: string) => {
      const n = v ?? d;
      if (typeof n !== "number" || !Number.isFinite(n) || n < 0) {
        throw new AgentWireError("config", `\`${name}\` must be a non-negative number of milliseconds`);
      }
      return n;
    };
    const opts: DriverOptions = {
      pingInterval: Math.max(1, num(options.pingInterval, 30_000, "pingInterval")),
      pingTimeout: Math.max(1, num(options.pingTimeout, 20_000, "pingTimeout")),
      handshakeTimeout: Math.max(1, num(options.handshakeTimeout, 10_000, "handshakeTimeout")),
      clientName: options.clientName ?? `@agentwire/client/${VERSION}`,
      maxConnectionAge:
        options.maxConnectionAge === null ? null : num(options.maxConnectionAge, 115 * 60_000, "maxConnectionAge"),
      ackDebounce: options.ackDebounce === null ? null : num(options.ackDebounce, 1_000, "ackDebounce"),
      autoAck: options.autoAck !== false,
      refreshLead: num(options.refreshLead, 60_000, "refreshLead"),
      holeGrace: num(options.holeGrace, 250, "holeGrace"),
    };
    const backoff = new Backoff({
      min: num(options.minReconnectDelay, 500, "minReconnectDelay"),
      max: num(options.maxReconnectDelay, 30_000, "maxReconnectDelay"),
      maxAttempts: options.maxAttempts,
      jitter: options.jitter ?? 1,
    });
    const seqOptions: SequencerLimits = {};
    if (options.maxPending !== undefined) seqOptions.maxPending = options.maxPending;
    if (options.maxPendingBytes !== undefined) seqOptions.maxPendingBytes = options.maxPendingBytes;
    const messages = new Reassembler(
      num(options.maxMessageBytes, 64 * 1024 * 1024, "maxMessageBytes"),
      num(options.maxHeldMessageBytes, 128 * 1024 * 1024, "maxHeldMessageBytes"),
      Math.max(1, num(options.maxPartialMessages, 64, "maxPartialMessages")),
    );
    this.#driver = new Driver({
      url: normaliseUrl(url),
      WebSocket: WS,
      token: options.token,
      getToken: options.getToken,
      opts,
      backoff,
      seqOptions,
      messages,
    });
    this.url = this.#driver.url;
    const signal = options.signal;
    if (signal) {
      if (signal.aborted) void this.close();
      else signal.addEventListener("abort", () => void this.close(), { once: true });
    }
  }

  /** `idle` (before `connect()`), `connecting`, `connected`, `reconnecting` or `closed`. */
  get state(): ConnectionState {
    return this.#driver.state;
  }

  /** Listens to `state` changes and `error`s; returns the function that stops listening. */
  on<K extends keyof ClientEvents>(event: K, listener: (value: ClientEvents[K]) => void): () => void {
    return this.#driver.on(event, listener);
  }

  /** Starts connecting (and reconnecting, until `close()` or a fatal error). */
  connect(): this {
    this.#driver.connect();
    return this;
  }

  /** Resolves once connected (at once if connected now); rejects if the client ends first. */
  ready(): Promise<void> {
    return this.#driver.ready();
  }

  /** The channel `name`, joined now (or with the next connection). Calling it
   * again for a channel already joined returns the same channel. */
  channel(name: string, options: ChannelOptions = {}): Channel {
    return this.#driver.channel(name, options);
  }

  /** Drops the local position of channel `name` (or, without a name, of
   * every channel): its last delivered seq, the events it holds and its last
   * ack are forgotten, the reset is reported on the channel (`resync`, after
   * what was delivered before), and the channel joins again from the head
   * (at once when connected, else with the next connection; a paused
   * channel when resumed). A channel not joined is ignored. */
  resync(name?: string): void {
    this.#driver.resync(name);
  }

  /** The channels joined (or to be joined with the next connection). */
  get channels(): Channel[] {
    return this.#driver.channels;
  }

  /** Acknowledges what was delivered (unless acks are off), closes the
   * connection and stops. Resolves once the socket is closed. */
  close(): Promise<void> {
    return this.#driver.close();
  }
}
