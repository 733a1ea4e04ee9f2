"""The values the client hands the application."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypedDict


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
        """The event of a frame; `ValueError` when a field has the wrong type (a frame the
        client cannot use, reported and skipped)."""
        seq = f.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**64:
            raise ValueError(f"an event's seq must be a whole number, not {seq!r:.40}")
        texts = {k: f.get(k, "") for k in ("channel", "epoch", "id", "kind", "ts")}
        for k, v in texts.items():
            if not isinstance(v, str):
                raise ValueError(f"an event's {k} must be a string, not {type(v).__name__}")
        return cls(
            channel=texts["channel"],
            epoch=texts["epoch"],
            seq=seq,
            id=texts["id"],
            kind=texts["kind"],
            data=f.get("data"),
            ts=texts["ts"],
        )


@dataclass(frozen=True, slots=True)
class Gap:
    """Seqs `from_seq..=to_seq` of `channel` will never be delivered (they
    left the log: older than its retention). Delivery goes on after `to_seq`."""

    channel: str
    from_seq: int
    to_seq: int


@dataclass(frozen=True, slots=True)
class ChannelHealth:
    """The `health` a `joined` answer carries, for one channel: the server,
    the negotiated protocol, the server's time, and the channel's `head` and
    `oldest` retained seq (`None` when the gateway did not say)."""

    server: str | None = None
    protocol: int | None = None
    time: str | None = None
    head: int | None = None
    oldest: int | None = None


@dataclass(frozen=True, slots=True)
class Joined:
    """The gateway's answer to a (re)join of one channel: where its log
    stands and whether the resume position was honoured (`recovered`), with
    the snapshot the answer carried: who is on the channel (`presence`) and
    the server's and the channel's `health` (`None` when absent)."""

    channel: str
    epoch: str
    head: int
    replayed: int
    recovered: bool
    until: int | None = None
    presence: Presence | None = None
    health: ChannelHealth | None = None


@dataclass(frozen=True, slots=True)
class Resync:
    """A subscription item: `resync()` dropped the channel's position (what
    was delivered before came first); the channel joins again from the head
    and delivery goes on after it. `previous` is where delivery stood."""

    channel: str
    previous: Position | None = None


@dataclass(frozen=True, slots=True)
class StateChange:
    """A connection state change (`Client.on_state_change`): `previous` and
    `current` state (`idle`, `connecting`, `connected`, `reconnecting`,
    `closed`), why, and for a reconnect after a backoff delay the `attempt`
    that follows (from 1) and the `delay` in seconds; `error` is the fatal
    error of a `closed` state."""

    previous: str
    current: str
    reason: str
    attempt: int | None = None
    delay: float | None = None
    error: Any = None


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The gateway took the event: its id (the idempotency key) and channel,
    and what became of it, by `status` (the HTTP answer, any 2xx):

    - 201: committed now; `seq` and `epoch` are its place in the channel's log.
    - 200: its idempotency key was already committed (a repeat: of an
      earlier publish, or the publisher's own retry of one whose answer was
      lost); nothing new was published, and `seq` and `epoch` are the ones
      the event already has.
    - 202: `queued`: the gateway could not commit it at once and put it on
      its queue; it is committed shortly, and `seq` and `epoch` are None.

    `seq` and `epoch` are None when the answer does not carry them (`raw` is
    the whole answer)."""

    id: str
    channel: str
    status: int = 202
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: The event's seq in the channel's log (200, 201); None while queued.
    seq: int | None = None
    #: The epoch of the log that `seq` is in (200, 201); None while queued.
    epoch: str | None = None
    #: On the gateway's queue, not committed yet (202): no seq yet.
    queued: bool = False


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of a channel's history (`Publisher.history`): the retained
    events after `after`, ascending, each an `Event` like a live one."""

    channel: str
    #: The channel's log epoch ("" for a channel with no event yet).
    epoch: str
    #: The channel's last seq (0: no event yet).
    head: int
    #: The oldest retained seq; None when none is.
    oldest: int | None
    events: list[Event]
    #: What after `after` is gone (expired), if anything.
    gap: Gap | None
    #: The `after` of the next page; None when this page reaches the head.
    next_after: int | None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Presence:
    """Who is on a channel: how many connections joined it and a sample (at
    most 32) of their principals (the tokens' `sub`)."""

    channel: str
    count: int
    principals: list[str]
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class WebhookInfo:
    """The webhook that applies to a channel (never its URL or secret):
    `mode` `fallback`, `always` or `off`; `scope` `channel` (its own) or
    `tenant` (the tenant's default)."""

    mode: str
    scope: str


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """A channel's state (`Publisher.channel`)."""

    channel: str
    epoch: str
    head: int
    oldest: int | None
    #: How long its events are kept, in seconds.
    retention_s: int
    webhook: WebhookInfo | None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class _BatchEventKind(TypedDict):
    kind: str


class BatchEvent(_BatchEventKind, total=False):
    """One event of `Publisher.publish_batch`: `kind` (required), `data`, and
    `id`, its idempotency key (unique per channel; one is generated when
    absent)."""

    data: Any
    id: str


@dataclass(frozen=True, slots=True)
class PublishedEvent:
    """One event of a committed batch (`BatchResult.events`): its id and its
    place in the channel's log (None when the answer did not carry it)."""

    id: str
    seq: int | None
    epoch: str | None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The gateway took the batch: the events' ids, in the request's order,
    and what became of them, by `status` (the HTTP answer, any 2xx):

    - 201: committed now (the events whose ids were committed before keep
      their seqs, the others are new); `events` holds each one's id, seq
      and epoch, in the request's order.
    - 200: every id was already committed (a repeat: of an earlier batch, or
      the publisher's own retry of one whose answer was lost); nothing new
      was published, `events` holds the seqs they already have.
    - 202: `queued`: the gateway could not commit them at once and put them
      on its queue, in order; they are committed shortly, and `events` is
      None.

    `events` is None too when the answer does not carry it (`raw` is the
    whole answer)."""

    channel: str
    ids: list[str]
    status: int = 202
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: Each event's id, seq and epoch, in the request's order (200, 201); None while queued.
    events: list[PublishedEvent] | None = None
    #: On the gateway's queue, not committed yet (202): no seqs yet.
    queued: bool = False
