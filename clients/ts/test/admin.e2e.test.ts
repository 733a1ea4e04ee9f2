// The management calls end to end on the local stack: the dev gateway
// (target/debug/agentwire-local, with AGENTWIRE_WEBHOOK_ALLOW_INSECURE=true
// so that a webhook may be plain http to loopback) on a free port against the
// LocalStack-compatible endpoint on 127.0.0.1:4566, admin tokens from the CLI.
// Skipped, with a message, only when that endpoint does not answer.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import {
  ConflictError,
  NotFoundError,
  ProtocolError,
  UnauthorizedError,
  channelInfo,
  clearWebhook,
  getLimits,
  getWebhook,
  history,
  listIssuers,
  listRevocations,
  revoke,
  rotateWebhook,
  setWebhook,
  trustIssuer,
  untrustIssuer,
} from "../src/index.js";
import { BIN, Gateway, SECRET, TENANT, endpointSkip, freePort, run, token } from "./stack.js";

const skip = await endpointSkip();

/** A public key (RFC 8037 A.2's Ed25519 key): trusted inline, never used to sign here. */
const JWKS = { keys: [{ kty: "OKP", crv: "Ed25519", kid: "e2e-1", x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" }] };

async function adminToken(tenant: string, sub = "ops"): Promise<string> {
  const { stdout } = await run(join(BIN, "agentwire"), ["token", "--tenant", tenant, "--sub", sub, "--admin"], {
    env: { ...process.env, AGENTWIRE_JWT_SECRET: SECRET },
  });
  return stdout.trim();
}

/** The frames of a WebSocket until it closes, and its close. */
function frames(ws: WebSocket): { seen: Record<string, unknown>[]; next: (type: string, ms: number) => Promise<Record<string, unknown>>; closed: Promise<number> } {
  const seen: Record<string, unknown>[] = [];
  const waiters = new Set<() => void>();
  ws.on("message", (d) => {
    seen.push(JSON.parse(d.toString()) as Record<string, unknown>);
    for (const w of [...waiters]) w();
  });
  const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)));
  const next = (type: string, ms: number) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const check = () => {
        const f = seen.find((x) => x.type === type);
        if (!f) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve(f);
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`no ${type} frame within ${ms} ms; saw ${JSON.stringify(seen)}`));
      }, ms);
      waiters.add(check);
      check();
    });
  return { seen, next, closed };
}

