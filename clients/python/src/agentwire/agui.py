"""AG-UI events over agentwire (docs/agui.md): `AgUiPublisher` takes the
events of `ag_ui.core` (PyPI ``ag-ui-protocol`` 1.x, the ``agui`` extra:
``pip install 'agentwire[agui]'``) and publishes each as one agentwire event
of the channel: its ``kind`` the event's ``type``, its ``data`` the event as
the AG-UI package serialises it (camelCase, optional fields left out).

```python
from agentwire import Publisher
from agentwire.agui import AgUiPublisher

async with Publisher(url, token=token) as p, AgUiPublisher(p, "agent-1") as agui:
    await agui.publish_all(agent_events)          # an (async) iterable of ag_ui.core events
    await agui.progress(3, 10, "Analyzing code... 3/10 files")
```

- Every event is validated with the ``ag_ui.core`` models before it leaves;
  an invalid one raises `AgUiValidationError` and nothing of it is sent.
- Consecutive ``TEXT_MESSAGE_CONTENT`` events of one ``messageId`` (and
  ``TOOL_CALL_ARGS`` of one ``toolCallId``, ``REASONING_MESSAGE_CONTENT`` of
  one ``messageId``) within a window (default 50 ms) are one event whose
  ``delta`` is their concatenation, at most 32 KiB of it; any other event
  sends what is pending first, so the order is kept.
- An event whose data is over 96 KiB of JSON goes as a chunked message
  (``kind`` the AG-UI type), which every client reassembles.
- Idempotency keys are ``<run_id>:<n>``: a retry (the publisher's own, or a
  `flush()` called again after a failure) commits each event once.
- ``progress(done, total, label)`` is the ``CUSTOM`` event
  ``agentwire.progress``, sent at most once per window (the latest wins).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

try:
    from ag_ui.core import BaseEvent, CustomEvent, Event
    from pydantic import TypeAdapter, ValidationError
except ImportError as e:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "agentwire.agui needs the AG-UI package: pip install 'agentwire[agui]' (ag-ui-protocol>=1.0,<2)"
    ) from e

from ._chunks import MAX_MESSAGE_ID, as_event_data, split_message
from ._stream import DEFAULT_WINDOW, Coalescer
from .errors import AgentWireError

if TYPE_CHECKING:
    from .publisher import Publisher

__all__ = [
    "AgUiPublisher",
    "AgUiValidationError",
    "AgUiEvent",
    "DEFAULT_MAX_DELTA_BYTES",
    "PROGRESS_EVENT",
    "to_data",
    "validate_event",
]

PROGRESS_EVENT = "agentwire.progress"
"""The name of the ``CUSTOM`` event that carries progress (docs/agui.md, "Progress with an ETA")."""

DEFAULT_MAX_DELTA_BYTES = 32 * 1024
"""The most delta text (as JSON) one coalesced event carries, by default."""

AgUiEvent = Union[BaseEvent, Mapping[str, Any]]
"""What `AgUiPublisher` takes: an ``ag_ui.core`` event, or its JSON (a mapping with ``type``)."""

# The field that names what a delta event appends to, for the coalesced types.
_DELTA_ID = {
    "TEXT_MESSAGE_CONTENT": "messageId",
    "TOOL_CALL_ARGS": "toolCallId",
    "REASONING_MESSAGE_CONTENT": "messageId",
}
_RUN_EVENTS = frozenset({"RUN_STARTED", "RUN_FINISHED", "RUN_ERROR"})
# Fields a coalesced event does not compare on: its own text, when it was
# made, and the provider event it was translated from.
_PER_PIECE = frozenset({"delta", "timestamp", "rawEvent"})
_MAX_RUN_ID = 64

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)


class AgUiValidationError(AgentWireError, ValueError):
    """An event that is not valid AG-UI (the ``ag_ui.core`` models refuse it,
    or an ``agentwire.progress`` value without a numeric ``done``); nothing
    of it was sent. ``errors`` are pydantic's, when it was pydantic."""

    code = "invalid_agui_event"

    def __init__(self, message: str, *, errors: list[Any] | None = None) -> None:
        super().__init__(message)
        self.errors: list[Any] = errors or []


