/**
 * AG-UI over agentwire (docs/agui.md): `@agentwire/client/agui`.
 *
 * - {@link AgUiPublisher} publishes AG-UI events to a channel over the
 *   HTTP API: each one validated with `@ag-ui/core`'s own schema, one
 *   agentwire event per AG-UI event (`kind` its `type`, `data` the event),
 *   text and argument deltas coalesced, events over one event's size as
 *   chunked messages, idempotency keys from the run id and a counter.
 * - {@link AgentWireAgent} is an `AbstractAgent` of `@ag-ui/client` whose
 *   event stream is an agentwire channel: `runAgent()` gets the channel's
 *   next (or current) run, resumed across dropped connections, with gaps,
 *   invalid events and other kinds handled as docs/agui.md says.
 *
 * `@ag-ui/core`, `@ag-ui/client`, `rxjs` and `zod` are peer dependencies
 * of this entry only: the main entry `@agentwire/client` never loads them.
 */
import { AbstractAgent, type AgentConfig } from "@ag-ui/client";
import {
  EventType,
  type BaseEvent,
  type CustomEvent,
  type RawEvent,
  type RunAgentInput,
  type RunErrorEvent,
  type RunFinishedEvent,
  type RunStartedEvent,
} from "@ag-ui/core";
import { EventSchemas } from "@ag-ui/core/schemas";
import { Observable } from "rxjs";
import { MAX_EVENT_DATA_BYTES, MAX_MESSAGE_ID, escapedLen, splitMessage, toBase64 } from "./chunks.js";
import type { AgentWire } from "./client.js";
import type { Channel } from "./channel.js";
import { AgentWireError, type AgentWireErrorOptions } from "./errors.js";
import { type FetchLike, newKey, publishBatch, retriesOf, MAX_BATCH_EVENTS } from "./publish.js";
import { DEFAULT_WINDOW_MS } from "./stream.js";
import type { Since, StreamItem } from "./types.js";

/** The most delta one coalesced event carries (bytes of its JSON string). */
export const MAX_COALESCED_DELTA_BYTES = 32 * 1024;
/** The `CUSTOM` event name of progress (docs/agui.md, "Progress with an ETA"). */
export const PROGRESS_EVENT = "agentwire.progress";
/** The `CUSTOM` event name `AgentWireAgent` gives a gap. */
export const GAP_EVENT = "agentwire.gap";
/** The `CUSTOM` event name `AgentWireAgent` gives a chunked event that will never arrive. */
export const LOST_EVENT = "agentwire.lost";
/** The `RAW` source of an event whose kind is an AG-UI type but whose data is not that event. */
export const INVALID_SOURCE = "agentwire.invalid";
/** The `RAW` source of an event of another kind. */
export const RAW_SOURCE = "agentwire";

const AGUI_TYPES: ReadonlySet<string> = new Set(Object.values(EventType));

/** Whether `kind` is the `type` of an AG-UI event. */
export function isAgUiType(kind: string): kind is EventType {
  return AGUI_TYPES.has(kind);
}

/** One problem found by the AG-UI schema. */
export interface AgUiIssue {
  path: (string | number)[];
  message: string;
}

/** An event `@ag-ui/core`'s schema refuses (`code` `invalid_agui`). */
export class AgUiValidationError extends AgentWireError {
  /** The schema's findings. */
  readonly issues: AgUiIssue[];
  constructor(message: string, issues: AgUiIssue[], options: AgentWireErrorOptions = {}) {
    super("invalid_agui", message, options);
    this.issues = issues;
  }
}

/** The event, parsed by `@ag-ui/core`'s `EventSchemas`, or why not. */
export function parseAgUiEvent(value: unknown): { ok: true; event: BaseEvent } | { ok: false; issues: AgUiIssue[] } {
  const r = EventSchemas.safeParse(value);
  if (r.success) return { ok: true, event: r.data as BaseEvent };
  return {
    ok: false,
    issues: r.error.issues.map((i) => ({
      path: i.path.map((p) => (typeof p === "symbol" ? String(p) : p)),
      message: i.message,
    })),
  };
}

// ----------------------------------------------------------------------------
// Builders: they return the @ag-ui/core types.

