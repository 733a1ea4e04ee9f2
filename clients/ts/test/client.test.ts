// Client behaviour beyond the shared conformance scenarios: the API's
// promises (listeners, streams, typed errors, explicit acks, publish).
import assert from "node:assert/strict";
import { test } from "node:test";
import { WebSocket } from "ws";
import {
  AgentWire,
  AgentWireError,
  ProtocolError,
  ServerError,
  UnauthorizedError,
  publish,
  type AgentWireOptions,
  type StreamItem,
} from "../src/index.js";
import { ScriptedServer, type Connection } from "./scripted.js";

const WELCOME = { type: "welcome", protocol: 1, connection_id: "c1", server: "scripted", heartbeat_s: 300, limits: {} };
const ev = (seq: number) => ({ type: "event", channel: "a", epoch: "e1", seq, id: `i${seq}`, kind: "k", data: { seq }, ts: "t" });

/** A connected client with channel `a` joined at {e1, 0} (head `head`). */
async function connected(options: Partial<AgentWireOptions> = {}, head = 0) {
  const server = await ScriptedServer.start();
  const client = new AgentWire(server.url, { WebSocket, token: "t", minReconnectDelay: 10, maxReconnectDelay: 40, ackDebounce: null, ...options });
  const ch = client.channel("a", { since: { epoch: "e1", seq: 0 } });
  client.connect();
  const conn: Connection = await server.accept(await server.upgrades.next(5_000, "upgrade"));
  assert.equal((await conn.frames.next(5_000, "hello")).action, "hello");
  conn.ws.send(JSON.stringify(WELCOME));
  const join = await conn.frames.next(5_000, "join");
  conn.ws.send(JSON.stringify({ type: "joined", id: join.id, channels: [{ name: "a", epoch: "e1", head, replayed: head, recovered: true }] }));
  await client.ready();
  const done = async () => {
    await client.close();
    await server.stop();
  };
  return { server, client, ch, conn, done };
}

