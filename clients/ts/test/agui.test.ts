// AG-UI over agentwire (docs/agui.md), without the local stack: the
// publisher against a real local HTTP server that records what it is sent,
// and the agent against the scripted gateway, run through @ag-ui/client's
// own runAgent (so its verifier and its reducer judge what the agent emits).
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, beforeEach, describe, test } from "node:test";
import { AbstractAgent, type AgentSubscriber } from "@ag-ui/client";
import { EventType, type AssistantMessage, type BaseEvent, type RunAgentInput, type ToolMessage } from "@ag-ui/core";
import { EventSchemas } from "@ag-ui/core/schemas";
import { Observable } from "rxjs";
import { WebSocket } from "ws";
import {
  AgUiPublisher,
  AgUiValidationError,
  AgentWireAgent,
  GAP_EVENT,
  INVALID_SOURCE,
  PROGRESS_EVENT,
  RAW_SOURCE,
  runFinished,
  runStarted,
} from "../src/agui.js";
import { AgentWire, AgentWireError, Reassembler, splitMessage } from "../src/index.js";
import { ScriptedServer, Waitable, type Connection } from "./scripted.js";

// ---------------------------------------------------------------------------
// The publisher.

interface Sent {
  kind: string;
  data: unknown;
  id: string;
}

/** A gateway stand-in: records each batch request's events, answers 201
 * with their seqs (or what `answers` says for the next requests: 200, 202
 * as the gateway does, anything else as an error). */
