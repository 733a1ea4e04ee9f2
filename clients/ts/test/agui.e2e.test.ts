// AG-UI over agentwire end to end on the local stack: a run published with
// AgUiPublisher over HTTP is consumed by AgentWireAgent through
// @ag-ui/client's runAgent, while the gateway drops the consumer's
// connection in the middle of the run (DELETE /@connections/{id}, API
// Gateway's own way to close a connection). Skipped, with a message, only
// when the local AWS endpoint does not answer.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { AgentSubscriber } from "@ag-ui/client";
import { EventType, type AssistantMessage, type BaseEvent, type ToolMessage } from "@ag-ui/core";
import { EventSchemas } from "@ag-ui/core/schemas";
import { WebSocket } from "ws";
import { AgUiPublisher, AgentWireAgent, PROGRESS_EVENT, runFinished, runStarted } from "../src/agui.js";
import { AgentWire, Reassembler, historyPages, type StateChange } from "../src/index.js";
import { BIN, Changes, Gateway, endpointSkip, freePort, token } from "./stack.js";

const skip = await endpointSkip();

describe("AG-UI e2e on the local stack", { skip }, () => {
  let gw: Gateway;
  before(async () => {
    for (const bin of ["agentwire-local", "agentwire"]) {
      assert.ok(existsSync(join(BIN, bin)), `${join(BIN, bin)} is missing: cargo build -p agentwire-local -p agentwire-cli`);
    }
    gw = new Gateway(await freePort());
    await gw.start();
  });
  after(async () => {
    await gw?.stop();
  });

  test("a published run reaches runAgent whole, in order, once, across a dropped connection", { timeout: 240_000 }, async () => {
    const channel = `agent-agui-${randomBytes(3).toString("hex")}`;
    const runId = `run-${randomBytes(4).toString("hex")}`;
    const reader = await token("console", { channels: "agent-*" });
    const client = new AgentWire(gw.ws, {
      WebSocket,
      getToken: () => token("console", { channels: "agent-*" }),
      minReconnectDelay: 50,
      maxReconnectDelay: 400,
    });
    const changes = new Changes();
    const states: StateChange[] = [];
    client.on("state", (s) => {
      states.push(s);
      changes.poke();
    });
    const connections = () => states.filter((s) => s.current === "connected");
    const agent = new AgentWireAgent({ client, channel, since: "head" });
    let joined = 0;
    agent.channel.on("joined", () => {
      joined += 1;
      changes.poke();
    });
    await changes.until(() => joined >= 1, 60_000, () => "joined");

    // The consumer: @ag-ui/client's runAgent, every event it applied, and on which connection it came.
    const got: { event: BaseEvent; connection: number }[] = [];
    const subscriber: AgentSubscriber = {
      onEvent: ({ event }) => {
        got.push({ event, connection: connections().length });
        changes.poke();
      },
    };
    const running = agent.runAgent({ runId: "local" }, subscriber);
    // A run that fails ends every wait below with its error.
    let failed: unknown;
    running.catch((e: unknown) => {
      failed = e;
      changes.poke();
    });
    const check = () => {
      if (failed !== undefined) throw failed;
    };

    const pub = new AgUiPublisher({ url: gw.http, token: await token("agent", { publish: "agent-*" }), channel, windowMs: 20 });
    const words = Array.from({ length: 400 }, (_, i) => `word${i} `);
    const big = Array.from({ length: 20_000 }, (_, i) => `\u001b[3${i % 8}mline ${i}\u001b[0m ✓\n`).join("");
    try {
      // The first half of the run.
      pub.publish(runStarted({ threadId: channel, runId }));
      pub.publish({ type: EventType.STATE_SNAPSHOT, snapshot: { files: 0, phase: "reading" } });
      pub.publish({ type: EventType.STEP_STARTED, stepName: "read" });
      pub.publish({ type: EventType.TEXT_MESSAGE_START, messageId: "m1", role: "assistant" });
      for (const w of words.slice(0, 200)) pub.publish({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m1", delta: w });
      pub.progress(1, 3, "Analyzing code... 1/3 files");
      await pub.flush();
      await changes.until(
        () => failed !== undefined || got.some((g) => g.event.type === EventType.CUSTOM),
        90_000,
        () => `the first half (${got.length} events: ${got.map((g) => g.event.type).join(", ")})\n${gw.log}`,
      );
      check();

      // The gateway drops the consumer's connection; the second half is published at once.
      const id = connections().at(-1)!.connectionId!;
      const before = connections().length;
      const dropped = await fetch(`${gw.http}/@connections/${encodeURIComponent(id)}`, { method: "DELETE" });
      assert.ok(dropped.status === 204 || dropped.status === 200, `DELETE @connections answered ${dropped.status}`);
      for (const w of words.slice(200)) pub.publish({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: "m1", delta: w });
      pub.publish({ type: EventType.TOOL_CALL_START, toolCallId: "t1", toolCallName: "read_file", parentMessageId: "m1" });
      pub.publish({ type: EventType.TOOL_CALL_ARGS, toolCallId: "t1", delta: '{"path":' });
      pub.publish({ type: EventType.TOOL_CALL_ARGS, toolCallId: "t1", delta: '"build.log"}' });
      pub.publish({ type: EventType.TOOL_CALL_END, toolCallId: "t1" });
      pub.publish({ type: EventType.TOOL_CALL_RESULT, messageId: "tool-1", toolCallId: "t1", content: big, role: "tool" });
      pub.publish({ type: EventType.STATE_DELTA, delta: [{ op: "replace", path: "/files", value: 3 }, { op: "replace", path: "/phase", value: "done" }] });
      pub.progress(3, 3, "Analyzing code... 3/3 files");
      pub.publish({ type: EventType.TEXT_MESSAGE_END, messageId: "m1" });
      pub.publish({ type: EventType.STEP_FINISHED, stepName: "read" });
      pub.publish(runFinished({ threadId: channel, runId, result: { files: 3 } }));
      await pub.close();

      const result = await running;
      assert.ok(connections().length > before, `reconnected: ${JSON.stringify(states.map((s) => s.current))}`);
      assert.notEqual(connections().at(-1)!.connectionId, id, "a new connection");
      assert.ok(got.some((g) => g.connection > before), "part of the run came over the new connection");

      // What was committed, read back over HTTP: the published events after
      // coalescing, chunked ones reassembled.
      const committed: BaseEvent[] = [];
      const r = new Reassembler();
      for await (const page of historyPages({ url: gw.http, token: reader, channel, limit: 1000 })) {
        assert.equal(page.gap, null);
        for (const e of page.events) {
          const a = r.accept(e);
          if (a.type === "not_chunk") committed.push(e.data as BaseEvent);
          else if (a.type === "message") committed.push(a.message.data as BaseEvent);
          else assert.equal(a.type, "pending", `a chunk lost: ${JSON.stringify(a)}`);
        }
      }
      assert.equal(committed.length, pub.published, "every published event committed once");
      for (const e of committed) assert.ok(EventSchemas.safeParse(e).success, `valid AG-UI: ${JSON.stringify(e).slice(0, 120)}`);

      const consumed = got.map((g) => g.event);
      assert.deepEqual(consumed, committed, "the consumer's events are the published ones, in order, none twice");
      assert.equal(consumed.filter((e) => e.type === EventType.RUN_STARTED).length, 1);
      const contents = consumed.filter((e) => e.type === EventType.TEXT_MESSAGE_CONTENT);
      assert.ok(contents.length < words.length / 4, `${contents.length} content events for ${words.length} deltas: coalesced`);
      assert.equal(contents.map((e) => e.delta).join(""), words.join(""));
      assert.deepEqual(
        consumed.filter((e) => e.type === EventType.CUSTOM && e.name === PROGRESS_EVENT).map((e) => e.value),
        [
          { done: 1, total: 3, label: "Analyzing code... 1/3 files" },
          { done: 3, total: 3, label: "Analyzing code... 3/3 files" },
        ],
      );

      // What AbstractAgent made of them.
      const assistant = agent.messages.find((m) => m.id === "m1") as AssistantMessage | undefined;
      assert.equal(assistant?.content, words.join(""));
      assert.deepEqual(assistant?.toolCalls?.map((t) => [t.id, t.function.name, t.function.arguments]), [["t1", "read_file", '{"path":"build.log"}']]);
      const tool = agent.messages.find((m) => m.id === "tool-1") as ToolMessage | undefined;
      assert.equal(tool?.role, "tool");
      assert.equal(tool?.content, big);
      assert.deepEqual(agent.state, { files: 3, phase: "done" });
      assert.deepEqual(result.result, { files: 3 });
    } finally {
      await agent.close();
      await client.close();
    }
  });
});