test("without a WebSocket implementation the constructor says what to pass", () => {
  assert.equal(typeof (globalThis as { WebSocket?: unknown }).WebSocket, "undefined", "Node 20 has no global WebSocket");
  assert.throws(
    () => new AgentWire("ws://127.0.0.1:1", { token: "t" }),
    (e: unknown) => e instanceof AgentWireError && e.code === "config" && /pass one/.test(e.message),
  );
  assert.throws(() => new AgentWire("ftp://x", { WebSocket, token: "t" }), /ws:\/\/ or wss:\/\//);
  assert.throws(() => new AgentWire("ws://x", { WebSocket }), /token/);
});

test("a listener that throws goes to `error`; delivery goes on; on() unsubscribes", async () => {
  const { ch, client, conn, done } = await connected({}, 0);
  const errors: AgentWireError[] = [];
  client.on("error", (e) => errors.push(e));
  const seen: number[] = [];
  ch.on("event", () => {
    throw new Error("boom");
  });
  const off = ch.on("event", (e) => seen.push(e.seq));
  const stream = ch.stream();
  conn.ws.send(JSON.stringify(ev(1)));
  assert.equal(((await stream.next()).value as StreamItem).type, "event");
  off();
  conn.ws.send(JSON.stringify(ev(2)));
  const second = (await stream.next()).value as StreamItem & { seq: number };
  assert.equal(second.seq, 2);
  assert.deepEqual(seen, [1], "unsubscribed before 2");
  assert.equal(errors.length, 2);
  assert.equal(errors[0]!.code, "listener");
  assert.equal(client.state, "connected");
  await done();
  assert.deepEqual(await stream.next(), { value: undefined, done: true }, "the stream ends on close");
});

test("gaps reach both on('gap') and stream(); events carry exactly the event fields", async () => {
  const { ch, conn, done } = await connected({}, 5);
  const gaps: unknown[] = [];
  ch.on("gap", (g) => gaps.push(g));
  const stream = ch.stream();
  conn.ws.send(JSON.stringify({ type: "gap", channel: "a", from: 1, to: 3 }));
  conn.ws.send(JSON.stringify({ type: "batch", events: [ev(4), ev(5)].map(({ type: _t, ...e }) => e) }));
  const items: StreamItem[] = [];
  for await (const item of stream) {
    items.push(item);
    if (items.length === 3) break;
  }
  assert.deepEqual(items[0], { type: "gap", channel: "a", from: 1, to: 3, reason: "expired" });
  assert.deepEqual(gaps, [{ channel: "a", from: 1, to: 3, reason: "expired" }]);
  assert.deepEqual(items[1], { type: "event", channel: "a", epoch: "e1", seq: 4, id: "i4", kind: "k", data: { seq: 4 }, ts: "t" });
  assert.deepEqual(ch.position, { epoch: "e1", seq: 5 });
  await done();
});

test("an explicit ack never goes past what was delivered, and works with autoAck off", async () => {
  const { ch, conn, done } = await connected({ autoAck: false, ackDebounce: 10 }, 0);
  const got = ch.stream();
  conn.ws.send(JSON.stringify(ev(1)));
  conn.ws.send(JSON.stringify(ev(2)));
  await got.next();
  await got.next();
  await ch.ack(99);
  assert.deepEqual(await conn.frames.next(5_000, "ack"), { action: "ack", channel: "a", seq: 2 });
  await ch.ack(1); // behind the last ack: nothing
  conn.ws.send(JSON.stringify(ev(3)));
  await got.next();
  await ch.ack(3);
  assert.deepEqual(await conn.frames.next(5_000, "ack"), { action: "ack", channel: "a", seq: 3 });
  await done();
});

test("an error frame refusing a join is typed, ends that channel, and the client carries on", async () => {
  const server = await ScriptedServer.start();
  const client = new AgentWire(server.url, { WebSocket, token: "t" });
  const ch = client.channel("secret");
  const refused = new Promise<AgentWireError>((resolve) => ch.on("error", resolve));
  client.connect();
  const conn = await server.accept(await server.upgrades.next(5_000, "upgrade"));
  await conn.frames.next(5_000, "hello");
  conn.ws.send(JSON.stringify(WELCOME));
  const join = await conn.frames.next(5_000, "join");
  assert.deepEqual(join.channels, ["secret"], "the durable cursor: a bare name");
  conn.ws.send(JSON.stringify({ type: "error", code: "forbidden", message: "no", id: join.id }));
  const e = await refused;
  assert.ok(e instanceof ProtocolError);
  assert.equal(e.code, "forbidden");
  assert.deepEqual(e.channels, ["secret"]);
  assert.equal(client.channels.length, 0);
  assert.equal(client.state, "connected");
  await client.close();
  await server.stop();
});

test("getToken throwing UnauthorizedError ends the client; other failures are retried", async () => {
  let calls = 0;
  const client = new AgentWire("ws://127.0.0.1:9", {
    WebSocket,
    minReconnectDelay: 1,
    maxReconnectDelay: 2,
    getToken: () => {
      calls += 1;
      if (calls < 3) throw new Error("flaky");
      throw new UnauthorizedError("revoked");
    },
  });
  client.connect();
  await assert.rejects(client.ready(), (e: unknown) => e instanceof UnauthorizedError && e.message === "revoked");
  assert.equal(calls, 3);
  assert.equal(client.state, "closed");
});

test("maxAttempts ends the client with `exhausted`; an AbortSignal closes it", async () => {
  const client = new AgentWire("ws://127.0.0.1:9", { WebSocket, token: "t", minReconnectDelay: 1, maxReconnectDelay: 2, maxAttempts: 2 });
  client.connect();
  await assert.rejects(client.ready(), (e: unknown) => e instanceof AgentWireError && e.code === "exhausted");
  const ac = new AbortController();
  const other = new AgentWire("ws://127.0.0.1:9", { WebSocket, token: "t", signal: ac.signal });
  other.connect();
  const closed = new Promise((resolve) => other.on("state", (s) => s.current === "closed" && resolve(s)));
  ac.abort();
  await closed;
  assert.equal(other.state, "closed");
});

test("publish posts the event and maps error bodies to typed errors", async () => {
  const calls: { url: string; init: { headers: Record<string, string>; body: string } }[] = [];
  const answer = (status: number, body: unknown) => async (url: string, init: { headers: Record<string, string>; body: string }) => {
    calls.push({ url, init });
    return { status, ok: status < 300, text: async () => JSON.stringify(body) };
  };
  const r = await publish({
    url: "http://gw/",
    token: "tok",
    channel: "agent-1",
    kind: "status",
    data: { text: "hi" },
    idempotencyKey: "run-7/status-1",
    fetch: answer(202, { id: "run-7/status-1", channel: "agent-1" }),
  });
  assert.deepEqual(r, { id: "run-7/status-1", channel: "agent-1" });
  assert.equal(calls[0]!.url, "http://gw/v1/channels/agent-1/events");
  assert.equal(calls[0]!.init.headers.authorization, "Bearer tok");
  assert.equal(calls[0]!.init.headers["idempotency-key"], "run-7/status-1");
  assert.deepEqual(JSON.parse(calls[0]!.init.body), { kind: "status", data: { text: "hi" } });
  const body = (code: string) => ({ type: "error", code, message: "m" });
  const cases: [number, string, new (...a: never[]) => AgentWireError, boolean][] = [
    [401, "unauthorized", UnauthorizedError, false],
    [403, "forbidden", ProtocolError, false],
    [400, "invalid_event", ProtocolError, false],
    [413, "message_too_large", ProtocolError, false],
    [429, "rate_limited", ProtocolError, true],
    [503, "unavailable", ServerError, true],
  ];
  for (const [status, code, cls, retryable] of cases) {
    await assert.rejects(
      publish({ url: "http://gw", token: "t", channel: "c", kind: "k", fetch: answer(status, body(code)) }),
      (e: unknown) => e instanceof cls && (e as AgentWireError).code === code && (e as AgentWireError).retryable === retryable,
      `${status} ${code}`,
    );
  }
});

test("publish: a 429 carries retryAfterMs (body, else Retry-After); with `retries` it waits that long, then retries", async (t) => {
  const limited = (retryAfterMs?: number) =>
    JSON.stringify({ type: "error", code: "rate_limited", message: "m", scope: "tenant", ...(retryAfterMs === undefined ? {} : { retry_after_ms: retryAfterMs }) });
  const headers = (h: Record<string, string>) => ({ get: (n: string) => h[n.toLowerCase()] ?? null });
  // Single shot (the default): the typed error says how long to wait.
  const once = (body: string, h: Record<string, string>) => async () => ({ status: 429, ok: false, text: async () => body, headers: headers(h) });
  await assert.rejects(
    publish({ url: "http://gw", token: "t", channel: "c", kind: "k", fetch: once(limited(180), { "retry-after": "1" }) }),
    (e: unknown) => e instanceof ProtocolError && e.code === "rate_limited" && e.retryable && e.retryAfterMs === 180 && e.scope === "tenant",
  );
  await assert.rejects(
    publish({ url: "http://gw", token: "t", channel: "c", kind: "k", fetch: once(limited(), { "retry-after": "2" }) }),
    (e: unknown) => e instanceof ProtocolError && e.retryAfterMs === 2_000,
  );
  // With retries: 429 (retry_after_ms 300), then 202, on fake timers.
  t.mock.timers.enable({ apis: ["setTimeout"] });
  t.mock.method(Math, "random", () => 0); // the backoff's own jitter: 0 ms
  const keys: (string | undefined)[] = [];
  const answers = [
    { status: 429, body: limited(300) },
    { status: 202, body: JSON.stringify({ id: "e1", channel: "c" }) },
  ];
  const fetch = async (_url: string, init: { headers: Record<string, string> }) => {
    keys.push(init.headers["idempotency-key"]);
    const a = answers.shift()!;
    return { status: a.status, ok: a.status < 300, text: async () => a.body, headers: headers({}) };
  };
  const settle = async () => {
    for (let i = 0; i < 20; i++) await new Promise<void>((r) => setImmediate(r));
  };
  const published = publish({ url: "http://gw", token: "t", channel: "c", kind: "k", retries: 2, fetch });
  await settle();
  assert.equal(keys.length, 1);
  t.mock.timers.tick(299);
  await settle();
  assert.equal(keys.length, 1, "not retried before retry_after_ms");
  t.mock.timers.tick(1);
  await settle();
  assert.equal(keys.length, 2, "retried once retry_after_ms passed");
  assert.deepEqual(await published, { id: "e1", channel: "c" });
  assert.ok(keys[0] && keys[0] === keys[1], "the same generated idempotency key on every attempt");
});

test("a join refused with too_many_channels drops that channel, like forbidden; the client goes on", async () => {
  const { client, conn, done } = await connected();
  const errors: AgentWireError[] = [];
  client.on("error", (e) => errors.push(e));
  const b = client.channel("b");
  const refused = new Promise<AgentWireError>((resolve) => b.on("error", resolve));
  const join = await conn.frames.next(5_000, "join b");
  assert.deepEqual(join.channels, ["b"]);
  conn.ws.send(JSON.stringify({ type: "error", code: "too_many_channels", message: "limit 1", id: join.id }));
  const err = await refused;
  assert.equal(err.code, "too_many_channels");
  assert.deepEqual(err.channels, ["b"]);
  assert.equal(client.state, "connected");
  assert.deepEqual(client.channels.map((c) => c.name), ["a"]);
  assert.equal(errors[0]?.code, "too_many_channels");
  await done();
});
