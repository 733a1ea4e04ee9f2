"""Messages larger than one event: chunk events and their reassembly.

A chunk is an event whose data is
``{"$chunk": {"message", "index", "count", "encoding", "bytes"}, "part"}``;
the parts, concatenated in index order, are the message's JSON text
(``json``), its text (``utf8``) or the base64 of its bytes (``base64``).
See docs/protocol.md, "Messages larger than one event".
"""

from __future__ import annotations

import base64
import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal, Union

Encoding = Literal["json", "utf8", "base64"]
LostReason = Literal["missing", "too_large", "invalid"]

PART_BYTES = 64 * 1024
_PART_RAW_BYTES = PART_BYTES // 4 * 3
MAX_MESSAGE_ID = 112
MAX_EVENT_DATA_BYTES = 96 * 1024

Payload = Union[bytes, str, Any]
"""What a publisher sends: ``bytes`` (base64 chunks), ``str`` (a text) or any JSON value."""


@dataclass(frozen=True)
class Message:
    """A message reassembled from its chunk events."""

    channel: str
    id: str
    kind: str
    seq: int
    """The seq of its last chunk."""
    epoch: str
    encoding: Encoding
    data: Any
    """The JSON value (``json``), the text (``utf8``) or the bytes (``base64``)."""


@dataclass(frozen=True)
class MessageLost:
    """A message that will never be delivered; reported once."""

    channel: str
    id: str
    reason: LostReason


def _json_size(v: Any) -> int:
    return len(json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode())


def as_event_data(payload: Payload) -> tuple[bool, Any]:
    """``(True, data)`` when ``payload`` fits in one plain event, else ``(False, None)``."""
    if isinstance(payload, (bytes, bytearray)):
        return False, None
    return (_json_size(payload) <= MAX_EVENT_DATA_BYTES, payload)


def _escaped_len(c: str) -> int:
    cp = ord(c)
    if c in '"\\\n\r\t\b\f':
        return 2
    if cp < 0x20:
        return 6
    return len(c.encode())


def _split_text(text: str) -> list[str]:
    parts: list[str] = []
    start = 0
    size = 0
    for i, c in enumerate(text):
        n = _escaped_len(c)
        if size + n > PART_BYTES:
            parts.append(text[start:i])
            start = i
            size = 0
        size += n
    parts.append(text[start:])
    return parts


def split_message(message: str, payload: Payload) -> list[tuple[str, dict[str, Any]]]:
    """The chunk events of ``payload`` as message ``message``, in order: ``(id, data)``."""
    encoding: Encoding
    if isinstance(payload, (bytes, bytearray)):
        raw = bytes(payload)
        encoding = "base64"
        size = len(raw)
        parts = [
            base64.b64encode(raw[i : i + _PART_RAW_BYTES]).decode()
            for i in range(0, len(raw), _PART_RAW_BYTES)
        ] or [""]
    else:
        if isinstance(payload, str):
            text, encoding = payload, "utf8"
        else:
            text, encoding = json.dumps(payload, ensure_ascii=False, separators=(",", ":")), "json"
        size = len(text.encode())
        parts = _split_text(text)
    return [
        (
            f"{message}#{i}",
            {
                "$chunk": {
                    "message": message,
                    "index": i,
                    "count": len(parts),
                    "encoding": encoding,
                    "bytes": size,
                },
                "part": part,
            },
        )
        for i, part in enumerate(parts)
    ]


@dataclass
class _Partial:
    header: dict[str, Any]
    kind: str
    next: int
    parts: list[str]
    size: int


def _header(data: Any) -> dict[str, Any] | None:
    if not isinstance(data, dict) or "$chunk" not in data:
        return None
    h = data["$chunk"]
    if not isinstance(h, dict):
        return None
    ints = all(isinstance(h.get(k), int) and not isinstance(h.get(k), bool) for k in ("index", "count", "bytes"))
    if not (isinstance(h.get("message"), str) and ints and h.get("encoding") in ("json", "utf8", "base64")):
        return None
    return h


DEFAULT_MAX_PARTIAL = 64
"""Messages in progress at most, by default: one more makes the oldest lost (`too_large`)."""

MAX_RECEIVED_ID_BYTES = 128
"""The longest message id taken from a chunk: a longer one is lost (`invalid`), under its first bytes."""


