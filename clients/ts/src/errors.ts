/**
 * Typed errors. Every error the client reports is an {@link AgentWireError}
 * with a stable `code` (the gateway's error code when it gave one) and
 * `retryable` (whether trying again can help).
 */

export interface AgentWireErrorOptions {
  retryable?: boolean;
  /** HTTP status, for refusals of the upgrade and `publish` answers. */
  status?: number;
  /** The id of the request an error frame answers. */
  requestId?: string;
  /** The channels a refused request named. */
  channels?: string[];
  /** The gateway's protocol range, for `version_unsupported`. */
  supported?: { min: number; max: number };
  /** `rate_limited`: how long to wait before trying again, ms (the gateway's
   * `retry_after_ms`, else its `Retry-After` header × 1000). */
  retryAfterMs?: number;
  /** `rate_limited`: which limit was hit (`tenant`, `channel`, `connection`). */
  scope?: string;
  cause?: unknown;
}

export class AgentWireError extends Error {
  /** Stable: the gateway's error code, or one of the client's own
   * (`config`, `refused`, `exhausted`, `closed`, `token_provider`, `decode`,
   * `network`). */
  readonly code: string;
  /** Whether trying again (later, or with a fresh token) can help. */
  readonly retryable: boolean;
  readonly status?: number;
  readonly requestId?: string;
  readonly channels?: string[];
  readonly supported?: { min: number; max: number };
  /** `rate_limited`: wait this long (ms) before trying again. */
  readonly retryAfterMs?: number;
  /** `rate_limited`: the limit hit (`tenant`, `channel`, `connection`). */
  readonly scope?: string;

  constructor(code: string, message: string, options: AgentWireErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retryable = options.retryable ?? false;
    if (options.status !== undefined) this.status = options.status;
    if (options.requestId !== undefined) this.requestId = options.requestId;
    if (options.channels !== undefined) this.channels = options.channels;
    if (options.supported !== undefined) this.supported = options.supported;
    if (options.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
    if (options.scope !== undefined) this.scope = options.scope;
  }
}

/** The gateway refused the token (`unauthorized`, `token_expired` or
 * `token_revoked`), at the upgrade or in answer to an in-band `refresh`. */
export class UnauthorizedError extends AgentWireError {
  constructor(message: string, options: AgentWireErrorOptions & { code?: string } = {}) {
    super(options.code ?? "unauthorized", message, options);
  }
}

/** The gateway refused a request or frame (`forbidden`, `invalid_channel`,
 * `invalid_frame`, `version_unsupported`…), or sent one the client cannot read. */
export class ProtocolError extends AgentWireError {}

/** The gateway failed (`internal`, HTTP 5xx): retrying may help. */
export class ServerError extends AgentWireError {
  constructor(code: string, message: string, options: AgentWireErrorOptions = {}) {
    super(code, message, { retryable: true, ...options });
  }
}

/** The JSON error body `{type: "error", code, message}` the gateway answers with. */
export interface ErrorBody {
  type?: string;
  code?: string;
  message?: string;
  supported?: { min: number; max: number };
  id?: string;
  channels?: string[];
  /** `rate_limited` (and other limits): the limit's scope: `tenant`, `channel`, `connection`. */
  scope?: string;
  /** `rate_limited`: how long to wait before trying again, ms. */
  retry_after_ms?: number;
}

/** A usable `retry_after_ms` (a finite, non-negative number), else `undefined`. */
export function retryAfterOf(e: ErrorBody | undefined): number | undefined {
  const v = e?.retry_after_ms;
  return typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : undefined;
}

export function parseErrorBody(text: string): ErrorBody | undefined {
  try {
    const v: unknown = JSON.parse(text);
    if (v && typeof v === "object" && typeof (v as ErrorBody).code === "string") return v as ErrorBody;
  } catch {
    // not JSON
  }
  return undefined;
}

/** Nothing is there (HTTP 404 of the management API: no webhook set, an
 * issuer not trusted). `code` is the gateway's (`invalid_request`). */
export class NotFoundError extends ProtocolError {}

/** The change conflicts with what another tenant holds (HTTP 409 of the
 * management API: an issuer another tenant trusts). `code` is the
 * gateway's (`invalid_request`). */
export class ConflictError extends ProtocolError {}
