// Client behaviour beyond the shared conformance scenarios: the API's
// promises (listeners, streams, typed errors, explicit acks, publish).
import assert from "node:assert/strict";
import { test, type TestContext } from "node:test";
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
  type TokenContext,
  type WebSocketLike,
} from "../src/index.js";
import { refreshDelay } from "../src/client.js";
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
    fetch: answer(201, { id: "run-7/status-1", channel: "agent-1", seq: 7, epoch: "ep-1" }),
  });
  assert.deepEqual(r, { id: "run-7/status-1", channel: "agent-1", seq: 7, epoch: "ep-1" }, "201: committed, its seq and epoch");
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

test("publish: 201, 200 and 202 are all success; seq/epoch when committed, queued when not", async () => {
  const answer = (status: number, body: unknown) => async () => ({ status, ok: status < 300, text: async () => JSON.stringify(body) });
  const base = { url: "http://gw", token: "t", channel: "c", kind: "k", idempotencyKey: "key-1" };
  // 201: committed now; fields the client does not know are ignored.
  const fresh = await publish({ ...base, fetch: answer(201, { id: "p~key-1", channel: "c", seq: 12, epoch: "e1", extra: { x: 1 } }) });
  assert.deepEqual(fresh, { id: "p~key-1", channel: "c", seq: 12, epoch: "e1" }, "no queued, no extra");
  // 200: the key was already committed (a repeat): the seq and epoch it has.
  const repeat = await publish({ ...base, fetch: answer(200, { id: "p~key-1", channel: "c", seq: 12, epoch: "e1" }) });
  assert.deepEqual(repeat, fresh, "a repeat answers the event's seq and epoch");
  // 202: queued, committed shortly: no seq yet.
  const queued = await publish({ ...base, fetch: answer(202, { id: "p~key-1", channel: "c", queued: true }) });
  assert.deepEqual(queued, { id: "p~key-1", channel: "c", queued: true }, "no seq, no epoch");
  // An older gateway's bare 202, and a seq that is not a number (null): left out.
  assert.deepEqual(await publish({ ...base, fetch: answer(202, { id: "i", channel: "c" }) }), { id: "i", channel: "c" });
  assert.deepEqual(await publish({ ...base, fetch: answer(201, { id: "i", channel: "c", seq: null, epoch: null }) }), { id: "i", channel: "c" });
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
  // With retries: 429 (retry_after_ms 300), then 202 (queued), on fake timers.
  t.mock.timers.enable({ apis: ["setTimeout"] });
  t.mock.method(Math, "random", () => 0); // the backoff's own jitter: 0 ms
  const keys: (string | undefined)[] = [];
  const answers = [
    { status: 429, body: limited(300) },
    { status: 202, body: JSON.stringify({ id: "e1", channel: "c", queued: true }) },
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
  assert.deepEqual(await published, { id: "e1", channel: "c", queued: true });
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

// ---- in-band token refresh (docs/protocol.md, "Refreshing the token in band") ----
// A fake socket and mock timers (setTimeout, setInterval and Date): time moves
// only when the test ticks it.

class FakeSocket implements WebSocketLike {
  static made: FakeSocket[] = [];
  readyState = 0;
  readonly sent: Record<string, unknown>[] = [];
  closed = false;
  onopen: ((ev: unknown) => unknown) | null = null;
  onmessage: ((ev: { data: unknown }) => unknown) | null = null;
  onclose: ((ev: { code?: number; reason?: string }) => unknown) | null = null;
  onerror: ((ev: unknown) => unknown) | null = null;
  constructor(readonly url: string) {
    FakeSocket.made.push(this);
  }
  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }
  close(code = 1000, reason = ""): void {
    if (this.closed) return;
    this.closed = true;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code, reason }));
  }
  /** The gateway's side: the socket opens. */
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  receive(frame: object): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  /** What the client sent after `hello`, pings aside. */
  get frames(): Record<string, unknown>[] {
    return this.sent.filter((f) => f.action !== "hello" && f.action !== "ping");
  }
}