/** `RUN_STARTED` of `threadId` (the channel) and `runId` (default a new UUID). */
export function runStarted(
  fields: { threadId: string; runId?: string } & Omit<Partial<RunStartedEvent>, "type" | "threadId" | "runId">,
): RunStartedEvent {
  return { ...fields, type: EventType.RUN_STARTED, threadId: fields.threadId, runId: fields.runId ?? newKey() };
}

/** `RUN_FINISHED` (`result` optional). */
export function runFinished(
  fields: { threadId: string; runId: string } & Omit<Partial<RunFinishedEvent>, "type" | "threadId" | "runId">,
): RunFinishedEvent {
  return { ...fields, type: EventType.RUN_FINISHED, threadId: fields.threadId, runId: fields.runId };
}

/** `RUN_ERROR` with `message` (and optionally `code`). */
export function runError(fields: { message: string } & Omit<Partial<RunErrorEvent>, "type" | "message">): RunErrorEvent {
  return { ...fields, type: EventType.RUN_ERROR, message: fields.message };
}

/** What a progress event says. */
export interface Progress {
  done: number;
  total?: number;
  label?: string;
}

/** The `CUSTOM` `agentwire.progress` event: `done` of `total` (optional), a `label` (optional). */
export function progressEvent(done: number, total?: number, label?: string): CustomEvent {
  if (typeof done !== "number" || !Number.isFinite(done)) {
    throw new AgentWireError("config", "progress: `done` must be a finite number");
  }
  if (total !== undefined && (typeof total !== "number" || !Number.isFinite(total))) {
    throw new AgentWireError("config", "progress: `total` must be a finite number when given");
  }
  if (label !== undefined && typeof label !== "string") {
    throw new AgentWireError("config", "progress: `label` must be a string when given");
  }
  const value: Progress = { done };
  if (total !== undefined) value.total = total;
  if (label !== undefined) value.label = label;
  return { type: EventType.CUSTOM, name: PROGRESS_EVENT, value };
}

// ----------------------------------------------------------------------------
// The publisher.

/** The deltas that coalesce, and the field naming what they append to. */
const DELTA_ID: Partial<Record<string, "messageId" | "toolCallId">> = {
  [EventType.TEXT_MESSAGE_CONTENT]: "messageId",
  [EventType.TOOL_CALL_ARGS]: "toolCallId",
  [EventType.REASONING_MESSAGE_CONTENT]: "messageId",
};

const utf8 = new TextEncoder();

function deltaBytes(s: string): number {
  let n = 0;
  for (const ch of s) n += escapedLen(ch.codePointAt(0) ?? 0);
  return n;
}

