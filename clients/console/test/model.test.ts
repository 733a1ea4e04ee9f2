// The console's model without a browser: status rules, gap rules, state
// snapshots and deltas, progress and its ETA, validation by @ag-ui/core.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { httpOf, loadConfig, parseChannels, TOKEN_KEY } from "../src/config.js";
import { Eta, formatDuration } from "../src/eta.js";
import { ChannelModel, classify, type Item, type ModelView, type ProgressView, type RunView, type StateView } from "../src/model.js";
import { safeLink } from "../src/links.js";

class Recorder implements ModelView {
  runs: RunView[] = [];
  progresses: (ProgressView | undefined)[] = [];
  states: StateView[] = [];
  items: Item[] = [];
  out = "";
  run(r: RunView): void {
    this.runs.push(r);
  }
  progress(p: ProgressView | undefined): void {
    this.progresses.push(p);
  }
  state(s: StateView): void {
    this.states.push(s);
  }
  item(i: Item): void {
    this.items.push(i);
  }
  update(): void {}
  terminal(text: string): void {
    this.out += text;
  }
}

function feed(m: ChannelModel, events: [string, unknown][], from = 1): number {
  let seq = from;
  for (const [kind, data] of events) m.apply({ seq: seq++, kind, data, ts: new Date(1_700_000_000_000 + seq * 1000).toISOString() });
  return seq;
}

describe("classify", () => {
  test("AG-UI events are validated by @ag-ui/core's schemas", () => {
    assert.equal(classify("RUN_STARTED", { type: "RUN_STARTED", threadId: "t", runId: "r" }).type, "agui");
    const bad = classify("TEXT_MESSAGE_CONTENT", { type: "TEXT_MESSAGE_CONTENT", messageId: 5 });
    assert.equal(bad.type, "invalid");
    assert.match((bad as { reason: string }).reason, /messageId|delta/);
    assert.equal(classify("RUN_FINISHED", "nope").type, "invalid");
    assert.equal(classify("RUN_FINISHED", { type: "RUN_STARTED", threadId: "t", runId: "r" }).type, "invalid");
    assert.equal(classify("status", { any: 1 }).type, "other");
    assert.deepEqual(classify("stdout", { stream: "r.stdout", index: 0, text: "hi" }), { type: "output", stream: "r.stdout", text: "hi", end: false });
    assert.deepEqual(classify("stderr", { stream: "r.stderr", index: 3, end: true }), { type: "output", stream: "r.stderr", end: true });
  });
});

