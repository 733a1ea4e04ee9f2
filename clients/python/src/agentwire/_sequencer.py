"""One channel's delivery order: each seq exactly once, in order.

A port of the Rust client's `Sequencer` (`clients/rust/src/sequencer.rs`).
The gateway subscribes before it replays, so a live event may overtake the
replay (even the `joined` answer), and a seq may come twice. The sequencer
holds events that arrive early and drops what it already delivered. A hole is
never guessed to be lost: only the server's `gap` frame (the range is gone
from the log) becomes a `Gap`. A hole in the live stream, a replay that stops
short of the head (`until`) or held events given up to stay within bounds
instead make the channel ask for a re-join from `last` (`wants_rejoin`): the
events are still in the log.
"""

from __future__ import annotations

import json
from typing import Union

from ._types import Event, Gap

Delivery = Union[Event, Gap]

#: Held events beyond which they are dropped (and fetched again by a re-join).
DEFAULT_MAX_PENDING = 10_000
#: The same bound in bytes (the events' approximate JSON size).
DEFAULT_MAX_PENDING_BYTES = 32 * 1024 * 1024


def approx_size(e: Event) -> int:
    """An event's approximate size in memory: its JSON text."""
    try:
        data = len(json.dumps(e.data, separators=(",", ":")))
    except (TypeError, ValueError):
        data = 0
    return data + len(e.id) + len(e.kind) + len(e.channel) + len(e.epoch) + len(e.ts) + 64


class Sequencer:
    def __init__(
        self,
        channel: str,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        self.channel = channel
        self.epoch: str | None = None
        self.last: int | None = None
        #: Where the current replay ends: seqs up to it come from the replay.
        self.replay_until = 0
        #: The highest seq known to exist in this epoch.
        self.known = 0
        #: A join was sent and its `joined` has not come.
        self.awaiting_join = True
        self._pending: dict[int, Event] = {}
        self._pending_bytes = 0
        self.max_pending = max(1, max_pending)
        self.max_pending_bytes = max(1, max_pending_bytes)

    @classmethod
    def resuming(cls, channel: str, epoch: str, last: int, **kw: int) -> Sequencer:
        """A channel resumed from a position the client kept."""
        s = cls(channel, **kw)
        s.epoch = epoch
        s.last = last
        return s

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def rejoining(self) -> None:
        """A (re)join is about to be sent: until its `joined`, early events wait."""
        self.awaiting_join = True

    def wants_rejoin(self) -> bool:
        """Whether the channel should be joined again from `last`: no join is
        under way, the replay is complete, and later seqs are known to exist
        but did not arrive."""
        if self.last is None:
            return False
        return not self.awaiting_join and self.last >= self.replay_until and self.last < self.known

    def rewind(self, last: int) -> None:
        """Delivery stops after `last` (the application's buffer is full):
        held events are dropped; a later re-join from `last` fetches the rest."""
        self.last = last
        self._pending.clear()
        self._pending_bytes = 0

    def joined(self, epoch: str, head: int, replayed: int, until: int | None = None) -> list[Delivery]:
        end = min(until if until is not None else head, head)
        same_log = self.epoch == epoch and self.last is not None
        if not same_log:
            # A new client, another epoch, or a reset log: the replay starts
            # right after `end - replayed`.
            self._pending = {s: e for s, e in self._pending.items() if e.epoch == epoch}
            self._pending_bytes = sum(approx_size(e) for e in self._pending.values())
            self.last = max(0, end - replayed)
            self.known = 0
        self.epoch = epoch
        self.replay_until = end
        held_max = max(self._pending) if self._pending else 0
        self.known = max(self.known, head, held_max)
        self.awaiting_join = False
        return self._drain()

    def gap(self, from_seq: int, to_seq: int) -> list[Delivery]:
        """The server's `gap` frame: only the part after the last delivered
        seq, and before the first held event in the range, is surfaced."""
        if self.last is not None:
            from_seq = max(from_seq, self.last + 1)
        if from_seq > to_seq:
            return self._drain()
        held = [s for s in self._pending if from_seq <= s <= to_seq]
        if held:
            to_seq = min(held) - 1
        out: list[Delivery] = []
        if from_seq <= to_seq:
            out.append(Gap(self.channel, from_seq, to_seq))
            self.last = to_seq
        out.extend(self._drain())
        return out

    def event(self, e: Event) -> list[Delivery]:
        if self.epoch == "" and self.last == 0:
            # Joined before the channel had a log: the first log is this one.
            self.epoch = e.epoch
        if self.epoch is not None and self.epoch != e.epoch and self.last is not None:
            # Another incarnation of the log: the next `joined` decides.
            self._hold(e)
            return []
        last = self.last
        if last is None:
            self._hold(e)
            return []
        if e.seq <= last:
            return []
        if e.seq > self.known:
            self.known = e.seq
        if e.seq == last + 1:
            self.last = e.seq
            if not self._pending:
                return [e]
            out: list[Delivery] = [e]
            out.extend(self._drain())
            return out
        self._hold(e)
        return []

    def _hold(self, e: Event) -> None:
        if e.seq in self._pending:
            return
        if self.epoch == e.epoch and e.seq > self.known:
            self.known = e.seq
        self._pending_bytes += approx_size(e)
        self._pending[e.seq] = e
        if len(self._pending) > self.max_pending or self._pending_bytes > self.max_pending_bytes:
            # Dropped: the re-join that follows fetches them again from the log.
            self._pending.clear()
            self._pending_bytes = 0

    def _drain(self) -> list[Delivery]:
        out: list[Delivery] = []
        if self.last is None or not self._pending:
            return out
        last = self.last
        for seq in sorted(self._pending):
            if seq > last + 1:
                break
            e = self._pending.pop(seq)
            self._pending_bytes = max(0, self._pending_bytes - approx_size(e))
            if seq == last + 1:
                out.append(e)
                last = seq
        self.last = last
        return out
