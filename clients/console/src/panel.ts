/**
 * One channel's panel: header (connection, presence, pause), run status and
 * step, progress with ETA, the timeline (messages, tool calls, lifecycle,
 * raw events, gaps; older history on scroll), the state, and the terminal.
 */
import {
  NotFoundError,
  Reassembler,
  channelInfo,
  history,
  presence,
  type AgentWireEvent,
  type Channel,
  type HistoryPage,
  type Position,
  type Since,
} from "@agentwire/client";
import type { Config } from "./config.js";
import { formatDuration } from "./eta.js";
import { ChannelModel, type Item, type ModelEvent, type ModelView, type ProgressView, type RunView, type StateView } from "./model.js";
import { TerminalPane } from "./terminal.js";

export interface PanelHost {
  config: Config;
  /** A token for the HTTP reads (`fresh`: ask the provider again). */
  token(fresh?: boolean): Promise<string>;
  join(name: string, since: Since | undefined): Channel;
  storage: Storage;
}

const MAX_STATE_TEXT = 64 * 1024;
const ONLINE_RECENT_MS = 60_000;

function h<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined) el.textContent = text;
  return el;
}

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;

export function posKey(url: string, channel: string): string {
  return `agentwire-console:pos:${url}:${channel}`;
}

/** A view that only collects items (older history). */
class Collect implements ModelView {
  items: Item[] = [];
  run(): void {}
  progress(): void {}
  state(): void {}
  item(item: Item): void {
    this.items.push(item);
  }
  update(): void {}
  terminal(text: string, stream: string): void {
    const plain = text.replace(ANSI, "").replace(/\r/g, "");
    const last = this.items[this.items.length - 1];
    if (last && last.type === "output" && last.stream === stream) {
      last.text = (last.text + plain).slice(-2000);
    } else {
      this.items.push({ type: "output", seq: 0, stream, text: plain.slice(-2000) });
    }
  }
}

export class Panel implements ModelView {
  readonly el: HTMLElement;
  readonly model: ChannelModel;
  readonly term: TerminalPane;
  channel: Channel | undefined;
  /** Where the join started (for the page and the tests). */
  since: Since | undefined;
  joined = false;
  #userPaused = false;
  #flowPaused = false;
  #paused = false;
  #pauseAnswered = false;
  /** Times the channel was paused because the terminal fell behind. */
  flowPauses = 0;
  lastEventAt = 0;
  presence: { count: number; principals: string[] } | undefined;
  /** The lowest seq the timeline covers (older loads before it). */
  oldestShown: number | undefined;
  #loadingOlder = false;
  #startOfHistory = false;
  #saveTimer: ReturnType<typeof setTimeout> | undefined;
  #dirty = new Set<Item>();
  #frame = 0;
  #itemEls = new WeakMap<Item, HTMLElement>();
  #stateDirty: StateView | undefined;
  #progress: ProgressView | undefined;
  #timers: ReturnType<typeof setInterval>[] = [];
  readonly #reassembler = new Reassembler(16 * 1024 * 1024, 32 * 1024 * 1024, 16);

  // elements
  readonly #conn: HTMLElement;
  readonly #online: HTMLElement;
  readonly #watching: HTMLElement;
  readonly #pauseBtn: HTMLButtonElement;
  readonly #status: HTMLElement;
  readonly #step: HTMLElement;
  readonly #runError: HTMLElement;
  readonly #progressEl: HTMLElement;
  readonly #fill: HTMLElement;
  readonly #progressText: HTMLElement;
  readonly #eta: HTMLElement;
  readonly #timeline: HTMLElement;
  readonly #items: HTMLOListElement;
  readonly #older: HTMLButtonElement;
  readonly #stateEl: HTMLElement;
  readonly #stale: HTMLElement;
  readonly #notes: HTMLElement;