describe("ChannelModel", () => {
  test("status follows the last run: idle, working, completed, failed; the step is the latest open one", () => {
    const v = new Recorder();
    const m = new ChannelModel(v);
    assert.equal(m.run.status, "idle");
    let seq = feed(m, [
      ["RUN_STARTED", { type: "RUN_STARTED", threadId: "a", runId: "r1" }],
      ["STEP_STARTED", { type: "STEP_STARTED", stepName: "plan" }],
      ["STEP_STARTED", { type: "STEP_STARTED", stepName: "code" }],
    ]);
    assert.deepEqual(m.run, { status: "working", runId: "r1", step: "code" });
    seq = feed(m, [["STEP_FINISHED", { type: "STEP_FINISHED", stepName: "code" }]], seq);
    assert.equal(m.run.step, "plan");
    seq = feed(m, [["RUN_FINISHED", { type: "RUN_FINISHED", threadId: "a", runId: "r1" }]], seq);
    assert.deepEqual(m.run, { status: "completed", runId: "r1" });
    seq = feed(m, [
      ["RUN_STARTED", { type: "RUN_STARTED", threadId: "a", runId: "r2" }],
      ["RUN_ERROR", { type: "RUN_ERROR", message: "exited with status 2 after 0.1 s", code: "exit:2" }],
    ], seq);
    assert.equal(m.run.status, "failed");
    assert.equal(m.run.error, "exited with status 2 after 0.1 s (exit:2)");
  });

  test("messages and tool calls assemble; content whose START fell in a gap is not applied", () => {
    const v = new Recorder();
    const m = new ChannelModel(v);
    let seq = feed(m, [
      ["TEXT_MESSAGE_START", { type: "TEXT_MESSAGE_START", messageId: "m1", role: "assistant" }],
      ["TEXT_MESSAGE_CONTENT", { type: "TEXT_MESSAGE_CONTENT", messageId: "m1", delta: "Hello, " }],
      ["TEXT_MESSAGE_CONTENT", { type: "TEXT_MESSAGE_CONTENT", messageId: "m1", delta: "world" }],
      ["TEXT_MESSAGE_END", { type: "TEXT_MESSAGE_END", messageId: "m1" }],
      ["TOOL_CALL_START", { type: "TOOL_CALL_START", toolCallId: "t1", toolCallName: "search" }],
      ["TOOL_CALL_ARGS", { type: "TOOL_CALL_ARGS", toolCallId: "t1", delta: '{"q":"x"}' }],
      ["TOOL_CALL_END", { type: "TOOL_CALL_END", toolCallId: "t1" }],
      ["TOOL_CALL_RESULT", { type: "TOOL_CALL_RESULT", messageId: "r", toolCallId: "t1", content: "3 hits" }],
    ]);
    const msg = v.items.find((i) => i.type === "message");
    assert.ok(msg && msg.type === "message");
    assert.equal(msg.text, "Hello, world");
    assert.equal(msg.open, false);
    const tool = v.items.find((i) => i.type === "tool");
    assert.ok(tool && tool.type === "tool");
    assert.deepEqual([tool.name, tool.args, tool.result, tool.open], ["search", '{"q":"x"}', "3 hits", false]);
    m.gap(seq, seq + 1);
    seq += 2;
    feed(m, [["TEXT_MESSAGE_CONTENT", { type: "TEXT_MESSAGE_CONTENT", messageId: "m2", delta: "lost" }]], seq);
    assert.equal(m.orphans, 1);
    assert.ok(!v.items.some((i) => i.type === "message" && i.text.includes("lost")));
    assert.ok(v.items.some((i) => i.type === "gap"));
  });

  test("state: a snapshot, JSON-Patch deltas; stale after a gap, deltas ignored until the next snapshot", () => {
    const v = new Recorder();
    const m = new ChannelModel(v);
    let seq = feed(m, [
      ["STATE_SNAPSHOT", { type: "STATE_SNAPSHOT", snapshot: { files: [], count: 0 } }],
      ["STATE_DELTA", { type: "STATE_DELTA", delta: [{ op: "replace", path: "/count", value: 2 }, { op: "add", path: "/files/-", value: "a.rs" }] }],
    ]);
    assert.deepEqual(m.stateView.value, { files: ["a.rs"], count: 2 });
    m.gap(seq, seq);
    seq++;
    assert.equal(m.stateView.stale, true);
    seq = feed(m, [["STATE_DELTA", { type: "STATE_DELTA", delta: [{ op: "replace", path: "/count", value: 99 }] }]], seq);
    assert.deepEqual(m.stateView.value, { files: ["a.rs"], count: 2 });
    feed(m, [["STATE_SNAPSHOT", { type: "STATE_SNAPSHOT", snapshot: { count: 7 } }]], seq);
    assert.deepEqual(m.stateView, { value: { count: 7 }, stale: false, seq });
  });

  test("a delta that does not apply marks the state stale, never throws", () => {
    const v = new Recorder();
    const m = new ChannelModel(v);
    feed(m, [
      ["STATE_SNAPSHOT", { type: "STATE_SNAPSHOT", snapshot: { a: 1 } }],
      ["STATE_DELTA", { type: "STATE_DELTA", delta: [{ op: "replace", path: "/missing/deep", value: 2 }] }],
    ]);
    assert.equal(m.stateView.stale, true);
    assert.deepEqual(m.stateView.value, { a: 1 });
  });

  test("progress: fraction, no ETA before two updates or without a total, reset by RUN_STARTED", () => {
    const v = new Recorder();
    const m = new ChannelModel(v);
    const at = (seq: number, s: number, value: unknown) =>
      m.apply({ seq, kind: "CUSTOM", data: { type: "CUSTOM", name: "agentwire.progress", value }, ts: new Date(1e12 + s * 1000).toISOString() });
    at(1, 0, { done: 1, total: 10, label: "Analyzing code... 1/10 files" });
    let p = v.progresses.at(-1)!;
    assert.equal(p.fraction, 0.1);
    assert.equal(p.estimate.etaMs, undefined);
    at(2, 2, { done: 3, total: 10 });
    p = v.progresses.at(-1)!;
    // 2 files in 2 s: 1 a second, 7 left.
    assert.equal(p.estimate.rate, 1);
    assert.equal(p.estimate.etaMs, 7000);
    at(3, 3, { done: 5 });
    assert.equal(v.progresses.at(-1)!.estimate.etaMs, undefined);
    at(4, 4, { done: "x" });
    assert.equal(m.invalid, 1);
    assert.equal(v.items.at(-1)?.type, "raw");
    m.apply({ seq: 5, kind: "RUN_STARTED", data: { type: "RUN_STARTED", threadId: "a", runId: "b" } });
    assert.equal(v.progresses.at(-1), undefined);
  });

  test("terminal output goes to the terminal; other kinds are raw items", () => {
    const v = new Recorder();
    const m = new ChannelModel(v);
    feed(m, [
      ["stdout", { stream: "r.stdout", index: 0, text: "\x1b[32mok\x1b[0m\n" }],
      ["stderr", { stream: "r.stderr", index: 0, text: "warn\n" }],
      ["stdout", { stream: "r.stdout", index: 1, end: true }],
      ["status", { text: "hello" }],
    ]);
    assert.equal(v.out, "\x1b[32mok\x1b[0m\nwarn\n");
    assert.deepEqual(v.items.map((i) => i.type), ["raw"]);
  });
});