/** Lets promise callbacks (the token provider's answer) run; timers stay mocked. */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise<void>((r) => setImmediate(r));
}

const NOW = 1_800_000_000_000; // the mocked Date.now(), ms

function mockTime(t: TestContext): void {
  t.mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: NOW });
}

/** A client on FakeSocket (time mocked unless `mocked` says it is already),
 * connected and welcomed with `welcome`'s extra fields. */
async function fakeConnected(t: TestContext, options: Partial<AgentWireOptions>, welcome: object, mocked = false) {
  if (!mocked) mockTime(t);
  t.mock.method(Math, "random", () => 0); // reconnect delays of 0 ms
  FakeSocket.made = [];
  const client = new AgentWire("ws://gw", {
    WebSocket: FakeSocket,
    maxConnectionAge: null,
    ackDebounce: null,
    pingInterval: 10 * 3_600_000,
    ...options,
  });
  client.connect();
  await settle();
  const ws = FakeSocket.made.at(-1)!;
  ws.open();
  ws.receive({ ...WELCOME, ...welcome });
  return { client, ws };
}

test("refreshDelay: exp minus the smaller of the lead and half the time left", () => {
  const now = 1_000_000;
  assert.equal(refreshDelay(now / 1000 + 3600, now, 60_000), 3_540_000, "an hour left: 60 s before exp");
  assert.equal(refreshDelay(now / 1000 + 100, now, 60_000), 50_000, "100 s left: half of it");
  assert.equal(refreshDelay(now / 1000 + 2, now, 60_000), 1_000, "2 s left: half of it");
  assert.equal(refreshDelay(now / 1000 + 120, now, 60_000), 60_000, "the two rules meet");
  assert.equal(refreshDelay(now / 1000 + 3600, now, 10_000), 3_590_000, "a lead of 10 s");
  assert.equal(refreshDelay(now / 1000 + 3600, now, 0), 3_600_000, "no lead: at exp");
  assert.equal(refreshDelay(now / 1000, now, 60_000), 0, "expired: at once");
  assert.equal(refreshDelay(now / 1000 - 10, now, 60_000), 0);
});

test("with getToken, a welcome offering refresh sends a fresh token before exp; refreshed plans the next", async (t) => {
  const asked: TokenContext[] = [];
  const tokens = ["t1", "t2", "t3"];
  const { client, ws } = await fakeConnected(
    t,
    {
      getToken: (ctx) => {
        asked.push(ctx);
        return tokens.shift()!;
      },
    },
    { features: ["refresh"], token_exp: NOW / 1000 + 3600 },
  );
  assert.equal(new URL(ws.url).searchParams.get("token"), "t1");
  assert.equal(client.state, "connected");
  t.mock.timers.tick(3_540_000 - 1);
  await settle();
  assert.equal(asked.length, 1, "not before exp - 60 s");
  assert.equal(ws.frames.length, 0);
  t.mock.timers.tick(1);
  await settle();
  assert.equal(asked.length, 2);
  assert.equal(asked[1]!.attempt, 1, "the connection's attempt");
  const refresh = ws.frames[0]!;
  assert.equal(refresh.action, "refresh");
  assert.equal(refresh.token, "t2");
  assert.equal(typeof refresh.id, "string");
  // Answered: the next refresh is planned from the new exp (now + 300 s: 240 s from now).
  ws.receive({ type: "refreshed", id: refresh.id, exp: Date.now() / 1000 + 300 });
  t.mock.timers.tick(240_000 - 1);
  await settle();
  assert.equal(asked.length, 2);
  t.mock.timers.tick(1);
  await settle();
  assert.equal(asked.length, 3);
  assert.deepEqual(
    ws.frames.map((f) => [f.action, f.token]),
    [
      ["refresh", "t2"],
      ["refresh", "t3"],
    ],
  );
  assert.notEqual(ws.frames[1]!.id, refresh.id, "each refresh has its own id");
  assert.equal(FakeSocket.made.length, 1, "the same connection throughout");
  assert.equal(client.state, "connected");
  void client.close();
  await settle();
});

