"""Reconnect delays: exponential with full jitter (a uniformly random delay
between zero and the current ceiling), reset after a stable connection, with
an optional cap on attempts. The same schedule as the Rust client
(`conformance/backoff.json`)."""

from __future__ import annotations


class Backoff:
    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        max_attempts: int | None = None,
        stable_after: float = 60.0,
        jitter: float = 1.0,
    ) -> None:
        if initial < 0 or maximum < 0:
            raise ValueError("reconnect delays must not be negative")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be a fraction from 0 to 1, not {jitter!r}")
        #: The jitter fraction `j` (1: full jitter, 0: none): the delay is
        #: `ceiling × (1 − j + j × unit)`.
        self.jitter = float(jitter)
        self.initial = initial
        self.maximum = maximum
        self.max_attempts = max_attempts
        self.stable_after = stable_after
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """Attempts made since the last reset."""
        return self._attempt

    def ceiling(self) -> float:
        """The ceiling of the next delay: `initial × 2^attempt`, at most `maximum`."""
        return float(min(self.maximum, self.initial * (2 ** min(self._attempt, 62))))

    def next_delay(self, unit: float) -> float | None:
        """The next delay, `unit` (uniform in 0..1) picking where under the
        ceiling it falls (within the jitter fraction's share of it); `None`
        when the attempts are used up."""
        if self.max_attempts is not None and self._attempt >= self.max_attempts:
            return None
        j = self.jitter
        delay = self.ceiling() * (1.0 - j + j * min(1.0, max(0.0, unit)))
        self._attempt += 1
        return delay

    def connection_ended(self, lasted: float) -> None:
        """A connection ended after `lasted` seconds: a stable one resets."""
        if lasted >= self.stable_after:
            self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0
