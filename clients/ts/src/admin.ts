/**
 * Managing a tenant over the gateway's HTTP API (`/v1/admin/…`), with a
 * token holding the `admin` grant (`agentwire token --admin`, or an
 * issuer's grants claim); the token's tenant is the one managed:
 *
 * - `getLimits()`: `GET /v1/admin/limits`, its limits and its connections.
 * - `getWebhook()`, `setWebhook()`, `clearWebhook()`, `rotateWebhook()`:
 *   the tenant's default webhook (`/v1/admin/webhook`), or with `channel`
 *   one channel's own (`/v1/admin/channels/{channel}/webhook`). The signing
 *   secret is only in the answer that generated it.
 * - `listIssuers()`, `trustIssuer()`, `untrustIssuer()`: the identity
 *   providers whose tokens are the tenant's (`/v1/admin/issuers`).
 * - `listRevocations()`, `revoke()`: refuse a principal's tokens issued
 *   before now (`/v1/admin/revocations`), its live connections closed.
 *
 * Errors are typed as for `publish()`: `UnauthorizedError` (401),
 * `ProtocolError` (403 `forbidden` without the admin grant, 400
 * `invalid_request`/`invalid_channel`/`bad_json`, 413 `message_too_large`,
 * 429 retryable), `NotFoundError` (404: nothing configured there),
 * `ConflictError` (409: an issuer another tenant trusts), `ServerError`
 * (5xx, retryable). With `retries`, the calls that are safe to repeat retry
 * a retryable failure like a publish does; `setWebhook()` and
 * `rotateWebhook()` are sent once (a repeat could swallow the secret shown
 * once, or rotate twice).
 */
import { AgentWireError, ConflictError, NotFoundError, ProtocolError } from "./errors.js";
import { type FetchAnswer, call, fetchOf, retriesOf, withRetries } from "./publish.js";

/** The `fetch` the management calls use (a subset of the standard one). */
export type AdminFetch = (
  input: string,
  init: { method: string; headers: Record<string, string>; body?: string; signal?: AbortSignal },
) => Promise<FetchAnswer>;

export interface AdminOptions {
  /** The gateway's HTTP base URL (`https://…/prod`, `http://127.0.0.1:8080`). */
  url: string;
  /** A token with the `admin` grant; its tenant is the one managed. */
  token: string;
  /** Default `globalThis.fetch`. */
  fetch?: AdminFetch;
  signal?: AbortSignal;
}

/** The options of a call that is safe to repeat. */
export interface AdminRetryOptions extends AdminOptions {
  /** Retry a retryable failure (429, 408, 5xx, network) up to this many
   * times (default 0), as `publish()` does. */
  retries?: number;
}

/** A tenant's limits; a field left out is unlimited (in `own`: the
 * deployment's default applies). Rates are a second; a burst left out
 * equals the rate. */
export interface Limits {
  publishRate?: number;
  publishBurst?: number;
  channelPublishRate?: number;
  channelPublishBurst?: number;
  maxConnections?: number;
  maxChannels?: number;
  connectionActionRate?: number;
  connectionActionBurst?: number;
  /** HTTP reads a second of the whole tenant (history, presence, state). */
  readRate?: number;
  readBurst?: number;
  /** Count and log what would be refused, refuse nothing. */
  dryRun?: boolean;
}

export interface TenantLimits {
  tenant: string;
  /** The tenant's own settings. */
  own: Limits;
  /** What applies: its own over the deployment's defaults. */
  effective: Limits;
  usage: {
    /** The tenant's counted connections now. */
    connections: number;
  };
}

/** When a webhook is called: `fallback` (the channel has no live
 * subscriber), `always` (every event), `off` (kept, not called). */
export type WebhookMode = "fallback" | "always" | "off";

/** A webhook as the management API shows it. */
export interface Webhook {
  /** `channel`: a channel's own; `tenant`: the tenant's default. */
  scope: "channel" | "tenant";
  /** The channel, for a channel's own. */
  channel?: string;
  url: string;
  mode: WebhookMode;
  /** When it was last set, Unix seconds. */
  updatedAt: number;
  /** When it lapses, Unix seconds (set with `ttlS`). */
  expiresAt?: number;
  /** Why deliveries stopped (a receiver answered 410). */
  disabled?: string;
  /** Until when the secret before the last rotation still signs, Unix seconds. */
  previousUntil?: number;
  /** The `whsec_…` signing secret: only in the answer of the `setWebhook()`
   * that generated it (a new URL) or of a `rotateWebhook()`. Keep it. */
  secret?: string;
}