test("no refresh loop towards exp: a refreshed exp no later than the last is not refreshed again; a later one not within 1 s", async (t) => {
  let asked = 0;
  const { client, ws } = await fakeConnected(
    t,
    {
      getToken: () => {
        asked += 1;
        return `t${asked}`;
      },
    },
    { features: ["refresh"], token_exp: NOW / 1000 + 2 },
  );
  t.mock.timers.tick(1_000); // 2 s left: the lead is half of it
  await settle();
  assert.equal(asked, 2);
  const first = ws.frames[0]!;
  ws.receive({ type: "refreshed", id: first.id, exp: NOW / 1000 + 2 });
  // Time is mocked: ticking it runs every timer due, nothing else.
  t.mock.timers.tick(60_000);
  await settle();
  assert.equal(asked, 2, "the same exp is not refreshed again");
  assert.equal(ws.frames.length, 1);
  void client.close();
  await settle();
});

test("a refreshed exp only just later is refreshed no sooner than 1 s on", async (t) => {
  let asked = 0;
  const { client, ws } = await fakeConnected(
    t,
    {
      getToken: () => {
        asked += 1;
        return `t${asked}`;
      },
    },
    { features: ["refresh"], token_exp: NOW / 1000 + 2 },
  );
  t.mock.timers.tick(1_000);
  await settle();
  const first = ws.frames[0]!;
  // Half a second later than the last exp: 1.5 s left, the lead (half of
  // it) would put the next refresh 750 ms away; the floor keeps it a second away.
  ws.receive({ type: "refreshed", id: first.id, exp: NOW / 1000 + 2.5 });
  t.mock.timers.tick(999);
  await settle();
  assert.equal(asked, 2, "not within the second");
  t.mock.timers.tick(1);
  await settle();
  assert.equal(asked, 3);
  void client.close();
  await settle();
});

test("a refresh lead option, and no refresh without features: refresh or token_exp", async (t) => {
  let asked = 0;
  const { client, ws } = await fakeConnected(
    t,
    { getToken: () => `t${++asked}`, refreshLead: 5_000 },
    { features: ["refresh"], token_exp: NOW / 1000 + 3600 },
  );
  t.mock.timers.tick(3_595_000);
  await settle();
  assert.deepEqual(ws.frames.map((f) => f.token), ["t2"], "5 s before exp");
  void client.close();
  await settle();
  t.mock.timers.reset();
  for (const welcome of [{ token_exp: NOW / 1000 + 10 }, { features: ["refresh"] }, { features: [], token_exp: NOW / 1000 + 10 }]) {
    let calls = 0;
    const other = await fakeConnected(t, { getToken: () => `t${++calls}` }, welcome);
    t.mock.timers.tick(3_600_000);
    await settle();
    assert.equal(calls, 1, `no refresh after ${JSON.stringify(welcome)}`);
    assert.equal(other.ws.frames.length, 0);
    void other.client.close();
    await settle();
    t.mock.timers.reset();
  }
});

test("a fixed token never refreshes, even when the gateway offers it", async (t) => {
  mockTime(t);
  const setTimeoutSpy = t.mock.method(globalThis, "setTimeout");
  const { client, ws } = await fakeConnected(t, { token: "fixed" }, { features: ["refresh"], token_exp: NOW / 1000 + 3600 }, true);
  assert.ok(!setTimeoutSpy.mock.calls.some((c) => c.arguments[1] === 3_540_000), "no refresh timer");
  t.mock.timers.tick(3_600_000);
  await settle();
  assert.equal(ws.frames.length, 0);
  assert.equal(FakeSocket.made.length, 1);
  assert.equal(client.state, "connected");
  void client.close();
  await settle();
});

