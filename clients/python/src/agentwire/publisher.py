"""Publishing over the gateway's HTTP route `POST /v1/channels/{channel}/events`,
for agents that hold a token (with a `publish` grant) and no AWS credentials;
a batch of up to ten events (`POST .../events:batch`); and reading a channel
with a token that holds a `channels` grant for it: its history in pages
(`GET .../events?after=&limit=`), its presence (`GET .../presence`) and its
state (`GET /v1/channels/{channel}`).

Every publish carries an `Idempotency-Key` (one is generated when none is
given), so a retry can never publish twice: only what is safe is retried
(429, 5xx, connection errors and time-outs), with full-jitter backoff, and
never sooner than the gateway's `retry_after_ms` (or `Retry-After`) says.

A publish is taken with any 2xx: 201 committed now (the answer carries each
event's `seq` and `epoch`), 200 a repeat (every idempotency key was already
committed: the seqs they have), 202 queued (the gateway could not commit at
once and put the events on its queue: committed shortly, no seq yet).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from . import __version__
from ._backoff import Backoff
from ._types import (
    BatchEvent,
    BatchResult,
    ChannelInfo,
    Event,
    Gap,
    HistoryPage,
    Presence,
    PublishedEvent,
    PublishResult,
    WebhookInfo,
)
from .errors import AgentWireError, ProtocolError, ServerError, UnauthorizedError

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: The most events one batch request carries.
MAX_BATCH_EVENTS = 10
#: The most events one history page holds.
MAX_HISTORY_LIMIT = 1000
#: The page size when none is given (the gateway's default too).
DEFAULT_HISTORY_LIMIT = 100
_USER_AGENT = f"agentwire-python/{__version__}"
# The waits between attempts (replaced in tests).
_sleep = asyncio.sleep
_sleep_sync = time.sleep


def _events_url(base: str, channel: str) -> str:
    base = base.rstrip("/")
    if "{channel}" in base:
        return base.replace("{channel}", quote(channel, safe=""))
    return f"{base}/v1/channels/{quote(channel, safe='')}/events"


def _api_base(url: str) -> str:
    """The API's base URL: `url`, or, for a publish route template
    (`https://.../v1/channels/{channel}/events`), what comes before it."""
    base = url.rstrip("/")
    if "{channel}" in base:
        cut = base.find("/v1/channels/{channel}")
        if cut < 0:
            raise ValueError(f"reading a channel needs the API's base URL, not {url!r}")
        base = base[:cut]
    return base


def _channel_url(base: str, channel: str) -> str:
    if not channel:
        raise ValueError("a channel name is needed")
    return f"{_api_base(base)}/v1/channels/{quote(channel, safe='')}"


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_page(after: int, limit: int) -> None:
    """What the gateway would refuse with 400 `invalid_request`, refused here."""
    if not _is_int(after) or after < 0:
        raise ValueError(f"after must be an integer of 0 or more, not {after!r}")
    if not _is_int(limit) or not 1 <= limit <= MAX_HISTORY_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_HISTORY_LIMIT}, not {limit!r}")


def _batch_body(events: Sequence[BatchEvent | Mapping[str, Any]], *, ids: bool) -> bytes:
    """The batch request's body; with `ids`, every event carries one (a
    generated one when it has none), so that a retry commits each once."""
    if isinstance(events, (str, bytes)) or not isinstance(events, Sequence):
        raise ValueError("events must be a sequence of {kind, data, id} mappings")
    if not 1 <= len(events) <= MAX_BATCH_EVENTS:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH_EVENTS} events, not {len(events)}")
    out: list[dict[str, Any]] = []
    for i, e in enumerate(events):
        if not isinstance(e, Mapping):
            raise ValueError(f"event {i}: a mapping with `kind`, `data` and `id` is needed, not {e!r}")
        kind = e.get("kind")
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"event {i}: `kind` is needed")
        unknown = set(e) - {"kind", "data", "id"}
        if unknown:
            raise ValueError(f"event {i}: unknown fields {sorted(unknown)}")
        item: dict[str, Any] = {"kind": kind, "data": e.get("data")}
        eid = e.get("id")
        if eid is not None:
            if not isinstance(eid, str):
                raise ValueError(f"event {i}: `id` must be a string")
            item["id"] = eid
        elif ids:
            item["id"] = str(uuid.uuid4())
        out.append(item)
    return _json_body({"events": out})


def _json_body(value: Any) -> bytes:
    """A request body: compact JSON in UTF-8. Not ASCII-escaped: the
    gateway's body limit counts the bytes sent, and an escape (`\\u00e9`, 6
    bytes for a 2-byte character) makes chunks sized to fit (as UTF-8)
    too large together. A string with a lone surrogate (no UTF-8 for it) is
    sent escaped, for the gateway to refuse."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()