  constructor(
    readonly host: PanelHost,
    readonly name: string,
    parent: HTMLElement,
  ) {
    const el = h("section", "agent");
    el.dataset.channel = name;
    this.el = el;

    const head = h("header", "agent-head");
    head.append(h("h2", "name", name));
    this.#conn = h("span", "conn badge", "connecting");
    this.#conn.dataset.state = "connecting";
    this.#online = h("span", "online badge", "online");
    this.#online.hidden = true;
    this.#watching = h("span", "watching");
    this.#pauseBtn = h("button", "pause", "Pause");
    this.#pauseBtn.type = "button";
    this.#pauseBtn.addEventListener("click", () => this.setUserPaused(!this.#userPaused));
    head.append(this.#conn, this.#online, this.#watching, this.#pauseBtn);

    const run = h("div", "run");
    this.#status = h("span", "status badge", "idle");
    this.#status.dataset.status = "idle";
    this.#step = h("span", "step");
    this.#runError = h("span", "run-error");
    run.append(this.#status, this.#step, this.#runError);

    this.#progressEl = h("div", "progress");
    this.#progressEl.hidden = true;
    const bar = h("div", "bar");
    this.#fill = h("div", "fill");
    bar.append(this.#fill);
    this.#progressText = h("span", "progress-text");
    this.#eta = h("span", "eta");
    this.#progressEl.append(bar, this.#progressText, this.#eta);

    this.#notes = h("div", "notes");

    const panes = h("div", "panes");
    this.#timeline = h("div", "timeline");
    this.#older = h("button", "older", "Load older");
    this.#older.type = "button";
    this.#older.addEventListener("click", () => void this.loadOlder());
    this.#items = h("ol", "items");
    this.#timeline.append(this.#older, this.#items);
    this.#timeline.addEventListener("scroll", () => {
      if (this.#timeline.scrollTop < 40) void this.loadOlder();
    });

    const statePane = h("div", "state");
    const stateHead = h("div", "state-head", "State ");
    this.#stale = h("span", "stale badge", "stale");
    this.#stale.hidden = true;
    stateHead.append(this.#stale);
    this.#stateEl = h("pre", "state-json", "(no state yet)");
    statePane.append(stateHead, this.#stateEl);

    const termWrap = h("div", "terminal");
    panes.append(this.#timeline, statePane, termWrap);
    el.append(head, run, this.#progressEl, this.#notes, panes);
    parent.append(el);

    this.model = new ChannelModel(this);
    const cfg = host.config;
    this.term = new TerminalPane(termWrap, {
      scrollback: cfg.scrollback,
      high: cfg.flowHigh,
      low: cfg.flowLow,
      onBehind: () => {
        this.flowPauses++;
        this.#flowPaused = true;
        this.#applyPause();
      },
      onCaughtUp: () => {
        this.#flowPaused = false;
        this.#applyPause();
      },
    });
    this.#timers.push(setInterval(() => this.#tick(), 1000));
    this.#timers.push(setInterval(() => void this.readPresence(), cfg.presenceMs));
  }

  // --- opening: history up to where the page was, then the live join -------

  async open(): Promise<void> {
    const cfg = this.host.config;
    const key = posKey(cfg.url, this.name);
    let saved: Position | undefined;
    try {
      const raw = this.host.storage.getItem(key);
      if (raw) {
        const p = JSON.parse(raw) as Position;
        if (typeof p.epoch === "string" && Number.isSafeInteger(p.seq) && p.seq >= 0) saved = p;
      }
    } catch {
      saved = undefined;
    }
    let since: Since | undefined = saved ?? "head";
    try {
      const token = await this.host.token();
      // A channel nothing was published to yet is unknown (404): empty.
      const info = await channelInfo({ url: cfg.http, token, channel: this.name }).catch((err: unknown) => {
        if (err instanceof NotFoundError) return { epoch: "", head: 0 };
        throw err;
      });
      let target: Position | undefined;
      if (saved && saved.epoch === info.epoch) target = saved;
      else if (!saved && info.head > 0) target = { epoch: info.epoch, seq: info.head };
      if (target) {
        since = target;
        const start = Math.max(0, target.seq - cfg.backlog);
        if (target.seq > start) {
          const page = await history({ url: cfg.http, token, channel: this.name, after: start, limit: Math.min(1000, target.seq - start) });
          since = { epoch: page.epoch || target.epoch, seq: this.#applyPage(page, start) };
        } else {
          this.oldestShown = target.seq + 1;
        }
      } else if (!saved) {
        // Nothing published yet: from the start of the log (the empty
        // epoch), so that nothing published from now on is missed.
        since = { epoch: info.epoch, seq: 0 };
        this.oldestShown = 1;
      }
    } catch (err) {
      this.note(`history unavailable (${(err as Error).message}); live events only`);
    }
    this.since = since;
    this.el.dataset.since = since === undefined ? "" : typeof since === "string" ? since : String(since.seq);
    this.#join(since);
    void this.readPresence();
  }

  /** Applies a history page to the live view; returns the seq covered. */
  #applyPage(page: HistoryPage, start: number): number {
    let covered = start;
    if (page.gap) {
      this.model.gap(page.gap.from, page.gap.to);
      covered = Math.max(covered, page.gap.to);
    }
    const first = page.gap ? page.gap.from : page.events[0]?.seq;
    this.oldestShown = first ?? start + 1;
    for (const e of page.events) {
      this.#deliver(e);
      covered = Math.max(covered, e.seq);
    }
    return covered;
  }

  #deliver(e: AgentWireEvent): void {
    const a = this.#reassembler.accept(e);
    if (a.type === "pending") {
      this.model.last = Math.max(this.model.last, e.seq);
      return;
    }
    if (a.type === "lost") {
      this.item({ type: "raw", seq: e.seq, kind: e.kind, data: `message ${a.lost.id}`, invalid: `message lost: ${a.lost.reason}` });
      return;
    }
    if (a.type === "message") {
      this.#applyEvent({ seq: a.message.seq, kind: a.message.kind, data: a.message.data, ts: e.ts });
      return;
    }
    this.#applyEvent({ seq: e.seq, kind: e.kind, data: e.data, ts: e.ts });
  }

  #applyEvent(e: ModelEvent): void {
    this.lastEventAt = Date.now();
    try {
      this.model.apply(e);
    } catch (err) {
      // Never let one event break the page.
      this.item({ type: "raw", seq: e.seq, kind: e.kind, data: String(err), invalid: "could not be shown" });
    }
    if (this.oldestShown === undefined) this.oldestShown = e.seq;
  }

  #join(since: Since | undefined): void {
    const ch = this.host.join(this.name, since);
    this.channel = ch;
    ch.on("event", (e) => {
      this.#applyEvent({ seq: e.seq, kind: e.kind, data: e.data, ts: e.ts });
      this.#savePosition();
    });
    ch.on("message", (m) => {
      this.#applyEvent({ seq: m.seq, kind: m.kind, data: m.data });
      this.#savePosition();
    });
    ch.on("message_lost", (m) => {
      this.item({ type: "raw", seq: this.model.last, kind: "message", data: `message ${m.id}`, invalid: `message lost: ${m.reason}` });
    });
    ch.on("gap", (g) => {
      this.model.gap(g.from, g.to);
      this.term.marker(`gap: seqs ${g.from}–${g.to} are gone`);
      if (this.oldestShown === undefined) this.oldestShown = g.from;
      this.#savePosition();
    });
    ch.on("joined", (j) => {
      this.joined = true;
      if (j.presence) this.#setPresence(j.presence);
      this.#renderConn();
    });
    ch.on("error", (err) => {
      this.joined = false;
      this.note(`refused: ${err.message}`);
      this.#conn.dataset.state = "refused";
      this.#conn.textContent = `refused (${err.code})`;
    });
  }

  #savePosition(): void {
    if (this.#saveTimer !== undefined) return;
    this.#saveTimer = setTimeout(() => {
      this.#saveTimer = undefined;
      this.savePositionNow();
    }, 200);
  }

  savePositionNow(): void {
    const p = this.channel?.position;
    if (!p) return;
    try {
      this.host.storage.setItem(posKey(this.host.config.url, this.name), JSON.stringify(p));
    } catch {
      // storage full or denied: a reload starts from the head
    }
  }

  // --- pause / resume --------------------------------------------------------

  setUserPaused(on: boolean): void {
    this.#userPaused = on;
    this.#pauseBtn.textContent = on ? "Resume" : "Pause";
    this.#applyPause();
  }

  #applyPause(): void {
    const want = this.#userPaused || this.#flowPaused;
    const ch = this.channel;
    if (!ch || want === this.#paused) {
      this.#renderConn();
      return;
    }
    this.#paused = want;
    if (want) {
      // "paused" once the gateway answered the leave (until then events still come).
      this.#pauseAnswered = false;
      void ch
        .pause()
        .catch(() => undefined)
        .then(() => {
          if (this.#paused) this.#pauseAnswered = true;
          this.#renderConn();
        });
    } else {
      this.#pauseAnswered = false;
      this.joined = false;
      ch.resume();
    }
    this.#renderConn();
  }

  get paused(): boolean {
    return this.#paused;
  }

  // --- connection and presence -------------------------------------------------

  clientState = "connecting";

  setClientState(s: string): void {
    this.clientState = s;
    if (s !== "connected") this.joined = false;
    this.#renderConn();
  }

  #renderConn(): void {
    let s = this.clientState;
    if (s === "connected") {
      if (this.#paused) s = !this.#pauseAnswered ? "pausing" : this.#userPaused ? "paused" : "paused (terminal behind)";
      else s = this.joined ? "live" : "joining";
    }
    if (this.#conn.dataset.state === "refused") return;
    this.#conn.dataset.state = s.split(" ")[0]!;
    this.#conn.textContent = s;
    this.#renderOnline();
  }

  async readPresence(): Promise<void> {
    try {
      const token = await this.host.token();
      const p = await presence({ url: this.host.config.http, token, channel: this.name });
      this.#setPresence(p);
    } catch {
      // presence is best effort; the next poll tries again
    }
  }

  #setPresence(p: { count: number; principals: string[] }): void {
    this.presence = { count: p.count, principals: [...p.principals] };
    this.#watching.textContent = `watching: ${p.count}${p.principals.length ? ` (${p.principals.join(", ")})` : ""}`;
    this.#watching.dataset.count = String(p.count);
    this.#renderOnline();
  }

  #renderOnline(): void {
    const working = this.model?.run.status === "working";
    const others = (this.presence?.count ?? 0) > (this.joined ? 1 : 0);
    const recent = Date.now() - this.lastEventAt < ONLINE_RECENT_MS;
    this.#online.hidden = !(working || others || recent);
  }