describe("management calls e2e on the local stack", { skip }, () => {
  let gw: Gateway;
  let admin: string;
  const rand = randomBytes(4).toString("hex");

  before(async () => {
    for (const bin of ["agentwire-local", "agentwire"]) {
      assert.ok(existsSync(join(BIN, bin)), `${join(BIN, bin)} is missing: cargo build -p agentwire-local -p agentwire-cli`);
    }
    // This file's own gateway (a process of its own): plain http to loopback
    // is a webhook URL it accepts.
    process.env.AGENTWIRE_WEBHOOK_ALLOW_INSECURE = "true";
    gw = new Gateway(await freePort());
    await gw.start();
    admin = await adminToken(TENANT);
  });

  after(async () => {
    await gw?.stop();
  });

  test("getLimits answers the token's tenant; a token without the admin grant is refused 403", async () => {
    const l = await getLimits({ url: gw.http, token: admin });
    assert.equal(l.tenant, TENANT);
    assert.equal(typeof l.usage.connections, "number");
    assert.equal(typeof l.own, "object");
    const plain = await token("reader", { channels: "*" });
    await assert.rejects(getLimits({ url: gw.http, token: plain }), (e: unknown) => {
      assert.ok(e instanceof ProtocolError && !(e instanceof NotFoundError), String(e));
      assert.deepEqual([e.code, e.status], ["forbidden", 403]);
      return true;
    });
    await assert.rejects(getLimits({ url: gw.http, token: "not-a-jwt" }), (e: unknown) => e instanceof UnauthorizedError && e.status === 401);
  });

  test("a channel's webhook: set (the secret once), shown without it, rotated, cleared", async () => {
    const channel = `team/${rand}`;
    const o = { url: gw.http, token: admin, channel };
    await assert.rejects(getWebhook(o), (e: unknown) => e instanceof NotFoundError && e.status === 404);

    const hook = `http://127.0.0.1:${await freePort()}/hooks/${rand}`;
    const set = await setWebhook({ ...o, webhookUrl: hook, mode: "always" });
    assert.match(set.secret ?? "", /^whsec_/);
    assert.deepEqual([set.scope, set.channel, set.url, set.mode], ["channel", channel, hook, "always"]);
    assert.ok(set.updatedAt > 1_600_000_000 && set.updatedAt < 10_000_000_000, `updated_at in seconds: ${set.updatedAt}`);

    const shown = await getWebhook(o);
    assert.deepEqual(shown, { scope: "channel", channel, url: hook, mode: "always", updatedAt: shown.updatedAt });
    assert.equal(shown.secret, undefined, "the secret is shown once");
    const again = await setWebhook({ ...o, webhookUrl: hook, mode: "always" });
    assert.equal(again.secret, undefined, "the same URL keeps its secret, not shown");

    // The read API (a `channels` grant) sees the channel's own webhook apply.
    const reader = await token("reader", { channels: "team/*" });
    assert.deepEqual((await channelInfo({ url: gw.http, token: reader, channel })).webhook, { mode: "always", scope: "channel" });

    const rotated = await rotateWebhook({ ...o, overlapS: 600 });
    assert.match(rotated.secret ?? "", /^whsec_/);
    assert.notEqual(rotated.secret, set.secret);
    const now = Date.now() / 1000;
    assert.ok(rotated.previousUntil !== undefined && Math.abs(rotated.previousUntil - (now + 600)) < 120, `previous_until ${rotated.previousUntil}`);
    assert.equal((await getWebhook(o)).secret, undefined);

    await assert.rejects(
      setWebhook({ ...o, webhookUrl: "https://10.0.0.1/hook" }),
      (e: unknown) => e instanceof ProtocolError && e.status === 400 && e.code === "invalid_request",
    );
    await clearWebhook(o);
    await assert.rejects(getWebhook(o), NotFoundError);
    await assert.rejects(clearWebhook(o), (e: unknown) => e instanceof NotFoundError && e.code === "invalid_request");
    await assert.rejects(rotateWebhook(o), NotFoundError);
  });

  test("the tenant's default webhook: set and cleared", async () => {
    const o = { url: gw.http, token: admin };
    const hook = `http://127.0.0.1:${await freePort()}/tenant/${rand}`;
    const set = await setWebhook({ ...o, webhookUrl: hook, ttlS: 3600 });
    assert.deepEqual([set.scope, set.channel, set.mode], ["tenant", undefined, "fallback"]);
    assert.match(set.secret ?? "", /^whsec_/);
    assert.ok(set.expiresAt !== undefined && set.expiresAt > set.updatedAt);
    assert.equal((await getWebhook(o)).url, hook);
    await clearWebhook(o);
    await assert.rejects(getWebhook(o), NotFoundError);
  });

  test("issuers: trust one with inline keys, list it, another tenant is refused 409, untrust", async () => {
    const issuer = `https://idp-${rand}.example.com/`;
    const o = { url: gw.http, token: admin };
    assert.ok(!(await listIssuers(o)).some((i) => i.issuer === issuer));
    const saved = await trustIssuer({
      ...o,
      entry: { issuer, jwks: JWKS, audiences: ["my-app"], channels: ["inbox-{sub}"], publish: ["inbox-{sub}"], maxLifetimeS: 3600 },
    });
    assert.deepEqual(saved, {
      issuer,
      owner: { tenant: TENANT },
      keys: { type: "inline", jwks: JWKS },
      audiences: ["my-app"],
      channels: ["inbox-{sub}"],
      publish: ["inbox-{sub}"],
      maxLifetimeS: 3600,
    });
    assert.deepEqual((await listIssuers(o)).find((i) => i.issuer === issuer), saved);

    const other = await adminToken(`${TENANT}-other`);
    await assert.rejects(
      trustIssuer({ url: gw.http, token: other, entry: { issuer, jwks: JWKS } }),
      (e: unknown) => e instanceof ConflictError && e.status === 409 && e.code === "invalid_request",
    );
    await assert.rejects(
      trustIssuer({ ...o, entry: { issuer: `https://idp2-${rand}.example.com/`, jwksUrl: "https://169.254.169.254/jwks" } }),
      (e: unknown) => e instanceof ProtocolError && e.status === 400,
    );

    await untrustIssuer({ ...o, issuer });
    assert.ok(!(await listIssuers(o)).some((i) => i.issuer === issuer));
    await assert.rejects(untrustIssuer({ ...o, issuer }), NotFoundError);
  });

  test("revoke closes the principal's live connection and refuses its token from then on", { timeout: 60_000 }, async () => {
    const sub = `victim-${rand}`;
    const victim = await token(sub, { channels: "agent-*" });
    const ws = new WebSocket(`${gw.ws}/?token=${encodeURIComponent(victim)}`, "agentwire.v1");
    const f = frames(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    ws.send(JSON.stringify({ action: "hello", protocol: { min: 1, max: 1 }, client: "admin-e2e" }));
    await f.next("welcome", 15_000);

    const r = await revoke({ url: gw.http, token: admin, sub });
    assert.equal(r.sub, sub);
    assert.deepEqual([r.closed, r.failed], [1, 0]);
    assert.ok(Math.abs(r.atMs - Date.now()) < 60_000, `at_ms ${r.atMs}`);
    const told = await f.next("error", 15_000);
    assert.equal(told.code, "token_revoked");
    await f.closed;

    assert.deepEqual((await listRevocations({ url: gw.http, token: admin })).find((x) => x.sub === sub), { sub, atMs: r.atMs });
    await assert.rejects(
      history({ url: gw.http, token: victim, channel: "agent-1" }),
      (e: unknown) => e instanceof UnauthorizedError && e.code === "token_revoked",
    );
    // Nobody else of the tenant was touched.
    assert.equal((await getLimits({ url: gw.http, token: admin })).tenant, TENANT);
  });
});