/** Printable ASCII, as an idempotency key must be; else a hash of it. */
function keyPart(id: string, max: number): string {
  if (id.length > 0 && id.length <= max && /^[\x21-\x7e]+$/.test(id) && !id.includes("#")) return id;
  // FNV-1a, 64 bits, as hex: a stable stand-in for an id a key cannot hold.
  let h = 0xcbf29ce484222325n;
  for (const b of utf8.encode(id)) {
    h ^= BigInt(b);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return `h${h.toString(16).padStart(16, "0")}`;
}

export interface AgUiPublisherOptions {
  /** The gateway's HTTP base URL. */
  url: string;
  /** A token with a `publish` grant for the channel. */
  token: string;
  /** The channel: one agent, one AG-UI thread. */
  channel: string;
  /** The run whose events these are, for the idempotency keys (default:
   * each `RUN_STARTED`'s `runId`, and a new UUID before the first). */
  runId?: string;
  /** Deltas within this window coalesce (ms, default 50); progress goes at most once per window. */
  windowMs?: number;
  /** The most delta one coalesced event carries (bytes, default and at most 32 KiB). */
  maxDeltaBytes?: number;
  /** Retries of a retryable failure per request (default 5; see `publish()`):
   * every event keeps its idempotency key, so a retry makes no duplicate. */
  retries?: number;
  /** Default `globalThis.fetch`. */
  fetch?: FetchLike;
}

type Outgoing =
  | { type: "event"; kind: string; data: BaseEvent; id: string }
  | { type: "message"; kind: string; data: BaseEvent; id: string };

interface PendingDelta {
  event: BaseEvent;
  /** The fields other than `delta` and `timestamp`, as JSON: what must match to merge. */
  shape: string;
  parts: string[];
  bytes: number;
}

/**
 * Publishes AG-UI events to one channel (docs/agui.md).
 *
 * ```ts
 * const pub = new AgUiPublisher({ url, token, channel: "agent-1" });
 * pub.publish(runStarted({ threadId: "agent-1", runId }));
 * pub.publish({ type: EventType.TEXT_MESSAGE_START, messageId: "m1", role: "assistant" });
 * for (const t of tokens) pub.publish({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m1", delta: t });
 * pub.progress(3, 10, "Analyzing code... 3/10 files");
 * pub.publish({ type: EventType.TEXT_MESSAGE_END, messageId: "m1" });
 * pub.publish(runFinished({ threadId: "agent-1", runId }));
 * await pub.close();
 * ```
 *
 * `publish()` validates the event at once (an invalid one throws
 * {@link AgUiValidationError} and nothing is sent) and queues it; events
 * go out in order, ten per batch request. `flush()` sends what is pending
 * and waits; `close()` too, and ends the publisher. A failure that outlasts
 * the retries stops the publisher: the next call throws it.
 */
export class AgUiPublisher {
  readonly channel: string;
  readonly windowMs: number;
  readonly maxDeltaBytes: number;
  readonly #options: AgUiPublisherOptions;
  readonly #retries: number;
  #runKey: string;
  #fixedRun: boolean;
  #counter = 0;
  #pending: PendingDelta | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #progress: CustomEvent | undefined;
  #progressTimer: ReturnType<typeof setTimeout> | undefined;
  #progressSentAt = -Infinity;
  #queue: Outgoing[] = [];
  #sending: Promise<void> = Promise.resolve();
  #failure: unknown;
  #closed = false;
  #published = 0;

  constructor(options: AgUiPublisherOptions) {
    if (!options || !options.url) throw new AgentWireError("config", "`url` is needed");
    if (!options.token) throw new AgentWireError("config", "`token` is needed");
    if (!options.channel) throw new AgentWireError("config", "`channel` is needed");
    const window = options.windowMs ?? DEFAULT_WINDOW_MS;
    if (typeof window !== "number" || !Number.isFinite(window) || window < 0) {
      throw new AgentWireError("config", "`windowMs` must be a non-negative number");
    }
    this.#options = options;
    this.channel = options.channel;
    this.windowMs = window;
    this.maxDeltaBytes = Math.min(Math.max(1, options.maxDeltaBytes ?? MAX_COALESCED_DELTA_BYTES), MAX_COALESCED_DELTA_BYTES);
    this.#retries = retriesOf(options.retries ?? 5);
    this.#fixedRun = options.runId !== undefined;
    this.#runKey = keyPart(options.runId ?? newKey(), 80);
  }

  /** agentwire events handed to the gateway so far (a chunked event counts once). */
  get published(): number {
    return this.#published;
  }

  /** Validates `event` with `@ag-ui/core`'s schema and queues it (see the class). */
  publish(event: BaseEvent): void {
    this.#check();
    const parsed = parseAgUiEvent(event);
    if (!parsed.ok) {
      const type = (event as { type?: unknown } | null)?.type;
      const where = parsed.issues.map((i) => `${i.path.join(".") || "(event)"}: ${i.message}`).join("; ");
      throw new AgUiValidationError(`not a valid AG-UI ${typeof type === "string" ? type : "event"}: ${where}`, parsed.issues);
    }
    this.#accept(event);
  }

  /** Progress of the current run: the `CUSTOM` `agentwire.progress` event,
   * sent at most once per window (a newer value replaces one waiting). */
  progress(done: number, total?: number, label?: string): void {
    this.#check();
    const e = progressEvent(done, total, label);
    const now = Date.now();
    if (this.#progressTimer === undefined && now - this.#progressSentAt >= this.windowMs) {
      this.#sendProgress(e, now);
      return;
    }
    this.#progress = e;
    if (this.#progressTimer === undefined) {
      this.#progressTimer = setTimeout(() => {
        this.#progressTimer = undefined;
        this.#releaseProgress();
      }, Math.max(0, this.#progressSentAt + this.windowMs - now));
    }
  }

  /** Sends what is pending (a coalesced delta, a waiting progress) and waits
   * until everything published so far was accepted; throws the failure that
   * stopped the publisher, if any. */
  async flush(): Promise<void> {
    this.#flushPending();
    this.#releaseProgress();
    await this.#sending;
    this.#check(true);
  }

  /** `flush()`, then the publisher takes no more events. */
  async close(): Promise<void> {
    if (this.#closed) {
      await this.#sending;
      this.#check(true);
      return;
    }
    try {
      await this.flush();
    } finally {
      this.#closed = true;
    }
  }

  #check(ignoreClosed = false): void {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#closed && !ignoreClosed) throw new AgentWireError("closed", "the AgUiPublisher is closed");
  }

  #accept(event: BaseEvent): void {
    const idField = DELTA_ID[event.type];
    if (idField !== undefined) {
      this.#coalesce(event);
      return;
    }
    this.#flushPending();
    const t = event.type;
    if (t === EventType.RUN_STARTED || t === EventType.RUN_FINISHED || t === EventType.RUN_ERROR) {
      // Progress only ever describes the run it was sent in.
      this.#releaseProgress();
    }
    if (t === EventType.RUN_STARTED && !this.#fixedRun) {
      const key = keyPart(String(event.runId), 80);
      if (key !== this.#runKey) {
        this.#runKey = key;
        this.#counter = 0;
      }
    }
    this.#enqueue(event);
  }

  #coalesce(event: BaseEvent): void {
    const { delta, timestamp: _t, ...rest } = event as BaseEvent & { delta: string };
    const shape = JSON.stringify(rest);
    const size = deltaBytes(delta);
    const p = this.#pending;
    if (p && p.shape === shape && p.bytes + size <= this.maxDeltaBytes) {
      p.parts.push(delta);
      p.bytes += size;
      return;
    }
    this.#flushPending();
    this.#pending = { event, shape, parts: [delta], bytes: size };
    if (size >= this.maxDeltaBytes) {
      this.#flushPending();
      return;
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#flushPending();
    }, this.windowMs);
  }

  #flushPending(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    const p = this.#pending;
    if (!p) return;
    this.#pending = undefined;
    const merged = p.parts.length === 1 ? p.event : ({ ...p.event, delta: p.parts.join("") } as BaseEvent);
    this.#enqueue(merged);
  }

  #sendProgress(e: CustomEvent, now: number): void {
    this.#progressSentAt = now;
    this.#flushPending();
    this.#enqueue(e as BaseEvent);
  }

  #releaseProgress(): void {
    if (this.#progressTimer !== undefined) {
      clearTimeout(this.#progressTimer);
      this.#progressTimer = undefined;
    }
    const e = this.#progress;
    if (!e) return;
    this.#progress = undefined;
    this.#sendProgress(e, Date.now());
  }

  #enqueue(event: BaseEvent): void {
    const id = `${this.#runKey}:${this.#counter++}`;
    // A copy, as sent: the caller may reuse its object; `undefined` fields are left out.
    const text = JSON.stringify(event);
    const big = utf8.encode(text).length > MAX_EVENT_DATA_BYTES;
    this.#queue.push({ type: big ? "message" : "event", kind: event.type, data: JSON.parse(text) as BaseEvent, id });
    this.#pump();
  }

  #pump(): void {
    this.#sending = this.#sending.then(async () => {
      while (this.#queue.length && this.#failure === undefined) {
        const head = this.#queue[0]!;
        try {
          if (head.type === "message") {
            this.#queue.shift();
            await this.#sendMessage(head);
          } else {
            let n = 0;
            while (n < this.#queue.length && n < MAX_BATCH_EVENTS && this.#queue[n]!.type === "event") n++;
            const batch = this.#queue.splice(0, n);
            await this.#batch(batch.map((o) => ({ kind: o.kind, data: o.data, id: o.id })));
            this.#published += batch.length;
          }
        } catch (err) {
          this.#failure = err;
        }
      }
    });
  }

  async #sendMessage(o: Outgoing): Promise<void> {
    if (utf8.encode(o.id).length > MAX_MESSAGE_ID) throw new AgentWireError("config", `a message id is at most ${MAX_MESSAGE_ID} bytes`);
    const chunks = splitMessage(o.id, { json: o.data });
    for (let i = 0; i < chunks.length; i += MAX_BATCH_EVENTS) {
      await this.#batch(chunks.slice(i, i + MAX_BATCH_EVENTS).map((c) => ({ kind: o.kind, data: c.data, id: c.id })));
    }
    this.#published += 1;
  }

  #batch(events: { kind: string; data: unknown; id: string }[]): Promise<unknown> {
    const o = this.#options;
    const options: Parameters<typeof publishBatch>[0] = {
      url: o.url,
      token: o.token,
      channel: o.channel,
      events,
      retries: this.#retries,
    };
    if (o.fetch) options.fetch = o.fetch;
    return publishBatch(options);
  }
}

