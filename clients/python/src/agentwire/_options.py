"""The client's options and the protocol's limits it keeps: the protocol
versions, channels per join, channel names, and the types of its arguments
(`since`, the token provider, the connection state)."""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable, Literal, Union

from ._types import Position

#: The protocol versions this client speaks.
PROTOCOL_MIN = 1
PROTOCOL_MAX = 1
#: Channels per `join` frame (the gateway's limit).
MAX_CHANNELS_PER_JOIN = 50
_CHANNEL_RE = re.compile(r"^[A-Za-z0-9\-_.:/@]{1,128}$")
#: The wait after a `rate_limited` answer that carries no `retry_after_ms`, in seconds.
_DEFAULT_RETRY_AFTER = 1.0
#: The codes of a refused token.
_TOKEN_CODES = ("unauthorized", "token_expired", "token_revoked")

State = Literal["idle", "connecting", "connected", "reconnecting", "closed"]
Since = Union[None, Literal["head"], Position]
TokenProvider = Callable[[], Union[str, Awaitable[str]]]


def _since_arg(since: Any) -> Since:
    if since is None:
        return None
    if since == "head":
        return "head"
    if isinstance(since, Position):
        return since
    if isinstance(since, tuple) and len(since) == 2:
        return Position(str(since[0]), int(since[1]))
    if isinstance(since, dict):
        return Position(str(since["epoch"]), int(since["seq"]))
    raise ValueError(f"since must be None, 'head' or Position(epoch, seq), not {since!r}")
