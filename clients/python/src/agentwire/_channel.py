"""One joined channel: the application's `Subscription` (its buffer and
iterator) and the client's state of the channel (`_Channel`: its sequencer,
position and acks)."""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any

from ._chunks import Message, MessageLost
from ._options import Since
from ._sequencer import Sequencer, approx_size
from ._types import Event, Gap, Joined, Position, Resync
from .errors import ClosedError

if TYPE_CHECKING:
    from .client import Client


class Subscription:
    """One joined channel: an async iterator of `Event | Gap | Message |
    MessageLost` (a `Message` is reassembled from chunk events, which are
    never yielded themselves), each seq once,
    in order, across reconnects. Items wait in a per-subscription buffer so a
    slow consumer never blocks the connection (pings and acks keep flowing);
    over `max_buffered` events the channel stops taking events and fetches
    them again from the log once the consumer has caught up."""

    def __init__(self, client: Client, channel: str) -> None:
        self._client = client
        self.channel = channel
        self._items: collections.deque[Event | Gap | Message | MessageLost | Resync] = collections.deque()
        self._sizes: collections.deque[int] = collections.deque()
        self._bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._error: BaseException | None = None
        self._consumed: Position | None = None
        self._ack_wanted: int | None = None
        self._joined: Joined | None = None
        self._joined_waiters: list[asyncio.Future[Joined]] = []

    # -- the application's side -------------------------------------------

    @property
    def position(self) -> Position | None:
        """The position of the last item the application took: resume from
        it (`Client.join(channel, since=sub.position)`) to miss nothing."""
        return self._consumed

    @property
    def joined(self) -> Joined | None:
        """The gateway's last `joined` answer for this channel."""
        return self._joined

    @property
    def buffered(self) -> int:
        """Items waiting for the application."""
        return len(self._items)

    async def wait_joined(self, timeout: float | None = None) -> Joined:
        """Waits for the gateway's first `joined` answer; raises the refusal
        (`ServerError` with code `forbidden`, `invalid_channel`...) or the
        client's fatal error."""
        if self._joined is not None:
            return self._joined
        if self._done:
            raise self._error or ClosedError("the subscription ended before it was joined")
        fut: asyncio.Future[Joined] = asyncio.get_running_loop().create_future()
        self._joined_waiters.append(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            if fut in self._joined_waiters:
                self._joined_waiters.remove(fut)

    def poll(self) -> Event | Gap | Message | MessageLost | Resync | None:
        """The next item if one is waiting, else `None` (never blocks). Raises
        the client's fatal error once everything before it was taken."""
        if self._items:
            return self._take()
        if self._done and self._error is not None:
            raise self._error
        return None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event | Gap | Message | MessageLost | Resync:
        while True:
            if self._items:
                return self._take()
            if self._done:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def ack(self, seq: int) -> None:
        """Moves the durable cursor to `seq` (at most what the application
        took). With `auto_ack` the client does this by itself."""
        self._ack_wanted = max(seq, self._ack_wanted or 0)
        await self._client._flush_acks_now()

    async def pause(self) -> None:
        """Pauses live delivery: acknowledges what was taken, leaves the
        channel and keeps its position; the iteration goes on (what is
        buffered is still yielded) and the channel is not joined on
        reconnect until `resume()`."""
        await self._client._pause(self.channel)

    async def resume(self) -> None:
        """Resumes a paused channel from the last seq delivered before the
        pause: the replay brings what was published meanwhile."""
        await self._client._resume(self.channel)

    async def leave(self) -> None:
        """Acknowledges what was taken, leaves the channel and ends the
        iteration."""
        await self._client._leave(self.channel)

    async def resync(self) -> None:
        """Drops the channel's position (see `Client.resync`): a `Resync`
        item follows what was delivered before, then delivery goes on after
        the head that the new join names."""
        await self._client.resync(self.channel)

    # -- the client's side ------------------------------------------------

    def _take(self) -> Event | Gap | Message | MessageLost | Resync:
        item = self._items.popleft()
        self._bytes -= self._sizes.popleft()
        if isinstance(item, (Event, Message)):
            self._consumed = Position(item.epoch, item.seq)
        elif isinstance(item, MessageLost):
            pass  # no seq of its own: the position stands
        elif isinstance(item, Resync):
            self._consumed = None  # the position was dropped
        else:
            epoch = self._consumed.epoch if self._consumed else self._client._epoch_of(self.channel)
            self._consumed = Position(epoch or "", item.to_seq)
        self._client._taken(self)
        return item

    def _put(self, item: Event | Gap | Message | MessageLost | Resync) -> bool:
        """Queues an item; `False` (and nothing queued) when the buffer is full."""
        c = self._client
        size = 0
        if isinstance(item, Event):
            if len(self._items) >= c._max_buffered:
                return False
            if c._max_buffered_bytes:
                size = approx_size(item)
                if self._items and self._bytes + size > c._max_buffered_bytes:
                    return False
                self._bytes += size
        self._items.append(item)
        self._sizes.append(size)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        return True

    def _set_joined(self, j: Joined) -> None:
        self._joined = j
        for fut in self._joined_waiters:
            if not fut.done():
                fut.set_result(j)
        self._joined_waiters.clear()

    def _finish(self, error: BaseException | None, *, discard: bool = False) -> None:
        if self._done:
            return
        self._done = True
        self._error = error
        if discard:
            self._items.clear()
            self._sizes.clear()
            self._bytes = 0
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        for fut in self._joined_waiters:
            if not fut.done():
                fut.set_exception(error or ClosedError("the subscription ended before it was joined"))
        self._joined_waiters.clear()


class _Channel:
    __slots__ = ("name", "seq", "initial", "acked", "sub", "suspended", "paused")

    def __init__(self, name: str, since: Since, sub: Subscription) -> None:
        self.name = name
        self.initial = since
        self.seq = (
            Sequencer.resuming(name, since.epoch, since.seq)
            if isinstance(since, Position)
            else Sequencer(name)
        )
        self.acked: Position | None = None
        self.sub = sub
        self.suspended = False
        # Paused by the application: left, kept, not joined until resumed.
        self.paused = False

    @property
    def idle(self) -> bool:
        """Not taking events now (suspended for backpressure, or paused)."""
        return self.suspended or self.paused

    def since(self) -> Any:
        if self.seq.epoch is not None and self.seq.last is not None:
            return {"epoch": self.seq.epoch, "seq": self.seq.last}
        if isinstance(self.initial, Position):
            return {"epoch": self.initial.epoch, "seq": self.initial.seq}
        return self.initial