// ----------------------------------------------------------------------------
// The agent.

export interface AgentWireAgentOptions extends AgentConfig {
  /** The client the channel is joined through (connected by the agent if it is not yet). */
  client: AgentWire;
  /** The channel: one agent (`threadId` defaults to it). */
  channel: string;
  /** Where the channel's delivery starts (as `client.channel(name, {since})`):
   * `"head"` (the next run), a position `{epoch, seq}` just before a run's
   * `RUN_STARTED` (that run), or absent: the principal's durable cursor. */
  since?: Since;
  /** Items the channel's stream holds while no run reads it (default 1024):
   * past it the channel stops taking events and resumes from where it stood
   * when read again, so nothing is lost and memory stays bounded. */
  highWaterMark?: number;
}

/** What the agent knows of the run it hands over. */
interface RunView {
  /** A gap (or a lost event) fell inside this run. */
  gapped: boolean;
  /** The state is unknown until a `STATE_SNAPSHOT`. */
  stateStale: boolean;
  text: Set<string>;
  tools: Set<string>;
  reasoning: Set<string>;
  spans: Set<string>;
  steps: Set<string>;
  subagents: Set<string>;
  /** Subagents finished in this run (a parent a later one may name). */
  finished: Set<string>;
}

const MAX_OPEN = 4096;