test("closing the client cancels the refresh timer; the provider is not asked again", async (t) => {
  let calls = 0;
  mockTime(t);
  const setTimeoutSpy = t.mock.method(globalThis, "setTimeout");
  const clearTimeoutSpy = t.mock.method(globalThis, "clearTimeout");
  const { client, ws } = await fakeConnected(
    t,
    { getToken: () => `t${++calls}` },
    { features: ["refresh"], token_exp: NOW / 1000 + 3600 },
    true,
  );
  const armed = setTimeoutSpy.mock.calls.filter((c) => c.arguments[1] === 3_540_000);
  assert.equal(armed.length, 1, "one refresh timer, 60 s before exp");
  const handle = armed[0]!.result;
  await client.close();
  assert.ok(ws.closed);
  assert.ok(
    clearTimeoutSpy.mock.calls.some((c) => c.arguments[0] === handle),
    "the refresh timer is cleared on close",
  );
  t.mock.timers.tick(3_600_000);
  await settle();
  assert.equal(calls, 1);
  assert.equal(ws.frames.length, 0);
});

test("a refused refresh and a failing provider reconnect through the reconnect path; forbidden channels are dropped", async (t) => {
  const tokens: (string | Error)[] = ["t1", "t2", new Error("the auth service is down"), "t3"];
  const errors: AgentWireError[] = [];
  const { client, ws } = await fakeConnected(
    t,
    {
      getToken: () => {
        const v = tokens.shift()!;
        if (v instanceof Error) throw v;
        return v;
      },
    },
    { features: ["refresh"], token_exp: NOW / 1000 + 2 },
  );
  client.on("error", (e) => errors.push(e));
  const a = client.channel("a", { since: { epoch: "e1", seq: 0 } });
  const b = client.channel("b", { since: { epoch: "e1", seq: 0 } });
  const bEnded = b.stream().next();
  await settle();
  const join = ws.frames[0]!;
  ws.receive({ type: "joined", id: join.id, channels: ["a", "b"].map((name) => ({ name, epoch: "e1", head: 0, replayed: 0, recovered: true })) });
  // A token that no longer grants b (no id: it may come at any time).
  ws.receive({ type: "error", code: "forbidden", message: "the new token does not grant b: left", channels: ["b"] });
  await assert.rejects(bEnded, (e: unknown) => e instanceof ProtocolError && e.code === "forbidden");
  assert.deepEqual(client.channels.map((c) => c.name), ["a"]);
  assert.deepEqual(errors.map((e) => e.code), ["forbidden"]);
  // 1 s after the welcome (half of 2 s): the refresh, refused.
  t.mock.timers.tick(1_000);
  await settle();
  const refresh = ws.frames.at(-1)!;
  assert.deepEqual([refresh.action, refresh.token], ["refresh", "t2"]);
  ws.receive({ type: "error", code: "token_revoked", message: "revoked", id: refresh.id });
  assert.ok(errors.at(-1) instanceof UnauthorizedError && errors.at(-1)!.code === "token_revoked", "reported, not fatal");
  assert.ok(ws.closed, "that connection ends");
  await settle();
  assert.equal(client.state, "reconnecting");
  // The reconnect asks the provider, which fails: retried on the backoff.
  t.mock.timers.tick(0);
  await settle();
  t.mock.timers.tick(0);
  await settle();
  assert.equal(FakeSocket.made.length, 2);
  const second = FakeSocket.made[1]!;
  assert.equal(new URL(second.url).searchParams.get("token"), "t3");
  second.open();
  second.receive(WELCOME);
  await settle();
  assert.deepEqual(second.frames[0]!.channels, [{ name: "a", since: { epoch: "e1", seq: 0 } }], "b is not joined again");
  assert.deepEqual(client.channels, [a]);
  void client.close();
  await settle();
});
