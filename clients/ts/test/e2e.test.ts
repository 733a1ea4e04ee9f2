// End to end on the local stack: the dev gateway (target/debug/agentwire-local)
// on a free port against the LocalStack-compatible endpoint on 127.0.0.1:4566
// (scripts/test brings it up; `localstack/up` by hand). Skipped, with a
// message, only when that endpoint does not answer.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import {
  AgentWire,
  AgentWireError,
  ProtocolError,
  UnauthorizedError,
  publish,
  type StateChange,
  type StreamItem,
} from "../src/index.js";
import { BIN, Changes, Gateway, debug, endpointSkip, freePort, publishToQueue, token } from "./stack.js";

const skip = await endpointSkip();

describe("e2e on the local stack", { skip }, () => {
  let gw: Gateway;

  before(async () => {
    for (const bin of ["agentwire-local", "agentwire"]) {
      assert.ok(
        existsSync(join(BIN, bin)),
        `${join(BIN, bin)} is missing: cargo build -p agentwire-local -p agentwire-cli`,
      );
    }
    gw = new Gateway(await freePort());
    await gw.start();
  });

  after(async () => {
    await gw?.stop();
  });

  test("a client tails a channel across a gateway restart: every seq once, in order, no gap", { timeout: 120_000 }, async () => {
    const channel = `agent-restart-${randomBytes(3).toString("hex")}`;
    const reader = await token("reader", { channels: "agent-*" });
    const agent = await token("agent", { publish: "agent-*" });
    const client = new AgentWire(gw.ws, {
      WebSocket,
      getToken: () => token("reader", { channels: "agent-*" }),
      minReconnectDelay: 50,
      maxReconnectDelay: 400,
    });
    assert.ok(reader);
    const changes = new Changes();
    const states: StateChange[] = [];
    const errors: AgentWireError[] = [];
    client.on("state", (s) => {
      if (process.env.E2E_DEBUG) debug("state", s.current, s.reason);
      states.push(s);
      changes.poke();
    });
    client.on("error", (e) => errors.push(e));
    const ch = client.channel(channel, { since: "head" });
    const items: StreamItem[] = [];
    const gaps: unknown[] = [];
    ch.on("gap", (g) => gaps.push(g));
    const consumed = (async () => {
      for await (const item of ch.stream()) {
        items.push(item);
        changes.poke();
      }
    })();
    const seqs = () => items.filter((i) => i.type === "event").map((i) => (i.type === "event" ? i.seq : 0));
    const joined: unknown[] = [];
    ch.on("joined", (j) => {
      if (process.env.E2E_DEBUG) debug("joined", JSON.stringify(j));
      joined.push(j);
      changes.poke();
    });
    client.connect();
    try {
    await client.ready();
    await changes.until(() => joined.length >= 1, 10_000, () => "the first joined");

    for (let n = 1; n <= 3; n++) {
      const r = await publish({ url: gw.http, token: agent, channel, kind: "status", data: { n }, idempotencyKey: `http-${n}` });
      assert.equal(r.channel, channel);
    }
    await changes.until(() => seqs().length >= 3, 20_000, () => `seqs 1..=3, got ${JSON.stringify(seqs())}`);

    await gw.stop();
    await changes.until(() => client.state === "reconnecting", 20_000, () => `reconnecting, state ${client.state}`);
    for (let n = 4; n <= 6; n++) await publishToQueue(channel, n);
    const connectedBefore = states.filter((s) => s.current === "connected").length;
    await gw.start();
    await changes.until(
      () => states.filter((s) => s.current === "connected").length > connectedBefore,
      30_000,
      () => `a reconnect, states ${JSON.stringify(states.map((s) => s.current))}`,
    );
    for (let n = 7; n <= 8; n++) {
      await publish({ url: gw.http, token: agent, channel, kind: "status", data: { n }, idempotencyKey: `http-${n}` });
    }
    await changes.until(() => seqs().length >= 8, 30_000, () => `seqs 1..=8, got ${JSON.stringify(seqs())}\n${gw.log}`);

    assert.deepEqual(seqs(), [1, 2, 3, 4, 5, 6, 7, 8], "every seq once, in order");
    assert.deepEqual(
      items.map((i) => (i.type === "event" ? (i.data as { n: number }).n : -1)),
      [1, 2, 3, 4, 5, 6, 7, 8],
      "in publish order",
    );
    assert.deepEqual(gaps, [], "no gap");
    assert.ok(items.every((i) => i.type === "event"), "no gap in the stream");
    assert.deepEqual(ch.position, { epoch: (items[7] as { epoch: string }).epoch, seq: 8 });
    } finally {
      await client.close();
    }
    await consumed;
    assert.equal(client.state, "closed");
    assert.deepEqual(
      errors.filter((e) => e.code !== "listener"),
      [],
      "no error on the way",
    );
  });

  test("a forbidden channel gives a typed `forbidden` error on the channel; the client carries on", { timeout: 30_000 }, async () => {
    const client = new AgentWire(gw.ws, { WebSocket, token: await token("reader", { channels: "agent-*" }) });
    const ok = client.channel("agent-allowed", { since: "head" });
    const secret = client.channel("secret-1", { since: "head" });
    const changes = new Changes();
    let refused: AgentWireError | undefined;
    let clientError: AgentWireError | undefined;
    let joinedOk = false;
    secret.on("error", (e) => {
      refused = e;
      changes.poke();
    });
    client.on("error", (e) => {
      clientError = e;
      changes.poke();
    });
    ok.on("joined", () => {
      joinedOk = true;
      changes.poke();
    });
    // The refusal also ends the channel's stream with the error.
    const streamEnd = (async () => {
      try {
        for await (const _ of secret.stream()) {
          // nothing arrives on a refused channel
        }
        return undefined;
      } catch (e) {
        return e;
      }
    })();
    client.connect();
    await changes.until(() => refused !== undefined, 15_000, () => "the refusal of secret-1");
    assert.ok(refused instanceof ProtocolError, `a ProtocolError: ${refused}`);
    assert.ok(refused instanceof AgentWireError);
    assert.equal(refused.code, "forbidden");
    assert.equal(refused.retryable, false);
    assert.equal(clientError?.code, "forbidden");
    assert.equal(await streamEnd, refused);
    // A join is all or nothing: agent-allowed shared the refused frame only if
    // both were sent together; joining it again by itself works.
    if (!joinedOk) {
      assert.ok(!client.channels.some((c) => c.name === "agent-allowed"));
      const again = client.channel("agent-allowed", { since: "head" });
      again.on("joined", () => {
        joinedOk = true;
        changes.poke();
      });
    }
    await changes.until(() => joinedOk, 15_000, () => "agent-allowed joined");
    assert.equal(client.state, "connected");
    await client.close();
  });

  test("a refused token (wrong secret) gives UnauthorizedError and the client ends", { timeout: 30_000 }, async () => {
    const bad = await token("reader", { channels: "agent-*" }, `another-secret-${randomBytes(16).toString("hex")}`);
    const client = new AgentWire(gw.ws, { WebSocket, token: bad, minReconnectDelay: 10, maxReconnectDelay: 40 });
    const states: StateChange[] = [];
    client.on("state", (s) => states.push(s));
    client.channel("agent-1");
    client.connect();
    await assert.rejects(client.ready(), (e: unknown) => {
      assert.ok(e instanceof UnauthorizedError, `UnauthorizedError: ${e}`);
      assert.equal(e.code, "unauthorized");
      return true;
    });
    assert.equal(client.state, "closed");
    const last = states.at(-1)!;
    assert.equal(last.current, "closed");
    assert.ok(last.error instanceof UnauthorizedError);
    assert.equal(states.filter((s) => s.current === "reconnecting").length, 0, "a fixed token is not retried");

    // A token provider is asked again once; refused twice in a row, the client ends.
    let asked = 0;
    const provided = new AgentWire(gw.ws, {
      WebSocket,
      getToken: () => {
        asked += 1;
        return bad;
      },
      minReconnectDelay: 10,
      maxReconnectDelay: 40,
    });
    provided.connect();
    await assert.rejects(provided.ready(), UnauthorizedError);
    assert.equal(asked, 2);
  });

  test("publish maps the HTTP API's errors to typed errors", { timeout: 30_000 }, async () => {
    const reader = await token("reader", { channels: "agent-*" });
    await assert.rejects(
      publish({ url: gw.http, token: reader, channel: "agent-1", kind: "status", data: {} }),
      (e: unknown) => e instanceof ProtocolError && e.code === "forbidden" && e.status === 403,
    );
    await assert.rejects(
      publish({ url: gw.http, token: "not-a-token", channel: "agent-1", kind: "status", data: {} }),
      (e: unknown) => e instanceof UnauthorizedError && e.status === 401,
    );
    const agent = await token("agent", { publish: "agent-*" });
    await assert.rejects(
      publish({ url: gw.http, token: agent, channel: "agent-1", kind: "status", data: { big: "x".repeat(300_000) } }),
      (e: unknown) => e instanceof AgentWireError && e.code === "message_too_large" && e.status === 413,
    );
    const key = `idem-${randomBytes(4).toString("hex")}`;
    const a = await publish({ url: gw.http, token: agent, channel: "agent-idem", kind: "status", data: 1, idempotencyKey: key });
    const b = await publish({ url: gw.http, token: agent, channel: "agent-idem", kind: "status", data: 1, idempotencyKey: key });
    assert.equal(a.id, b.id);
  });
});