function addBounded(set: Set<string>, id: string): void {
  if (set.size >= MAX_OPEN) {
    const first = set.values().next().value;
    if (first !== undefined) set.delete(first);
  }
  set.add(id);
}

/** An event to hand over, or nothing. */
type Step = { emit: BaseEvent[]; end?: boolean; hold?: StreamItem };

/**
 * An AG-UI agent whose events come from an agentwire channel
 * (docs/agui.md): `runAgent()` hands AG-UI the channel's run from its
 * `RUN_STARTED` to its `RUN_FINISHED` or `RUN_ERROR`, and `AbstractAgent`
 * applies it to `messages` and `state`. Each call takes the next run; the
 * agent observes runs, it does not start them (the agent publishing to the
 * channel does).
 *
 * - A dropped connection is resumed by the client: the run goes on as if
 *   nothing had happened.
 * - Events larger than one event arrive whole (the client reassembles them).
 * - Other kinds become `RAW` events (`source: "agentwire"`); an AG-UI kind
 *   whose data is not that event becomes `RAW` with `source: "agentwire.invalid"`.
 * - A gap inside a run becomes `CUSTOM` `agentwire.gap` `{from, to}`;
 *   messages, tool calls, reasoning, steps and subagents whose start fell in it are
 *   dropped, those whose end fell in it are closed before `RUN_FINISHED`,
 *   and `STATE_DELTA`s wait for the next `STATE_SNAPSHOT`. A chunked event
 *   that will never arrive is the same, as `CUSTOM` `agentwire.lost`.
 * - Events before the first `RUN_STARTED` (a run already under way when
 *   the channel was joined) are skipped, unless a gap came first: then the
 *   run is handed over from there, opened by a `RUN_STARTED` with the
 *   input's `runId`, as a run with a gap.
 */
export class AgentWireAgent extends AbstractAgent {
  readonly channelName: string;
  readonly client: AgentWire;
  readonly #options: AgentWireAgentOptions;
  #channel: Channel | undefined;
  #items: AsyncIterableIterator<StreamItem> | undefined;
  /** A read under way when a run was cancelled: its item belongs to the next run. */
  #next: Promise<IteratorResult<StreamItem>> | undefined;
  /** Items read but left for the next run (a `RUN_STARTED` that ended a run). */
  #held: StreamItem[] = [];
  /** A gap seen between runs, reported with the run it fell into. */
  #gapBefore: { from: number; to: number } | undefined;
  #closed = false;