def to_data(event: AgUiEvent) -> dict[str, Any]:
    """The event's JSON value as the AG-UI package writes it: camelCase,
    optional fields without a value left out, ``type`` included. A mapping
    is taken as it is (and checked by `validate_event`)."""
    if isinstance(event, BaseEvent):
        # ag-ui-protocol 1.x leaves out optional fields without a value itself;
        # exclude_none would also drop the nulls that mean something (a CUSTOM
        # event's `value`, a JSON Patch `add` of null).
        data = event.model_dump(mode="json", by_alias=True)
    elif isinstance(event, Mapping):
        data = dict(event)
    else:
        raise AgUiValidationError(f"an ag_ui.core event or its JSON is needed, not {type(event).__name__}")
    if not isinstance(data, dict):
        raise AgUiValidationError(f"an AG-UI event is a JSON object, not {type(data).__name__}")
    return data


def validate_event(event: AgUiEvent) -> dict[str, Any]:
    """The event validated with the ``ag_ui.core`` models and written back
    as they write it (what goes on the wire). Raises `AgUiValidationError`."""
    data = to_data(event)
    try:
        model = _ADAPTER.validate_python(data)
    except ValidationError as e:
        kind = data.get("type")
        raise AgUiValidationError(
            f"not a valid AG-UI event ({kind!r}): {e.error_count()} error(s): {e.errors()[0]['msg'] if e.errors() else e}",
            errors=list(e.errors()),
        ) from e
    out = model.model_dump(mode="json", by_alias=True)
    if not isinstance(out, dict):  # pragma: no cover - every AG-UI event is an object
        raise AgUiValidationError("an AG-UI event is a JSON object")
    if out.get("type") == "CUSTOM" and out.get("name") == PROGRESS_EVENT:
        _check_progress(out.get("value"))
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_progress(value: Any) -> None:
    if not isinstance(value, dict) or not _number(value.get("done")):
        raise AgUiValidationError(f"{PROGRESS_EVENT}: `value` is {{done, total?, label?}} with a number `done`")
    if "total" in value and not _number(value["total"]):
        raise AgUiValidationError(f"{PROGRESS_EVENT}: `total` must be a number")
    if "label" in value and not isinstance(value["label"], str):
        raise AgUiValidationError(f"{PROGRESS_EVENT}: `label` must be a string")


def _check_run_id(run_id: str) -> str:
    if not 1 <= len(run_id) <= _MAX_RUN_ID or not all(0x21 <= ord(c) <= 0x7E for c in run_id):
        raise ValueError(f"a run id is 1 to {_MAX_RUN_ID} printable ASCII characters without spaces, not {run_id!r:.80}")
    return run_id


@dataclass
class _Deltas:
    """Consecutive delta events being coalesced: what they share, the first
    one's fields, and their text so far."""

    kind: str
    shared: dict[str, Any]
    template: dict[str, Any]
    text: Coalescer
    count: int = 0
    sent: int = 0


@dataclass
class _Out:
    id: str
    kind: str
    data: Any = field(repr=False)


