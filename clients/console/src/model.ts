/**
 * One channel (one agent) as the console sees it, built from its events in
 * seq order, as docs/agui.md says: the run's status and current step, its
 * progress, the streamed messages and tool calls, the state (snapshots and
 * JSON-Patch deltas), terminal output, gaps, and everything else as raw
 * events. No DOM here: a `ModelView` is told what changed.
 */
import type { Event as AgUiEvent } from "@ag-ui/core";
import { EventType } from "@ag-ui/core";
import { EventSchemas } from "@ag-ui/core/schemas";
import jsonpatch, { type Operation } from "fast-json-patch";
import { Eta, type Estimate } from "./eta.js";

export type Status = "idle" | "working" | "completed" | "failed";

export interface RunView {
  status: Status;
  runId?: string;
  /** The latest STEP_STARTED without its STEP_FINISHED. */
  step?: string;
  /** RUN_ERROR's message (and code). */
  error?: string;
}

export interface ProgressView {
  done: number;
  total?: number;
  label?: string;
  /** 0..1 when there is a total. */
  fraction?: number;
  estimate: Estimate;
  /** performance.now() (or the clock given) when this update was applied. */
  at: number;
}

export interface StateView {
  /** The current state (undefined: none yet). */
  value: unknown;
  /** After a gap (or a delta that did not apply) until the next snapshot. */
  stale: boolean;
  /** Why it is stale. */
  why?: string;
  seq?: number;
}

interface ItemBase {
  /** The seq of the event that made the item (a gap: its `from`). */
  seq: number;
}
export type Item =
  | (ItemBase & { type: "message"; id: string; role: string; text: string; open: boolean; truncated: boolean })
  | (ItemBase & {
      type: "tool";
      id: string;
      name: string;
      args: string;
      result?: string;
      open: boolean;
      truncated: boolean;
    })
  | (ItemBase & { type: "lifecycle"; text: string; tone: "info" | "ok" | "error" })
  | (ItemBase & { type: "raw"; kind: string; data: string; invalid?: string })
  | (ItemBase & { type: "gap"; from: number; to: number })
  | (ItemBase & { type: "output"; stream: string; text: string });

export interface ModelView {
  run(run: RunView): void;
  progress(p: ProgressView | undefined): void;
  state(s: StateView): void;
  /** A new item, after every item before. */
  item(item: Item): void;
  /** An item shown before changed (its text grew, it closed). */
  update(item: Item): void;
  terminal(text: string, stream: string): void;
}

/** The text a message or tool call keeps (the newest part). */
export const MAX_ITEM_TEXT = 64 * 1024;
/** The raw data shown for one event. */
export const MAX_RAW_TEXT = 4 * 1024;
/** Messages and tool calls followed at once (older open ones are closed). */
export const MAX_OPEN = 256;

const AGUI_TYPES: ReadonlySet<string> = new Set(Object.values(EventType) as string[]);

export function isAgUiKind(kind: string): boolean {
  return AGUI_TYPES.has(kind);
}

export type Classified =
  | { type: "agui"; event: AgUiEvent }
  | { type: "invalid"; reason: string }
  | { type: "output"; stream: string; text?: string; end: boolean }
  | { type: "other" };

/** What an event is: AG-UI (validated by @ag-ui/core's own schemas), not
 * AG-UI although its kind says so, terminal output, or anything else. */
export function classify(kind: string, data: unknown): Classified {
  if (isAgUiKind(kind)) {
    if (typeof data !== "object" || data === null || Array.isArray(data)) {
      return { type: "invalid", reason: "data is not an object" };
    }
    const t = (data as { type?: unknown }).type;
    if (t !== kind) return { type: "invalid", reason: `data.type is ${JSON.stringify(t) ?? "missing"}, not ${kind}` };
    const parsed = EventSchemas.safeParse(data);
    if (!parsed.success) {
      const issues = parsed.error.issues
        .slice(0, 3)
        .map((i) => `${i.path.join(".") || "(event)"}: ${i.message}`)
        .join("; ");
      return { type: "invalid", reason: issues };
    }
    return { type: "agui", event: parsed.data as AgUiEvent };
  }
  if (kind === "stdout" || kind === "stderr") {
    if (typeof data === "object" && data !== null && !Array.isArray(data)) {
      const d = data as { stream?: unknown; text?: unknown; end?: unknown };
      const stream = typeof d.stream === "string" ? d.stream : kind;
      if (typeof d.text === "string") return { type: "output", stream, text: d.text, end: false };
      if (d.end === true) return { type: "output", stream, end: true };
    }
    if (typeof data === "string") return { type: "output", stream: kind, text: data, end: false };
  }
  return { type: "other" };
}