  constructor(options: AgentWireAgentOptions) {
    const { client, channel, since: _since, highWaterMark: _hwm, ...config } = options;
    super({ ...config, threadId: config.threadId ?? channel });
    if (!client || typeof client.channel !== "function") throw new AgentWireError("config", "`client` (an AgentWire) is needed");
    if (!channel) throw new AgentWireError("config", "`channel` is needed");
    this.client = client;
    this.channelName = channel;
    this.#options = options;
  }

  /** The channel, joined on first use (and the client connected if it was idle). */
  get channel(): Channel {
    this.#open();
    return this.#channel!;
  }

  #open(): AsyncIterableIterator<StreamItem> {
    if (this.#closed) throw new AgentWireError("closed", "the AgentWireAgent is closed");
    if (!this.#items) {
      const opts = this.#options.since !== undefined ? { since: this.#options.since } : {};
      this.#channel = this.client.channel(this.channelName, opts);
      this.#items = this.#channel.stream({ highWaterMark: this.#options.highWaterMark ?? 1024 });
      if (this.client.state === "idle") this.client.connect();
    }
    return this.#items;
  }

  /** Stops reading the channel (the channel stays joined; the client stays open). */
  async close(): Promise<void> {
    this.#closed = true;
    const it = this.#items;
    this.#items = undefined;
    this.#next = undefined;
    this.#held = [];
    await it?.return?.();
  }

