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
  channelInfo,
  history,
  historyPages,
  presence,
  publish,
  publishBatch,
  type HistoryPage,
  type StateChange,
  type StreamItem,
} from "../src/index.js";
import { BIN, Changes, Gateway, debug, endpointSkip, freePort, publishToQueue, token } from "./stack.js";

const skip = await endpointSkip();

/** `probe()` until `done` says so (publishes reach the log through the queue). */
async function eventually<T>(probe: () => Promise<T>, done: (v: T) => boolean, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (done(v)) return v;
    if (Date.now() > deadline) throw new Error(`waited ${ms} ms for ${what}; last: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

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
      // Committed at once (201): its seq and epoch, not queued.
      assert.equal(r.seq, n, `the seq of publish ${n}`);
      assert.equal(typeof r.epoch, "string");
      assert.equal(r.queued, undefined);
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
      const r = await publish({ url: gw.http, token: agent, channel, kind: "status", data: { n }, idempotencyKey: `http-${n}` });
      assert.equal(typeof r.seq, "number", `publish ${n} committed (201)`);
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
    // The first is committed (201) with its seq; the repeat (200) answers the same seq and epoch.
    assert.equal(typeof a.seq, "number");
    assert.equal(typeof a.epoch, "string");
    assert.deepEqual({ seq: b.seq, epoch: b.epoch, queued: b.queued }, { seq: a.seq, epoch: a.epoch, queued: undefined });
  });

  test("history, its pages, presence and the channel's state are read over HTTP", { timeout: 60_000 }, async () => {
    const channel = `agent-reads-${randomBytes(3).toString("hex")}`;
    const reader = await token("reader", { channels: "agent-*" });
    const agent = await token("agent", { publish: "agent-*" });

    // A channel with no event yet: an empty page, not an error.
    const empty = await history({ url: gw.http, token: reader, channel });
    assert.deepEqual(
      { ...empty, events: empty.events.length },
      { channel, epoch: "", head: 0, oldest: null, events: 0, gap: null, nextAfter: null },
    );

    // A subscriber on the channel, for presence.
    const client = new AgentWire(gw.ws, { WebSocket, token: await token("watcher", { channels: "agent-*" }) });
    const changes = new Changes();
    let joined = false;
    const ch = client.channel(channel, { since: "head" });
    ch.on("joined", () => {
      joined = true;
      changes.poke();
    });
    client.connect();
    try {
      await changes.until(() => joined, 15_000, () => `${channel} joined`);

      for (let n = 1; n <= 3; n++) {
        await publish({ url: gw.http, token: agent, channel, kind: "status", data: { n }, idempotencyKey: `reads-${n}` });
      }
      const all = await eventually(
        () => history({ url: gw.http, token: reader, channel, after: 0 }),
        (p) => p.head >= 3,
        20_000,
        `head 3 on ${channel}`,
      );
      assert.equal(all.head, 3);
      assert.equal(all.oldest, 1);
      assert.equal(all.gap, null);
      assert.equal(all.nextAfter, null);
      assert.ok(all.epoch, "an epoch once the channel has events");
      assert.deepEqual(all.events.map((e) => e.seq), [1, 2, 3]);
      assert.deepEqual(all.events.map((e) => e.data), [{ n: 1 }, { n: 2 }, { n: 3 }], "in publish order");
      // The keys behind the publisher's tag.
      assert.deepEqual(all.events.map((e) => e.id.split("~")[1]), ["reads-1", "reads-2", "reads-3"]);
      assert.ok(all.events.every((e) => e.kind === "status" && e.channel === channel && e.epoch === all.epoch && e.ts));

      const first = await history({ url: gw.http, token: reader, channel, after: 0, limit: 2 });
      assert.deepEqual(first.events.map((e) => e.seq), [1, 2]);
      assert.equal(first.nextAfter, 2);
      const second = await history({ url: gw.http, token: reader, channel, after: first.nextAfter!, limit: 2 });
      assert.deepEqual(second.events.map((e) => e.seq), [3]);
      assert.equal(second.nextAfter, null);
      const pages: HistoryPage[] = [];
      for await (const p of historyPages({ url: gw.http, token: reader, channel, limit: 2 })) pages.push(p);
      assert.deepEqual(pages.map((p) => p.events.map((e) => e.seq)), [[1, 2], [3]]);

      const who = await eventually(
        () => presence({ url: gw.http, token: reader, channel }),
        (p) => p.principals.includes("watcher"),
        15_000,
        `watcher present on ${channel}`,
      );
      assert.equal(who.channel, channel);
      assert.ok(who.count >= 1, `count ${who.count}`);

      const info = await channelInfo({ url: gw.http, token: reader, channel });
      assert.equal(info.channel, channel);
      assert.equal(info.head, 3);
      assert.equal(info.epoch, all.epoch);
      assert.equal(info.oldest, 1);
      assert.ok(info.retentionS > 0, `retention ${info.retentionS}`);
      assert.ok(info.webhook === null || typeof info.webhook.mode === "string");
    } finally {
      await client.close();
    }

    // Refusals, typed: a publish grant does not read; a channel outside the grant.
    await assert.rejects(
      history({ url: gw.http, token: agent, channel }),
      (e: unknown) => e instanceof ProtocolError && e.code === "forbidden" && e.status === 403,
    );
    await assert.rejects(
      presence({ url: gw.http, token: reader, channel: "secret-1" }),
      (e: unknown) => e instanceof ProtocolError && e.code === "forbidden" && e.status === 403,
    );
    await assert.rejects(
      channelInfo({ url: gw.http, token: "not-a-token", channel }),
      (e: unknown) => e instanceof UnauthorizedError && e.status === 401,
    );
  });

  test("a batch publish lands in order, once, and history shows it", { timeout: 60_000 }, async () => {
    const channel = `agent-batch-${randomBytes(3).toString("hex")}`;
    const reader = await token("reader", { channels: "agent-*" });
    const agent = await token("agent", { publish: "agent-*" });
    const events = [
      { kind: "a", data: { n: 1 }, id: "b-1" },
      { kind: "b", data: { n: 2 }, id: "b-2" },
      { kind: "c", data: { n: 3 } },
    ];
    const r = await publishBatch({ url: gw.http, token: agent, channel, events });
    assert.equal(r.channel, channel);
    assert.equal(r.ids.length, 3);
    assert.deepEqual(r.ids.slice(0, 2).map((id) => id.split("~")[1]), ["b-1", "b-2"]);
    assert.ok(r.ids[2], "a generated id for the third");
    // Committed at once (201): each event's seq, in order.
    assert.equal(r.queued, undefined);
    assert.deepEqual(r.events?.map((e) => e.id), r.ids);
    assert.deepEqual(r.events?.map((e) => e.seq), [1, 2, 3]);
    assert.ok(r.events?.every((e) => typeof e.epoch === "string" && e.epoch === r.events![0]!.epoch));
    // The same events again (a retry, 200): each committed once, the seqs they have. A marker after it.
    const again = await publishBatch({ url: gw.http, token: agent, channel, events: events.slice(0, 2) });
    assert.deepEqual(again.events, r.events!.slice(0, 2));
    const marker = await publish({ url: gw.http, token: agent, channel, kind: "marker", data: {} });
    assert.equal(marker.seq, 4);
    const page = await eventually(
      () => history({ url: gw.http, token: reader, channel }),
      (p) => p.events.some((e) => e.kind === "marker"),
      20_000,
      `the marker on ${channel}`,
    );
    assert.deepEqual(page.events.map((e) => e.kind), ["a", "b", "c", "marker"]);
    assert.deepEqual(page.events.map((e) => e.seq), [1, 2, 3, 4]);
    assert.deepEqual(page.events.slice(0, 3).map((e) => e.id), r.ids);
    assert.deepEqual(page.events.slice(0, 3).map((e) => e.data), [{ n: 1 }, { n: 2 }, { n: 3 }]);

    // All or nothing: one invalid event refuses the batch, typed.
    await assert.rejects(
      publishBatch({ url: gw.http, token: agent, channel, events: [{ kind: "ok" }, { kind: "not a kind!" }] }),
      (e: unknown) => e instanceof ProtocolError && e.status === 400 && e.code === "invalid_event",
    );
    await assert.rejects(
      publishBatch({ url: gw.http, token: reader, channel, events: [{ kind: "a" }] }),
      (e: unknown) => e instanceof ProtocolError && e.code === "forbidden" && e.status === 403,
    );
  });
});