export interface WebhookOptions extends AdminRetryOptions {
  /** A channel's own webhook; left out: the tenant's default. */
  channel?: string;
}

export interface SetWebhookOptions extends AdminOptions {
  /** A channel's own webhook; left out: the tenant's default. */
  channel?: string;
  /** Where the events are posted: https, public addresses only (else 400). */
  webhookUrl: string;
  /** Default `fallback`. */
  mode?: WebhookMode;
  /** The webhook lapses after this many seconds. */
  ttlS?: number;
}

export interface RotateWebhookOptions extends AdminOptions {
  /** A channel's own webhook; left out: the tenant's default. */
  channel?: string;
  /** How long the previous secret keeps signing, seconds (default a day). */
  overlapS?: number;
}

/** A provider's own checks (docs/identity.md). */
export type IssuerPreset = { name: "supabase"; allowServiceRole?: boolean } | { name: "cognito"; clientIds: string[] };

/** An issuer to trust: where its keys are (exactly one of `jwksUrl`, `jwks`
 * and `hs256Secret`), its audiences and how its tokens map to grants. */
export interface IssuerSpec {
  /** The tokens' `iss`. */
  issuer: string;
  /** The provider's JWKS over https (fetched and cached). */
  jwksUrl?: string;
  /** Public keys inline: a JWKS document (`{keys: [...]}`). */
  jwks?: Record<string, unknown>;
  /** An HS256 secret (base64, at least 32 bytes) only this tenant's tokens
   * are signed with. */
  hs256Secret?: string;
  /** The HS256 secret's `kid`. */
  kid?: string;
  /** Accepted `aud` values (none: `aud` is not checked). */
  audiences?: string[];
  /** The claim naming the principal (default `sub`). */
  principalClaim?: string;
  /** A claim holding `{"channels":[…],"publish":[…],"admin":bool}`. */
  grantsClaim?: string;
  /** Patterns granted for joining, `{sub}` standing for the principal. */
  channels?: string[];
  /** Patterns granted for publishing. */
  publish?: string[];
  /** The longest `exp - iat` accepted, seconds. */
  maxLifetimeS?: number;
  preset?: IssuerPreset;
}

/** Where a trusted issuer's keys are (an HS256 secret is never shown:
 * `secretB64` is `<stored>`). */
export type IssuerKeys =
  | { type: "jwks"; url: string }
  | { type: "inline"; jwks: Record<string, unknown> }
  | { type: "hs256"; kid?: string; secretB64: string };

/** A trusted issuer, as saved. */
export interface TrustedIssuer {
  issuer: string;
  owner: { tenant: string };
  keys: IssuerKeys;
  audiences: string[];
  principalClaim?: string;
  grantsClaim?: string;
  channels: string[];
  publish: string[];
  maxLifetimeS?: number;
  preset?: IssuerPreset;
}

export interface TrustIssuerOptions extends AdminRetryOptions {
  entry: IssuerSpec;
}

export interface UntrustIssuerOptions extends AdminRetryOptions {
  /** The issuer to stop trusting. */
  issuer: string;
}

/** A revoked principal: its tokens issued before `atMs` are refused. */
export interface Revocation {
  sub: string;
  /** Unix ms. */
  atMs: number;
}

export interface RevokeOptions extends AdminRetryOptions {
  /** The principal whose tokens (issued before now) are refused. */
  sub: string;
}

export interface RevokeResult extends Revocation {
  /** Live connections told `token_revoked` and closed. */
  closed: number;
  /** Live connections that could not be closed now (refused at their next
   * join, ack or refresh). */
  failed: number;
}

/** The tenant's limits: its own, what applies, and its connections now. */
export async function getLimits(options: AdminRetryOptions): Promise<TenantLimits> {
  const v = object(await send(options, "GET", "/limits", "getLimits()"), "limits");
  const usage = object(v.usage, "usage");
  return {
    tenant: str(v.tenant, "tenant"),
    own: limits(v.own),
    effective: limits(v.effective),
    usage: { connections: num(usage.connections, "usage.connections") },
  };
}