class Recorder {
  requests: Sent[][] = [];
  arrived = new Waitable<Sent[]>();
  answers: number[] = [];
  url = "";
  #seq = 0;
  #server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const parts: Buffer[] = [];
    req.on("data", (d: Buffer) => parts.push(d));
    req.on("end", () => {
      const body = Buffer.concat(parts).toString("utf8");
      assert.equal(req.url, "/v1/channels/agent-1/events:batch");
      const events = (JSON.parse(body) as { events: Sent[] }).events;
      const status = this.answers.shift() ?? 201;
      this.requests.push(events);
      if (status < 200 || status > 202) {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify({ type: "error", code: "internal", message: "injected" }));
        return;
      }
      const ids = events.map((e) => `tag~${e.id}`);
      res.writeHead(status, { "content-type": "application/json" });
      res.end(
        JSON.stringify(
          status === 202
            ? { channel: "agent-1", ids, queued: true }
            : { channel: "agent-1", ids, events: ids.map((id) => ({ id, seq: ++this.#seq, epoch: "e" })) },
        ),
      );
      this.arrived.push(events);
    });
  });
  async start(): Promise<void> {
    await new Promise<void>((r) => this.#server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }
  stop(): Promise<void> {
    return new Promise((r) => this.#server.close(() => r()));
  }
  reset(): void {
    this.requests = [];
    this.arrived = new Waitable<Sent[]>();
    this.answers = [];
  }
}

/** Every accepted event is a valid AG-UI event of its kind (or a chunk of one). */
function assertAllValid(events: Sent[]): void {
  for (const e of events) {
    if ((e.data as { $chunk?: unknown }).$chunk !== undefined) continue;
    const r = EventSchemas.safeParse(e.data);
    assert.ok(r.success, `not a valid AG-UI event: ${JSON.stringify(e.data).slice(0, 200)}`);
    assert.equal((e.data as { type: string }).type, e.kind, "kind is the event's type");
  }
}

describe("AgUiPublisher", () => {
  const rec = new Recorder();
  before(() => rec.start());
  after(() => rec.stop());
  beforeEach(() => rec.reset());
  const flat = () => rec.requests.flat();
  const open = (extra: Partial<ConstructorParameters<typeof AgUiPublisher>[0]> = {}) =>
    new AgUiPublisher({ url: rec.url, token: "t", channel: "agent-1", windowMs: 10_000, ...extra });

  test("consecutive deltas of one message are one event: the text and the order are kept", async () => {
    const pub = open();
    const pieces = ["Hel", "lo", ", ", "wörld", " 🙂", "\n", '"q"'];
    pub.publish(runStarted({ threadId: "agent-1", runId: "run-1" }));
    pub.publish({ type: EventType.TEXT_MESSAGE_START, messageId: "m1", role: "assistant" });
    for (const delta of pieces) pub.publish({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m1", delta });
    // Another message's deltas do not merge into m1's; a tool call's args coalesce too.
    pub.publish({ type: EventType.TEXT_MESSAGE_START, messageId: "m2", role: "assistant" });
    pub.publish({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m2", delta: "x" });
    pub.publish({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m1", delta: "!" });
    pub.publish({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m2", delta: "y" });
    pub.publish({ type: EventType.TEXT_MESSAGE_END, messageId: "m1" });
    pub.publish({ type: EventType.TEXT_MESSAGE_END, messageId: "m2" });
    pub.publish({ type: EventType.TOOL_CALL_START, toolCallId: "t1", toolCallName: "search" });
    for (const delta of ['{"q":', '"agent', 'wire"}']) pub.publish({ type: EventType.TOOL_CALL_ARGS, toolCallId: "t1", delta });
    pub.publish({ type: EventType.TOOL_CALL_END, toolCallId: "t1" });
    pub.publish({ type: EventType.REASONING_MESSAGE_START, messageId: "r1", role: "reasoning" });
    for (const delta of ["think", "ing"]) pub.publish({ type: EventType.REASONING_MESSAGE_CONTENT, messageId: "r1", delta });
    pub.publish({ type: EventType.REASONING_MESSAGE_END, messageId: "r1" });
    pub.publish(runFinished({ threadId: "agent-1", runId: "run-1" }));
    await pub.close();

    const sent = flat();
    assertAllValid(sent);
    assert.ok(rec.requests.every((r) => r.length <= 10), "ten per batch at most");
    assert.deepEqual(
      sent.map((e) => [e.kind, (e.data as { delta?: string }).delta]),
      [
        ["RUN_STARTED", undefined],
        ["TEXT_MESSAGE_START", undefined],
        ["TEXT_MESSAGE_CONTENT", pieces.join("")],
        ["TEXT_MESSAGE_START", undefined],
        ["TEXT_MESSAGE_CONTENT", "x"],
        ["TEXT_MESSAGE_CONTENT", "!"],
        ["TEXT_MESSAGE_CONTENT", "y"],
        ["TEXT_MESSAGE_END", undefined],
        ["TEXT_MESSAGE_END", undefined],
        ["TOOL_CALL_START", undefined],
        ["TOOL_CALL_ARGS", '{"q":"agentwire"}'],
        ["TOOL_CALL_END", undefined],
        ["REASONING_MESSAGE_START", undefined],
        ["REASONING_MESSAGE_CONTENT", "thinking"],
        ["REASONING_MESSAGE_END", undefined],
        ["RUN_FINISHED", undefined],
      ],
    );
    assert.deepEqual(sent.map((e) => e.id), sent.map((_, i) => `run-1:${i}`), "keys: the run id and a counter");
    assert.equal(pub.published, sent.length);
    assert.throws(() => pub.publish({ type: EventType.RUN_STARTED, threadId: "a", runId: "b" }), (e: unknown) => e instanceof AgentWireError && e.code === "closed");
  });

  test("a delta waits at most the window; the size bound cuts between deltas, never inside one", async () => {
    const pub = open({ windowMs: 20, runId: "w" });
    pub.publish({ type: EventType.TEXT_MESSAGE_START, messageId: "m", role: "assistant" });
    pub.publish({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m", delta: "first" });
    // No flush: the window sends the start and the delta by itself.
    const got: Sent[] = [];
    while (got.length < 2) got.push(...(await rec.arrived.next(5_000, "the windowed delta")));
    assert.deepEqual(got.map((e) => (e.data as { delta?: string }).delta), [undefined, "first"]);

    const piece = "é".repeat(1000); // 2000 bytes of JSON string each
    for (let i = 0; i < 50; i++) pub.publish({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m", delta: piece });
    await pub.flush();
    const contents = flat().slice(2);
    assertAllValid(contents);
    const deltas = contents.map((e) => (e.data as { delta: string }).delta);
    assert.equal(deltas.join(""), piece.repeat(50));
    assert.ok(deltas.every((d) => Buffer.byteLength(JSON.stringify(d)) - 2 <= 32 * 1024), "32 KiB of delta at most");
    assert.ok(deltas.every((d) => d.length % 1000 === 0), "whole deltas only");
    assert.equal(deltas.length, Math.ceil(50 / 16), "16 deltas of 2000 bytes fill 32 KiB");
    await pub.close();
  });

  test("an invalid event is refused with a typed error and nothing is sent", async () => {
    const pub = open();
    const bad: unknown[] = [
      { type: EventType.TEXT_MESSAGE_CONTENT, delta: "no message id" },
      { type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m", delta: 5 },
      { type: "NOT_A_TYPE" },
      { type: EventType.TEXT_MESSAGE_START, messageId: "m", role: null },
      { type: EventType.RUN_STARTED, threadId: "a" },
      null,
    ];
    for (const e of bad) {
      assert.throws(
        () => pub.publish(e as BaseEvent),
        (err: unknown) =>
          err instanceof AgUiValidationError && err instanceof AgentWireError && err.code === "invalid_agui" && err.issues.length > 0,
        JSON.stringify(e),
      );
    }
    await pub.close();
    assert.deepEqual(rec.requests, []);
  });

  test("an event over 96 KiB goes as a chunked message that reassembles into the event", async () => {
    const pub = open({ runId: "big" });
    const content = Array.from({ length: 30_000 }, (_, i) => `line ${i} ✓\n`).join("");
    const result = { type: EventType.TOOL_CALL_RESULT, messageId: "tm1", toolCallId: "t1", content, role: "tool" as const };
    pub.publish({ type: EventType.TOOL_CALL_START, toolCallId: "t1", toolCallName: "read" });
    pub.publish({ type: EventType.TOOL_CALL_END, toolCallId: "t1" });
    pub.publish(result);
    pub.publish({ type: EventType.STEP_STARTED, stepName: "after" });
    await pub.close();
    const sent = flat();
    assertAllValid(sent);
    const chunks = sent.filter((e) => (e.data as { $chunk?: unknown }).$chunk !== undefined);
    assert.ok(chunks.length > 2, `${chunks.length} chunks`);
    assert.ok(chunks.every((c) => c.kind === "TOOL_CALL_RESULT" && Buffer.byteLength(JSON.stringify(c.data)) <= 96 * 1024));
    assert.deepEqual(chunks.map((c) => c.id), chunks.map((_, i) => `big:2#${i}`));
    assert.equal(sent.at(-1)!.kind, "STEP_STARTED", "in order");
    const r = new Reassembler();
    const done = sent.map((e, i) => r.accept({ channel: "agent-1", seq: i + 1, epoch: "e", kind: e.kind, data: e.data })).filter((a) => a.type === "message");
    assert.equal(done.length, 1);
    const m = done[0]!;
    assert.ok(m.type === "message");
    assert.equal(m.message.kind, "TOOL_CALL_RESULT");
    assert.deepEqual(m.message.data, result);
    assert.ok(EventSchemas.safeParse(m.message.data).success);
    assert.equal(pub.published, 4);
  });

  test("a failed request is retried with the same keys: no duplicate", async () => {
    const pub = open({ runId: "retry", retries: 3 });
    rec.answers = [500];
    pub.publish({ type: EventType.STEP_STARTED, stepName: "s" });
    pub.publish({ type: EventType.STEP_FINISHED, stepName: "s" });
    await pub.close();
    assert.equal(rec.requests.length, 2, "the first answered 500, the retry 201");
    assert.deepEqual(rec.requests[0], rec.requests[1], "the same events with the same ids");
    assert.deepEqual(rec.requests[1]!.map((e) => e.id), ["retry:0", "retry:1"]);
  });

  test("201 (committed), 200 (a repeat) and 202 (queued) are all taken alike", async () => {
    const pub = open({ runId: "ok", retries: 0 });
    rec.answers = [201, 200, 202];
    pub.publish({ type: EventType.STEP_STARTED, stepName: "a" });
    await pub.flush();
    pub.publish({ type: EventType.STEP_FINISHED, stepName: "a" });
    await pub.flush();
    pub.publish({ type: EventType.STEP_STARTED, stepName: "b" });
    await pub.close();
    assert.equal(rec.requests.length, 3, "one request each, none retried");
    assert.deepEqual(flat().map((e) => e.id), ["ok:0", "ok:1", "ok:2"]);
    assert.equal(pub.published, 3);
  });

  test("a failure past the retries stops the publisher, typed", async () => {
    const pub = open({ runId: "fail", retries: 0 });
    rec.answers = [500];
    pub.publish({ type: EventType.STEP_STARTED, stepName: "s" });
    await assert.rejects(pub.flush(), (e: unknown) => e instanceof AgentWireError && e.code === "internal" && e.retryable);
    assert.throws(() => pub.publish({ type: EventType.STEP_FINISHED, stepName: "s" }), (e: unknown) => e instanceof AgentWireError && e.code === "internal");
  });

  test("progress is CUSTOM agentwire.progress, the latest per window; a run's end sends it first", async () => {
    const pub = open({ runId: "p" });
    pub.publish(runStarted({ threadId: "agent-1", runId: "p" }));
    pub.progress(1, 10, "Analyzing code... 1/10 files");
    pub.progress(2, 10);
    pub.progress(3, 10, "Analyzing code... 3/10 files");
    pub.publish({ type: EventType.STEP_STARTED, stepName: "s" });
    pub.publish({ type: EventType.STEP_FINISHED, stepName: "s" });
    pub.progress(4);
    pub.publish(runFinished({ threadId: "agent-1", runId: "p" }));
    assert.throws(() => pub.progress(Number.NaN), (e: unknown) => e instanceof AgentWireError && e.code === "config");
    await pub.close();
    const sent = flat();
    assertAllValid(sent);
    const progress = sent.filter((e) => (e.data as { name?: string }).name === PROGRESS_EVENT).map((e) => (e.data as { value: unknown }).value);
    assert.deepEqual(progress, [{ done: 1, total: 10, label: "Analyzing code... 1/10 files" }, { done: 4 }]);
    assert.deepEqual(sent.map((e) => e.kind), ["RUN_STARTED", "CUSTOM", "STEP_STARTED", "STEP_FINISHED", "CUSTOM", "RUN_FINISHED"]);
  });
});

// ---------------------------------------------------------------------------
// The agent, against the scripted gateway.

const WELCOME = { type: "welcome", protocol: 1, connection_id: "c1", server: "scripted", heartbeat_s: 300, limits: {} };
const CHANNEL = "agent-1";

class Feed {
  seq = 0;
  constructor(public conn: Connection) {}
  send(kind: string, data: unknown): number {
    const seq = ++this.seq;
    this.conn.ws.send(JSON.stringify({ type: "event", channel: CHANNEL, epoch: "e1", seq, id: `i${seq}`, kind, data, ts: "t" }));
    return seq;
  }
  agui(e: BaseEvent): number {
    return this.send(e.type, e);
  }
  /** Seqs `n` next seqs are gone. */
  gap(n: number): void {
    const from = this.seq + 1;
    this.seq += n;
    this.conn.ws.send(JSON.stringify({ type: "gap", channel: CHANNEL, from, to: this.seq }));
  }
}

async function scripted() {
  const server = await ScriptedServer.start();
  const client = new AgentWire(server.url, { WebSocket, token: "t", minReconnectDelay: 10, maxReconnectDelay: 40, ackDebounce: null });
  const agent = new AgentWireAgent({ client, channel: CHANNEL, since: { epoch: "e1", seq: 0 } });
  // Joins the channel and connects the client.
  assert.equal(agent.channel.name, CHANNEL);
  const conn = await server.accept(await server.upgrades.next(5_000, "upgrade"));
  assert.equal((await conn.frames.next(5_000, "hello")).action, "hello");
  conn.ws.send(JSON.stringify(WELCOME));
  const join = await conn.frames.next(5_000, "join");
  conn.ws.send(JSON.stringify({ type: "joined", id: join.id, channels: [{ name: CHANNEL, epoch: "e1", head: 0, replayed: 0, recovered: true }] }));
  await client.ready();
  const feed = new Feed(conn);
  const done = async () => {
    await agent.close();
    await client.close();
    await server.stop();
  };
  /** Drops the connection; accepts the client's next one and answers its
   * re-join; returns the seq it re-joined from. */
  const reconnect = async (): Promise<unknown> => {
    feed.conn.ws.terminate();
    const next = await server.accept(await server.upgrades.next(5_000, "the reconnect"));
    assert.equal((await next.frames.next(5_000, "hello")).action, "hello");
    next.ws.send(JSON.stringify({ ...WELCOME, connection_id: "c2" }));
    const rejoin = await next.frames.next(5_000, "re-join");
    next.ws.send(JSON.stringify({ type: "joined", id: rejoin.id, channels: [{ name: CHANNEL, epoch: "e1", head: feed.seq, replayed: 0, recovered: true }] }));
    feed.conn = next;
    return rejoin.channels;
  };
  return { agent, client, feed, done, reconnect };
}

/** Runs the agent once through @ag-ui/client's runAgent, recording every event it applied. */
async function runOnce(agent: AbstractAgent, runId = "local-run") {
  const events: BaseEvent[] = [];
  const subscriber: AgentSubscriber = {
    onEvent: ({ event }) => {
      events.push(event);
    },
  };
  const result = await agent.runAgent({ runId }, subscriber);
  return { events, result };
}

const summary = (events: BaseEvent[]) =>
  events.map((e) => {
    const id = e.messageId ?? e.toolCallId ?? e.stepName ?? e.name ?? e.source;
    return id === undefined ? e.type : `${e.type}:${String(id)}`;
  });

describe("AgentWireAgent", () => {
  test("the verifier is in runAgent's way: a CONTENT without its START fails the run", async () => {
    class Scripted extends AbstractAgent {
      run(): Observable<BaseEvent> {
        return new Observable((s) => {
          s.next({ type: EventType.RUN_STARTED, threadId: "t", runId: "r" } as BaseEvent);
          s.next({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "nope", delta: "x" } as BaseEvent);
          s.complete();
        });
      }
    }
    const errors = console.error;
    console.error = () => {};
    try {
      await assert.rejects(new Scripted().runAgent(), /No active text message found with ID 'nope'/);
    } finally {
      console.error = errors;
    }
  });

  test("a run is handed over whole: messages, tool calls, state; other kinds as RAW, invalid AG-UI as RAW; a chunked event whole", async () => {
    const { agent, feed, done } = await scripted();
    try {
      const running = runOnce(agent);
      feed.agui(runStarted({ threadId: CHANNEL, runId: "r1" }));
      feed.agui({ type: EventType.STATE_SNAPSHOT, snapshot: { count: 1, files: [] } });
      feed.agui({ type: EventType.TEXT_MESSAGE_START, messageId: "m1", role: "assistant" });
      feed.agui({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m1", delta: "Hel" });
      const stdoutSeq = feed.send("stdout", { stream: "r1.stdout", index: 0, text: "\u001b[32mok\u001b[0m\n" });
      const invalidSeq = feed.send("TEXT_MESSAGE_CONTENT", { type: "TEXT_MESSAGE_CONTENT", delta: "no id" });
      const mismatchSeq = feed.send("TEXT_MESSAGE_END", { type: "TEXT_MESSAGE_START", messageId: "m1" });
      feed.agui({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m1", delta: "lo" });
      feed.agui({ type: EventType.TOOL_CALL_START, toolCallId: "t1", toolCallName: "read", parentMessageId: "m1" });
      feed.agui({ type: EventType.TOOL_CALL_ARGS, toolCallId: "t1", delta: '{"path":"a.txt"}' });
      feed.agui({ type: EventType.TOOL_CALL_END, toolCallId: "t1" });
      feed.agui({ type: EventType.TEXT_MESSAGE_END, messageId: "m1" });
      const big = "x".repeat(200_000);
      for (const c of splitMessage("big-1", { json: { type: EventType.TOOL_CALL_RESULT, messageId: "tm1", toolCallId: "t1", content: big } })) {
        feed.send("TOOL_CALL_RESULT", c.data);
      }
      feed.agui({ type: EventType.STATE_DELTA, delta: [{ op: "replace", path: "/count", value: 2 }] });
      feed.agui({ type: EventType.CUSTOM, name: PROGRESS_EVENT, value: { done: 1, total: 2 } });
      feed.agui(runFinished({ threadId: CHANNEL, runId: "r1", result: { ok: true } }));
      const { events, result } = await running;

      assert.deepEqual(summary(events), [
        "RUN_STARTED",
        "STATE_SNAPSHOT",
        "TEXT_MESSAGE_START:m1",
        "TEXT_MESSAGE_CONTENT:m1",
        `RAW:${RAW_SOURCE}`,
        `RAW:${INVALID_SOURCE}`,
        `RAW:${INVALID_SOURCE}`,
        "TEXT_MESSAGE_CONTENT:m1",
        "TOOL_CALL_START:t1",
        "TOOL_CALL_ARGS:t1",
        "TOOL_CALL_END:t1",
        "TEXT_MESSAGE_END:m1",
        "TOOL_CALL_RESULT:tm1",
        "STATE_DELTA",
        `CUSTOM:${PROGRESS_EVENT}`,
        "RUN_FINISHED",
      ]);
      const raws = events.filter((e) => e.type === EventType.RAW);
      assert.deepEqual(raws[0]!.event, { kind: "stdout", seq: stdoutSeq, data: { stream: "r1.stdout", index: 0, text: "\u001b[32mok\u001b[0m\n" } });
      assert.deepEqual((raws[1]!.event as { seq: number }).seq, invalidSeq);
      assert.deepEqual(raws[2]!.event, { kind: "TEXT_MESSAGE_END", seq: mismatchSeq, data: { type: "TEXT_MESSAGE_START", messageId: "m1" } });

      const assistant = agent.messages.find((m) => m.id === "m1") as AssistantMessage;
      assert.equal(assistant.role, "assistant");
      assert.equal(assistant.content, "Hello");
      assert.deepEqual(assistant.toolCalls?.map((t) => [t.id, t.function.name, t.function.arguments]), [["t1", "read", '{"path":"a.txt"}']]);
      const tool = agent.messages.find((m) => m.id === "tm1") as ToolMessage;
      assert.equal(tool.role, "tool");
      assert.equal(tool.content, big);
      assert.deepEqual(agent.state, { count: 2, files: [] });
      assert.deepEqual(result.result, { ok: true });
    } finally {
      await done();
    }
  });

  test("a gap inside a run: CUSTOM agentwire.gap; what started in it is dropped, what ended in it closed; deltas wait for a snapshot", async () => {
    const { agent, feed, done } = await scripted();
    try {
      const running = runOnce(agent);
      feed.agui(runStarted({ threadId: CHANNEL, runId: "r1" }));
      feed.agui({ type: EventType.STATE_SNAPSHOT, snapshot: { n: 0 } });
      feed.agui({ type: EventType.STEP_STARTED, stepName: "plan" });
      feed.agui({ type: EventType.TEXT_MESSAGE_START, messageId: "m1", role: "assistant" });
      feed.agui({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m1", delta: "before" });
      feed.agui({ type: EventType.SUBAGENT_STARTED, subagentRunId: "sa1", name: "helper" });
      feed.agui({ type: EventType.STEP_STARTED, stepName: "sub", subagentRunId: "sa1" });
      // Gone: m1's CONTENT and END, m2's START, t1's START, the steps' and sa1's ends, sa0's start, a state delta.
      feed.gap(6);
      feed.agui({ type: EventType.SUBAGENT_FINISHED, subagentRunId: "sa0" });
      feed.agui({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m2", delta: "orphan" });
      feed.agui({ type: EventType.TOOL_CALL_ARGS, toolCallId: "t1", delta: "{}" });
      feed.agui({ type: EventType.TOOL_CALL_END, toolCallId: "t1" });
      feed.agui({ type: EventType.TEXT_MESSAGE_END, messageId: "m2" });
      feed.agui({ type: EventType.STATE_DELTA, delta: [{ op: "replace", path: "/n", value: 99 }] });
      feed.agui({ type: EventType.TEXT_MESSAGE_START, messageId: "m3", role: "assistant" });
      feed.agui({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m3", delta: "after" });
      feed.agui({ type: EventType.TEXT_MESSAGE_END, messageId: "m3" });
      feed.agui({ type: EventType.STATE_SNAPSHOT, snapshot: { n: 5 } });
      feed.agui({ type: EventType.STATE_DELTA, delta: [{ op: "replace", path: "/n", value: 6 }] });
      feed.agui(runFinished({ threadId: CHANNEL, runId: "r1" }));
      const { events } = await running;

      assert.deepEqual(summary(events), [
        "RUN_STARTED",
        "STATE_SNAPSHOT",
        "STEP_STARTED:plan",
        "TEXT_MESSAGE_START:m1",
        "TEXT_MESSAGE_CONTENT:m1",
        "SUBAGENT_STARTED:helper",
        "STEP_STARTED:sub",
        `CUSTOM:${GAP_EVENT}`,
        "TEXT_MESSAGE_START:m3",
        "TEXT_MESSAGE_CONTENT:m3",
        "TEXT_MESSAGE_END:m3",
        "STATE_SNAPSHOT",
        "STATE_DELTA",
        "TEXT_MESSAGE_END:m1",
        "STEP_FINISHED:plan",
        "STEP_FINISHED:sub",
        "SUBAGENT_FINISHED",
        "RUN_FINISHED",
      ]);
      assert.deepEqual(events[7]!.value, { from: 8, to: 13 });
      assert.equal(events.at(-3)!.subagentRunId, "sa1", "the step is closed under its subagent");
      assert.deepEqual(
        agent.messages.map((m) => [m.id, m.content]),
        [
          ["m1", "before"],
          ["m3", "after"],
        ],
      );
      assert.deepEqual(agent.state, { n: 6 });
    } finally {
      await done();
    }
  });

  test("runs follow one another: one under way at the join is skipped; a start lost in a gap; an end lost in a gap", async () => {
    const { agent, feed, done } = await scripted();
    try {
      // A run under way when the channel was joined: skipped, no gap before it.
      let running = runOnce(agent, "local-1");
      feed.agui({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m0", delta: "mid-run" });
      feed.agui(runFinished({ threadId: CHANNEL, runId: "r0" }));
      feed.send("note", { between: "runs" });
      feed.agui(runStarted({ threadId: CHANNEL, runId: "r1" }));
      feed.agui({ type: EventType.TEXT_MESSAGE_START, messageId: "m1", role: "assistant" });
      feed.agui({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m1", delta: "one" });
      feed.agui({ type: EventType.TEXT_MESSAGE_END, messageId: "m1" });
      feed.agui(runFinished({ threadId: CHANNEL, runId: "r1" }));
      // Run 2's start falls in a gap; its rest is handed over as a run with a gap.
      feed.gap(2);
      feed.agui({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m2", delta: "lost start" });
      feed.agui({ type: EventType.TEXT_MESSAGE_START, messageId: "m3", role: "assistant" });
      feed.agui({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m3", delta: "three" });
      // Its end (and m3's) fall in a gap; run 3 starts.
      feed.gap(2);
      feed.agui(runStarted({ threadId: CHANNEL, runId: "r3" }));
      feed.agui(runFinished({ threadId: CHANNEL, runId: "r3" }));

      let { events } = await running;
      assert.deepEqual(summary(events), ["RUN_STARTED", "TEXT_MESSAGE_START:m1", "TEXT_MESSAGE_CONTENT:m1", "TEXT_MESSAGE_END:m1", "RUN_FINISHED"]);
      assert.equal(events[0]!.runId, "r1");

      running = runOnce(agent, "local-2");
      ({ events } = await running);
      assert.deepEqual(summary(events), [
        "RUN_STARTED",
        `CUSTOM:${GAP_EVENT}`,
        "TEXT_MESSAGE_START:m3",
        "TEXT_MESSAGE_CONTENT:m3",
        `CUSTOM:${GAP_EVENT}`,
        "RUN_ERROR",
      ]);
      assert.equal(events[0]!.runId, "local-2", "the start is the local one: the real one is gone");
      assert.deepEqual(events[1]!.value, { from: 9, to: 10 });
      assert.equal(events[5]!.code, GAP_EVENT);

      // connectAgent() takes the next run too.
      events = [];
      await agent.connectAgent({ runId: "local-3" }, { onEvent: ({ event }) => void events.push(event) });
      assert.deepEqual(summary(events), ["RUN_STARTED", "RUN_FINISHED"]);
      assert.equal(events[0]!.runId, "r3");
      assert.deepEqual(
        agent.messages.map((m) => [m.id, m.content]),
        [
          ["m1", "one"],
          ["m3", "three"],
        ],
      );
    } finally {
      await done();
    }
  });

  test("a dropped connection in the middle of a run: the client re-joins from its last seq; replayed events are not handed over twice", async () => {
    const { agent, feed, done, reconnect } = await scripted();
    try {
      const seen = new Waitable<BaseEvent>();
      const events: BaseEvent[] = [];
      const running = agent.runAgent({ runId: "l" }, {
        onEvent: ({ event }) => {
          events.push(event);
          seen.push(event);
        },
      });
      feed.agui(runStarted({ threadId: CHANNEL, runId: "r1" }));
      feed.agui({ type: EventType.TEXT_MESSAGE_START, messageId: "m1", role: "assistant" });
      feed.agui({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m1", delta: "one " });
      for (let i = 0; i < 3; i++) await seen.next(5_000, `event ${i + 1}`);
      const rejoined = await reconnect();
      assert.deepEqual(rejoined, [{ name: CHANNEL, since: { epoch: "e1", seq: 3 } }], "re-joined from the last delivered seq");
      // The gateway's replay starts with what the client already has.
      feed.seq = 1;
      feed.agui({ type: EventType.TEXT_MESSAGE_START, messageId: "m1", role: "assistant" });
      feed.agui({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m1", delta: "one " });
      feed.agui({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m1", delta: "two" });
      feed.agui({ type: EventType.TEXT_MESSAGE_END, messageId: "m1" });
      feed.agui(runFinished({ threadId: CHANNEL, runId: "r1" }));
      await running;
      assert.deepEqual(summary(events), [
        "RUN_STARTED",
        "TEXT_MESSAGE_START:m1",
        "TEXT_MESSAGE_CONTENT:m1",
        "TEXT_MESSAGE_CONTENT:m1",
        "TEXT_MESSAGE_END:m1",
        "RUN_FINISHED",
      ]);
      assert.deepEqual(agent.messages.map((m) => [m.id, m.content]), [["m1", "one two"]]);
    } finally {
      await done();
    }
  });

  test("a run() given up (unsubscribed) loses nothing: the next run() gets the events", async () => {
    const { agent, feed, done } = await scripted();
    try {
      const input: RunAgentInput = { threadId: CHANNEL, runId: "x", state: {}, messages: [], tools: [], context: [], forwardedProps: {} };
      const first: BaseEvent[] = [];
      const got = new Waitable<BaseEvent>();
      const sub = agent.run(input).subscribe((e) => {
        first.push(e);
        got.push(e);
      });
      feed.agui(runStarted({ threadId: CHANNEL, runId: "r1" }));
      await got.next(5_000, "RUN_STARTED");
      sub.unsubscribe();
      feed.agui(runFinished({ threadId: CHANNEL, runId: "r1" }));
      feed.agui(runStarted({ threadId: CHANNEL, runId: "r2" }));
      feed.agui(runFinished({ threadId: CHANNEL, runId: "r2" }));
      const { events } = await runOnce(agent);
      assert.deepEqual(summary(first), ["RUN_STARTED"]);
      assert.deepEqual(events.map((e) => [e.type, e.runId]), [
        ["RUN_STARTED", "r2"],
        ["RUN_FINISHED", "r2"],
      ]);
    } finally {
      await done();
    }
  });
});