def _json_object(resp: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError as e:
        raise ProtocolError(f"unreadable {what} (HTTP {resp.status_code}): {e}", code="decode") from e
    if not isinstance(body, dict):
        raise ProtocolError(f"unexpected {what}: {body!r:.200}", code="decode")
    return body


def _int(v: Any, what: str) -> int:
    if not _is_int(v):
        raise ProtocolError(f"`{what}` is not an integer: {v!r:.100}", code="decode")
    return int(v)


def _opt_int(v: Any, what: str) -> int | None:
    return None if v is None else _int(v, what)


def _str(v: Any, default: str) -> str:
    return v if isinstance(v, str) else default


def _seq(v: Any) -> int | None:
    """A committed event's seq, or None: an answer to a publish that was
    taken never fails over what it carries (the answer is in `raw`)."""
    return int(v) if _is_int(v) and v >= 0 else None


def _epoch(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _queued(body: dict[str, Any], status: int, committed: bool) -> bool:
    """On the gateway's queue: `queued: true`, or a 202 without what a
    commit carries (a gateway from before 201 answered only that)."""
    return body.get("queued") is True or (status == 202 and not committed)


def _published_events(v: Any, ids: list[str]) -> list[PublishedEvent] | None:
    """A batch answer's `events` (id, seq, epoch, in the request's order);
    None when absent or not a list of objects."""
    if not isinstance(v, list) or not all(isinstance(e, dict) for e in v):
        return None
    return [
        PublishedEvent(
            id=_str(e.get("id"), ids[i] if i < len(ids) else ""),
            seq=_seq(e.get("seq")),
            epoch=_epoch(e.get("epoch")),
        )
        for i, e in enumerate(v)
    ]


def _page(body: dict[str, Any], channel: str) -> HistoryPage:
    name = _str(body.get("channel"), channel)
    epoch = _str(body.get("epoch"), "")
    raw_events = body.get("events")
    if not isinstance(raw_events, list):
        raise ProtocolError(f"a history page without `events`: {body!r:.200}", code="decode")
    events: list[Event] = []
    for e in raw_events:
        if not isinstance(e, dict):
            raise ProtocolError(f"unexpected history event: {e!r:.200}", code="decode")
        events.append(
            Event(
                channel=name,
                epoch=epoch,
                seq=_int(e.get("seq"), "seq"),
                id=_str(e.get("id"), ""),
                kind=_str(e.get("kind"), ""),
                data=e.get("data"),
                ts=_str(e.get("ts"), ""),
            )
        )
    gap: Gap | None = None
    g = body.get("gap")
    if g is not None:
        if not isinstance(g, dict):
            raise ProtocolError(f"unexpected gap: {g!r:.200}", code="decode")
        gap = Gap(name, _int(g.get("from"), "gap.from"), _int(g.get("to"), "gap.to"))
    return HistoryPage(
        channel=name,
        epoch=epoch,
        head=_int(body.get("head"), "head"),
        oldest=_opt_int(body.get("oldest"), "oldest"),
        events=events,
        gap=gap,
        next_after=_opt_int(body.get("next_after"), "next_after"),
        raw=body,
    )


def _request(token: str, kind: str, data: Any, key: str) -> tuple[dict[str, str], bytes]:
    headers = {
        "authorization": f"Bearer {token}",
        "idempotency-key": key,
        "content-type": "application/json",
        "user-agent": _USER_AGENT,
    }
    body = _json_body({"kind": kind, "data": data})
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
    seq = _seq(body.get("seq"))
    return PublishResult(
        id=str(body.get("id", key)),
        channel=str(body.get("channel", channel)),
        status=resp.status_code,
        raw=body,
        seq=seq,
        epoch=_epoch(body.get("epoch")),
        queued=_queued(body, resp.status_code, seq is not None),
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
        if not r.queued:
            print(r.status, r.seq, r.epoch)   # 201 (new) or 200 (a repeat)
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
        took it (any 2xx), and what became of it: `status` 201, committed
        now, with its `seq` and `epoch`; 200, its idempotency key was already
        committed (nothing new was published; `seq` and `epoch` are the ones
        it has; a retry of a publish whose answer was lost gets this too);
        202, `queued` on the gateway (committed shortly, `seq` None).
        Raises `UnauthorizedError`, `ServerError` (with the
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


    async def publish_batch(
        self, channel: str, events: Sequence[BatchEvent | Mapping[str, Any]]
    ) -> BatchResult:
        """Publishes 1 to 10 events in one request (`POST
        .../events:batch`), all or nothing: one invalid event (`ServerError`
        `invalid_event`, its index in the message) or the batch over a rate
        (`rate_limited`) and none is taken. Each event is a mapping
        `{"kind": ..., "data": ..., "id": ...}` (`data` and `id` optional;
        `id` is its idempotency key). Returns the ids in the request's order
        once the gateway took them (any 2xx), and what became of them:
        `status` 201, committed now, `events` each one's id, `seq` and
        `epoch` in the request's order (an event whose id was committed
        before keeps its seq); 200, every id was already committed (nothing
        new; `events` the seqs they have); 202, `queued` on the gateway, in
        order (committed shortly, `events` None).

        Retried like `publish`: with `max_retries`, every event without an
        `id` is given one first, so a retry commits each event once. A batch
        that is empty, of more than ten events, or with an event without a
        `kind` raises `ValueError` before anything is sent."""
        body = _batch_body(events, ids=self._max_retries > 0)
        headers = {
            "authorization": f"Bearer {self._token}",
            "content-type": "application/json",
            "user-agent": _USER_AGENT,
        }
        resp = await self._send("POST", _channel_url(self.url, channel) + "/events:batch", headers, content=body)
        answer = _json_object(resp, "answer to a batch publish")
        raw_ids = answer.get("ids")
        if not isinstance(raw_ids, list):
            raise ProtocolError(f"a batch answer without `ids`: {answer!r:.200}", code="decode")
        ids = [str(i) for i in raw_ids]
        published = _published_events(answer.get("events"), ids)
        return BatchResult(
            channel=_str(answer.get("channel"), channel),
            ids=ids,
            status=resp.status_code,
            raw=answer,
            events=published,
            queued=_queued(answer, resp.status_code, published is not None),
        )

    async def history(
        self, channel: str, *, after: int = 0, limit: int = DEFAULT_HISTORY_LIMIT
    ) -> HistoryPage:
        """One page of the channel's history (needs a `channels` grant): the
        retained events with a seq greater than `after`, ascending, at most
        `limit` (1 to 1000), each an `Event`; `gap` when the range after
        `after` starts before the oldest retained event; `next_after`, the
        `after` of the next page (None when this page reaches the head). A
        channel with no event yet is an empty page (head 0), not an error.

        `after` < 0 or `limit` outside 1..=1000 raises `ValueError` before
        sending. Refusals raise as `publish` does (`UnauthorizedError`,
        `ServerError` with `forbidden`, `invalid_channel`,
        `invalid_request`, `rate_limited`...); 429, 408, 5xx and connection
        failures are retried up to `max_retries` times."""
        _check_page(after, limit)
        resp = await self._send(
            "GET",
            _channel_url(self.url, channel) + "/events",
            self._read_headers(),
            params={"after": str(after), "limit": str(limit)},
        )
        return _page(_json_object(resp, "history page"), channel)

    async def history_pages(
        self, channel: str, *, after: int = 0, limit: int = DEFAULT_HISTORY_LIMIT
    ) -> AsyncIterator[HistoryPage]:
        """The channel's history page by page from `after`, following
        `next_after` until a page reaches the head (the last page has
        `next_after` None).

        ```python
        async for page in p.history_pages("agent-1", limit=500):
            if page.gap:
                print("expired:", page.gap.from_seq, page.gap.to_seq)
            for event in page.events:
                ...
        ```
        """
        _check_page(after, limit)
        while True:
            page = await self.history(channel, after=after, limit=limit)
            yield page
            if page.next_after is None:
                return
            if page.next_after <= after:
                raise ProtocolError(
                    f"history page after {after} gave next_after {page.next_after}: not going forward",
                    code="decode",
                )
            after = page.next_after

    async def presence(self, channel: str) -> Presence:
        """Who is on the channel (needs a `channels` grant): the number of
        connections that joined it and a sample of their principals."""
        resp = await self._send("GET", _channel_url(self.url, channel) + "/presence", self._read_headers())
        body = _json_object(resp, "presence")
        principals = body.get("principals")
        return Presence(
            channel=_str(body.get("channel"), channel),
            count=_int(body.get("count"), "count"),
            principals=[str(p) for p in principals] if isinstance(principals, list) else [],
            raw=body,
        )

    async def channel(self, channel: str) -> ChannelInfo:
        """The channel's state (needs a `channels` grant): its epoch, head,
        oldest retained seq, retention in seconds and the webhook mode that
        applies (None when none does; never its URL or secret)."""
        resp = await self._send("GET", _channel_url(self.url, channel), self._read_headers())
        body = _json_object(resp, "channel state")
        w = body.get("webhook")
        webhook = (
            WebhookInfo(mode=str(w.get("mode", "")), scope=str(w.get("scope", ""))) if isinstance(w, dict) else None
        )
        return ChannelInfo(
            channel=_str(body.get("channel"), channel),
            epoch=_str(body.get("epoch"), ""),
            head=_int(body.get("head"), "head"),
            oldest=_opt_int(body.get("oldest"), "oldest"),
            retention_s=_int(body.get("retention_s"), "retention_s"),
            webhook=webhook,
            raw=body,
        )

    def _read_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._token}", "accept": "application/json", "user-agent": _USER_AGENT}

    async def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request, retried as `publish` is; the 2xx answer, else the
        typed error (only a request safe to repeat comes here)."""
        retry = _Retry(self._max_retries, self._min_retry_delay, self._max_retry_delay)
        while True:
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
                failure = _error(resp)
                if resp.status_code not in _RETRY_STATUS:
                    raise failure
            delay = retry.next_delay(failure)
            if delay is None:
                raise failure
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