  override clone(): AgentWireAgent {
    const c = new AgentWireAgent({ ...this.#options, threadId: this.threadId });
    c.messages = structuredClone(this.messages);
    c.state = structuredClone(this.state);
    c.agentId = this.agentId;
    c.description = this.description;
    c.subscribers = [...this.subscribers];
    c.middlewares = [...this.middlewares];
    return c;
  }

  /** `connectAgent()`: the same as `runAgent()`, the channel's next (or current) run. */
  protected override connect(input: RunAgentInput): Observable<BaseEvent> {
    return this.run(input);
  }

  override run(input: RunAgentInput): Observable<BaseEvent> {
    return new Observable<BaseEvent>((subscriber) => {
      let cancelled = false;
      const view: RunView = {
        gapped: false,
        stateStale: false,
        text: new Set(),
        tools: new Set(),
        reasoning: new Set(),
        spans: new Set(),
        steps: new Set(),
        subagents: new Set(),
        finished: new Set(),
      };
      let started = false;
      const loop = async () => {
        const items = this.#open();
        for (;;) {
          let item: StreamItem;
          const held = this.#held.shift();
          if (held) item = held;
          else {
            const p = this.#next ?? items.next();
            this.#next = p;
            const r = await p;
            if (cancelled) return; // the item stays in #next for the next run
            this.#next = undefined;
            if (r.done) {
              subscriber.error(new AgentWireError("closed", `the channel ${this.channelName} ended before the run did`));
              return;
            }
            item = r.value;
          }
          if (cancelled) {
            this.#held.unshift(item);
            return;
          }
          const step = started ? this.#inRun(item, view) : this.#beforeRun(item, input, view);
          if (step.hold) this.#held.unshift(step.hold);
          for (const e of step.emit) {
            if (e.type === EventType.RUN_STARTED) started = true;
            subscriber.next(e);
          }
          if (step.end) {
            subscriber.complete();
            return;
          }
        }
      };
      loop().catch((err: unknown) => {
        if (!cancelled) subscriber.error(err);
      });
      return () => {
        cancelled = true;
      };
    });
  }

  /** An item before this run's `RUN_STARTED`. */
  #beforeRun(item: StreamItem, input: RunAgentInput, view: RunView): Step {
    if (item.type === "gap") {
      this.#gapBefore = { from: Math.min(item.from, this.#gapBefore?.from ?? item.from), to: item.to };
      return { emit: [] };
    }
    if (item.type === "message_lost") return { emit: [] };
    const got = this.#decode(item);
    if (got.kind === "agui" && got.event.type === EventType.RUN_STARTED) {
      this.#gapBefore = undefined;
      return { emit: [got.event] };
    }
    if (got.kind !== "agui" || got.event.type === EventType.RUN_FINISHED || got.event.type === EventType.RUN_ERROR) {
      // Between runs, or the end of a run whose start this agent never saw.
      if (got.kind === "agui") this.#gapBefore = undefined;
      return { emit: [] };
    }
    const gap = this.#gapBefore;
    if (!gap) return { emit: [] }; // a run already under way when the channel was joined: wait for the next
    // The run's start fell in a gap: hand over the rest of it, as a run with a gap.
    this.#gapBefore = undefined;
    const start: RunStartedEvent = { type: EventType.RUN_STARTED, threadId: this.threadId, runId: input.runId };
    view.gapped = true;
    view.stateStale = true;
    const rest = this.#inRun(item, view);
    return { ...rest, emit: [start as BaseEvent, gapEvent(gap.from, gap.to), ...rest.emit] };
  }

  /** An item inside the run being handed over. */
  #inRun(item: StreamItem, view: RunView): Step {
    if (item.type === "gap") {
      view.gapped = true;
      view.stateStale = true;
      return { emit: [gapEvent(item.from, item.to)] };
    }
    if (item.type === "message_lost") {
      view.gapped = true;
      view.stateStale = true;
      const lost: CustomEvent = { type: EventType.CUSTOM, name: LOST_EVENT, value: { id: item.id, reason: item.reason } };
      return { emit: [lost as BaseEvent] };
    }
    const got = this.#decode(item);
    if (got.kind !== "agui") return { emit: [got.event] };
    const e = got.event;
    const id = (k: "messageId" | "toolCallId") => String(e[k]);
    switch (e.type) {
      case EventType.RUN_STARTED: {
        // A new run while this one is open: its end never came (it fell in a
        // gap, or the publisher died). End this one; the new one is the next run's.
        const err: RunErrorEvent = view.gapped
          ? { type: EventType.RUN_ERROR, code: GAP_EVENT, message: "the run's end fell in a gap; a new run started" }
          : { type: EventType.RUN_ERROR, code: "agentwire.superseded", message: "a new run started before this one ended" };
        return { emit: [err as BaseEvent], end: true, hold: item };
      }
      case EventType.RUN_FINISHED:
        return { emit: [...(view.gapped ? closeOpen(view) : []), e], end: true };
      case EventType.RUN_ERROR:
        return { emit: [e], end: true };
      case EventType.TEXT_MESSAGE_START:
        addBounded(view.text, id("messageId"));
        return { emit: [e] };
      case EventType.TOOL_CALL_START:
        addBounded(view.tools, id("toolCallId"));
        return { emit: [e] };
      case EventType.REASONING_MESSAGE_START:
        addBounded(view.reasoning, id("messageId"));
        return { emit: [e] };
      case EventType.REASONING_START:
        addBounded(view.spans, id("messageId"));
        return { emit: [e] };
      case EventType.STEP_STARTED:
        addBounded(view.steps, stepKey(e));
        return { emit: [e] };
      case EventType.TEXT_MESSAGE_CONTENT:
      case EventType.TEXT_MESSAGE_END:
        return follow(view, view.text, id("messageId"), e, e.type === EventType.TEXT_MESSAGE_END);
      case EventType.TOOL_CALL_ARGS:
      case EventType.TOOL_CALL_END:
        return follow(view, view.tools, id("toolCallId"), e, e.type === EventType.TOOL_CALL_END);
      case EventType.REASONING_MESSAGE_CONTENT:
      case EventType.REASONING_MESSAGE_END:
        return follow(view, view.reasoning, id("messageId"), e, e.type === EventType.REASONING_MESSAGE_END);
      case EventType.REASONING_END:
        return follow(view, view.spans, id("messageId"), e, true);
      case EventType.STEP_FINISHED:
        return follow(view, view.steps, stepKey(e), e, true);
      case EventType.SUBAGENT_STARTED: {
        const parent = e.parentSubagentRunId;
        if (view.gapped && typeof parent === "string" && !view.subagents.has(parent) && !view.finished.has(parent)) {
          return { emit: [] }; // its parent started in the gap
        }
        if (typeof e.subagentRunId === "string") addBounded(view.subagents, e.subagentRunId);
        return { emit: [e] };
      }
      case EventType.SUBAGENT_FINISHED:
      case EventType.SUBAGENT_ERROR: {
        const sub = String(e.subagentRunId);
        const step = follow(view, view.subagents, sub, e, true);
        if (step.emit.length) addBounded(view.finished, sub);
        return step;
      }
      case EventType.STATE_SNAPSHOT:
        view.stateStale = false;
        return { emit: [e] };
      case EventType.STATE_DELTA:
        // A patch to a state this agent does not know is not applied.
        return { emit: view.stateStale ? [] : [e] };
      default:
        return { emit: [e] };
    }
  }

