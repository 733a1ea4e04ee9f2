"""Managing a tenant over the gateway's HTTP API (`/v1/admin/...`), with a
token that holds the `admin` grant (`agentwire token --admin`, or an
issuer's grants claim); the token's tenant is the one managed:

- `get_limits()`: `GET /v1/admin/limits`, its limits and its connections;
- `get_webhook()`, `set_webhook()`, `clear_webhook()`, `rotate_webhook()`:
  the tenant's default webhook (`/v1/admin/webhook`), or with `channel` one
  channel's own (`/v1/admin/channels/{channel}/webhook`); the signing
  secret is only in the answer that generated it;
- `list_issuers()`, `trust_issuer()`, `untrust_issuer()`: the identity
  providers whose tokens are the tenant's (`/v1/admin/issuers`);
- `list_revocations()`, `revoke()`: refuse a principal's tokens issued
  before now (`/v1/admin/revocations`), its live connections closed.

Errors are typed as the `Publisher`'s: `UnauthorizedError` (401),
`ServerError` with the API's `code` and `status` (403 `forbidden` without
the admin grant, 400 `invalid_request`/`invalid_channel`/`bad_json`, 413,
429, 5xx), `NotFoundError` (404: nothing configured there) and
`ConflictError` (409: an issuer another tenant trusts), both `ServerError`s.
429, 408, 5xx and connection failures are retried like a publish, up to
`max_retries`, on the calls that are safe to repeat; `set_webhook()` and
`rotate_webhook()` are sent once (a repeat could swallow the secret shown
once, or rotate twice).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import httpx

from . import publisher as _publisher
from .errors import AgentWireError, ConflictError, NotFoundError, ProtocolError, ServerError

__all__ = [
    "Admin",
    "IssuerKeys",
    "Limits",
    "Revocation",
    "RevokeResult",
    "TenantLimits",
    "TrustedIssuer",
    "Webhook",
    "WebhookMode",
]

#: When a webhook is called: `fallback` (the channel has no live
#: subscriber), `always` (every event), `off` (kept, not called).
WebhookMode = Literal["fallback", "always", "off"]

_MODES = ("fallback", "always", "off")
_LIMIT_FIELDS = (
    "publish_rate",
    "publish_burst",
    "channel_publish_rate",
    "channel_publish_burst",
    "max_connections",
    "max_channels",
    "connection_action_rate",
    "connection_action_burst",
    "read_rate",
    "read_burst",
)


@dataclass(frozen=True, slots=True)
class Limits:
    """A tenant's limits; None is unlimited (in `own`: the deployment's
    default applies). Rates are a second; a burst left out equals the rate."""

    publish_rate: int | None = None
    publish_burst: int | None = None
    channel_publish_rate: int | None = None
    channel_publish_burst: int | None = None
    max_connections: int | None = None
    max_channels: int | None = None
    connection_action_rate: int | None = None
    connection_action_burst: int | None = None
    #: HTTP reads a second of the whole tenant (history, presence, state).
    read_rate: int | None = None
    read_burst: int | None = None
    #: Count and log what would be refused, refuse nothing.
    dry_run: bool | None = None


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """The tenant's own limits, what applies (its own over the deployment's
    defaults) and its counted connections now."""

    tenant: str
    own: Limits
    effective: Limits
    connections: int
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook as the management API shows it. Times are Unix seconds.
    `secret` (`whsec_...`) only in the answer of the `set_webhook()` that
    generated it (a new URL) or of a `rotate_webhook()`: keep it."""

    #: `channel` (a channel's own) or `tenant` (the tenant's default).
    scope: str
    url: str
    mode: str
    updated_at: int
    channel: str | None = None
    expires_at: int | None = None
    #: Why deliveries stopped (a receiver answered 410).
    disabled: str | None = None
    #: Until when the secret before the last rotation still signs.
    previous_until: int | None = None
    secret: str | None = field(default=None, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class IssuerKeys:
    """Where a trusted issuer's keys are: `type` `jwks` (`url`), `inline`
    (`jwks`, a JWKS document) or `hs256` (`kid`; `secret_b64` is always
    `<stored>`, never the secret)."""

    type: str
    url: str | None = None
    jwks: dict[str, Any] | None = None
    kid: str | None = None
    secret_b64: str | None = None


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    """A trusted issuer, as saved (docs/identity.md)."""

    issuer: str
    #: The tenant whose tokens it signs.
    tenant: str
    keys: IssuerKeys
    audiences: list[str]
    channels: list[str]
    publish: list[str]
    principal_claim: str | None = None
    grants_claim: str | None = None
    max_lifetime_s: int | None = None
    #: `{"name": "supabase", "allow_service_role": bool}` or
    #: `{"name": "cognito", "client_ids": [...]}`.
    preset: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Revocation:
    """A revoked principal: its tokens issued before `at_ms` (Unix ms) are refused."""

    sub: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class RevokeResult:
    """A revocation made: `closed` live connections were told
    `token_revoked` and closed; `failed` could not be closed now (they are
    refused at their next join, ack or refresh)."""

    sub: str
    at_ms: int
    closed: int
    failed: int
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _webhook_path(channel: str | None) -> str:
    if channel is None:
        return "/webhook"
    if not isinstance(channel, str) or not channel:
        raise ValueError("channel must be a non-empty name (or None for the tenant's default)")
    return f"/channels/{quote(channel, safe='')}/webhook"


def _non_negative(v: object, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{what} must be an integer of 0 or more, not {v!r}")
    return v


def _opt(v: Any, kind: type, what: str) -> Any:
    if v is None:
        return None
    if kind is int:
        return _publisher._int(v, what)
    if not isinstance(v, kind):
        raise ProtocolError(f"`{what}` is not a {kind.__name__}: {v!r:.100}", code="decode")
    return v


def _req_str(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise ProtocolError(f"`{what}` is not a string: {v!r:.100}", code="decode")
    return v


def _obj(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ProtocolError(f"unexpected {what}: {v!r:.200}", code="decode")
    return v


def _strings(v: Any) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else []


def _limits(raw: Any) -> Limits:
    v = _obj({} if raw is None else raw, "limits")
    ints = {k: _opt(v.get(k), int, k) for k in _LIMIT_FIELDS}
    return Limits(**ints, dry_run=_opt(v.get("dry_run"), bool, "dry_run"))


def _webhook(body: dict[str, Any]) -> Webhook:
    return Webhook(
        scope=_req_str(body.get("scope"), "scope"),
        url=_req_str(body.get("url"), "url"),
        mode=_req_str(body.get("mode"), "mode"),
        updated_at=_publisher._int(body.get("updated_at"), "updated_at"),
        channel=_opt(body.get("channel"), str, "channel"),
        expires_at=_opt(body.get("expires_at"), int, "expires_at"),
        disabled=_opt(body.get("disabled"), str, "disabled"),
        previous_until=_opt(body.get("previous_until"), int, "previous_until"),
        secret=_opt(body.get("secret"), str, "secret"),
        raw=body,
    )


def _trusted(raw: Any) -> TrustedIssuer:
    v = _obj(raw, "trust entry")
    owner = _obj(v.get("owner"), "owner")
    k = _obj(v.get("keys"), "keys")
    kind = k.get("type")
    if kind == "jwks":
        keys = IssuerKeys("jwks", url=_req_str(k.get("url"), "keys.url"))
    elif kind == "inline":
        keys = IssuerKeys("inline", jwks=_obj(k.get("jwks"), "keys.jwks"))
    elif kind == "hs256":
        keys = IssuerKeys(
            "hs256",
            kid=_opt(k.get("kid"), str, "keys.kid"),
            secret_b64=_req_str(k.get("secret_b64"), "keys.secret_b64"),
        )
    else:
        raise ProtocolError(f"unknown key source: {kind!r:.100}", code="decode")
    preset = v.get("preset")
    return TrustedIssuer(
        issuer=_req_str(v.get("issuer"), "issuer"),
        tenant=_publisher._str(owner.get("tenant"), ""),
        keys=keys,
        audiences=_strings(v.get("audiences")),
        channels=_strings(v.get("channels")),
        publish=_strings(v.get("publish")),
        principal_claim=_opt(v.get("principal_claim"), str, "principal_claim"),
        grants_claim=_opt(v.get("grants_claim"), str, "grants_claim"),
        max_lifetime_s=_opt(v.get("max_lifetime_s"), int, "max_lifetime_s"),
        preset=None if preset is None else _obj(preset, "preset"),
        raw=v,
    )


def _typed(failure: AgentWireError) -> AgentWireError:
    """The `Publisher`'s error for an answer, made a `NotFoundError` (404)
    or a `ConflictError` (409)."""
    if failure.status not in (404, 409) or isinstance(failure, (NotFoundError, ConflictError)):
        return failure
    cls = NotFoundError if failure.status == 404 else ConflictError
    code = failure.code if isinstance(failure.body, dict) and isinstance(failure.body.get("code"), str) else None
    return cls(failure.message, code=code, status=failure.status, body=failure.body)


class Admin:
    """Manages the tenant of its token (which needs the `admin` grant).

    ```python
    async with Admin("https://...", token=admin_token) as admin:
        hook = await admin.set_webhook("https://hooks.example.com/aw", channel="agent-1")
        store_secret(hook.secret)          # shown this once
        await admin.revoke("user-42")       # its live connections closed
    ```

    `url` is the HTTP API's base URL (as the `Publisher`'s); `http` an
    `httpx.AsyncClient` of your own (not closed by `aclose`).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str,
        timeout: float = 10.0,
        max_retries: int = 4,
        min_retry_delay: float = 0.2,
        max_retry_delay: float = 5.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if not url:
            raise ValueError("the API's base URL is needed")
        self.url = url
        self._token = token
        self._max_retries = max_retries
        self._min_retry_delay = min_retry_delay
        self._max_retry_delay = max_retry_delay
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> Admin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def get_limits(self) -> TenantLimits:
        """The tenant's own limits, what applies, and its connections now."""
        body = await self._json("GET", "/limits", "limits")
        usage = _obj(body.get("usage"), "usage")
        return TenantLimits(
            tenant=_req_str(body.get("tenant"), "tenant"),
            own=_limits(body.get("own")),
            effective=_limits(body.get("effective")),
            connections=_publisher._int(usage.get("connections"), "usage.connections"),
            raw=body,
        )

    async def get_webhook(self, channel: str | None = None) -> Webhook:
        """The tenant's default webhook, or `channel`'s own; never its
        secret. None set: `NotFoundError`."""
        return _webhook(await self._json("GET", _webhook_path(channel), "webhook"))

    async def set_webhook(
        self,
        url: str,
        *,
        channel: str | None = None,
        mode: WebhookMode | None = None,
        ttl_s: int | None = None,
    ) -> Webhook:
        """Sets the tenant's default webhook, or `channel`'s own, to `url`
        (https, public addresses only, else `ServerError` 400). A new URL
        gets a new signing secret, in `secret` of this answer only; the same
        URL again keeps its secret (`secret` None). `ttl_s`: it lapses after
        so many seconds. Sent once, never retried."""
        if not isinstance(url, str) or not url:
            raise ValueError("the webhook's URL is needed")
        body: dict[str, Any] = {"url": url}
        if mode is not None:
            if mode not in _MODES:
                raise ValueError(f"mode must be one of {', '.join(_MODES)}, not {mode!r}")
            body["mode"] = mode
        if ttl_s is not None:
            body["ttl_s"] = _non_negative(ttl_s, "ttl_s")
        return _webhook(await self._json("PUT", _webhook_path(channel), "webhook", body=body, repeatable=False))

    async def clear_webhook(self, channel: str | None = None) -> None:
        """Removes the tenant's default webhook, or `channel`'s own, and its
        secrets. None set: `NotFoundError` (except on a retry, after an
        attempt that may have removed it)."""
        await self._send("DELETE", _webhook_path(channel))

    async def rotate_webhook(self, channel: str | None = None, *, overlap_s: int | None = None) -> Webhook:
        """A new signing secret for the tenant's default webhook (or
        `channel`'s own), in `secret` of this answer only; the previous one
        keeps signing until `previous_until` (`overlap_s`, default a day).
        None set: `NotFoundError`. Sent once, never retried."""
        body: dict[str, Any] = {}
        if overlap_s is not None:
            body["overlap_s"] = _non_negative(overlap_s, "overlap_s")
        path = _webhook_path(channel) + ":rotate"
        return _webhook(await self._json("POST", path, "webhook", body=body, repeatable=False))

    async def list_issuers(self) -> list[TrustedIssuer]:
        """The identity providers whose tokens are the tenant's."""
        body = await self._json("GET", "/issuers", "issuers")
        issuers = body.get("issuers")
        if not isinstance(issuers, list):
            raise ProtocolError(f"an answer without `issuers`: {body!r:.200}", code="decode")
        return [_trusted(i) for i in issuers]

    async def trust_issuer(
        self,
        issuer: str,
        *,
        jwks_url: str | None = None,
        jwks: Mapping[str, Any] | None = None,
        hs256_secret: str | None = None,
        kid: str | None = None,
        audiences: Sequence[str] | None = None,
        principal_claim: str | None = None,
        grants_claim: str | None = None,
        channels: Sequence[str] | None = None,
        publish: Sequence[str] | None = None,
        max_lifetime_s: int | None = None,
        preset: Mapping[str, Any] | None = None,
    ) -> TrustedIssuer:
        """Trusts an identity provider for the tenant (or replaces its
        entry); returns the entry as saved. Exactly one of `jwks_url` (https),
        `jwks` (a JWKS document inline) and `hs256_secret` (base64, at least
        32 bytes) is needed, else `ValueError` before sending. `channels`
        and `publish` are patterns granted to its tokens (`{sub}` for the
        principal); `preset` `{"name": "supabase", "allow_service_role":
        False}` or `{"name": "cognito", "client_ids": [...]}`. A JWKS URL at
        a private address or a malformed entry: `ServerError` 400; an issuer
        another tenant trusts: `ConflictError`."""
        if not isinstance(issuer, str) or not issuer:
            raise ValueError("the issuer is needed")
        if sum(k is not None for k in (jwks_url, jwks, hs256_secret)) != 1:
            raise ValueError("give exactly one of jwks_url, jwks and hs256_secret")
        body: dict[str, Any] = {"issuer": issuer}
        for name, value in (
            ("jwks_url", jwks_url),
            ("jwks", None if jwks is None else dict(jwks)),
            ("hs256_secret", hs256_secret),
            ("kid", kid),
            ("principal_claim", principal_claim),
            ("grants_claim", grants_claim),
            ("preset", None if preset is None else dict(preset)),
        ):
            if value is not None:
                body[name] = value
        for name, values in (("audiences", audiences), ("channels", channels), ("publish", publish)):
            if values is not None:
                if isinstance(values, str):
                    raise ValueError(f"{name} must be a sequence of strings, not a string")
                body[name] = list(values)
        if max_lifetime_s is not None:
            body["max_lifetime_s"] = _non_negative(max_lifetime_s, "max_lifetime_s")
        return _trusted(await self._json("PUT", "/issuers", "trust entry", body=body))

    async def untrust_issuer(self, issuer: str) -> None:
        """Stops trusting `issuer`. Not trusted: `NotFoundError` (except on
        a retry, after an attempt that may have removed it)."""
        if not isinstance(issuer, str) or not issuer:
            raise ValueError("the issuer is needed")
        await self._send("DELETE", "/issuers", params={"iss": issuer})

    async def list_revocations(self) -> list[Revocation]:
        """The tenant's revoked principals."""
        body = await self._json("GET", "/revocations", "revocations")
        items = body.get("revocations")
        if not isinstance(items, list):
            raise ProtocolError(f"an answer without `revocations`: {body!r:.200}", code="decode")
        out: list[Revocation] = []
        for raw in items:
            r = _obj(raw, "revocation")
            out.append(Revocation(_req_str(r.get("sub"), "sub"), _publisher._int(r.get("at_ms"), "at_ms")))
        return out

    async def revoke(self, sub: str) -> RevokeResult:
        """Revokes a principal of the tenant: every token of `sub` issued
        before now is refused, on every path, at once; its live connections
        are told `token_revoked` and closed before this returns."""
        if not isinstance(sub, str) or not sub:
            raise ValueError("the principal (sub) is needed")
        body = await self._json("POST", "/revocations", "revocation", body={"sub": sub})
        return RevokeResult(
            sub=_req_str(body.get("sub"), "sub"),
            at_ms=_publisher._int(body.get("at_ms"), "at_ms"),
            closed=_publisher._int(body.get("closed"), "closed"),
            failed=_publisher._int(body.get("failed"), "failed"),
            raw=body,
        )

    async def _json(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: dict[str, Any] | None = None,
        repeatable: bool = True,
    ) -> dict[str, Any]:
        resp = await self._send(method, path, body=body, repeatable=repeatable)
        if resp is None:
            raise ProtocolError(f"no answer body for a {what}", code="decode")
        return _publisher._json_object(resp, what)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        repeatable: bool = True,
    ) -> httpx.Response | None:
        """One request: the 2xx answer, else the typed error. `repeatable`:
        retried like a publish; a DELETE answered 404 after an attempt that
        failed is done (None: that attempt may have removed it)."""
        url = f"{_publisher._api_base(self.url)}/v1/admin{path}"
        headers = {
            "authorization": f"Bearer {self._token}",
            "accept": "application/json",
            "user-agent": _publisher._USER_AGENT,
        }
        content: bytes | None = None
        if body is not None:
            headers["content-type"] = "application/json"
            content = json.dumps(body, separators=(",", ":")).encode()
        retry = _publisher._Retry(
            self._max_retries if repeatable else 0, self._min_retry_delay, self._max_retry_delay
        )
        attempts = 0
        while True:
            attempts += 1
            resp: httpx.Response | None = None
            try:
                resp = await self._http.request(method, url, headers=headers, content=content, params=params)
                unreachable = None
            except httpx.TransportError as e:
                unreachable = e
            if resp is not None and 200 <= resp.status_code < 300:
                return resp
            if resp is None:
                failure: AgentWireError = ServerError(f"cannot reach the gateway: {unreachable!r}", code="unavailable")
            else:
                failure = _typed(_publisher._error(resp))
                if isinstance(failure, NotFoundError) and method == "DELETE" and attempts > 1:
                    return None
                if resp.status_code not in _publisher._RETRY_STATUS:
                    raise failure
            delay = retry.next_delay(failure)
            if delay is None:
                raise failure
            await _publisher._sleep(delay)