function clip(text: string, max: number): { text: string; truncated: boolean } {
  if (text.length <= max) return { text, truncated: false };
  return { text: text.slice(text.length - max), truncated: true };
}

function shortJson(v: unknown, max = MAX_RAW_TEXT): string {
  let s: string;
  try {
    s = typeof v === "string" ? v : (JSON.stringify(v) ?? String(v));
  } catch {
    s = String(v);
  }
  return s.length > max ? `${s.slice(0, max)}… (${s.length} characters)` : s;
}

export interface ModelEvent {
  seq: number;
  kind: string;
  data: unknown;
  /** ISO time of the commit. */
  ts?: string;
}

export class ChannelModel {
  #run: RunView = { status: "idle" };
  #steps: string[] = [];
  #progress: ProgressView | undefined;
  #eta = new Eta();
  #state: StateView = { value: undefined, stale: false };
  #open = new Map<string, Item & { type: "message" | "tool" }>();
  #toolResults = new Map<string, Item & { type: "tool" }>();
  /** Highest seq applied. */
  last = 0;
  /** Events applied (for the page's counters). */
  applied = 0;
  invalid = 0;
  /** Message/tool events whose START was not seen (fell in a gap, or before the view started). */
  orphans = 0;

  constructor(
    readonly view: ModelView,
    readonly now: () => number = () => performance.now(),
  ) {}

  get run(): RunView {
    return { ...this.#run };
  }
  get stateView(): StateView {
    return { ...this.#state };
  }

  gap(from: number, to: number): void {
    this.view.item({ type: "gap", seq: from, from, to });
    this.last = Math.max(this.last, to);
    // The state is unknown until the next snapshot (docs/agui.md).
    if (!this.#state.stale) {
      this.#state = { ...this.#state, stale: true, why: `seqs ${from}–${to} are gone` };
      this.view.state(this.#state);
    }
  }

  apply(e: ModelEvent): void {
    this.last = Math.max(this.last, e.seq);
    this.applied++;
    const c = classify(e.kind, e.data);
    switch (c.type) {
      case "output":
        if (c.text !== undefined) this.view.terminal(c.text, e.kind);
        return;
      case "invalid":
        this.invalid++;
        this.view.item({ type: "raw", seq: e.seq, kind: e.kind, data: shortJson(e.data), invalid: c.reason });
        return;
      case "other":
        this.view.item({ type: "raw", seq: e.seq, kind: e.kind, data: shortJson(e.data) });
        return;
      case "agui":
        this.#agui(e, c.event);
    }
  }

  #setRun(next: RunView): void {
    this.#run = next;
    this.view.run({ ...next });
  }

  #closeAll(): void {
    for (const it of this.#open.values()) {
      it.open = false;
      this.view.update(it);
    }
    this.#open.clear();
  }

  #openItem(it: Item & { type: "message" | "tool" }): void {
    if (this.#open.size >= MAX_OPEN) {
      const [oldest] = this.#open.keys();
      const o = this.#open.get(oldest!)!;
      o.open = false;
      this.#open.delete(oldest!);
      this.view.update(o);
    }
    this.#open.set(`${it.type}:${it.id}`, it);
    this.view.item(it);
  }