/** The tenant's default webhook, or with `channel` that channel's own;
 * never its secret. None set: `NotFoundError`. */
export async function getWebhook(options: WebhookOptions): Promise<Webhook> {
  return webhook(await send(options, "GET", webhookPath(options.channel), "getWebhook()"));
}

/** Sets the tenant's default webhook, or with `channel` that channel's own.
 * A new URL gets a new signing secret, in `secret` of this answer only; the
 * same URL again keeps its secret (no `secret`). Sent once, never retried. */
export async function setWebhook(options: SetWebhookOptions): Promise<Webhook> {
  if (!options.webhookUrl) throw new AgentWireError("config", "`webhookUrl` is needed");
  if (options.ttlS !== undefined) nonNegative(options.ttlS, "ttlS");
  const body: Record<string, unknown> = { url: options.webhookUrl };
  if (options.mode !== undefined) body.mode = options.mode;
  if (options.ttlS !== undefined) body.ttl_s = options.ttlS;
  return webhook(await send(options, "PUT", webhookPath(options.channel), "setWebhook()", body, false));
}

/** Removes the tenant's default webhook, or with `channel` that channel's
 * own, and its secrets. None set: `NotFoundError` (except on a retry, after
 * an attempt that may have removed it). */
export async function clearWebhook(options: WebhookOptions): Promise<void> {
  await send(options, "DELETE", webhookPath(options.channel), "clearWebhook()");
}

/** A new signing secret for the tenant's default webhook (or with `channel`
 * that channel's own), in `secret` of this answer only; the previous one
 * keeps signing until `previousUntil` (`overlapS`, default a day). None
 * set: `NotFoundError`. Sent once, never retried. */
export async function rotateWebhook(options: RotateWebhookOptions): Promise<Webhook> {
  const body: Record<string, unknown> = {};
  if (options.overlapS !== undefined) body.overlap_s = nonNegative(options.overlapS, "overlapS");
  const path = `${webhookPath(options.channel)}:rotate`;
  return webhook(await send(options, "POST", path, "rotateWebhook()", body, false));
}

/** The identity providers whose tokens are the tenant's. */
export async function listIssuers(options: AdminRetryOptions): Promise<TrustedIssuer[]> {
  const v = object(await send(options, "GET", "/issuers", "listIssuers()"), "issuers");
  if (!Array.isArray(v.issuers)) throw new ProtocolError("decode", "an answer without `issuers`");
  return v.issuers.map(trusted);
}

/** Trusts an identity provider for the tenant (or replaces its entry);
 * returns the entry as saved. Exactly one of `jwksUrl`, `jwks` and
 * `hs256Secret` is needed (else `config`, before sending). A JWKS URL at a
 * private address or a malformed entry: `ProtocolError` 400; an issuer
 * another tenant trusts: `ConflictError`. */
export async function trustIssuer(options: TrustIssuerOptions): Promise<TrustedIssuer> {
  const e = options.entry;
  if (!e || typeof e.issuer !== "string" || !e.issuer) throw new AgentWireError("config", "`entry.issuer` is needed");
  const keys = [e.jwksUrl, e.jwks, e.hs256Secret].filter((k) => k !== undefined).length;
  if (keys !== 1) {
    throw new AgentWireError("config", "give exactly one of `jwksUrl`, `jwks` and `hs256Secret`");
  }
  if (e.maxLifetimeS !== undefined) nonNegative(e.maxLifetimeS, "maxLifetimeS");
  const body: Record<string, unknown> = { issuer: e.issuer };
  const put = (k: string, v: unknown) => {
    if (v !== undefined) body[k] = v;
  };
  put("jwks_url", e.jwksUrl);
  put("jwks", e.jwks);
  put("hs256_secret", e.hs256Secret);
  put("kid", e.kid);
  put("audiences", e.audiences);
  put("principal_claim", e.principalClaim);
  put("grants_claim", e.grantsClaim);
  put("channels", e.channels);
  put("publish", e.publish);
  put("max_lifetime_s", e.maxLifetimeS);
  if (e.preset !== undefined) {
    body.preset =
      e.preset.name === "cognito"
        ? { name: "cognito", client_ids: e.preset.clientIds }
        : {
            name: "supabase",
            ...(e.preset.allowServiceRole !== undefined ? { allow_service_role: e.preset.allowServiceRole } : {}),
          };
  }
  return trusted(await send(options, "PUT", "/issuers", "trustIssuer()", body));
}