class AgUiPublisher:
    """Publishes AG-UI events to one channel through a `Publisher` (HTTP,
    batches of up to ten), in order; see the module's documentation.

    ``run_id`` prefixes the idempotency keys (``<run_id>:<n>``; default a new
    UUID): give the same one only to send the very same events again.
    ``window`` and ``max_delta_bytes`` tune coalescing (``window=0`` sends
    each delta as it comes); ``max_pending`` bounds the events waiting to be
    sent (`publish` waits while it is reached); ``raw_events=False`` leaves
    out every event's ``rawEvent`` (a coalesced event never carries one: it
    stands for several provider events).

    Not thread-safe: use it from one event loop.
    """

    def __init__(
        self,
        publisher: Publisher,
        channel: str,
        *,
        run_id: str | None = None,
        window: float = DEFAULT_WINDOW,
        max_delta_bytes: int = DEFAULT_MAX_DELTA_BYTES,
        max_pending: int = 1000,
        raw_events: bool = True,
    ) -> None:
        if not channel:
            raise ValueError("a channel is needed")
        self.channel = channel
        self.run_id = _check_run_id(run_id) if run_id is not None else uuid.uuid4().hex
        self._publisher = publisher
        self._window = max(0.0, window)
        self._max_delta_bytes = max(1, min(max_delta_bytes, DEFAULT_MAX_DELTA_BYTES * 2))
        self._max_pending = max(1, max_pending)
        self._raw_events = raw_events
        self._n = 0
        self._deltas: _Deltas | None = None
        self._progress: dict[str, Any] | None = None
        self._progress_sent: float | None = None
        self._queue: deque[_Out] = deque()
        self._busy = False
        self._closed = False
        self._failure: BaseException | None = None
        self._wake: asyncio.Event | None = None
        self._changed: asyncio.Condition | None = None
        self._sender: asyncio.Task[None] | None = None
        #: Events sent so far (agentwire events, chunks counted one by one).
        self.sent = 0

    async def __aenter__(self) -> AgUiPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def publish(self, event: AgUiEvent) -> None:
        """Takes one event: validated (`AgUiValidationError`), coalesced or
        queued, and sent in order in the background. Waits only while
        ``max_pending`` events wait to be sent; raises the failure that
        stopped sending (once: `flush` sends the rest again)."""
        if self._closed:
            raise RuntimeError("the AG-UI publisher is closed")
        data = validate_event(event)
        if not self._raw_events:
            data.pop("rawEvent", None)
        self._raise_failure()
        now = time.monotonic()
        kind = data["type"]
        if kind == "CUSTOM" and data.get("name") == PROGRESS_EVENT:
            self._take_progress(data, now)
        elif kind in _DELTA_ID:
            self._take_delta(kind, data, now)
        else:
            self._flush_deltas()
            if kind in _RUN_EVENTS:
                self._flush_progress(now)
            self._enqueue(kind, data)
        self._kick()
        if len(self._queue) >= self._max_pending:
            await self._wait(lambda: len(self._queue) < self._max_pending)

    async def publish_all(self, events: Iterable[AgUiEvent] | AsyncIterable[AgUiEvent]) -> int:
        """Publishes every event of an iterable or async iterable (an agent's
        AG-UI stream, say), then `flush`es; returns how many AG-UI events it
        took (before coalescing, not an HTTP status)."""
        n = 0
        if isinstance(events, AsyncIterable):
            async for e in events:
                await self.publish(e)
                n += 1
        else:
            for e in events:
                await self.publish(e)
                n += 1
        await self.flush()
        return n

    async def progress(self, done: float, total: float | None = None, label: str | None = None) -> None:
        """Progress of the current run: the ``CUSTOM`` event
        ``agentwire.progress`` with ``value: {done, total?, label?}``, sent at
        once when none was sent within the window, else when the window ends
        (a newer value replaces a pending one), and before the run's end."""
        value: dict[str, Any] = {"done": done}
        if total is not None:
            value["total"] = total
        if label is not None:
            value["label"] = label
        await self.publish(CustomEvent(name=PROGRESS_EVENT, value=value))

    async def flush(self) -> None:
        """Sends what is pending (coalesced text, progress) now and waits
        until everything taken was sent: the gateway took every batch (any
        2xx: 201 committed, 200 already committed under the same keys, 202
        queued on the gateway and committed shortly); raises the failure that stopped
        sending. Called again after a failure, it sends the rest again under
        the same idempotency keys."""
        self._flush_deltas()
        self._flush_progress(time.monotonic())
        self._raise_failure()
        self._kick()
        await self._wait(lambda: not self._queue and not self._busy)

    async def aclose(self) -> None:
        """Sends the rest (as `flush`) and stops; `publish` refuses from then on."""
        self._closed = True
        await self.flush()
        if self._sender is not None:
            self._wake_up()
            await asyncio.shield(self._sender)

    # -- what is pending ------------------------------------------------

    def _take_delta(self, kind: str, data: dict[str, Any], now: float) -> None:
        shared = {k: v for k, v in data.items() if k not in _PER_PIECE}
        d = self._deltas
        if d is not None and (d.kind != kind or d.shared != shared):
            self._flush_deltas()
            d = None
        if d is None:
            template = {k: v for k, v in data.items() if k != "delta"}
            d = _Deltas(kind, shared, template, Coalescer(str(shared[_DELTA_ID[kind]]), self._window, self._max_delta_bytes))
            self._deltas = d
        elif d.count == 1:
            d.template.pop("rawEvent", None)
        d.count += 1
        for due in d.text.push(data["delta"], now):
            self._send_delta(d, due["text"])
        if self._window == 0:
            self._flush_deltas()

    def _send_delta(self, d: _Deltas, text: str) -> None:
        d.sent += 1
        self._enqueue(d.kind, {**d.template, "delta": text})

    def _flush_deltas(self) -> None:
        d, self._deltas = self._deltas, None
        if d is None:
            return
        e = d.text.flush()
        if e is not None:
            self._send_delta(d, e["text"])
        elif d.sent == 0:
            # Only empty deltas: one of them goes, as it came.
            self._send_delta(d, "")

    def _take_progress(self, data: dict[str, Any], now: float) -> None:
        last = self._progress_sent
        if self._progress is None and (last is None or now - last >= self._window):
            self._flush_deltas()
            self._enqueue("CUSTOM", data)
            self._progress_sent = now
        else:
            self._progress = data

    def _flush_progress(self, now: float) -> None:
        p, self._progress = self._progress, None
        if p is not None:
            self._flush_deltas()
            self._enqueue("CUSTOM", p)
            self._progress_sent = now

    def _deadline(self) -> float | None:
        times = []
        if self._deltas is not None:
            t = self._deltas.text.deadline()
            if t is not None:
                times.append(t)
        if self._progress is not None and self._progress_sent is not None:
            times.append(self._progress_sent + self._window)
        return min(times) if times else None

    def _due(self, now: float) -> None:
        d = self._deltas
        if d is not None:
            t = d.text.deadline()
            if t is not None and t <= now:
                self._flush_deltas()
        if self._progress is not None and (self._progress_sent is None or self._progress_sent + self._window <= now):
            self._flush_progress(now)

    def _enqueue(self, kind: str, data: dict[str, Any]) -> None:
        self._n += 1
        key = f"{self.run_id}:{self._n}"
        fits, value = as_event_data(data)
        if fits:
            self._queue.append(_Out(key, kind, value))
            return
        assert len(key.encode()) <= MAX_MESSAGE_ID
        for cid, chunk in split_message(key, data):
            self._queue.append(_Out(cid, kind, chunk))

    # -- sending --------------------------------------------------------

    def _raise_failure(self) -> None:
        if self._failure is not None:
            e, self._failure = self._failure, None
            raise e

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _kick(self) -> None:
        if self._wake is None or self._changed is None:
            self._wake = asyncio.Event()
            self._changed = asyncio.Condition()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())
        self._wake.set()

    async def _wait(self, done: Callable[[], bool]) -> None:
        assert self._changed is not None
        sender = self._sender
        async with self._changed:
            await self._changed.wait_for(
                lambda: done() or self._failure is not None or sender is None or sender.done()
            )
        self._raise_failure()

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def _send(self) -> None:
        assert self._wake is not None
        try:
            while True:
                self._due(time.monotonic())
                if not self._queue:
                    if self._closed and self._deltas is None and self._progress is None:
                        return
                    deadline = self._deadline()
                    self._wake.clear()
                    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    except asyncio.TimeoutError:
                        pass
                    continue
                batch = [self._queue[i] for i in range(min(10, len(self._queue)))]
                self._busy = True
                try:
                    await self._publisher.publish_batch(
                        self.channel, [{"kind": o.kind, "data": o.data, "id": o.id} for o in batch]
                    )
                finally:
                    self._busy = False
                for _ in batch:
                    self._queue.popleft()
                self.sent += len(batch)
                await self._notify()
        except BaseException as e:  # noqa: BLE001 - kept and raised to the caller
            self._failure = e
            await self._notify()
            if isinstance(e, asyncio.CancelledError):
                raise