  note(text: string): void {
    const n = h("div", "note", text);
    this.#notes.append(n);
    while (this.#notes.childElementCount > 3) this.#notes.firstElementChild!.remove();
  }

  // --- ModelView ----------------------------------------------------------------

  run(run: RunView): void {
    this.#status.textContent = run.status;
    this.#status.dataset.status = run.status;
    this.#step.textContent = run.step ? `step: ${run.step}` : "";
    this.#runError.textContent = run.error ?? "";
    this.#renderOnline();
  }

  progress(p: ProgressView | undefined): void {
    this.#progress = p;
    if (!p) {
      this.#progressEl.hidden = true;
      return;
    }
    this.#progressEl.hidden = false;
    this.#fill.style.width = p.fraction === undefined ? "100%" : `${(p.fraction * 100).toFixed(1)}%`;
    this.#fill.classList.toggle("indeterminate", p.fraction === undefined);
    this.#progressEl.dataset.done = String(p.done);
    this.#progressEl.dataset.total = p.total === undefined ? "" : String(p.total);
    const count = p.total === undefined ? `${p.done}` : `${p.done}/${p.total}`;
    // A label that already says the count ("3/10 files") is shown as it is.
    this.#progressText.textContent = !p.label ? count : p.label.includes(count) ? p.label : `${p.label} (${count})`;
    this.#renderEta();
  }

  #renderEta(): void {
    const p = this.#progress;
    const eta = p?.estimate.etaMs;
    if (!p || eta === undefined || this.model.run.status !== "working") {
      this.#eta.textContent = "";
      delete this.#eta.dataset.ms;
      return;
    }
    const left = Math.max(0, eta - (performance.now() - p.at));
    this.#eta.dataset.ms = String(Math.round(left));
    this.#eta.textContent = `ETA ${formatDuration(left)}`;
  }