describe("Eta", () => {
  test("an exponentially weighted rate", () => {
    const e = new Eta(0.5);
    e.update(0, 100, 0);
    assert.deepEqual(e.estimate(), {});
    e.update(10, 100, 1000); // 10/s
    e.update(30, 100, 2000); // 20/s → 15/s
    assert.equal(e.estimate().rate, 15);
    assert.equal(Math.round(e.estimate().etaMs!), Math.round((70 / 15) * 1000));
    assert.equal(formatDuration(65_000), "1 min 5 s");
  });
});

describe("config", () => {
  const store = () => {
    const m = new Map<string, string>();
    return {
      getItem: (k: string) => m.get(k) ?? null,
      setItem: (k: string, v: string) => void m.set(k, v),
      removeItem: (k: string) => void m.delete(k),
      clear: () => m.clear(),
      key: () => null,
      get length() {
        return m.size;
      },
    } as Storage;
  };
  test("the token leaves the address bar (replaceState) and goes to sessionStorage", () => {
    const replaced: string[] = [];
    const hist = { state: null, replaceState: (_s: unknown, _t: string, u: string) => void replaced.push(u) } as unknown as History;
    const loc = { search: "?url=ws://127.0.0.1:9/&token=SECRET&channels=a,b,a,bad%20name", pathname: "/console/", hash: "" } as Location;
    const s = store();
    const got = loadConfig(loc, s, hist);
    assert.ok(got.ok);
    assert.deepEqual(replaced, ["/console/?url=ws%3A%2F%2F127.0.0.1%3A9%2F&channels=a%2Cb%2Ca%2Cbad+name"]);
    assert.equal(s.getItem(TOKEN_KEY), "SECRET");
    assert.deepEqual(got.config.channels, ["a", "b"]);
    assert.equal(got.config.http, "http://127.0.0.1:9");
    assert.equal(got.config.token, "SECRET");
  });
  test("helpers", () => {
    assert.equal(httpOf("wss://ws.example.com/prod/"), "https://ws.example.com/prod");
    assert.deepEqual(parseChannels(" a , b ,,"), ["a", "b"]);
    assert.equal(safeLink("javascript:alert(1)"), undefined);
    assert.equal(safeLink("JaVaScRiPt:alert(1)"), undefined);
    assert.equal(safeLink("data:text/html,x"), undefined);
    assert.equal(safeLink("https://example.com/x"), "https://example.com/x");
  });
});