/** Stops trusting an issuer. Not trusted: `NotFoundError` (except on a
 * retry, after an attempt that may have removed it). */
export async function untrustIssuer(options: UntrustIssuerOptions): Promise<void> {
  if (!options.issuer) throw new AgentWireError("config", "`issuer` is needed");
  await send(options, "DELETE", `/issuers?iss=${encodeURIComponent(options.issuer)}`, "untrustIssuer()");
}

/** The tenant's revoked principals. */
export async function listRevocations(options: AdminRetryOptions): Promise<Revocation[]> {
  const v = object(await send(options, "GET", "/revocations", "listRevocations()"), "revocations");
  if (!Array.isArray(v.revocations)) throw new ProtocolError("decode", "an answer without `revocations`");
  return v.revocations.map((raw) => {
    const r = object(raw, "revocation");
    return { sub: str(r.sub, "sub"), atMs: num(r.at_ms, "at_ms") };
  });
}

/** Revokes a principal of the tenant: every token of `sub` issued before
 * now is refused, on every path, at once; its live connections are told
 * `token_revoked` and closed before this resolves. */
export async function revoke(options: RevokeOptions): Promise<RevokeResult> {
  if (!options.sub) throw new AgentWireError("config", "`sub` is needed");
  const v = object(await send(options, "POST", "/revocations", "revoke()", { sub: options.sub }), "revocation");
  return {
    sub: str(v.sub, "sub"),
    atMs: num(v.at_ms, "at_ms"),
    closed: num(v.closed, "closed"),
    failed: num(v.failed, "failed"),
  };
}

/** `/webhook`, or `/channels/{channel}/webhook` (the name percent-encoded). */
function webhookPath(channel: string | undefined): string {
  if (channel === undefined) return "/webhook";
  if (typeof channel !== "string" || !channel) throw new AgentWireError("config", "`channel` must be a non-empty name");
  return `/channels/${encodeURIComponent(channel)}/webhook`;
}

/** One management request: the parsed JSON answer (`undefined` for 204).
 * `repeatable`: retried with `retries`; a DELETE answered 404 after an
 * attempt that failed is done (that attempt may have removed it). */
async function send(
  options: AdminRetryOptions,
  method: string,
  path: string,
  what: string,
  body?: Record<string, unknown>,
  repeatable = true,
): Promise<unknown> {
  const retries = repeatable ? retriesOf(options.retries) : 0;
  if (!options.url) throw new AgentWireError("config", "`url` is needed");
  if (!options.token) throw new AgentWireError("config", "`token` is needed");
  const f = fetchOf(options.fetch, what);
  const endpoint = `${options.url.replace(/\/+$/, "")}/v1/admin${path}`;
  const headers: Record<string, string> = { authorization: `Bearer ${options.token}`, accept: "application/json" };
  const init: Parameters<AdminFetch>[1] = { method, headers };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (options.signal) init.signal = options.signal;
  let attempts = 0;
  let text: string;
  try {
    text = await withRetries(retries, options.signal, async () => {
      attempts++;
      try {
        return await call(f, endpoint, init, options.signal);
      } catch (err) {
        throw typed(err);
      }
    });
  } catch (err) {
    if (err instanceof NotFoundError && method === "DELETE" && attempts > 1) return undefined;
    throw err;
  }
  if (!text.trim()) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new ProtocolError("decode", `unreadable answer from ${endpoint}: ${text.slice(0, 200)}`);
  }
}

/** `publishError`'s error, made a `NotFoundError` (404) or a `ConflictError` (409). */
function typed(err: unknown): unknown {
  if (!(err instanceof ProtocolError) || (err.status !== 404 && err.status !== 409)) return err;
  const Class = err.status === 404 ? NotFoundError : ConflictError;
  const code = err.code === "invalid_frame" || err.code === "not_found" ? (err.status === 404 ? "not_found" : "conflict") : err.code;
  return new Class(code, err.message, { status: err.status, cause: err });
}

