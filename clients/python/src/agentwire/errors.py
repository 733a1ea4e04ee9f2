"""What can go wrong, typed. Every error carries the gateway's stable `code`
(`forbidden`, `unauthorized`, `token_expired`, `token_revoked`, `version_unsupported`,
`rate_limited`, ...) when there is one."""

from __future__ import annotations

from typing import Any


class AgentWireError(Exception):
    """The base of every agentwire error."""

    code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        body: Any = None,
        retry_after_ms: int | None = None,
        scope: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status = status
        self.body = body
        #: `rate_limited`: how long to wait before trying again, in ms (the
        #: gateway's `retry_after_ms`, else its `Retry-After` header x 1000).
        self.retry_after_ms = retry_after_ms
        #: `rate_limited`: the limit that was hit (`tenant`, `channel`, `connection`).
        self.scope = scope

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class UnauthorizedError(AgentWireError):
    """The gateway refused the token (`unauthorized`, `token_expired` or
    `token_revoked`). At the upgrade: fatal for a client with a fixed token;
    with a token provider, fatal once a freshly provided token is refused too.
    In answer to an in-band `refresh`: reported (`on_error`), and the client
    reconnects with a token from its provider."""

    code = "unauthorized"


class ProtocolError(AgentWireError):
    """No protocol version in common (`version_unsupported`), or an answer
    this client cannot read."""

    code = "protocol"


class ServerError(AgentWireError):
    """The gateway answered with an error: an `error` frame (for example
    `forbidden` for a join the token does not grant, `too_many_channels`, or
    `rate_limited` with `retry_after_ms`) or an HTTP error of the publish
    route (`forbidden`, `message_too_large`, `rate_limited`, `internal`...)."""

    code = "internal"


class RefusedError(AgentWireError):
    """The gateway refused the connection for a reason a retry cannot fix
    (an HTTP 4xx on the upgrade other than 401/408/429)."""

    code = "refused"


class ExhaustedError(AgentWireError):
    """The reconnect attempts ran out (`max_attempts`)."""

    code = "exhausted"


class ClosedError(AgentWireError):
    """The client is closed: nothing more can be joined, acknowledged or read."""

    code = "closed"


class NotFoundError(ServerError):
    """Nothing is there (HTTP 404 of the management API: no webhook set, an
    issuer not trusted). `code` is the gateway's (`invalid_request`)."""

    code = "not_found"


class ConflictError(ServerError):
    """The change conflicts with what another tenant holds (HTTP 409 of the
    management API: an issuer another tenant trusts). `code` is the
    gateway's (`invalid_request`)."""

    code = "conflict"