def _cut_id(message: str) -> str:
    raw = message.encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_RECEIVED_ID_BYTES:
        return message
    return raw[:MAX_RECEIVED_ID_BYTES].decode("utf-8", "ignore")


class Reassembler:
    """Reassembles chunk events into messages, per channel, within bounds: bytes per message, bytes
    held, messages in progress (``max_partial``) and the length of their ids."""

    def __init__(
        self,
        max_message_bytes: int = 64 * 1024 * 1024,
        max_held_bytes: int = 128 * 1024 * 1024,
        max_partial: int = DEFAULT_MAX_PARTIAL,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_held_bytes = max_held_bytes
        self.max_partial = max(1, max_partial)
        # In the order they started (dicts keep insertion order): the first is the oldest.
        self._partial: dict[tuple[str, str], _Partial] = {}
        self._evicted: list[MessageLost] = []
        self._lost: deque[tuple[str, str]] = deque(maxlen=1024)
        self.held = 0

    def accept(
        self, channel: str, seq: int, epoch: str, kind: str, data: Any
    ) -> Literal["not_chunk", "pending"] | Message | MessageLost:
        """Takes one delivered event (in seq order per channel)."""
        h = _header(data)
        if h is None:
            return "not_chunk"
        if h["message"] != _cut_id(h["message"]):
            return self._lose((channel, _cut_id(h["message"])), "invalid")
        key = (channel, h["message"])
        part = data.get("part")
        if not isinstance(part, str) or h["count"] < 1 or not 0 <= h["index"] < h["count"]:
            return self._lose(key, "invalid")
        if h["index"] == 0:
            self._drop(key)
            if key in self._lost:
                self._lost.remove(key)
            if h["bytes"] > self.max_message_bytes:
                return self._lose(key, "too_large")
            while len(self._partial) >= self.max_partial:
                oldest = next(iter(self._partial))
                lost = self._lose(oldest, "too_large")
                if isinstance(lost, MessageLost):
                    self._evicted.append(lost)
            self._partial[key] = _Partial(h, kind, 0, [], 0)
        elif key in self._lost:
            return "pending"
        p = self._partial.get(key)
        if p is None:
            return self._lose(key, "missing")
        if h["index"] < p.next:
            return "pending"
        if h["index"] > p.next:
            return self._lose(key, "missing")
        if h["count"] != p.header["count"] or h["encoding"] != p.header["encoding"]:
            return self._lose(key, "invalid")
        if p.size + len(part) > self.max_message_bytes * 2 or self.held + len(part) > self.max_held_bytes:
            return self._lose(key, "too_large")
        p.parts.append(part)
        p.size += len(part)
        p.next += 1
        self.held += len(part)
        if p.next < p.header["count"]:
            return "pending"
        self._drop(key)
        text = "".join(p.parts)
        encoding: Encoding = p.header["encoding"]
        try:
            if encoding == "base64":
                value: Any = base64.b64decode(text, validate=True)
                size = len(value)
            else:
                size = len(text.encode())
                value = json.loads(text) if encoding == "json" else text
        except (ValueError, RecursionError):
            # RecursionError: JSON nested deeper than the decoder goes.
            return self._lose(key, "invalid")
        if size != p.header["bytes"]:
            return self._lose(key, "invalid")
        return Message(channel, h["message"], p.kind, seq, epoch, encoding, value)

    @property
    def max_part_bytes(self) -> int:
        """The most one chunk's text may be: what a message's parts are held to (its
        bytes, or the base64 of its bytes); a compressed part that decodes to more is
        `invalid`."""
        return self.max_message_bytes * 2

    @property
    def partial(self) -> int:
        """Messages in progress."""
        return len(self._partial)

    def take_evicted(self) -> list[MessageLost]:
        """The messages lost to the count bound since the last call, to report before what
        `accept` returned."""
        out, self._evicted = self._evicted, []
        return out

    def _drop(self, key: tuple[str, str]) -> None:
        p = self._partial.pop(key, None)
        if p is not None:
            self.held -= p.size

    def _lose(self, key: tuple[str, str], reason: LostReason) -> Literal["pending"] | MessageLost:
        self._drop(key)
        if key in self._lost:
            return "pending"
        self._lost.append(key)
        return MessageLost(key[0], key[1], reason)
