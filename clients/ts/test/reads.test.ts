// The HTTP reads (history, its pages, presence, a channel's state) and the
// batch publish against a real local HTTP server: what is sent (path, query
// string, auth header, body), what is parsed, and every error body mapped to
// the typed errors.
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, beforeEach, describe, test } from "node:test";
import {
  AgentWireError,
  ProtocolError,
  ServerError,
  UnauthorizedError,
  channelInfo,
  history,
  historyPages,
  presence,
  publishBatch,
  type HistoryPage,
} from "../src/index.js";

interface Seen {
  method: string;
  path: string;
  query: Record<string, string>;
  auth: string;
  body: string;
}
interface Answer {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

describe("HTTP reads and batch publish (a real local server)", () => {
  const seen: Seen[] = [];
  let answer: (req: Seen) => Answer = () => ({ status: 500, body: {} });
  let url = "";
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      const u = new URL(req.url ?? "/", "http://x");
      const s: Seen = {
        method: req.method ?? "",
        path: u.pathname,
        query: Object.fromEntries(u.searchParams),
        auth: req.headers.authorization ?? "",
        body,
      };
      seen.push(s);
      const a = answer(s);
      res.writeHead(a.status, { "content-type": "application/json", ...a.headers });
      res.end(typeof a.body === "string" ? a.body : JSON.stringify(a.body));
    });
  });
  before(async () => {
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));
  beforeEach(() => {
    seen.length = 0;
  });

  const error = (code: string, extra: Record<string, unknown> = {}) => ({ type: "error", code, message: `m ${code}`, ...extra });

  /** A channel whose log holds seqs `oldest..=head`, paged like the gateway. */
  function log(head: number, oldest: number | null) {
    return (req: Seen): Answer => {
      const after = Number(req.query.after ?? "0");
      const limit = Number(req.query.limit ?? "100");
      const want = after + 1;
      let gap: { from: number; to: number } | null = null;
      let from = want;
      if (want <= head && oldest !== null && oldest > want) {
        gap = { from: want, to: oldest - 1 };
        from = oldest;
      }
      const events = [];
      for (let seq = from; seq <= head && events.length < limit; seq++) {
        events.push({ seq, id: `e${seq}`, kind: "status", data: { n: seq }, ts: `2026-12-05T13:00:0${seq % 10}.000Z` });
      }
      const last = events.at(-1)?.seq;
      return {
        status: 200,
        body: {
          channel: "agent-1",
          epoch: "01JEPOCH",
          head,
          oldest,
          events,
          gap,
          next_after: last !== undefined && last < head ? last : null,
        },
      };
    };
  }

  test("history sends after, limit and the token; parses a page with a gap and next_after", async () => {
    answer = log(12, 4);
    const page = await history({ url, token: "tok", channel: "agent-1", after: 1, limit: 3 });
    assert.equal(seen.length, 1);
    assert.equal(seen[0]!.method, "GET");
    assert.equal(seen[0]!.path, "/v1/channels/agent-1/events");
    assert.deepEqual(seen[0]!.query, { after: "1", limit: "3" });
    assert.equal(seen[0]!.auth, "Bearer tok");
    assert.deepEqual(page, {
      channel: "agent-1",
      epoch: "01JEPOCH",
      head: 12,
      oldest: 4,
      gap: { from: 2, to: 3 },
      nextAfter: 6,
      events: [4, 5, 6].map((seq) => ({
        channel: "agent-1",
        epoch: "01JEPOCH",
        seq,
        id: `e${seq}`,
        kind: "status",
        data: { n: seq },
        ts: `2026-12-05T13:00:0${seq}.000Z`,
      })),
    } satisfies HistoryPage);
  });

  test("history: the defaults are after=0, limit=100; a channel name is encoded; an empty channel is a page", async () => {
    answer = () => ({
      status: 200,
      body: { channel: "team:a@b", epoch: "", head: 0, oldest: null, events: [], gap: null, next_after: null },
    });
    const page = await history({ url, token: "t", channel: "team:a@b" });
    assert.equal(seen[0]!.path, "/v1/channels/team%3Aa%40b/events");
    assert.deepEqual(seen[0]!.query, { after: "0", limit: "100" });
    assert.deepEqual(page, { channel: "team:a@b", epoch: "", head: 0, oldest: null, events: [], gap: null, nextAfter: null });
  });

  test("historyPages follows next_after to the head", async () => {
    answer = log(5, 1);
    const pages: HistoryPage[] = [];
    for await (const p of historyPages({ url, token: "t", channel: "agent-1", limit: 2 })) pages.push(p);
    assert.deepEqual(
      pages.map((p) => p.events.map((e) => e.seq)),
      [[1, 2], [3, 4], [5]],
    );
    assert.deepEqual(pages.map((p) => p.nextAfter), [2, 4, null]);
    assert.deepEqual(seen.map((s) => s.query.after), ["0", "2", "4"]);
    assert.ok(seen.every((s) => s.query.limit === "2"));
  });

  test("historyPages from after a seq, past a gap; one request when the first page reaches the head", async () => {
    answer = log(6, 4);
    const pages: HistoryPage[] = [];
    for await (const p of historyPages({ url, token: "t", channel: "agent-1", after: 1, limit: 2 })) pages.push(p);
    assert.deepEqual(pages[0]!.gap, { from: 2, to: 3 });
    assert.deepEqual(pages.map((p) => p.events.map((e) => e.seq)), [[4, 5], [6]]);
    assert.equal(pages[1]!.gap, null);
    seen.length = 0;
    const one: HistoryPage[] = [];
    for await (const p of historyPages({ url, token: "t", channel: "agent-1", after: 6 })) one.push(p);
    assert.equal(seen.length, 1);
    assert.deepEqual(one.map((p) => [p.events.length, p.nextAfter]), [[0, null]]);
  });

  test("historyPages stops with a decode error when next_after does not go forward", async () => {
    answer = () => ({
      status: 200,
      body: { channel: "c", epoch: "e", head: 9, oldest: 1, events: [], gap: null, next_after: 0 },
    });
    await assert.rejects(
      (async () => {
        for await (const _ of historyPages({ url, token: "t", channel: "c" })) {
          // the first page comes, then the error
        }
      })(),
      (e: unknown) => e instanceof ProtocolError && e.code === "decode",
    );
    assert.equal(seen.length, 1);
  });

  test("history checks after and limit before sending", async () => {
    for (const bad of [{ limit: 0 }, { limit: 1001 }, { limit: 1.5 }, { after: -1 }, { after: 0.5 }, { after: Number.NaN }]) {
      await assert.rejects(
        history({ url, token: "t", channel: "c", ...bad }),
        (e: unknown) => e instanceof AgentWireError && e.code === "config" && !e.retryable,
        JSON.stringify(bad),
      );
    }
    assert.equal(seen.length, 0);
    answer = log(3, 1);
    await history({ url, token: "t", channel: "c", limit: 1000 });
    assert.equal(seen[0]!.query.limit, "1000");
  });

  test("presence and channelInfo are parsed", async () => {
    answer = (req) =>
      req.path.endsWith("/presence")
        ? { status: 200, body: { channel: "agent-1", count: 3, principals: ["alice", "bob"] } }
        : {
            status: 200,
            body: {
              channel: "agent-1",
              epoch: "01JEPOCH",
              head: 12,
              oldest: 3,
              retention_s: 259200,
              webhook: { mode: "fallback", scope: "tenant" },
            },
          };
    assert.deepEqual(await presence({ url, token: "tok", channel: "agent-1" }), {
      channel: "agent-1",
      count: 3,
      principals: ["alice", "bob"],
    });
    assert.deepEqual(await channelInfo({ url, token: "tok", channel: "agent-1" }), {
      channel: "agent-1",
      epoch: "01JEPOCH",
      head: 12,
      oldest: 3,
      retentionS: 259200,
      webhook: { mode: "fallback", scope: "tenant" },
    });
    assert.deepEqual(
      seen.map((s) => [s.method, s.path, s.auth]),
      [
        ["GET", "/v1/channels/agent-1/presence", "Bearer tok"],
        ["GET", "/v1/channels/agent-1", "Bearer tok"],
      ],
    );
    answer = () => ({
      status: 200,
      body: { channel: "new", epoch: "", head: 0, oldest: null, retention_s: 3600, webhook: null },
    });
    assert.deepEqual(await channelInfo({ url, token: "t", channel: "new" }), {
      channel: "new",
      epoch: "",
      head: 0,
      oldest: null,
      retentionS: 3600,
      webhook: null,
    });
  });

  test("publishBatch posts the events in order and parses the 202 (queued)", async () => {
    answer = (req) => {
      const events = (JSON.parse(req.body) as { events: { id?: string }[] }).events;
      return { status: 202, body: { channel: "agent-1", ids: events.map((e, i) => e.id ?? `gen-${i}`), queued: true } };
    };
    const r = await publishBatch({
      url,
      token: "pub",
      channel: "agent-1",
      events: [
        { kind: "a", data: { n: 1 }, id: "b-1" },
        { kind: "b", data: [2] },
        { kind: "c" },
      ],
    });
    assert.deepEqual(r, { channel: "agent-1", ids: ["b-1", "gen-1", "gen-2"], queued: true }, "queued: no events, no seqs");
    assert.equal(seen[0]!.method, "POST");
    assert.equal(seen[0]!.path, "/v1/channels/agent-1/events:batch");
    assert.equal(seen[0]!.auth, "Bearer pub");
    assert.deepEqual(JSON.parse(seen[0]!.body), {
      events: [
        { kind: "a", data: { n: 1 }, id: "b-1" },
        { kind: "b", data: [2] },
        { kind: "c", data: null },
      ],
    });
  });

  test("publishBatch: 201 (committed) and 200 (a repeat) carry each event's seq and epoch, in order", async () => {
    const committed = (status: number) => (req: Seen): Answer => {
      const events = (JSON.parse(req.body) as { events: { id: string }[] }).events;
      const ids = events.map((e) => `tag~${e.id}`);
      return {
        status,
        body: { channel: "c", ids, events: ids.map((id, i) => ({ id, seq: 41 + i, epoch: "ep", more: true })), extra: "ignored" },
      };
    };
    const events = [{ kind: "a", id: "x" }, { kind: "b", id: "y" }];
    const want = {
      channel: "c",
      ids: ["tag~x", "tag~y"],
      events: [
        { id: "tag~x", seq: 41, epoch: "ep" },
        { id: "tag~y", seq: 42, epoch: "ep" },
      ],
    };
    answer = committed(201);
    const fresh = await publishBatch({ url, token: "t", channel: "c", events });
    assert.deepEqual(fresh, want, "no queued, no extra fields");
    answer = committed(200);
    assert.deepEqual(await publishBatch({ url, token: "t", channel: "c", events }), want, "a repeat: the seqs they have");
    // `events` that do not match the ids (or lack a seq) are left out, not an error.
    answer = () => ({ status: 201, body: { channel: "c", ids: ["tag~x", "tag~y"], events: [{ id: "tag~x", seq: null, epoch: null }] } });
    assert.deepEqual(await publishBatch({ url, token: "t", channel: "c", events }), { channel: "c", ids: ["tag~x", "tag~y"] });
  });

  test("publishBatch with retries: every event gets an id, the same on every attempt", async (t) => {
    t.mock.method(Math, "random", () => 0); // the backoff's jitter: 0 ms
    let n = 0;
    answer = (req) => {
      n += 1;
      if (n === 1) return { status: 503, body: error("internal") };
      const events = (JSON.parse(req.body) as { events: { id: string }[] }).events;
      return { status: 201, body: { channel: "c", ids: events.map((e) => e.id), events: events.map((e, i) => ({ id: e.id, seq: i + 1, epoch: "e" })) } };
    };
    const r = await publishBatch({ url, token: "t", channel: "c", retries: 2, events: [{ kind: "a", id: "mine" }, { kind: "b" }] });
    assert.equal(seen.length, 2);
    assert.equal(seen[0]!.body, seen[1]!.body, "the same request again");
    const ids = (JSON.parse(seen[0]!.body) as { events: { id: string }[] }).events.map((e) => e.id);
    assert.equal(ids[0], "mine");
    assert.ok(typeof ids[1] === "string" && ids[1].length > 0);
    assert.deepEqual(r.ids, ids);
    assert.deepEqual(r.events?.map((e) => e.seq), [1, 2]);
  });

  test("publishBatch checks the batch before sending: 1 to 10 events, each with a kind", async () => {
    const eleven = Array.from({ length: 11 }, () => ({ kind: "k" }));
    for (const events of [[], eleven, [{ kind: "" }]]) {
      await assert.rejects(
        publishBatch({ url, token: "t", channel: "c", events }),
        (e: unknown) => e instanceof AgentWireError && e.code === "config",
      );
    }
    assert.equal(seen.length, 0);
  });

  test("error bodies map to the typed errors, with code, status, retryable and retry_after", async () => {
    const cases: [Answer, new (...a: never[]) => AgentWireError, Partial<AgentWireError>][] = [
      [{ status: 403, body: error("forbidden") }, ProtocolError, { code: "forbidden", status: 403, retryable: false }],
      [{ status: 400, body: error("invalid_request") }, ProtocolError, { code: "invalid_request", status: 400, retryable: false }],
      [{ status: 400, body: error("invalid_channel") }, ProtocolError, { code: "invalid_channel", status: 400 }],
      [{ status: 401, body: error("token_expired") }, UnauthorizedError, { code: "token_expired", status: 401, retryable: false }],
      [
        { status: 429, body: error("rate_limited", { scope: "tenant", retry_after_ms: 1500 }), headers: { "retry-after": "2" } },
        ProtocolError,
        { code: "rate_limited", status: 429, retryable: true, retryAfterMs: 1500, scope: "tenant" },
      ],
      [
        { status: 429, body: error("rate_limited"), headers: { "retry-after": "3" } },
        ProtocolError,
        { code: "rate_limited", retryable: true, retryAfterMs: 3000 },
      ],
      [{ status: 503, body: error("internal") }, ServerError, { code: "internal", status: 503, retryable: true }],
      [{ status: 404, body: "no route" }, ProtocolError, { code: "not_found", status: 404, message: "no route" }],
    ];
    const calls: [string, () => Promise<unknown>][] = [
      ["history", () => history({ url, token: "t", channel: "agent-1" })],
      ["presence", () => presence({ url, token: "t", channel: "agent-1" })],
      ["channelInfo", () => channelInfo({ url, token: "t", channel: "agent-1" })],
      ["publishBatch", () => publishBatch({ url, token: "t", channel: "agent-1", events: [{ kind: "k" }] })],
    ];
    for (const [a, cls, want] of cases) {
      answer = () => a;
      for (const [name, f] of calls) {
        await assert.rejects(f(), (e: unknown) => {
          assert.ok(e instanceof cls, `${name} ${a.status}: ${String(e)}`);
          for (const [k, v] of Object.entries(want)) assert.deepEqual((e as never)[k], v, `${name} ${a.status} ${k}`);
          return true;
        });
      }
    }
    answer = () => ({ status: 400, body: error("invalid_event", { message: "event 1: kind must not be empty" }) });
    await assert.rejects(
      publishBatch({ url, token: "t", channel: "c", events: [{ kind: "a" }, { kind: "b" }] }),
      (e: unknown) => e instanceof ProtocolError && e.code === "invalid_event" && e.message.includes("event 1"),
    );
  });

  test("reads retry a retryable failure with `retries`, and not without", async (t) => {
    t.mock.method(Math, "random", () => 0);
    let n = 0;
    answer = () => (++n === 1 ? { status: 429, body: error("rate_limited", { retry_after_ms: 20 }) } : { status: 200, body: { channel: "c", count: 1, principals: ["p"] } });
    const started = Date.now();
    assert.deepEqual(await presence({ url, token: "t", channel: "c", retries: 1 }), { channel: "c", count: 1, principals: ["p"] });
    assert.ok(Date.now() - started >= 15, "waited retry_after_ms");
    assert.equal(seen.length, 2);
    n = 0;
    seen.length = 0;
    await assert.rejects(presence({ url, token: "t", channel: "c" }), (e: unknown) => e instanceof ProtocolError && e.code === "rate_limited");
    assert.equal(seen.length, 1);
  });

  test("an unreadable 200 is a decode error; an unreachable gateway a retryable network error", async () => {
    answer = () => ({ status: 200, body: "not json" });
    await assert.rejects(history({ url, token: "t", channel: "c" }), (e: unknown) => e instanceof ProtocolError && e.code === "decode");
    answer = () => ({ status: 200, body: { channel: "c", head: 1 } });
    await assert.rejects(history({ url, token: "t", channel: "c" }), (e: unknown) => e instanceof ProtocolError && e.code === "decode");
    await assert.rejects(
      presence({ url: "http://127.0.0.1:9", token: "t", channel: "c" }),
      (e: unknown) => e instanceof AgentWireError && e.code === "network" && e.retryable,
    );
  });
});
