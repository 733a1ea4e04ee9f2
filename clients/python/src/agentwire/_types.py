"""The values the client hands the application."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Position(NamedTuple):
    """A place in a channel's log: the log's `epoch` and the last seq seen."""

    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a channel: each seq once, in order."""

    channel: str
    epoch: str
    seq: int
    id: str
    kind: str
    data: Any
    ts: str

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.seq)

    @classmethod
    def from_frame(cls, f: dict[str, Any]) -> Event:
        return cls(
            channel=f["channel"],
            epoch=f.get("epoch", ""),
            seq=int(f["seq"]),
            id=f.get("id", ""),
            kind=f.get("kind", ""),
            data=f.get("data"),
            ts=f.get("ts", ""),
        )


@dataclass(frozen=True, slots=True)
class Gap:
    """Seqs `from_seq..=to_seq` of `channel` will never be delivered (they
    left the log: older than its retention). Delivery goes on after `to_seq`."""

    channel: str
    from_seq: int
    to_seq: int


@dataclass(frozen=True, slots=True)
class Joined:
    """The gateway's answer to a (re)join of one channel: where its log
    stands and whether the resume position was honoured (`recovered`)."""

    channel: str
    epoch: str
    head: int
    replayed: int
    recovered: bool
    until: int | None = None


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The gateway took the event: its id (the idempotency key) and channel."""

    id: str
    channel: str
    status: int = 202
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
