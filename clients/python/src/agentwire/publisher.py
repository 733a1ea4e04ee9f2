"""Publishing over the gateway's HTTP route `POST /v1/channels/{channel}/events`,
for agents that hold a token (with a `publish` grant) and no AWS credentials.

Every publish carries an `Idempotency-Key` (one is generated when none is
given), so a retry can never publish twice: only what is safe is retried
(429, 5xx, connection errors and time-outs), with full-jitter backoff, and
never sooner than the gateway's `retry_after_ms` (or `Retry-After`) says.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx

from . import __version__
from ._backoff import Backoff
from ._types import PublishResult
from .errors import AgentWireError, ProtocolError, ServerError, UnauthorizedError

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_USER_AGENT = f"agentwire-python/{__version__}"
# The waits between attempts (replaced in tests).
_sleep = asyncio.sleep
_sleep_sync = time.sleep


def _events_url(base: str, channel: str) -> str:
    base = base.rstrip("/")
    if "{channel}" in base:
        return base.replace("{channel}", quote(channel, safe=""))
    return f"{base}/v1/channels/{quote(channel, safe='')}/events"


def _request(token: str, kind: str, data: Any, key: str) -> tuple[dict[str, str], bytes]:
    headers = {
        "authorization": f"Bearer {token}",
        "idempotency-key": key,
        "content-type": "application/json",
        "user-agent": _USER_AGENT,
    }
    body = json.dumps({"kind": kind, "data": data}, separators=(",", ":")).encode()
    return headers, body


def _error(resp: httpx.Response) -> AgentWireError:
    status = resp.status_code
    parsed: Any = None
    code: str | None = None
    scope: str | None = None
    retry_after_ms: int | None = None
    message = resp.text.strip()[:300]
    try:
        parsed = resp.json()
        if isinstance(parsed, dict):
            code = parsed.get("code")
            message = str(parsed.get("message", message))
            if isinstance(parsed.get("scope"), str):
                scope = parsed["scope"]
            ms = parsed.get("retry_after_ms")
            if isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms >= 0:
                retry_after_ms = int(ms)
    except ValueError:
        pass
    if retry_after_ms is None:
        seconds = _retry_after(resp)
        if seconds is not None:
            retry_after_ms = round(seconds * 1000)
    if status == 401:
        return UnauthorizedError(message, code=code or "unauthorized", status=status, body=parsed)
    if code is None:
        code = "rate_limited" if status == 429 else "internal" if status >= 500 else f"http_{status}"
    return ServerError(
        message or f"HTTP {status}",
        code=code,
        status=status,
        body=parsed,
        retry_after_ms=retry_after_ms,
        scope=scope,
    )


def _result(resp: httpx.Response, channel: str, key: str) -> PublishResult:
    try:
        body = resp.json()
    except ValueError as e:
        raise ProtocolError(f"unreadable answer to a publish (HTTP {resp.status_code}): {e}", code="decode") from e
    if not isinstance(body, dict):
        raise ProtocolError(f"unexpected answer to a publish: {body!r}", code="decode")
    return PublishResult(
        id=str(body.get("id", key)),
        channel=str(body.get("channel", channel)),
        status=resp.status_code,
        raw=body,
    )


def _retry_after(resp: httpx.Response | None) -> float | None:
    if resp is None:
        return None
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class _Retry:
    """Full-jitter delays between attempts (the client's reconnect
    schedule), at most `retries` retries, and never shorter than the
    failure's `retry_after_ms` (the body's, else `Retry-After` x 1000)."""

    def __init__(self, retries: int, min_delay: float, max_delay: float) -> None:
        self._backoff = Backoff(min_delay, max_delay, max_attempts=retries)

    def next_delay(self, failure: AgentWireError) -> float | None:
        delay = self._backoff.next_delay(random.random())
        if delay is None:
            return None
        if failure.retry_after_ms is not None:
            delay = max(delay, failure.retry_after_ms / 1000)
        return delay


class Publisher:
    """Publishes events over HTTP.

    ```python
    async with Publisher("https://…", token="…") as p:
        r = await p.publish("agent-1", kind="final", data={"text": "done"},
                            idempotency_key="run-7/final")
    ```

    `url` is the HTTP API's base URL (the publish route is
    `{url}/v1/channels/{channel}/events`), or the route itself with
    `{channel}` in it.
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
        self.url = url
        self._token = token
        self._timeout = timeout
        self._max_retries = max_retries
        self._min_retry_delay = min_retry_delay
        self._max_retry_delay = max_retry_delay
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def publish(
        self,
        channel: str,
        *,
        kind: str,
        data: Any = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        """Publishes one event; returns its id and channel once the gateway
        took it (HTTP 202). Raises `UnauthorizedError`, `ServerError` (with the
        API's `code`: `forbidden`, `message_too_large`, `rate_limited` (with
        `retry_after_ms` and `scope`), `internal`...) or `ProtocolError`.
        429, 408, 5xx and connection failures are retried up to `max_retries`
        times, each after max(a full-jitter backoff, the answer's
        `retry_after_ms`)."""
        key = idempotency_key or str(uuid.uuid4())
        headers, body = _request(self._token, kind, data, key)
        url = _events_url(self.url, channel)
        retry = _Retry(self._max_retries, self._min_retry_delay, self._max_retry_delay)
        while True:
            resp: httpx.Response | None = None
            try:
                resp = await self._http.post(url, headers=headers, content=body)
                unreachable = None
            except httpx.TransportError as e:
                unreachable = e
            outcome = _settle(resp, unreachable, channel, key)
            if isinstance(outcome, PublishResult):
                return outcome
            delay = retry.next_delay(outcome)
            if delay is None:
                raise outcome
            await _sleep(delay)


def _settle(
    resp: httpx.Response | None,
    unreachable: httpx.TransportError | None,
    channel: str,
    key: str,
) -> PublishResult | AgentWireError:
    """What one attempt came to: the result, or the failure worth a retry
    (a failure that is not worth one is raised here)."""
    if resp is None:
        return ServerError(f"cannot reach the gateway: {unreachable!r}", code="unavailable")
    if 200 <= resp.status_code < 300:
        return _result(resp, channel, key)
    failure = _error(resp)
    if resp.status_code not in _RETRY_STATUS:
        raise failure
    return failure


def publish_sync(
    url: str,
    *,
    token: str,
    channel: str,
    kind: str,
    data: Any = None,
    idempotency_key: str | None = None,
    timeout: float = 10.0,
    max_retries: int = 4,
    min_retry_delay: float = 0.2,
    max_retry_delay: float = 5.0,
) -> PublishResult:
    """`Publisher.publish` for synchronous code (a cron job, a script): one
    call, same retries and errors."""
    key = idempotency_key or str(uuid.uuid4())
    headers, body = _request(token, kind, data, key)
    target = _events_url(url, channel)
    retry = _Retry(max_retries, min_retry_delay, max_retry_delay)
    with httpx.Client(timeout=timeout) as http:
        while True:
            resp: httpx.Response | None = None
            try:
                resp = http.post(target, headers=headers, content=body)
                unreachable = None
            except httpx.TransportError as e:
                unreachable = e
            outcome = _settle(resp, unreachable, channel, key)
            if isinstance(outcome, PublishResult):
                return outcome
            delay = retry.next_delay(outcome)
            if delay is None:
                raise outcome
            _sleep_sync(delay)
