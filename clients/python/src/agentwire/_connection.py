"""One connection's helpers: how it ended, the timing of the in-band
refresh and of a `rate_limited` wait, and the `joined` frame's snapshot
(presence and health) read into the values the application gets."""

from __future__ import annotations

import math
from typing import Any

from ._options import _DEFAULT_RETRY_AFTER
from ._types import ChannelHealth, Presence

# How one connection ended.
_CLOSED, _LOST, _ROLLOVER, _RECONNECT_NOW, _FATAL = "closed", "lost", "rollover", "now", "fatal"
_FAILED, _TOKEN_REFUSED = "failed", "token_refused"


class _End(Exception):
    """Raised inside the connection loop to end the connection."""

    def __init__(self, how: str, reason: Any) -> None:
        super().__init__(str(reason))
        self.how = how
        self.reason = reason



def _retry_after_s(ms: Any) -> float:
    """A `retry_after_ms` in seconds (1 s when absent or unusable)."""
    if isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms >= 0:
        return float(ms) / 1000.0
    return _DEFAULT_RETRY_AFTER


def _refresh_delay(exp: float, now: float, lead: float) -> float:
    """Seconds from `now` until the in-band refresh of a token that expires at
    `exp` (both Unix seconds): `exp` minus the lead, the lead being the smaller
    of `lead` and half the time left; at once when the token has expired."""
    left = exp - now
    if not left > 0:
        return 0.0
    return max(0.0, left - min(lead, left / 2))


def _unix_seconds(v: Any) -> float | None:
    """A usable `token_exp` / `exp`: a finite number (not a bool), else `None`."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _presence_of(channel: str, presence: Any) -> Presence | None:
    """The channel's entry of a `joined` frame's `presence`, if any."""
    p = presence.get(channel) if isinstance(presence, dict) else None
    if not isinstance(p, dict):
        return None
    principals = p.get("principals")
    return Presence(
        channel=channel,
        count=_int_or_none(p.get("count")) or 0,
        principals=[x for x in principals if isinstance(x, str)] if isinstance(principals, list) else [],
        raw=p,
    )


def _health_of(channel: str, health: Any) -> ChannelHealth | None:
    """A `joined` frame's `health` with the channel's own entry merged in."""
    if not isinstance(health, dict):
        return None
    channels = health.get("channels")
    entry = channels.get(channel) if isinstance(channels, dict) else None
    entry = entry if isinstance(entry, dict) else {}
    server, time_ = health.get("server"), health.get("time")
    return ChannelHealth(
        server=server if isinstance(server, str) else None,
        protocol=_int_or_none(health.get("protocol")),
        time=time_ if isinstance(time_, str) else None,
        head=_int_or_none(entry.get("head")),
        oldest=_int_or_none(entry.get("oldest")),
    )

