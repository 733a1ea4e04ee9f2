"""Streams and outputs of any size over the HTTP API (docs/protocol.md,
"Streams" and "Messages larger than one event").

- `Coalescer`: what is written within a window (default 50 ms) or up to a
  size bound (default 64 KiB) goes as one event ``{stream, index, text}``;
  ``finish()`` adds ``{stream, index, end: true}``.
- `PublishStream` (``Publisher``-backed): pieces coalesced and sent in order
  as they come, what is pending as one batch request (`Publisher.publish_batch`).
- `publish_message`: data of any size, one event when it fits, else its
  chunk events, ten per batch request.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

from ._chunks import MAX_MESSAGE_ID, Payload, _escaped_len, as_event_data, split_message

if TYPE_CHECKING:
    from .publisher import Publisher

DEFAULT_WINDOW = 0.05
DEFAULT_MAX_BYTES = 64 * 1024


class Coalescer:
    """Coalesces one stream's pieces into event data; the clock is the caller's."""

    def __init__(self, stream: str, window: float = DEFAULT_WINDOW, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.stream = stream
        self.window = window
        self.max_bytes = min(max(1, max_bytes), 64 * 1024)
        self._buf: list[str] = []
        self._size = 0
        self._since: float | None = None
        self._index = 0
        self._ended = False

    def push(self, text: str, now: float | None = None) -> list[dict[str, Any]]:
        """Adds ``text``; the events due now because the buffer reached the bound."""
        now = time.monotonic() if now is None else now
        out: list[dict[str, Any]] = []
        for c in text:
            n = _escaped_len(c)
            if self._size + n > self.max_bytes:
                e = self.flush()
                if e is not None:
                    out.append(e)
            if not self._buf:
                self._since = now
            self._buf.append(c)
            self._size += n
        return out

    def deadline(self) -> float | None:
        """When the buffered text must go (the caller's clock), if any is buffered."""
        return None if self._since is None else self._since + self.window

    def flush(self) -> dict[str, Any] | None:
        if not self._buf:
            return None
        text = "".join(self._buf)
        self._buf, self._size, self._since = [], 0, None
        return self._next({"text": text})

    def finish(self) -> list[dict[str, Any]]:
        """The buffered text and the end marker (once)."""
        if self._ended:
            return []
        self._ended = True
        out = [e for e in [self.flush()] if e is not None]
        out.append(self._next({"end": True}))
        return out

    def _next(self, v: dict[str, Any]) -> dict[str, Any]:
        v = {"stream": self.stream, "index": self._index, **v}
        self._index += 1
        return v


async def _send_batch(publisher: Publisher, channel: str, kind: str, events: list[tuple[str, Any]]) -> None:
    """Up to ten ``(id, data)`` events of ``kind`` in one batch request
    (`Publisher.publish_batch`: its typed errors, its retries)."""
    await publisher.publish_batch(channel, [{"kind": kind, "data": data, "id": eid} for eid, data in events])


class PublishStream:
    """A stream being published: ``write()`` pieces, then ``aclose()``.

    ```python
    async with Publisher(url, token=token) as p:
        async with p.stream("build-7", kind="output") as s:
            s.write("compiling…\\n")
    ```
    """

    def __init__(
        self,
        publisher: Publisher,
        channel: str,
        *,
        kind: str,
        stream_id: str | None = None,
        window: float = DEFAULT_WINDOW,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.id = stream_id or str(uuid.uuid4())
        self._publisher = publisher
        self._channel = channel
        self._kind = kind
        self._coalescer = Coalescer(self.id, window, max_bytes)
        self._queue: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._failure: BaseException | None = None
        self._busy = False
        self._sender = asyncio.get_running_loop().create_task(self._send())

    async def __aenter__(self) -> PublishStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def write(self, text: str) -> None:
        """Adds a piece (a token, a line); raises the error that stopped the stream."""
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise RuntimeError("the stream is closed")
        self._queue.extend(self._coalescer.push(text))
        self._wake.set()

    async def flush(self) -> None:
        """Sends what is buffered now and waits until all written was sent."""
        e = self._coalescer.flush()
        if e is not None:
            self._queue.append(e)
        self._wake.set()
        while (self._queue or self._busy) and self._failure is None and not self._sender.done():
            await asyncio.sleep(0.005)
        if self._failure is not None:
            raise self._failure

    async def aclose(self) -> None:
        """Sends the rest and the end marker; raises the first failure."""
        if not self._closed:
            self._closed = True
            self._queue.extend(self._coalescer.finish())
            self._wake.set()
        await asyncio.shield(self._sender)
        if self._failure is not None:
            raise self._failure

    async def _send(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                deadline = self._coalescer.deadline()
                self._wake.clear()
                try:
                    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except asyncio.TimeoutError:
                    e = self._coalescer.flush()
                    if e is not None:
                        self._queue.append(e)
                continue
            batch, self._queue = self._queue[:10], self._queue[10:]
            self._busy = True
            try:
                await _send_batch(
                    self._publisher,
                    self._channel,
                    self._kind,
                    [(f"{self.id}:{d['index']}", d) for d in batch],
                )
            except BaseException as e:  # noqa: BLE001 - kept and raised to the writer
                self._failure = e
                return
            finally:
                self._busy = False


async def publish_message(
    publisher: Publisher, channel: str, *, kind: str, data: Payload, message_id: str | None = None
) -> tuple[str, int]:
    """Publishes data of any size: ``bytes`` (base64 chunks), a ``str`` or any
    JSON value; one event when it fits (and is not bytes), else its chunk
    events, ten per batch request. Returns the message id and the events sent."""
    mid = message_id or str(uuid.uuid4())
    fits, value = as_event_data(data)
    if fits:
        await publisher.publish(channel, kind=kind, data=value, idempotency_key=mid)
        return mid, 1
    if len(mid.encode()) > MAX_MESSAGE_ID:
        raise ValueError(f"a message id is at most {MAX_MESSAGE_ID} bytes")
    chunks = split_message(mid, data)
    for i in range(0, len(chunks), 10):
        await _send_batch(publisher, channel, kind, list(chunks[i : i + 10]))
    return mid, len(chunks)