  #append(key: string, delta: string): boolean {
    const it = this.#open.get(key);
    if (!it) {
      this.orphans++;
      return false;
    }
    if (it.type === "message") {
      const c = clip(it.text + delta, MAX_ITEM_TEXT);
      it.text = c.text;
      it.truncated ||= c.truncated;
    } else {
      const c = clip(it.args + delta, MAX_ITEM_TEXT);
      it.args = c.text;
      it.truncated ||= c.truncated;
    }
    this.view.update(it);
    return true;
  }

  #end(key: string): void {
    const it = this.#open.get(key);
    if (!it) {
      this.orphans++;
      return;
    }
    it.open = false;
    this.#open.delete(key);
    if (it.type === "tool") {
      this.#toolResults.set(it.id, it);
      if (this.#toolResults.size > MAX_OPEN) this.#toolResults.delete(this.#toolResults.keys().next().value!);
    }
    this.view.update(it);
  }

  #agui(e: ModelEvent, ev: AgUiEvent): void {
    const seq = e.seq;
    switch (ev.type) {
      case EventType.RUN_STARTED:
        this.#closeAll();
        this.#steps = [];
        this.#eta.reset();
        this.#progress = undefined;
        this.view.progress(undefined);
        this.#setRun({ status: "working", runId: ev.runId });
        this.view.item({ type: "lifecycle", seq, text: `run ${ev.runId} started`, tone: "info" });
        return;
      case EventType.RUN_FINISHED: {
        this.#closeAll();
        this.#steps = [];
        this.#setRun({ status: "completed", runId: ev.runId });
        const r = ev.result === undefined ? "" : ` ${shortJson(ev.result, 200)}`;
        this.view.item({ type: "lifecycle", seq, text: `run ${ev.runId} finished${r}`, tone: "ok" });
        this.#refreshProgress();
        return;
      }
      case EventType.RUN_ERROR: {
        this.#closeAll();
        this.#steps = [];
        const error = ev.code ? `${ev.message} (${ev.code})` : ev.message;
        this.#setRun({ status: "failed", ...(this.#run.runId ? { runId: this.#run.runId } : {}), error });
        this.view.item({ type: "lifecycle", seq, text: `run failed: ${error}`, tone: "error" });
        this.#refreshProgress();
        return;
      }
      case EventType.STEP_STARTED:
        this.#steps.push(ev.stepName);
        if (this.#steps.length > 64) this.#steps.shift();
        this.#setRun({ ...this.#run, step: ev.stepName });
        this.view.item({ type: "lifecycle", seq, text: `step ${ev.stepName}`, tone: "info" });
        return;
      case EventType.STEP_FINISHED: {
        const i = this.#steps.lastIndexOf(ev.stepName);
        if (i >= 0) this.#steps.splice(i, 1);
        const step = this.#steps[this.#steps.length - 1];
        const next: RunView = { ...this.#run };
        if (step === undefined) delete next.step;
        else next.step = step;
        this.#setRun(next);
        return;
      }
      case EventType.TEXT_MESSAGE_START:
        this.#openItem({ type: "message", seq, id: ev.messageId, role: ev.role ?? "assistant", text: "", open: true, truncated: false });
        return;
      case EventType.TEXT_MESSAGE_CONTENT:
        this.#append(`message:${ev.messageId}`, ev.delta);
        return;
      case EventType.TEXT_MESSAGE_END:
        this.#end(`message:${ev.messageId}`);
        return;
      case EventType.TEXT_MESSAGE_CHUNK: {
        const id = ev.messageId;
        if (id === undefined) {
          this.orphans++;
          return;
        }
        if (!this.#open.has(`message:${id}`)) {
          this.#openItem({ type: "message", seq, id, role: ev.role ?? "assistant", text: "", open: true, truncated: false });
        }
        if (ev.delta) this.#append(`message:${id}`, ev.delta);
        return;
      }
      case EventType.REASONING_MESSAGE_START:
        this.#openItem({ type: "message", seq, id: ev.messageId, role: "reasoning", text: "", open: true, truncated: false });
        return;
      case EventType.REASONING_MESSAGE_CONTENT:
        this.#append(`message:${ev.messageId}`, ev.delta);
        return;
      case EventType.REASONING_MESSAGE_END:
        this.#end(`message:${ev.messageId}`);
        return;
      case EventType.TOOL_CALL_START:
        this.#openItem({ type: "tool", seq, id: ev.toolCallId, name: ev.toolCallName, args: "", open: true, truncated: false });
        return;
      case EventType.TOOL_CALL_ARGS:
        this.#append(`tool:${ev.toolCallId}`, ev.delta);
        return;
      case EventType.TOOL_CALL_END:
        this.#end(`tool:${ev.toolCallId}`);
        return;
      case EventType.TOOL_CALL_CHUNK: {
        const id = ev.toolCallId;
        if (id === undefined) {
          this.orphans++;
          return;
        }
        if (!this.#open.has(`tool:${id}`)) {
          this.#openItem({ type: "tool", seq, id, name: ev.toolCallName ?? "tool", args: "", open: true, truncated: false });
        }
        if (ev.delta) this.#append(`tool:${id}`, ev.delta);
        return;
      }
      case EventType.TOOL_CALL_RESULT: {
        const content = typeof ev.content === "string" ? ev.content : shortJson(ev.content, MAX_ITEM_TEXT);
        const it = this.#toolResults.get(ev.toolCallId) ?? (this.#open.get(`tool:${ev.toolCallId}`) as (Item & { type: "tool" }) | undefined);
        if (it) {
          it.result = clip(content, MAX_ITEM_TEXT).text;
          this.view.update(it);
        } else {
          this.view.item({ type: "raw", seq, kind: ev.type, data: shortJson(ev) });
        }
        return;
      }
      case EventType.STATE_SNAPSHOT:
        this.#state = { value: ev.snapshot, stale: false, seq };
        this.view.state(this.#state);
        return;
      case EventType.STATE_DELTA: {
        if (this.#state.stale) return; // not applied until a snapshot comes
        try {
          const doc = this.#state.value === undefined ? {} : this.#state.value;
          const out = jsonpatch.applyPatch(doc, ev.delta as Operation[], true, false);
          this.#state = { value: out.newDocument, stale: false, seq };
        } catch (err) {
          this.#state = { ...this.#state, stale: true, why: `a STATE_DELTA (seq ${seq}) did not apply: ${(err as Error).message.split("\n")[0]}` };
        }
        this.view.state(this.#state);
        return;
      }
      case EventType.MESSAGES_SNAPSHOT:
        this.#closeAll();
        for (const m of ev.messages.slice(-50)) {
          const content = "content" in m ? (typeof m.content === "string" ? m.content : shortJson(m.content)) : "";
          const c = clip(content ?? "", MAX_ITEM_TEXT);
          this.view.item({ type: "message", seq, id: m.id, role: m.role, text: c.text, open: false, truncated: c.truncated });
        }
        return;
      case EventType.CUSTOM:
        if (ev.name === "agentwire.progress") {
          this.#onProgress(e, ev.value);
          return;
        }
        this.view.item({ type: "raw", seq, kind: `CUSTOM ${ev.name}`, data: shortJson(ev.value) });
        return;
      default:
        this.view.item({ type: "raw", seq, kind: ev.type, data: shortJson(ev) });
    }
  }

  #onProgress(e: ModelEvent, value: unknown): void {
    const v = value as { done?: unknown; total?: unknown; label?: unknown } | null;
    const ok =
      typeof v === "object" &&
      v !== null &&
      typeof v.done === "number" &&
      Number.isFinite(v.done) &&
      (v.total === undefined || (typeof v.total === "number" && Number.isFinite(v.total))) &&
      (v.label === undefined || typeof v.label === "string");
    if (!ok) {
      this.invalid++;
      this.view.item({
        type: "raw",
        seq: e.seq,
        kind: "CUSTOM agentwire.progress",
        data: shortJson(value),
        invalid: "value is not {done: number, total?: number, label?: string}",
      });
      return;
    }
    const done = v.done as number;
    const total = v.total as number | undefined;
    const t = e.ts ? Date.parse(e.ts) : NaN;
    this.#eta.update(done, total, Number.isFinite(t) ? t : Date.now());
    const p: ProgressView = { done, estimate: this.#eta.estimate(), at: this.now() };
    if (total !== undefined) {
      p.total = total;
      p.fraction = total > 0 ? Math.min(1, Math.max(0, done / total)) : 1;
    }
    if (typeof v.label === "string") p.label = v.label.slice(0, 500);
    this.#progress = p;
    this.view.progress(p);
  }

  /** A run ended: the progress stays, without an ETA. */
  #refreshProgress(): void {
    if (!this.#progress) return;
    this.#progress = { ...this.#progress, estimate: {} };
    this.view.progress(this.#progress);
  }
}