function webhook(raw: unknown): Webhook {
  const v = object(raw, "webhook");
  const w: Webhook = {
    scope: str(v.scope, "scope") as Webhook["scope"],
    url: str(v.url, "url"),
    mode: str(v.mode, "mode") as WebhookMode,
    updatedAt: num(v.updated_at, "updated_at"),
  };
  if (v.channel != null) w.channel = str(v.channel, "channel");
  if (v.expires_at != null) w.expiresAt = num(v.expires_at, "expires_at");
  if (v.disabled != null) w.disabled = str(v.disabled, "disabled");
  if (v.previous_until != null) w.previousUntil = num(v.previous_until, "previous_until");
  if (v.secret != null) w.secret = str(v.secret, "secret");
  return w;
}

const LIMIT_FIELDS = [
  ["publish_rate", "publishRate"],
  ["publish_burst", "publishBurst"],
  ["channel_publish_rate", "channelPublishRate"],
  ["channel_publish_burst", "channelPublishBurst"],
  ["max_connections", "maxConnections"],
  ["max_channels", "maxChannels"],
  ["connection_action_rate", "connectionActionRate"],
  ["connection_action_burst", "connectionActionBurst"],
  ["read_rate", "readRate"],
  ["read_burst", "readBurst"],
] as const;

function limits(raw: unknown): Limits {
  const v = object(raw ?? {}, "limits");
  const out: Limits = {};
  for (const [wire, name] of LIMIT_FIELDS) {
    if (v[wire] != null) out[name] = num(v[wire], wire);
  }
  if (v.dry_run != null) {
    if (typeof v.dry_run !== "boolean") throw new ProtocolError("decode", `\`dry_run\` is not a boolean: ${JSON.stringify(v.dry_run)}`);
    out.dryRun = v.dry_run;
  }
  return out;
}

function trusted(raw: unknown): TrustedIssuer {
  const v = object(raw, "trust entry");
  const owner = object(v.owner, "owner");
  const k = object(v.keys, "keys");
  let keys: IssuerKeys;
  switch (k.type) {
    case "jwks":
      keys = { type: "jwks", url: str(k.url, "keys.url") };
      break;
    case "inline":
      keys = { type: "inline", jwks: object(k.jwks, "keys.jwks") };
      break;
    case "hs256":
      keys = { type: "hs256", secretB64: str(k.secret_b64, "keys.secret_b64") };
      if (k.kid != null) keys.kid = str(k.kid, "keys.kid");
      break;
    default:
      throw new ProtocolError("decode", `unknown key source: ${JSON.stringify(k.type)}`);
  }
  const t: TrustedIssuer = {
    issuer: str(v.issuer, "issuer"),
    owner: { tenant: typeof owner.tenant === "string" ? owner.tenant : "" },
    keys,
    audiences: strings(v.audiences),
    channels: strings(v.channels),
    publish: strings(v.publish),
  };
  if (v.principal_claim != null) t.principalClaim = str(v.principal_claim, "principal_claim");
  if (v.grants_claim != null) t.grantsClaim = str(v.grants_claim, "grants_claim");
  if (v.max_lifetime_s != null) t.maxLifetimeS = num(v.max_lifetime_s, "max_lifetime_s");
  if (v.preset != null) {
    const p = object(v.preset, "preset");
    if (p.name === "cognito") t.preset = { name: "cognito", clientIds: strings(p.client_ids) };
    else if (p.name === "supabase") t.preset = { name: "supabase", allowServiceRole: p.allow_service_role === true };
    else throw new ProtocolError("decode", `unknown preset: ${JSON.stringify(p.name)}`);
  }
  return t;
}

function nonNegative(v: number, what: string): number {
  if (!Number.isSafeInteger(v) || v < 0) throw new AgentWireError("config", `\`${what}\` must be an integer of 0 or more, not ${String(v)}`);
  return v;
}

function object(v: unknown, what: string): Record<string, unknown> {
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new ProtocolError("decode", `unexpected ${what}: ${JSON.stringify(v)}`);
  return v as Record<string, unknown>;
}

function num(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw new ProtocolError("decode", `\`${what}\` is not a number: ${JSON.stringify(v)}`);
  return v;
}

function str(v: unknown, what: string): string {
  if (typeof v !== "string") throw new ProtocolError("decode", `\`${what}\` is not a string: ${JSON.stringify(v)}`);
  return v;
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.map(String) : [];
}
