"""The Rust backoff's unit tests (`clients/rust/src/backoff.rs`), ported."""

from __future__ import annotations

import pytest

from agentwire._backoff import Backoff


def test_ceilings_double_from_half_a_second_to_thirty() -> None:
    b = Backoff()
    ceilings = []
    for _ in range(9):
        ceilings.append(round(b.ceiling() * 1000))
        b.next_delay(0.5)
    assert ceilings == [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    b = Backoff()
    assert b.next_delay(0.0) == 0.0
    assert b.next_delay(1.0) == pytest.approx(1.0)
    assert b.next_delay(0.25) == pytest.approx(0.5)
    assert b.next_delay(7.0) == pytest.approx(4.0), "clamped to the ceiling"


def test_an_attempt_cap_ends_the_schedule() -> None:
    b = Backoff(max_attempts=2)
    assert b.next_delay(0.5) is not None
    assert b.next_delay(0.5) is not None
    assert b.next_delay(0.5) is None


def test_only_a_stable_connection_resets_the_schedule() -> None:
    b = Backoff()
    for _ in range(4):
        b.next_delay(0.5)
    b.connection_ended(5.0)
    assert b.attempt == 4, "a short-lived connection keeps backing off"
    b.connection_ended(61.0)
    assert b.attempt == 0
    assert b.ceiling() == 0.5
