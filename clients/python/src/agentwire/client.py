"""The subscriber: one WebSocket to the gateway that reconnects, re-joins,
resumes and acknowledges by itself, and hands the application one ordered
stream per channel. A port of the Rust client's behaviour
(`clients/rust/src/driver.rs`, `docs/client.md`)."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from . import __version__
from ._backoff import Backoff
from ._channel import Subscription, _Channel
from ._chunks import Reassembler
from ._connection import (
    _CLOSED,
    _End,
    _int_or_none,
    _refresh_delay,
    _retry_after_s,
)
from ._driver import _Driver, _wall_clock, log
from ._options import (
    _CHANNEL_RE,
    _DEFAULT_RETRY_AFTER,
    MAX_CHANNELS_PER_JOIN,
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    Since,
    State,
    TokenProvider,
    _since_arg,
)
from ._sequencer import Sequencer
from ._types import Joined, Position, Resync, StateChange
from .errors import AgentWireError, ClosedError

__all__ = [
    # Moved to modules of their own; still importable from here.
    "MAX_CHANNELS_PER_JOIN",
    "PROTOCOL_MAX",
    "PROTOCOL_MIN",
    "Client",
    "Since",
    "State",
    "Subscription",
    "TokenProvider",
    "_Channel",
    "_DEFAULT_RETRY_AFTER",
    "_End",
    "_int_or_none",
    "_refresh_delay",
    "_retry_after_s",
    "_since_arg",
    "_wall_clock",
    "log",
]



class Client(_Driver):
    """A reconnecting, resuming subscriber.

    ```python
    async with Client("wss://…", token="…") as client:
        sub = await client.join("agent-1")
        async for item in sub:
            ...
    ```
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        min_reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 30.0,
        max_attempts: int | None = None,
        max_connection_age: float | None = 115 * 60.0,
        ack_debounce: float | None = 1.0,
        auto_ack: bool = True,
        ping_interval: float = 30.0,
        ping_timeout: float = 20.0,
        handshake_timeout: float = 10.0,
        max_buffered: int = 10_000,
        max_buffered_bytes: int = 32 * 1024 * 1024,
        max_message_bytes: int = 64 * 1024 * 1024,
        max_held_message_bytes: int = 128 * 1024 * 1024,
        client_name: str = f"agentwire-python/{__version__}",
        refresh_lead: float = 60.0,
        jitter: float = 1.0,
        hole_grace: float = 0.25,
        max_partial_messages: int = 64,
    ) -> None:
        if (token is None) == (token_provider is None):
            raise ValueError("give exactly one of token= and token_provider=")
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"the gateway URL must start with ws:// or wss://: {url!r}")
        self.url = url
        self._token = token
        self._provider = token_provider
        self._backoff = Backoff(min_reconnect_delay, max_reconnect_delay, max_attempts, jitter=jitter)
        self._max_age = max_connection_age
        self._ack_debounce = ack_debounce
        self._auto_ack = auto_ack
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._handshake_timeout = handshake_timeout
        self._max_buffered = max(1, max_buffered)
        self._max_buffered_bytes = max_buffered_bytes
        self._client_name = client_name
        if not refresh_lead >= 0:
            raise ValueError(f"refresh_lead must be a non-negative number of seconds, not {refresh_lead!r}")
        self._refresh_lead = float(refresh_lead)

        self._channels = {}
        # Chunk events being reassembled into messages (docs/protocol.md).
        # At most `max_partial_messages` in progress; ids over 128 bytes are lost (`invalid`).
        self._messages = Reassembler(max_message_bytes, max_held_message_bytes, max_partial_messages)
        self._pending = {}
        self._next_id = 0
        self._ws = None
        self._end = None
        self._pong_deadline = None
        self._ack_at = None
        # An ack answered `rate_limited`: no ack before this (loop time).
        self._ack_paused_until = None
        # Joins answered `rate_limited`: (when to send them again, their channels).
        self._join_retries = []
        # A live hole waits this long (seconds) for its missing frames before re-joining.
        if not hole_grace >= 0:
            raise ValueError(f"hole_grace must be a non-negative number of seconds, not {hole_grace!r}")
        self._hole_grace = float(hole_grace)
        self._holes = {}
        # In-band token refresh (this connection's): when (loop time), the
        # task asking the provider and sending it, the id of the unanswered `refresh`.
        self._refresh_at = None
        self._refresh_task = None
        self._refresh_id = None
        self._token_exp = None
        self._resume_wanted = False
        self._wake = None
        self._task = None
        self._closing = False
        self._stopped = None
        self._error = None
        self._state = "idle"
        self._state_cbs = []
        self._state_change_cbs = []
        self._joined_cbs = []
        self._error_cbs = []

    # -- lifecycle --------------------------------------------------------

    async def __aenter__(self) -> Client:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Starts connecting (in the background). `async with` does it."""
        if self._task is not None:
            return
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="agentwire-client")

    async def close(self) -> None:
        """Acknowledges what was taken, closes the connection and stops."""
        if self._task is None:
            self._closing = True
            self._finish_all(None)
            return
        if self._closing:
            await self._stopped.wait()  # type: ignore[union-attr]
            return
        self._closing = True
        ws = self._ws
        if ws is not None and not self._task.done():
            try:
                await self._flush_acks(ws)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
            self._end = _End(_CLOSED, "closed by the application")
            try:
                await ws.close(1000, "closed by the client")
            except Exception:  # noqa: BLE001
                pass
        if not self._task.done() and self._ws is None:
            self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            if not self._task.cancelled():
                raise
        self._finish_all(None)

    async def wait_closed(self) -> None:
        """Waits until the client stops; raises its fatal error, if any."""
        if self._stopped is not None:
            await self._stopped.wait()
        if self._error is not None:
            raise self._error

    @property
    def error(self) -> AgentWireError | None:
        """The fatal error that stopped the client, if any."""
        return self._error

    @property
    def state(self) -> State:
        return self._state

    def on_state(self, callback: Callable[[State], Any]) -> Callable[[State], Any]:
        """`callback(state)` on each change: connecting, connected,
        reconnecting, closed. Usable as a decorator."""
        self._state_cbs.append(callback)
        return callback

    def on_state_change(self, callback: Callable[[StateChange], Any]) -> Callable[[StateChange], Any]:
        """`callback(StateChange)` on each change, with the previous and
        current state, the reason, and for a reconnect after a backoff delay
        the attempt and the delay (seconds); `error` on a `closed` caused by a
        fatal error. `reconnecting` → `reconnecting` is a change (one per
        attempt). Usable as a decorator."""
        self._state_change_cbs.append(callback)
        return callback

    def on_joined(self, callback: Callable[[Joined], Any]) -> Callable[[Joined], Any]:
        """`callback(Joined)` for each channel of each `joined` answer (the
        first join and every re-join), before its replayed items."""
        self._joined_cbs.append(callback)
        return callback

    def on_error(self, callback: Callable[[AgentWireError], Any]) -> Callable[[AgentWireError], Any]:
        """`callback(error)` for errors that do not stop the client (an error
        frame, an unreadable frame)."""
        self._error_cbs.append(callback)
        return callback

    # -- commands ---------------------------------------------------------

    async def join(self, channel: str, since: Any = None) -> Subscription:
        """Subscribes to `channel` from `since`: `None` (the durable cursor),
        `"head"` (only new events) or `Position(epoch, seq)` (every retained
        event after `seq`). Returns at once; a refusal ends the subscription
        with a `ServerError` (see `Subscription.wait_joined`)."""
        if self._closing or self._error is not None:
            raise self._error or ClosedError("the client is closed")
        if not _CHANNEL_RE.match(channel):
            raise ValueError(f"invalid channel name {channel!r}")
        existing = self._channels.get(channel)
        if existing is not None:
            return existing.sub
        sub = Subscription(self, channel)
        self._channels[channel] = _Channel(channel, _since_arg(since), sub)
        if self._task is None:
            self.start()
        ws = self._ws
        if ws is not None:
            await self._send_joins(ws, [channel])
        return sub

    async def resync(self, channel: str | None = None) -> None:
        """Drops the local position of `channel` (or, with `None`, of every
        channel): its last delivered seq, the events it holds and its last
        ack are forgotten, the reset is reported (a `Resync` item of the
        subscription, after what was delivered before), and the channel joins
        again from the head (at once when connected, else with the next
        connection; a paused channel when resumed). A channel not joined is
        ignored."""
        names = list(self._channels) if channel is None else [channel] if channel in self._channels else []
        rejoin: list[str] = []
        for name in names:
            ch = self._channels[name]
            previous = (
                Position(ch.seq.epoch, ch.seq.last) if ch.seq.epoch is not None and ch.seq.last is not None else None
            )
            ch.seq = Sequencer(name)
            ch.initial = "head"
            ch.acked = None
            ch.sub._ack_wanted = None
            ch.sub._put(Resync(name, previous))
            if not ch.idle:
                rejoin.append(name)
        ws = self._ws
        if ws is not None and rejoin:
            await self._send_joins(ws, rejoin)

    async def _pause(self, channel: str) -> None:
        ch = self._channels.get(channel)
        if ch is None or ch.paused:
            return
        ch.paused = True
        ws = self._ws
        if ws is not None:
            ack = self._ack_target(ch)
            if ack is not None and not self._acks_paused():
                ch.acked = ack
                await self._send(ws, {"action": "ack", "channel": channel, "seq": ack.seq})
            self._next_id += 1
            await self._send(ws, {"action": "leave", "id": f"l{self._next_id}", "channels": [channel]})

    async def _resume(self, channel: str) -> None:
        ch = self._channels.get(channel)
        if ch is None or not ch.paused:
            return
        ch.paused = False
        if ch.suspended:
            return  # joined again once the application has caught up
        ws = self._ws
        if ws is not None:
            await self._send_joins(ws, [channel])

    async def _leave(self, channel: str) -> None:
        ch = self._channels.pop(channel, None)
        if ch is None:
            return
        ack = self._ack_target(ch)
        ws = self._ws
        if ws is not None:
            if ack is not None and not self._acks_paused():
                await self._send(ws, {"action": "ack", "channel": channel, "seq": ack.seq})
            self._next_id += 1
            await self._send(ws, {"action": "leave", "id": f"l{self._next_id}", "channels": [channel]})
        ch.sub._finish(None, discard=True)
