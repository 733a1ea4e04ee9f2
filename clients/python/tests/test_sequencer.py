"""The Rust sequencer's unit tests (`clients/rust/src/sequencer.rs`), ported."""

from __future__ import annotations

from agentwire import Event, Gap
from agentwire._sequencer import Sequencer


def ev(seq: int, data: object = None) -> Event:
    return Event(channel="c", epoch="e1", seq=seq, id=f"i{seq}", kind="k", data=data, ts="t")


def flat(ds: list) -> list[int]:
    """Delivered seqs, with gaps as negative markers (-from)."""
    return [d.seq if isinstance(d, Event) else -d.from_seq for d in ds]


def test_a_live_event_that_overtakes_the_replay_waits_for_it() -> None:
    s = Sequencer.resuming("c", "e1", 5)
    out = flat(s.event(ev(11)))
    out += flat(s.joined("e1", 10, 5))
    for seq in range(6, 11):
        out += flat(s.event(ev(seq)))
    assert out == [6, 7, 8, 9, 10, 11]
    assert s.last == 11 and s.pending == 0


def test_a_gap_frame_never_covers_what_was_already_delivered_or_is_held() -> None:
    s = Sequencer.resuming("c", "e1", 21)
    s.rejoining()
    out = flat(s.event(ev(22)))
    out += flat(s.joined("e1", 22, 0))
    out += flat(s.gap(22, 22))
    assert out == [22], "22 arrived: no gap"
    out = flat(s.gap(20, 25))
    out += flat(s.event(ev(26)))
    assert out == [-23, 26]
    s = Sequencer.resuming("c", "e1", 5)
    s.joined("e1", 10, 0)
    assert s.event(ev(9)) == [], "held: the replay has not reached it"
    ds = s.gap(6, 9)
    assert flat(ds) == [-6, 9]
    assert ds[0] == Gap("c", 6, 8)


def test_live_events_that_overtake_the_joined_are_not_taken_for_a_reset() -> None:
    s = Sequencer.resuming("c", "e1", 21)
    s.rejoining()
    out = flat(s.event(ev(22)))
    out += flat(s.joined("e1", 21, 0))
    out += flat(s.event(ev(23)))
    assert out == [22, 23], "no gap, no repeat"


def test_a_channel_joined_before_it_had_a_log_adopts_the_first_epoch() -> None:
    s = Sequencer("c")
    assert s.joined("", 0, 0) == []
    out = flat(s.event(ev(1))) + flat(s.event(ev(2)))
    assert out == [1, 2]
    assert s.epoch == "e1"


def test_duplicates_are_delivered_once() -> None:
    s = Sequencer.resuming("c", "e1", 0)
    s.joined("e1", 3, 3)
    out: list[int] = []
    for seq in [1, 2, 2, 1, 3, 3]:
        out += flat(s.event(ev(seq)))
    assert out == [1, 2, 3]


def test_the_servers_gap_frame_is_surfaced_and_what_follows_delivered() -> None:
    s = Sequencer.resuming("c", "e1", 2)
    s.joined("e1", 8, 3)
    out = flat(s.gap(3, 5))
    for seq in range(6, 9):
        out += flat(s.event(ev(seq)))
    assert out == [-3, 6, 7, 8]


def test_a_hole_in_the_live_stream_asks_for_a_rejoin_never_a_gap() -> None:
    s = Sequencer.resuming("c", "e1", 4)
    s.joined("e1", 4, 0)
    assert flat(s.event(ev(5))) == [5]
    assert not s.wants_rejoin()
    assert s.event(ev(8)) == [], "held, not a gap"
    assert s.wants_rejoin(), "6 and 7 are in the log: join again from 5"
    assert s.last == 5
    s.rejoining()
    assert not s.wants_rejoin(), "a join is under way"
    assert s.event(ev(9)) == []
    out = flat(s.joined("e1", 8, 3))
    for q in range(6, 9):
        out += flat(s.event(ev(q)))
    assert out == [6, 7, 8, 9]
    assert not s.wants_rejoin()
    assert s.pending == 0


