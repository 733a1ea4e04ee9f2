// The management calls against a real local HTTP server: what each sends
// (method, path, query, auth header, body), what is parsed, the typed errors
// (401/403/400/404/409/413/429/5xx), and which calls retry.
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, beforeEach, describe, test } from "node:test";
import {
  AgentWireError,
  ConflictError,
  NotFoundError,
  ProtocolError,
  ServerError,
  UnauthorizedError,
  clearWebhook,
  getLimits,
  getWebhook,
  listIssuers,
  listRevocations,
  revoke,
  rotateWebhook,
  setWebhook,
  trustIssuer,
  untrustIssuer,
} from "../src/index.js";

interface Seen {
  method: string;
  /** The raw path, percent-encoding kept. */
  rawPath: string;
  path: string;
  query: Record<string, string>;
  auth: string;
  contentType: string;
  body: string;
}
interface Answer {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

const JWKS = { keys: [{ kty: "OKP", crv: "Ed25519", kid: "k1", x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" }] };

describe("management calls (a real local server)", () => {
  const seen: Seen[] = [];
  let answer: (req: Seen) => Answer = () => ({ status: 500, body: {} });
  let url = "";
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      const raw = req.url ?? "/";
      const u = new URL(raw, "http://x");
      const s: Seen = {
        method: req.method ?? "",
        rawPath: raw.split("?")[0]!,
        path: u.pathname,
        query: Object.fromEntries(u.searchParams),
        auth: req.headers.authorization ?? "",
        contentType: req.headers["content-type"] ?? "",
        body,
      };
      seen.push(s);
      const a = answer(s);
      if (a.status === 204) {
        res.writeHead(204, a.headers);
        res.end();
        return;
      }
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
  const only = (): Seen => {
    assert.equal(seen.length, 1, `one request, not ${seen.length}`);
    return seen[0]!;
  };

  test("getLimits: GET /v1/admin/limits with the token; limits camel-cased, absent ones left out", async () => {
    answer = () => ({
      status: 200,
      body: {
        tenant: "acme",
        own: { max_connections: 50, dry_run: true },
        effective: { max_connections: 50, publish_rate: 10, publish_burst: 20, connection_action_burst: 7 },
        usage: { connections: 3 },
      },
    });
    const l = await getLimits({ url, token: "adm" });
    const s = only();
    assert.deepEqual([s.method, s.path, s.auth, s.body], ["GET", "/v1/admin/limits", "Bearer adm", ""]);
    assert.deepEqual(l, {
      tenant: "acme",
      own: { maxConnections: 50, dryRun: true },
      effective: { maxConnections: 50, publishRate: 10, publishBurst: 20, connectionActionBurst: 7 },
      usage: { connections: 3 },
    });
  });

  test("getWebhook: the tenant's default, or a channel's own with `/` percent-encoded", async () => {
    answer = (req) =>
      req.path === "/v1/admin/webhook"
        ? { status: 200, body: { scope: "tenant", url: "https://h.example/t", mode: "always", updated_at: 1700000000 } }
        : {
            status: 200,
            body: {
              scope: "channel",
              channel: "team/a b",
              url: "https://h.example/c",
              mode: "off",
              updated_at: 1700000001,
              expires_at: 1700003600,
              disabled: "410 Gone",
              previous_until: 1700086400,
            },
          };
    assert.deepEqual(await getWebhook({ url, token: "adm" }), {
      scope: "tenant",
      url: "https://h.example/t",
      mode: "always",
      updatedAt: 1700000000,
    });
    assert.deepEqual(await getWebhook({ url, token: "adm", channel: "team/a b" }), {
      scope: "channel",
      channel: "team/a b",
      url: "https://h.example/c",
      mode: "off",
      updatedAt: 1700000001,
      expiresAt: 1700003600,
      disabled: "410 Gone",
      previousUntil: 1700086400,
    });
    assert.deepEqual(
      seen.map((s) => [s.method, s.rawPath, s.auth]),
      [
        ["GET", "/v1/admin/webhook", "Bearer adm"],
        ["GET", "/v1/admin/channels/team%2Fa%20b/webhook", "Bearer adm"],
      ],
    );
  });

  test("setWebhook: PUT with url, mode and ttl_s; the secret when one was generated", async () => {
    answer = (req) => {
      const b = JSON.parse(req.body) as { url: string; mode?: string };
      return {
        status: 200,
        body: { scope: "channel", channel: "agent-1", url: b.url, mode: b.mode ?? "fallback", updated_at: 5, expires_at: 65, secret: "whsec_abc" },
      };
    };
    const w = await setWebhook({ url, token: "adm", channel: "agent-1", webhookUrl: "https://h.example/x", mode: "always", ttlS: 60 });
    const s = only();
    assert.deepEqual([s.method, s.path, s.auth, s.contentType], ["PUT", "/v1/admin/channels/agent-1/webhook", "Bearer adm", "application/json"]);
    assert.deepEqual(JSON.parse(s.body), { url: "https://h.example/x", mode: "always", ttl_s: 60 });
    assert.equal(w.secret, "whsec_abc");
    assert.equal(w.expiresAt, 65);
    seen.length = 0;
    answer = () => ({ status: 200, body: { scope: "tenant", url: "https://h.example/y", mode: "fallback", updated_at: 6 } });
    const again = await setWebhook({ url, token: "adm", webhookUrl: "https://h.example/y" });
    assert.deepEqual(JSON.parse(only().body), { url: "https://h.example/y" });
    assert.equal(only().path, "/v1/admin/webhook");
    assert.equal(again.secret, undefined, "no secret when none was generated");
    assert.ok(!("secret" in again));
  });

  test("rotateWebhook: POST …/webhook:rotate with overlap_s, or an empty object", async () => {
    answer = () => ({
      status: 200,
      body: { scope: "tenant", url: "https://h.example/t", mode: "fallback", updated_at: 9, previous_until: 3609, secret: "whsec_new" },
    });
    const w = await rotateWebhook({ url, token: "adm", overlapS: 3600 });
    assert.deepEqual([only().method, only().path, JSON.parse(only().body)], ["POST", "/v1/admin/webhook:rotate", { overlap_s: 3600 }]);
    assert.deepEqual([w.secret, w.previousUntil], ["whsec_new", 3609]);
    seen.length = 0;
    await rotateWebhook({ url, token: "adm", channel: "a:b@c" });
    assert.deepEqual([only().rawPath, JSON.parse(only().body)], ["/v1/admin/channels/a%3Ab%40c/webhook:rotate", {}]);
  });

  test("clearWebhook: DELETE, a 204 resolves", async () => {
    answer = () => ({ status: 204 });
    assert.equal(await clearWebhook({ url, token: "adm" }), undefined);
    assert.equal(await clearWebhook({ url, token: "adm", channel: "x/y" }), undefined);
    assert.deepEqual(
      seen.map((s) => [s.method, s.rawPath, s.auth, s.body]),
      [
        ["DELETE", "/v1/admin/webhook", "Bearer adm", ""],
        ["DELETE", "/v1/admin/channels/x%2Fy/webhook", "Bearer adm", ""],
      ],
    );
  });

  test("listIssuers parses each key source; trustIssuer sends the entry snake-cased", async () => {
    answer = () => ({
      status: 200,
      body: {
        issuers: [
          { issuer: "https://a/", owner: { tenant: "acme" }, keys: { type: "jwks", url: "https://a/jwks" }, audiences: ["app"], channels: ["inbox-{sub}"], publish: [] },
          { issuer: "https://b/", owner: { tenant: "acme" }, keys: { type: "inline", jwks: JWKS }, audiences: [], channels: [], publish: ["x"], max_lifetime_s: 3600, preset: { name: "cognito", client_ids: ["c1"] } },
          { issuer: "https://c/", owner: { tenant: "acme" }, keys: { type: "hs256", kid: "k", secret_b64: "<stored>" }, audiences: [], channels: [], publish: [], principal_claim: "uid", grants_claim: "g", preset: { name: "supabase", allow_service_role: false } },
        ],
      },
    });
    const list = await listIssuers({ url, token: "adm" });
    assert.deepEqual([only().method, only().path], ["GET", "/v1/admin/issuers"]);
    assert.deepEqual(list, [
      { issuer: "https://a/", owner: { tenant: "acme" }, keys: { type: "jwks", url: "https://a/jwks" }, audiences: ["app"], channels: ["inbox-{sub}"], publish: [] },
      { issuer: "https://b/", owner: { tenant: "acme" }, keys: { type: "inline", jwks: JWKS }, audiences: [], channels: [], publish: ["x"], maxLifetimeS: 3600, preset: { name: "cognito", clientIds: ["c1"] } },
      { issuer: "https://c/", owner: { tenant: "acme" }, keys: { type: "hs256", kid: "k", secretB64: "<stored>" }, audiences: [], channels: [], publish: [], principalClaim: "uid", grantsClaim: "g", preset: { name: "supabase", allowServiceRole: false } },
    ]);

    seen.length = 0;
    answer = (req) => {
      const b = JSON.parse(req.body) as Record<string, unknown>;
      return { status: 200, body: { issuer: b.issuer, owner: { tenant: "acme" }, keys: { type: "inline", jwks: b.jwks }, audiences: b.audiences, channels: b.channels, publish: [], max_lifetime_s: b.max_lifetime_s } };
    };
    const saved = await trustIssuer({
      url,
      token: "adm",
      entry: {
        issuer: "https://idp.example/",
        jwks: JWKS,
        audiences: ["my-app"],
        principalClaim: "uid",
        grantsClaim: "agentwire",
        channels: ["inbox-{sub}"],
        maxLifetimeS: 3600,
        preset: { name: "supabase", allowServiceRole: true },
      },
    });
    const s = only();
    assert.deepEqual([s.method, s.path, s.contentType], ["PUT", "/v1/admin/issuers", "application/json"]);
    assert.deepEqual(JSON.parse(s.body), {
      issuer: "https://idp.example/",
      jwks: JWKS,
      audiences: ["my-app"],
      principal_claim: "uid",
      grants_claim: "agentwire",
      channels: ["inbox-{sub}"],
      max_lifetime_s: 3600,
      preset: { name: "supabase", allow_service_role: true },
    });
    assert.deepEqual(saved.keys, { type: "inline", jwks: JWKS });
    assert.equal(saved.maxLifetimeS, 3600);

    seen.length = 0;
    await trustIssuer({ url, token: "adm", entry: { issuer: "https://c/", hs256Secret: "c2VjcmV0", kid: "k", preset: { name: "cognito", clientIds: ["a", "b"] } } }).catch(() => undefined);
    assert.deepEqual(JSON.parse(only().body), { issuer: "https://c/", hs256_secret: "c2VjcmV0", kid: "k", preset: { name: "cognito", client_ids: ["a", "b"] } });
  });

  test("trustIssuer wants exactly one key source and an issuer, checked before sending", async () => {
    const bad = [
      { issuer: "https://a/" },
      { issuer: "https://a/", jwksUrl: "https://a/jwks", jwks: JWKS },
      { issuer: "", jwks: JWKS },
      { issuer: "https://a/", jwks: JWKS, maxLifetimeS: -1 },
    ];
    for (const entry of bad) {
      await assert.rejects(trustIssuer({ url, token: "adm", entry }), (e: unknown) => e instanceof AgentWireError && e.code === "config");
    }
    assert.equal(seen.length, 0);
  });

  test("untrustIssuer: DELETE /v1/admin/issuers?iss= (encoded)", async () => {
    answer = () => ({ status: 204 });
    await untrustIssuer({ url, token: "adm", issuer: "https://idp.example/?a=b&c" });
    const s = only();
    assert.deepEqual([s.method, s.path, s.query, s.body], ["DELETE", "/v1/admin/issuers", { iss: "https://idp.example/?a=b&c" }, ""]);
  });

  test("listRevocations and revoke", async () => {
    answer = (req) =>
      req.method === "GET"
        ? { status: 200, body: { revocations: [{ sub: "u1", at_ms: 1700000000123 }] } }
        : { status: 200, body: { sub: (JSON.parse(req.body) as { sub: string }).sub, at_ms: 1700000000999, closed: 2, failed: 1 } };
    assert.deepEqual(await listRevocations({ url, token: "adm" }), [{ sub: "u1", atMs: 1700000000123 }]);
    assert.deepEqual(await revoke({ url, token: "adm", sub: "user-42" }), { sub: "user-42", atMs: 1700000000999, closed: 2, failed: 1 });
    assert.deepEqual(
      seen.map((s) => [s.method, s.path, s.auth, s.body]),
      [
        ["GET", "/v1/admin/revocations", "Bearer adm", ""],
        ["POST", "/v1/admin/revocations", "Bearer adm", JSON.stringify({ sub: "user-42" })],
      ],
    );
    await assert.rejects(revoke({ url, token: "adm", sub: "" }), (e: unknown) => e instanceof AgentWireError && e.code === "config");
    assert.equal(seen.length, 2);
  });

  test("error bodies map to the typed errors on every call", async () => {
    const cases: [Answer, new (...a: never[]) => AgentWireError, Partial<AgentWireError>][] = [
      [{ status: 401, body: error("token_revoked", { reason: "revoked" }) }, UnauthorizedError, { code: "token_revoked", status: 401, retryable: false }],
      [{ status: 403, body: error("forbidden") }, ProtocolError, { code: "forbidden", status: 403, retryable: false }],
      [{ status: 400, body: error("invalid_request") }, ProtocolError, { code: "invalid_request", status: 400, retryable: false }],
      [{ status: 400, body: error("bad_json") }, ProtocolError, { code: "bad_json", status: 400 }],
      [{ status: 404, body: error("invalid_request") }, NotFoundError, { code: "invalid_request", status: 404, retryable: false }],
      [{ status: 404, body: "" }, NotFoundError, { code: "not_found", status: 404 }],
      [{ status: 409, body: error("invalid_request") }, ConflictError, { code: "invalid_request", status: 409, retryable: false }],
      [{ status: 409, body: "taken" }, ConflictError, { code: "conflict", status: 409, message: "taken" }],
      [{ status: 413, body: error("message_too_large") }, ProtocolError, { code: "message_too_large", status: 413 }],
      [{ status: 413, body: { message: "Request Entity Too Large" } }, ProtocolError, { code: "message_too_large", status: 413 }],
      [
        { status: 429, body: { message: "Too Many Requests" }, headers: { "retry-after": "2" } },
        ProtocolError,
        { code: "rate_limited", status: 429, retryable: true, retryAfterMs: 2000 },
      ],
      [{ status: 500, body: { message: "Internal Server Error" } }, ServerError, { code: "internal", status: 500, retryable: true }],
      [{ status: 503, body: error("internal") }, ServerError, { code: "internal", status: 503, retryable: true }],
    ];
    const o = { url, token: "adm" };
    const calls: [string, () => Promise<unknown>][] = [
      ["getLimits", () => getLimits(o)],
      ["getWebhook", () => getWebhook({ ...o, channel: "c" })],
      ["setWebhook", () => setWebhook({ ...o, webhookUrl: "https://h.example/" })],
      ["clearWebhook", () => clearWebhook(o)],
      ["rotateWebhook", () => rotateWebhook(o)],
      ["listIssuers", () => listIssuers(o)],
      ["trustIssuer", () => trustIssuer({ ...o, entry: { issuer: "https://i/", jwks: JWKS } })],
      ["untrustIssuer", () => untrustIssuer({ ...o, issuer: "https://i/" })],
      ["listRevocations", () => listRevocations(o)],
      ["revoke", () => revoke({ ...o, sub: "u" })],
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
    assert.equal(seen.length, cases.length * calls.length, "one attempt each without `retries`");
  });

  test("with `retries`, the calls safe to repeat retry; setWebhook and rotateWebhook are sent once", async (t) => {
    t.mock.method(Math, "random", () => 0); // the backoff's jitter: 0 ms
    let n = 0;
    answer = () => (++n === 1 ? { status: 503, body: error("internal") } : { status: 200, body: { revocations: [] } });
    assert.deepEqual(await listRevocations({ url, token: "adm", retries: 2 }), []);
    assert.equal(seen.length, 2);

    n = 0;
    seen.length = 0;
    answer = () => (++n === 1 ? { status: 429, body: error("rate_limited", { retry_after_ms: 20 }) } : { status: 200, body: { sub: "u", at_ms: 1, closed: 0, failed: 0 } });
    const started = Date.now();
    assert.equal((await revoke({ url, token: "adm", sub: "u", retries: 1 })).sub, "u");
    assert.ok(Date.now() - started >= 15, "waited retry_after_ms");
    assert.deepEqual(seen.map((s) => s.body), [JSON.stringify({ sub: "u" }), JSON.stringify({ sub: "u" })]);

    seen.length = 0;
    answer = () => ({ status: 503, body: error("internal") });
    const once = { url, token: "adm", retries: 3 } as const;
    await assert.rejects(setWebhook({ ...once, webhookUrl: "https://h.example/" }), ServerError);
    await assert.rejects(rotateWebhook(once), ServerError);
    assert.equal(seen.length, 2, "each sent once");

    seen.length = 0;
    await assert.rejects(getLimits({ url, token: "adm", retries: 2 }), ServerError);
    assert.equal(seen.length, 3, "1 + 2 retries");
  });

  test("a DELETE answered 404 after a failed attempt is done; 404 at once is NotFoundError", async (t) => {
    t.mock.method(Math, "random", () => 0);
    let n = 0;
    answer = () => (++n === 1 ? { status: 503, body: error("internal") } : { status: 404, body: error("invalid_request") });
    assert.equal(await untrustIssuer({ url, token: "adm", issuer: "https://i/", retries: 2 }), undefined);
    assert.equal(seen.length, 2);
    seen.length = 0;
    answer = () => ({ status: 404, body: error("invalid_request") });
    await assert.rejects(clearWebhook({ url, token: "adm", retries: 2 }), NotFoundError);
    assert.equal(seen.length, 1, "a 404 is not retried");
  });

  test("config errors before sending; an unreadable answer is a decode error; unreachable is retryable", async () => {
    await assert.rejects(getWebhook({ url, token: "adm", channel: "" }), (e: unknown) => e instanceof AgentWireError && e.code === "config");
    await assert.rejects(setWebhook({ url, token: "adm", webhookUrl: "" }), (e: unknown) => e instanceof AgentWireError && e.code === "config");
    await assert.rejects(untrustIssuer({ url, token: "adm", issuer: "" }), (e: unknown) => e instanceof AgentWireError && e.code === "config");
    await assert.rejects(rotateWebhook({ url, token: "adm", overlapS: 1.5 }), (e: unknown) => e instanceof AgentWireError && e.code === "config");
    await assert.rejects(getLimits({ url: "", token: "adm" }), (e: unknown) => e instanceof AgentWireError && e.code === "config");
    assert.equal(seen.length, 0);
    answer = () => ({ status: 200, body: "not json" });
    await assert.rejects(getLimits({ url, token: "adm" }), (e: unknown) => e instanceof ProtocolError && e.code === "decode");
    answer = () => ({ status: 200, body: { scope: "tenant", mode: "fallback" } });
    await assert.rejects(getWebhook({ url, token: "adm" }), (e: unknown) => e instanceof ProtocolError && e.code === "decode");
    answer = () => ({ status: 200, body: { issuers: [{ issuer: "x", owner: { tenant: "t" }, keys: { type: "pigeon" } }] } });
    await assert.rejects(listIssuers({ url, token: "adm" }), (e: unknown) => e instanceof ProtocolError && e.code === "decode");
    await assert.rejects(
      getLimits({ url: "http://127.0.0.1:9", token: "adm" }),
      (e: unknown) => e instanceof AgentWireError && e.code === "network" && e.retryable,
    );
  });

  test("an injected fetch is used", async () => {
    const calls: { input: string; method: string; body?: string }[] = [];
    const fetch = async (input: string, init: { method: string; headers: Record<string, string>; body?: string }) => {
      calls.push({ input, method: init.method, ...(init.body !== undefined ? { body: init.body } : {}) });
      return { status: 200, text: async () => JSON.stringify({ sub: "u", at_ms: 1, closed: 0, failed: 0 }) };
    };
    await revoke({ url: "https://gw.example/prod/", token: "adm", sub: "u", fetch });
    assert.deepEqual(calls, [{ input: "https://gw.example/prod/v1/admin/revocations", method: "POST", body: '{"sub":"u"}' }]);
    assert.equal(seen.length, 0);
  });
});