  #tick(): void {
    this.#renderEta();
    this.#renderOnline();
  }

  state(s: StateView): void {
    this.#stateDirty = s;
    this.#schedule();
  }

  item(item: Item): void {
    const li = this.#render(item);
    const atBottom = this.#atBottom();
    this.#items.append(li);
    // Bounded: the oldest go (they can be loaded again from history).
    while (this.#items.childElementCount > this.host.config.maxItems) {
      this.#items.firstElementChild!.remove();
      this.#startOfHistory = false;
      const first = this.#items.firstElementChild as HTMLElement | null;
      const s = Number(first?.dataset.seq);
      if (Number.isFinite(s) && s > 0) this.oldestShown = s;
    }
    if (atBottom) this.#stickBottom = true;
    this.#schedule();
  }

  update(item: Item): void {
    this.#dirty.add(item);
    if (this.#atBottom()) this.#stickBottom = true;
    this.#schedule();
  }

  terminal(text: string): void {
    this.term.write(text);
  }

  #stickBottom = false;

  #atBottom(): boolean {
    const t = this.#timeline;
    return t.scrollHeight - t.scrollTop - t.clientHeight < 30;
  }

  #schedule(): void {
    if (this.#frame) return;
    this.#frame = requestAnimationFrame(() => {
      this.#frame = 0;
      this.#flush();
    });
  }

  #flush(): void {
    for (const it of this.#dirty) {
      const el = this.#itemEls.get(it);
      if (el && el.isConnected) this.#fillItem(el, it);
    }
    this.#dirty.clear();
    const s = this.#stateDirty;
    if (s) {
      this.#stateDirty = undefined;
      let text: string;
      try {
        text = s.value === undefined ? "(no state yet)" : JSON.stringify(s.value, null, 2);
      } catch {
        text = "(state cannot be shown)";
      }
      if (text.length > MAX_STATE_TEXT) text = `${text.slice(0, MAX_STATE_TEXT)}\n… (${text.length} characters)`;
      this.#stateEl.textContent = text;
      this.#stale.hidden = !s.stale;
      this.#stale.title = s.why ?? "";
      this.#stale.textContent = s.stale ? `stale: ${s.why ?? "until the next snapshot"}` : "stale";
      this.#stateEl.parentElement!.dataset.stale = String(s.stale);
    }
    if (this.#stickBottom) {
      this.#stickBottom = false;
      this.#timeline.scrollTop = this.#timeline.scrollHeight;
    }
  }

  #render(item: Item): HTMLElement {
    const li = h("li", `item ${item.type}`);
    li.dataset.seq = String(item.seq);
    li.dataset.type = item.type;
    this.#itemEls.set(item, li);
    this.#fillItem(li, item);
    return li;
  }

  #fillItem(li: HTMLElement, item: Item): void {
    li.replaceChildren();
    switch (item.type) {
      case "message": {
        li.dataset.role = item.role;
        li.dataset.id = item.id;
        li.classList.toggle("open", item.open);
        li.append(h("span", "role", item.role), h("div", "text", (item.truncated ? "… " : "") + item.text));
        return;
      }
      case "tool": {
        li.dataset.id = item.id;
        li.classList.toggle("open", item.open);
        li.append(h("span", "tool-name", `tool ${item.name}`), h("code", "args", (item.truncated ? "… " : "") + item.args));
        if (item.result !== undefined) li.append(h("div", "result", `→ ${item.result}`));
        return;
      }
      case "lifecycle":
        li.dataset.tone = item.tone;
        li.append(h("span", "text", item.text));
        return;
      case "raw": {
        li.dataset.kind = item.kind;
        if (item.invalid !== undefined) {
          li.classList.add("invalid");
          const m = h("span", "marker", "invalid AG-UI");
          m.title = item.invalid;
          li.append(m);
        }
        li.append(h("span", "kind", item.kind), h("code", "data", item.data));
        if (item.invalid) li.append(h("div", "why", item.invalid));
        return;
      }
      case "gap":
        li.dataset.from = String(item.from);
        li.dataset.to = String(item.to);
        li.append(h("span", "text", `gap: seqs ${item.from}–${item.to} are gone (expired before they were seen)`));
        return;
      case "output":
        li.dataset.stream = item.stream;
        li.append(h("span", "kind", item.stream), h("code", "data", item.text));
        return;
    }
  }

  // --- older history ------------------------------------------------------------------

  async loadOlder(): Promise<void> {
    const before = this.oldestShown;
    if (this.#loadingOlder || this.#startOfHistory || before === undefined) return;
    if (before <= 1) {
      this.#markStart();
      return;
    }
    this.#loadingOlder = true;
    this.#older.disabled = true;
    this.#older.textContent = "Loading…";
    try {
      const cfg = this.host.config;
      const after = Math.max(0, before - 1 - cfg.olderPage);
      const token = await this.host.token();
      const page = await history({ url: cfg.http, token, channel: this.name, after, limit: before - 1 - after });
      const collect = new Collect();
      const m = new ChannelModel(collect);
      const r = new Reassembler(16 * 1024 * 1024, 32 * 1024 * 1024, 16);
      if (page.gap) m.gap(page.gap.from, Math.min(page.gap.to, before - 1));
      for (const e of page.events) {
        if (e.seq >= before) break;
        const a = r.accept(e);
        if (a.type === "message") m.apply({ seq: a.message.seq, kind: a.message.kind, data: a.message.data, ts: e.ts });
        else if (a.type === "not_chunk") {
          m.apply({ seq: e.seq, kind: e.kind, data: e.data, ts: e.ts });
          const last = collect.items[collect.items.length - 1];
          if (last && last.type === "output" && last.seq === 0) last.seq = e.seq;
        }
      }
      const t = this.#timeline;
      const fromBottom = t.scrollHeight - t.scrollTop;
      const frag = document.createDocumentFragment();
      for (const it of collect.items) {
        const li = this.#render(it);
        li.classList.add("older-item");
        frag.append(li);
      }
      this.#items.prepend(frag);
      // Bounded: older pages may add at most the cap again.
      while (this.#items.childElementCount > 2 * cfg.maxItems) this.#items.lastElementChild!.remove();
      t.scrollTop = t.scrollHeight - fromBottom;
      const first = page.gap ? page.gap.from : page.events[0]?.seq;
      this.oldestShown = Math.min(before, first ?? after + 1);
      if (after === 0 || this.oldestShown <= 1) this.#markStart();
    } catch (err) {
      this.note(`older history: ${(err as Error).message}`);
    } finally {
      this.#loadingOlder = false;
      if (!this.#startOfHistory) {
        this.#older.disabled = false;
        this.#older.textContent = "Load older";
      }
    }
  }

  #markStart(): void {
    this.#startOfHistory = true;
    this.#older.disabled = true;
    this.#older.textContent = "Start of the channel's history";
    this.#older.classList.add("start");
  }

  dispose(): void {
    for (const t of this.#timers) clearInterval(t);
    this.savePositionNow();
    this.term.dispose();
  }
}