def test_a_replay_that_stops_short_of_the_head_continues_from_its_end() -> None:
    s = Sequencer.resuming("c", "e1", 0)
    out = flat(s.joined("e1", 10, 4, 4))
    for q in range(1, 4):
        out += flat(s.event(ev(q)))
    assert not s.wants_rejoin(), "the page is not complete yet"
    out += flat(s.event(ev(4)))
    assert s.wants_rejoin(), "5..=10 are still to come"
    s.rejoining()
    out += flat(s.joined("e1", 10, 6))
    for q in range(5, 11):
        out += flat(s.event(ev(q)))
    assert out == list(range(1, 11))
    assert not s.wants_rejoin()


def test_a_new_client_starts_where_the_replay_starts() -> None:
    s = Sequencer("c")
    s.joined("e1", 20, 0)
    assert flat(s.event(ev(21))) == [21]
    s = Sequencer("c")
    s.joined("e1", 20, 5)
    out: list[int] = []
    for seq in range(16, 22):
        out += flat(s.event(ev(seq)))
    assert out == [16, 17, 18, 19, 20, 21]


def test_another_epoch_restarts_the_count() -> None:
    s = Sequencer.resuming("c", "old", 50)
    s.joined("e1", 3, 3)
    out: list[int] = []
    for seq in range(1, 4):
        out += flat(s.event(ev(seq)))
    assert out == [1, 2, 3]
    assert s.epoch == "e1"


def test_held_events_are_bounded_by_count_and_dropped_for_a_rejoin() -> None:
    s = Sequencer.resuming("c", "e1", 0, max_pending=3)
    s.joined("e1", 0, 0)
    out: list[int] = []
    for seq in [50, 51, 52]:
        out += flat(s.event(ev(seq)))
    assert out == []
    assert s.pending == 3
    out += flat(s.event(ev(53)))
    assert out == [], "no gap: the log still has 1..=53"
    assert (s.pending, s.pending_bytes) == (0, 0)
    assert s.wants_rejoin()


def test_held_events_are_bounded_by_bytes() -> None:
    def big(seq: int) -> Event:
        return ev(seq, "x" * 1000)

    s = Sequencer.resuming("c", "e1", 0, max_pending_bytes=3500)
    s.joined("e1", 0, 0)
    for seq in range(2, 5):
        assert s.event(big(seq)) == []
    assert s.pending == 3
    assert s.pending_bytes > 3000
    assert s.event(big(5)) == []
    assert s.pending == 0, "over 3500 bytes: dropped"
    assert s.wants_rejoin()
    s.rejoining()
    out = flat(s.joined("e1", 5, 5))
    for seq in range(1, 6):
        out += flat(s.event(big(seq)))
    assert out == [1, 2, 3, 4, 5]


def test_after_a_reconnect_early_events_wait_for_the_new_joined() -> None:
    s = Sequencer.resuming("c", "e1", 0)
    s.joined("e1", 2, 2)
    s.event(ev(1))
    s.event(ev(2))
    s.rejoining()
    assert s.event(ev(9)) == [], "held: the replay may bring 3..=8"
    out = flat(s.joined("e1", 8, 6))
    for q in range(3, 9):
        out += flat(s.event(ev(q)))
    assert out == [3, 4, 5, 6, 7, 8, 9]


def test_rewind_drops_held_events_and_resumes_from_there() -> None:
    s = Sequencer.resuming("c", "e1", 0)
    s.joined("e1", 5, 5)
    for q in (1, 2, 4, 5):
        s.event(ev(q))
    s.rewind(1)
    assert s.last == 1 and s.pending == 0
    s.rejoining()
    out = flat(s.joined("e1", 5, 4))
    for q in range(2, 6):
        out += flat(s.event(ev(q)))
    assert out == [2, 3, 4, 5]