  /** An item as AG-UI: the event, or a `RAW` one. */
  #decode(item: StreamItem): { kind: "agui"; event: BaseEvent } | { kind: "raw"; event: BaseEvent } {
    let kind: string;
    let seq: number;
    let data: unknown;
    if (item.type === "event") {
      ({ kind, seq, data } = item);
    } else if (item.type === "message") {
      ({ kind, seq } = item);
      data = item.data;
      if (item.encoding === "utf8" && typeof data === "string") {
        try {
          data = JSON.parse(data);
        } catch {
          // stays text: not an AG-UI event
        }
      } else if (data instanceof Uint8Array) {
        data = { base64: toBase64(data) };
      }
    } else {
      throw new AgentWireError("decode", `not an event: ${item.type}`);
    }
    if (!isAgUiType(kind)) return { kind: "raw", event: rawEvent(kind, seq, data, RAW_SOURCE) };
    const parsed = parseAgUiEvent(data);
    if (!parsed.ok || parsed.event.type !== kind) return { kind: "raw", event: rawEvent(kind, seq, data, INVALID_SOURCE) };
    return { kind: "agui", event: parsed.event };
  }
}

/** A step is open per owner (the parent agent, or a subagent), as AG-UI's verifier keeps them. */
function stepKey(e: BaseEvent): string {
  return JSON.stringify([typeof e.subagentRunId === "string" ? e.subagentRunId : null, String(e.stepName)]);
}

function gapEvent(from: number, to: number): BaseEvent {
  const e: CustomEvent = { type: EventType.CUSTOM, name: GAP_EVENT, value: { from, to } };
  return e as BaseEvent;
}

function rawEvent(kind: string, seq: number, data: unknown, source: string): BaseEvent {
  const e: RawEvent = { type: EventType.RAW, event: { kind, seq, data: data === undefined ? null : data }, source };
  return e as BaseEvent;
}

/** A continuation or an end of something opened by a start: handed over when
 * its start was; after a gap, dropped when its start fell in the gap. */
function follow(view: RunView, open: Set<string>, id: string, e: BaseEvent, ends: boolean): Step {
  if (!open.has(id)) return { emit: view.gapped ? [] : [e] };
  if (ends) open.delete(id);
  return { emit: [e] };
}

/** The ends of what is still open, for a run whose ends fell in a gap. */
function closeOpen(view: RunView): BaseEvent[] {
  const out: BaseEvent[] = [];
  for (const messageId of view.text) out.push({ type: EventType.TEXT_MESSAGE_END, messageId } as BaseEvent);
  for (const toolCallId of view.tools) out.push({ type: EventType.TOOL_CALL_END, toolCallId } as BaseEvent);
  for (const messageId of view.reasoning) out.push({ type: EventType.REASONING_MESSAGE_END, messageId } as BaseEvent);
  for (const messageId of view.spans) out.push({ type: EventType.REASONING_END, messageId } as BaseEvent);
  for (const key of view.steps) {
    const [subagentRunId, stepName] = JSON.parse(key) as [string | null, string];
    out.push({ type: EventType.STEP_FINISHED, stepName, ...(subagentRunId === null ? {} : { subagentRunId }) } as BaseEvent);
  }
  for (const subagentRunId of view.subagents) out.push({ type: EventType.SUBAGENT_FINISHED, subagentRunId } as BaseEvent);
  view.subagents.clear();
  view.text.clear();
  view.tools.clear();
  view.reasoning.clear();
  view.spans.clear();
  view.steps.clear();
  return out;
}
