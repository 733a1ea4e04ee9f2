"""The connection loop behind `Client` (as `clients/rust/src/driver.rs` is
behind the Rust client): connecting with a token asked per attempt, the
handshake and its refusals, joins and re-joins from the last seq, frames
through each channel's sequencer, acks, pings, the rollover, the in-band
token refresh, backoff between attempts, and the end. `Client` (client.py)
holds the options and the public calls; `_Driver` is the base class that
gives it these internals, on the same instance."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import random
import time
from typing import Any, Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from ._backoff import Backoff
from ._channel import Subscription, _Channel
from ._chunks import Message, MessageLost, Reassembler
from ._connection import (
    _CLOSED,
    _FAILED,
    _FATAL,
    _LOST,
    _RECONNECT_NOW,
    _ROLLOVER,
    _TOKEN_REFUSED,
    _End,
    _health_of,
    _presence_of,
    _refresh_delay,
    _retry_after_s,
    _unix_seconds,
)
from ._gzip import FEATURE as GZIP_FEATURE
from ._gzip import expand
from ._options import (
    _TOKEN_CODES,
    MAX_CHANNELS_PER_JOIN,
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    State,
    TokenProvider,
)
from ._types import Event, Gap, Joined, Position, Resync, StateChange
from .errors import (
    AgentWireError,
    ExhaustedError,
    ProtocolError,
    RefusedError,
    ServerError,
    UnauthorizedError,
)

log = logging.getLogger("agentwire")

# At least this long (seconds) between two in-band refreshes of one connection.
_MIN_REFRESH_GAP = 1.0
#: The wall clock that `token_exp` and `exp` (Unix seconds) are read against.
_wall_clock = time.time


class _Driver:
    """The client's internals (a base class of `Client`, which sets every
    attribute below in its `__init__`)."""

    url: str
    _token: str | None
    _provider: TokenProvider | None
    _backoff: Backoff
    _max_age: float | None
    _ack_debounce: float | None
    _auto_ack: bool
    _ping_interval: float
    _ping_timeout: float
    _handshake_timeout: float
    _max_buffered: int
    _max_buffered_bytes: int
    _client_name: str
    _refresh_lead: float
    _channels: dict[str, _Channel]
    _messages: Reassembler
    _pending: dict[str, list[str]]
    _next_id: int
    _ws: ClientConnection | None
    _end: _End | None
    _pong_deadline: float | None
    _ack_at: float | None
    #: An ack answered `rate_limited`: no ack before this (loop time).
    _ack_paused_until: float | None
    #: Joins answered `rate_limited`: (when to send them again, their channels).
    _join_retries: list[tuple[float, list[str]]]
    # Live holes waiting for their missing frames: channel → since when (loop time).
    _holes: dict[str, float]
    _hole_grace: float
    #: In-band token refresh (this connection's): when (loop time), the task
    #: asking the provider and sending it, the id of the unanswered `refresh`.
    _refresh_at: float | None
    _refresh_task: asyncio.Task[None] | None
    _refresh_id: str | None
    _token_exp: float | None
    _resume_wanted: bool
    _wake: asyncio.Event | None
    _task: asyncio.Task[None] | None
    _closing: bool
    _stopped: asyncio.Event | None
    _error: AgentWireError | None
    _state: State
    _state_cbs: list[Callable[[State], Any]]
    _state_change_cbs: list[Callable[[StateChange], Any]]
    _joined_cbs: list[Callable[[Joined], Any]]
    _error_cbs: list[Callable[[AgentWireError], Any]]

    # -- internals: state -------------------------------------------------

    def _set_state(
        self,
        state: State,
        reason: str = "",
        attempt: int | None = None,
        delay: float | None = None,
        error: AgentWireError | None = None,
    ) -> None:
        previous = self._state
        if state == previous and state != "reconnecting":
            return
        self._state = state
        for cb in list(self._state_cbs):
            self._call(cb, state)
        change = StateChange(previous, state, reason or state, attempt, delay, error)
        for cb2 in list(self._state_change_cbs):
            self._call(cb2, change)

    def _call(self, cb: Callable[..., Any], *args: Any) -> None:
        try:
            r = cb(*args)
            if inspect.iscoroutine(r):
                r.close()
                log.warning("agentwire: callbacks must be plain functions; %r returned a coroutine", cb)
        except Exception:  # noqa: BLE001 - an application callback failed
            log.exception("agentwire: a callback raised")

    def _report(self, err: AgentWireError) -> None:
        log.info("agentwire: %s", err)
        for cb in list(self._error_cbs):
            self._call(cb, err)

    def _epoch_of(self, channel: str) -> str | None:
        ch = self._channels.get(channel)
        return ch.seq.epoch if ch else None

    def _finish_all(self, error: AgentWireError | None) -> None:
        for ch in self._channels.values():
            ch.sub._finish(error)
        self._set_state("closed", str(error) if error is not None else "closed by the application", error=error)
        if self._stopped is not None:
            self._stopped.set()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _taken(self, sub: Subscription) -> None:
        """The application took an item: ack it (debounced); resume a
        channel that stopped taking events once its buffer drained."""
        ch = self._channels.get(sub.channel)
        if ch is None or ch.sub is not sub:
            return
        if self._auto_ack and self._ack_debounce is not None and self._ack_at is None:
            loop = asyncio.get_running_loop()
            self._ack_at = loop.time() + self._ack_debounce
            self._poke()
        if ch.suspended and not ch.paused and len(sub._items) <= self._max_buffered // 2:
            ch.suspended = False
            ch.seq.rejoining()
            self._resume_wanted = True
            self._poke()

    # -- internals: the connection loop -----------------------------------

    async def _run(self) -> None:
        token_refused_once = False
        self._set_state("connecting", "connecting")
        try:
            while True:
                how, reason = await self._attempt()
                if how == _CLOSED:
                    return
                if how == _FATAL:
                    self._fail(reason)
                    return
                if how in (_ROLLOVER, _RECONNECT_NOW):
                    token_refused_once = False
                    self._set_state("reconnecting", str(reason))
                    continue
                if how == _LOST:
                    token_refused_once = False
                elif how == _TOKEN_REFUSED:
                    # A provider is asked for a fresh token once; a fresh token
                    # refused too means retrying would only hammer.
                    if self._provider is None or token_refused_once:
                        self._fail(reason)
                        return
                    token_refused_once = True
                if self._closing:
                    return
                delay = self._backoff.next_delay(random.random())
                if delay is None:
                    self._fail(
                        ExhaustedError(
                            f"gave up after {self._backoff.attempt} reconnect attempts; last failure: {reason}"
                        )
                    )
                    return
                log.debug("agentwire: reconnecting in %.3fs (%s)", delay, reason)
                self._set_state("reconnecting", str(reason), attempt=self._backoff.attempt, delay=delay)
                await asyncio.sleep(delay)
        finally:
            self._ws = None
            self._finish_all(self._error)

    def _fail(self, err: Any) -> None:
        if not isinstance(err, AgentWireError):
            err = AgentWireError(str(err))
        log.warning("agentwire: client stopped: %s", err)
        self._error = err
        for ch in self._channels.values():
            ch.sub._finish(err)

    async def _get_token(self) -> str:
        if self._token is not None:
            return self._token
        assert self._provider is not None
        t = self._provider()
        if inspect.isawaitable(t):
            t = await t
        return str(t)

    async def _attempt(self) -> tuple[str, Any]:
        try:
            token = await self._get_token()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - any provider failure is retried
            return _FAILED, f"the token provider failed: {e!r}"
        if self._closing:
            return _CLOSED, None
        offered = [f"agentwire.v{v}" for v in range(PROTOCOL_MAX, PROTOCOL_MIN - 1, -1)]
        try:
            ws = await connect(
                self.url,
                additional_headers={"Authorization": f"Bearer {token}"},
                subprotocols=offered,  # type: ignore[arg-type]
                open_timeout=self._handshake_timeout,
                ping_interval=None,
                close_timeout=2,
                max_size=None,
                compression=None,
                user_agent_header=self._client_name,
            )
        except asyncio.CancelledError:
            raise
        except InvalidStatus as e:
            return self._classify_refusal(e.response.status_code, bytes(e.response.body or b""))
        except InvalidURI as e:
            return _FATAL, RefusedError(f"bad gateway URL: {e}", code="refused")
        except Exception as e:  # noqa: BLE001 - network, TLS, time-out: retried
            return _FAILED, f"cannot connect: {e!r}"
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._end = None
        timers: asyncio.Task[None] | None = None
        try:
            welcome = await self._handshake(ws)
            self._ws = ws
            self._pending.clear()
            self._join_retries.clear()
            self._ack_paused_until = None
            self._pong_deadline = None
            self._refresh_at = None
            self._refresh_id = None
            self._token_exp = None
            features = welcome.get("features")
            token_exp = _unix_seconds(welcome.get("token_exp"))
            if (
                self._provider is not None
                and isinstance(features, list)
                and "refresh" in features
                and token_exp is not None
            ):
                # Only with a provider to ask: a fixed token has nothing new to send.
                self._token_exp = token_exp
                self._plan_refresh(token_exp)
            self._set_state(
                "connected",
                f"connected (protocol v{welcome.get('protocol')}, connection {welcome.get('connection_id')})",
            )
            await self._send_joins(ws, [n for n, ch in self._channels.items() if not ch.idle])
            timers = loop.create_task(self._timers(ws, started), name="agentwire-timers")
            await self._read(ws)
            end = self._end or _End(_LOST, "the gateway closed the connection")
        except _End as e:
            end = self._end or e
        except ConnectionClosed as e:
            end = self._end or _End(_LOST, f"the connection ended: {e}")
        finally:
            self._ws = None
            self._refresh_at = None
            self._refresh_id = None
            for task in (timers, self._refresh_task):
                if task is not None:
                    task.cancel()
                    try:
                        await task
                    except (asyncio.CancelledError, Exception):  # noqa: BLE001
                        pass
            self._refresh_task = None
            try:
                await ws.close(1000, "closed by the client")
            except Exception:  # noqa: BLE001
                pass
            self._backoff.connection_ended(loop.time() - started)
            self._pending.clear()
            # A new connection re-joins every channel anyway.
            self._join_retries.clear()
            self._ack_paused_until = None
            for ch in self._channels.values():
                ch.seq.rejoining()
        if self._closing and end.how != _FATAL:
            return _CLOSED, None
        return end.how, end.reason

    def _classify_refusal(self, status: int, body: bytes) -> tuple[str, Any]:
        code: str | None = None
        message = body.decode("utf-8", "replace").strip()[:300]
        parsed: Any = None
        try:
            parsed = json.loads(body)
            if isinstance(parsed, dict):
                code = parsed.get("code")
                message = str(parsed.get("message", message))
        except ValueError:
            pass
        if code == "version_unsupported":
            return _FATAL, ProtocolError(message, code=code, status=status, body=parsed)
        if status == 401:
            return _TOKEN_REFUSED, UnauthorizedError(message, code=code or "unauthorized", status=status, body=parsed)
        if status in (408, 429) or 500 <= status <= 599:
            return _FAILED, f"the gateway answered HTTP {status}: {message}"
        return _FATAL, RefusedError(f"HTTP {status}: {message}", status=status, body=parsed)

    async def _handshake(self, ws: ClientConnection) -> dict[str, Any]:
        await ws.send(
            json.dumps(
                {
                    "action": "hello",
                    "protocol": {"min": PROTOCOL_MIN, "max": PROTOCOL_MAX},
                    # Compressed payloads are decoded (`_event`).
                    "features": [GZIP_FEATURE],
                    "client": self._client_name,
                }
            )
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._handshake_timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _End(_LOST, f"no `welcome` within {self._handshake_timeout}s")
            try:
                raw = await asyncio.wait_for(ws.recv(), remaining)
            except asyncio.TimeoutError:
                raise _End(_LOST, f"no `welcome` within {self._handshake_timeout}s") from None
            if not isinstance(raw, str):
                continue
            try:
                frame = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(frame, dict):
                continue
            t = frame.get("type")
            if t == "welcome":
                return frame
            if t == "error":
                if frame.get("code") == "version_unsupported":
                    raise _End(
                        _FATAL,
                        ProtocolError(str(frame.get("message", "")), code="version_unsupported", body=frame),
                    )
                raise _End(_LOST, f"`hello` refused ({frame.get('code')}): {frame.get('message')}")

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            self._pong_deadline = None
            if not isinstance(raw, str):
                continue
            try:
                frame = json.loads(raw)
            except (ValueError, RecursionError) as e:
                # RecursionError: nested deeper than the decoder goes. No frame ends the client.
                self._report(ProtocolError(f"unreadable frame: {e!r:.200}: {raw[:200]}", code="decode"))
                continue
            if not isinstance(frame, dict):
                continue
            try:
                touched = self._on_frame(frame)
            except _End:
                raise
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
                # A frame of the wrong shape: reported and skipped, the client goes on.
                self._report(ProtocolError(f"unusable frame: {e!r:.200}: {raw[:200]}", code="decode"))
                continue
            if touched:
                await self._rejoin_lagging(ws, touched)
            if self._end is not None:
                raise self._end

    async def _rejoin_lagging(self, ws: ClientConnection, names: list[str]) -> None:
        """Joins again, from their last delivered seq, the channels among `names` that miss seqs
        the log still has. A live hole (events held after a missing seq) first waits `hole_grace`
        for the missing frames: frames that fill it meanwhile cancel the re-join."""
        now = asyncio.get_running_loop().time()
        lagging: list[str] = []
        for n in names:
            ch = self._channels.get(n)
            if ch is None or ch.idle or not ch.seq.wants_rejoin():
                self._holes.pop(n, None)
                continue
            if ch.seq.pending > 0 and self._hole_grace > 0:
                since = self._holes.setdefault(n, now)
                if now < since + self._hole_grace:
                    self._poke()
                    continue
            self._holes.pop(n, None)
            lagging.append(n)
        if lagging:
            log.debug("agentwire: fetching missed seqs of %s from the log", lagging)
            await self._send_joins(ws, lagging)

    def _on_frame(self, f: dict[str, Any]) -> list[str]:
        t = f.get("type")
        if t == "event":
            name = f.get("channel")
            ch = self._channels.get(name) if isinstance(name, str) else None
            if ch is None or ch.idle:
                return []
            self._deliver(ch, ch.seq.event(self._event(f)))
            return [ch.name]
        if t == "batch":
            touched: list[str] = []
            for e in f.get("events") or []:
                if not isinstance(e, dict) or not isinstance(e.get("channel"), str):
                    continue
                ch = self._channels.get(e["channel"])
                if ch is None or ch.idle:
                    continue
                try:
                    ev = self._event(e)
                except ValueError as err:
                    self._report(ProtocolError(f"unusable event in a batch: {err}", code="decode"))
                    continue
                self._deliver(ch, ch.seq.event(ev))
                if not touched or touched[-1] != ch.name:
                    touched.append(ch.name)
            return touched
        if t == "joined":
            rid = f.get("id")
            if rid is not None:
                self._pending.pop(rid, None)
            confirmed: list[tuple[_Channel, Joined]] = []
            presence = f.get("presence") if isinstance(f.get("presence"), dict) else {}
            health = f.get("health") if isinstance(f.get("health"), dict) else None
            for jc in f.get("channels") or []:
                ch = self._channels.get(jc.get("name"))
                if ch is None:
                    continue
                j = Joined(
                    channel=ch.name,
                    epoch=str(jc.get("epoch", "")),
                    head=int(jc.get("head", 0)),
                    replayed=int(jc.get("replayed", 0)),
                    recovered=bool(jc.get("recovered", True)),
                    until=jc.get("until"),
                    presence=_presence_of(ch.name, presence),
                    health=_health_of(ch.name, health),
                )
                confirmed.append((ch, j))
            deliveries = []
            for ch, j in confirmed:
                deliveries.append((ch, ch.seq.joined(j.epoch, j.head, j.replayed, j.until)))
            for ch, j in confirmed:
                ch.sub._set_joined(j)
                for cb in list(self._joined_cbs):
                    self._call(cb, j)
            for ch, ds in deliveries:
                if self._channels.get(ch.name) is ch:
                    self._deliver(ch, ds)
            return [ch.name for ch, _ in confirmed]
        if t == "gap":
            ch = self._channels.get(f.get("channel"))  # type: ignore[arg-type]
            if ch is None or ch.idle:
                return []
            self._deliver(ch, ch.seq.gap(int(f["from"]), int(f["to"])))
            return [ch.name]
        if t == "error":
            self._on_error_frame(f)
            return []
        if t == "refreshed":
            rid = f.get("id")
            if rid is None or rid != self._refresh_id:
                return []
            self._refresh_id = None
            exp = _unix_seconds(f.get("exp"))
            # A token that expires no later than the one it replaces gives
            # nothing to refresh again: no refresh loop towards `exp` (the
            # connection ends on token_expired and reconnects).
            if exp is None or (self._token_exp is not None and exp <= self._token_exp):
                return []
            self._token_exp = exp
            # The next refresh is planned from the new token's `exp`, at
            # least _MIN_REFRESH_GAP from now.
            self._plan_refresh(exp, _MIN_REFRESH_GAP)
            return []
        return []  # welcome, pong, left

    def _event(self, f: dict[str, Any]) -> Event:
        """The event of an `event` frame or of a batch's entry, a compressed
        payload (`gz`) expanded before anything else sees it: a chunk's text
        bounded like its message's parts, a stream event's text by
        `_gzip.MAX_STREAM_TEXT_BYTES` (4 MiB); one that does not decode stays as it came."""
        ev = Event.from_frame(f)
        data = expand(ev.data, max_part_bytes=self._messages.max_part_bytes)
        return ev if data is ev.data else dataclasses.replace(ev, data=data)

    def _on_error_frame(self, f: dict[str, Any]) -> None:
        code = str(f.get("code", "internal"))
        message = str(f.get("message", ""))
        rid = f.get("id")
        if rid is not None and rid == self._refresh_id:
            # The refresh was refused (the connection keeps its old token): a
            # new connection, with a token the provider is asked for again, resumes.
            self._refresh_id = None
            self._report(
                UnauthorizedError(message, code=code, body=f)
                if code in _TOKEN_CODES
                else ServerError(message, code=code, body=f)
            )
            raise _End(_LOST, f"the token refresh was refused ({code}): {message}; reconnecting with a fresh token")
        request = self._pending.pop(rid, None) if rid is not None else None
        scope = f.get("scope") if isinstance(f.get("scope"), str) else None
        channels = f.get("channels")
        if request is None and code == "forbidden" and isinstance(channels, list):
            # A refreshed token that no longer grants these channels: the
            # gateway left them; dropped like a channel whose join was refused.
            err = ServerError(message, code=code, body=f)
            for name in channels:
                if isinstance(name, str):
                    self._drop(name, err)
            self._report(err)
            return
        if code == "rate_limited":
            # Not a refusal: the join is sent again, or acks wait, for the
            # gateway's delay (1 s when it gives none), on this connection.
            wait = _retry_after_s(f.get("retry_after_ms"))
            now = asyncio.get_running_loop().time()
            if request is not None:
                self._join_retries.append((now + wait, request))
            else:
                self._ack_paused_until = max(self._ack_paused_until or 0.0, now + wait)
            self._poke()
            self._report(
                ServerError(message, code=code, body=f, retry_after_ms=round(wait * 1000), scope=scope)
            )
            return
        if code == "version_unsupported":
            raise _End(_FATAL, ProtocolError(message, code=code, body=f))
        if code == "token_expired":
            # A new connection with a fresh token resumes from the last seq.
            raise _End(_RECONNECT_NOW, f"the token expired: {message}; reconnecting with a fresh token")
        if code == "not_connected":
            raise _End(_LOST, f"the gateway no longer knows this connection: {message}")
        if code == "internal" and request is not None:
            raise _End(_LOST, f"a join failed: {message}")
        err = ServerError(message, code=code, body=f, scope=scope)
        if request is not None:
            # Refused for good (forbidden, invalid channel, too many channels): not re-joined.
            for name in request:
                self._drop(name, err)
        self._report(err)

    def _drop(self, name: str, err: AgentWireError) -> None:
        """A channel the gateway refused for good (a join, or a token that no
        longer grants it): its subscription ends with `err`; never re-joined."""
        ch = self._channels.pop(name, None)
        if ch is not None:
            ch.sub._finish(err)

    def _plan_refresh(self, exp: float, floor: float = 0.0) -> None:
        """The next in-band refresh of this connection's token, which expires at
        `exp`, at least `floor` seconds from now."""
        delay = max(floor, _refresh_delay(exp, _wall_clock(), self._refresh_lead))
        self._refresh_at = asyncio.get_running_loop().time() + delay
        self._poke()

    async def _refresh(self, ws: ClientConnection) -> None:
        """Asks the token provider for a fresh token and sends it in a
        `refresh`. A provider that fails ends the connection: the reconnect
        asks it again."""
        try:
            token = await self._get_token()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - any provider failure: reconnect
            if self._ws is ws and self._end is None:
                self._end = _End(_LOST, f"the token provider failed to refresh the token: {e!r}")
                await ws.close(1000, "reconnecting with a fresh token")
            return
        if self._ws is not ws or self._end is not None:
            return
        self._next_id += 1
        rid = f"r{self._next_id}"
        self._refresh_id = rid
        await self._send(ws, {"action": "refresh", "id": rid, "token": token})

    def _deliver(self, ch: _Channel, ds: list[Event | Gap]) -> None:
        if not ds:
            return
        sub = ch.sub
        for d in ds:
            item: Event | Gap | Message | MessageLost | Resync = d
            if isinstance(d, Event):
                a = self._messages.accept(d.channel, d.seq, d.epoch, d.kind, d.data)
                for lost in self._messages.take_evicted():
                    # Lost to the bound on messages in progress (to its own channel).
                    owner = self._channels.get(lost.channel)
                    if owner is not None:
                        owner.sub._put(lost)
                if a == "pending":
                    continue
                if isinstance(a, (Message, MessageLost)):
                    item = a
            if not sub._put(item):
                # The application is behind: stop taking this channel's events
                # and fetch them again from the log once it has caught up.
                assert isinstance(d, Event)
                ch.seq.rewind(d.seq - 1)
                ch.suspended = True
                log.debug("agentwire: %s: buffer full; pausing after seq %d", ch.name, d.seq - 1)
                return

    async def _timers(self, ws: ClientConnection, started: float) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake
        assert wake is not None
        ping_at = loop.time() + self._ping_interval
        rollover_at = started + self._max_age if self._max_age is not None else None
        while True:
            if self._resume_wanted:
                self._resume_wanted = False
                names = [n for n, ch in self._channels.items() if not ch.suspended and ch.seq.awaiting_join]
                names = [n for n in names if not any(n in v for v in self._pending.values())]
                if names:
                    await self._send_joins(ws, names)
            if self._join_retries:
                now = loop.time()
                due = [names for at, names in self._join_retries if at <= now]
                self._join_retries = [(at, names) for at, names in self._join_retries if at > now]
                for names in due:
                    # The channels still wanted and not in another join by now.
                    again = [
                        n
                        for n in names
                        if (ch := self._channels.get(n)) is not None
                        and not ch.suspended
                        and not any(n in v for v in self._pending.values())
                    ]
                    if again:
                        await self._send_joins(ws, again)
            now = loop.time()
            if self._pong_deadline is not None and now >= self._pong_deadline:
                self._end = _End(_LOST, f"no answer to ping within {self._ping_timeout}s: the connection is dead")
                ws.transport.abort()
                return
            if rollover_at is not None and now >= rollover_at:
                await self._flush_acks(ws)
                self._end = _End(_ROLLOVER, "connection age limit reached: reconnecting")
                await ws.close(1000, "rollover")
                return
            if self._ack_at is not None and now >= self._ack_at:
                self._ack_at = None
                await self._flush_acks(ws)
            holes_due = [n for n, since in self._holes.items() if now >= since + self._hole_grace]
            if holes_due:
                await self._rejoin_lagging(ws, holes_due)
            if self._refresh_at is not None and now >= self._refresh_at:
                self._refresh_at = None
                # On its own task: a slow provider holds up neither pings nor acks.
                self._refresh_task = loop.create_task(self._refresh(ws), name="agentwire-refresh")
            if now >= ping_at:
                await self._send(ws, {"action": "ping"})
                ping_at = now + self._ping_interval
                if self._pong_deadline is None:
                    self._pong_deadline = now + self._ping_timeout
            deadlines = [
                d for d in (ping_at, self._pong_deadline, self._ack_at, rollover_at, self._refresh_at) if d is not None
            ]
            deadlines += [at for at, _ in self._join_retries]
            deadlines += [since + self._hole_grace for since in self._holes.values()]
            timeout = max(0.0, min(deadlines) - loop.time())
            wake.clear()
            if self._resume_wanted:
                continue
            try:
                await asyncio.wait_for(wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def _send(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        try:
            await ws.send(json.dumps(frame, separators=(",", ":")))
        except ConnectionClosed:
            pass  # the reader notices and reconnects

    async def _send_joins(self, ws: ClientConnection, names: list[str]) -> None:
        for i in range(0, len(names), MAX_CHANNELS_PER_JOIN):
            entries = []
            chunk: list[str] = []
            for name in names[i : i + MAX_CHANNELS_PER_JOIN]:
                ch = self._channels.get(name)
                if ch is None:
                    continue
                ch.seq.rejoining()
                self._holes.pop(name, None)
                since = ch.since()
                entries.append({"name": name} if since is None else {"name": name, "since": since})
                chunk.append(name)
            if not entries:
                continue
            self._next_id += 1
            rid = f"j{self._next_id}"
            self._pending[rid] = chunk
            await self._send(ws, {"action": "join", "id": rid, "channels": entries})

    def _ack_target(self, ch: _Channel) -> Position | None:
        """What to acknowledge on `ch` now: what the application took (or, without
        auto_ack, what it asked for, never past what it took), if it moved."""
        sub = ch.sub
        taken = sub._consumed
        if taken is None or taken.seq <= 0:
            return None
        if self._auto_ack and self._ack_debounce is not None:
            want = taken.seq
        elif sub._ack_wanted is None:
            return None
        else:
            want = min(sub._ack_wanted, taken.seq)
        if want <= 0:
            return None
        if ch.seq.epoch is not None and ch.seq.epoch not in ("", taken.epoch):
            return None  # the log was reset since: that seq means nothing now
        if ch.acked is not None and ch.acked.epoch == taken.epoch and ch.acked.seq >= want:
            return None
        return Position(taken.epoch, want)

    def _acks_paused(self) -> bool:
        """Whether an ack answered `rate_limited` holds acks back; if so, a
        flush is due when the pause ends."""
        until = self._ack_paused_until
        if until is None:
            return False
        if asyncio.get_running_loop().time() >= until:
            self._ack_paused_until = None
            return False
        if self._ack_at is None or self._ack_at < until:
            self._ack_at = until
            self._poke()
        return True

    async def _flush_acks(self, ws: ClientConnection) -> None:
        if self._acks_paused():
            return  # what is due goes out when the pause ends
        for name, ch in list(self._channels.items()):
            target = self._ack_target(ch)
            if target is not None:
                ch.acked = target
                await self._send(ws, {"action": "ack", "channel": name, "seq": target.seq})

    async def _flush_acks_now(self) -> None:
        ws = self._ws
        if ws is not None:
            await self._flush_acks(ws)

