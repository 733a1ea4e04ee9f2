"""Compressed payloads: the text of a stream event or a chunk, sent
gzip-compressed (docs/protocol.md, "Compressed payloads").

The client announces ``"gzip"`` in its ``hello``; the gateway then sends a
stream event ``{"stream", "index", "text"}`` as ``{"stream", "index", "gz"}``
and a chunk ``{"$chunk", "part"}`` as ``{"$chunk", "gz"}`` (exactly these
keys), ``gz`` being the base64 (standard alphabet, padded) of one gzip member
of the text's UTF-8 bytes. `expand` gives the data back as it was published,
before anything else sees the event. Decoding is bounded: a ``gz`` never
decodes to more than its bound.
"""

from __future__ import annotations

import base64
import re
import zlib
from typing import Any

FEATURE = "gzip"
"""The ``hello`` (and ``welcome``) feature that names it."""

GZ_KEY = "gz"

MAX_STREAM_TEXT_BYTES = 4 * 1024 * 1024
"""The most a stream event's ``gz`` decodes to (UTF-8 bytes); one that would
decode to more is handed over as it came."""

# Standard alphabet, padded, nothing else (no whitespace, nothing after the padding).
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def gunzip_text(gz: str, max_bytes: int) -> str | None:
    """The text ``gz`` stands for: the UTF-8 text of the gzip (one member) of
    base64 ``gz``, at most ``max_bytes`` bytes of it; ``None`` when ``gz`` does
    not decode (not strict base64, not one whole gzip member, trailing data,
    not UTF-8, over the bound). Never inflates more than ``max_bytes + 1``."""
    if not _BASE64.fullmatch(gz):
        return None
    try:
        raw = base64.b64decode(gz, validate=True)
    except ValueError:  # binascii.Error
        return None
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(raw, max(0, max_bytes) + 1)
    except zlib.error:
        return None
    if len(out) > max_bytes or d.unconsumed_tail or not d.eof or d.unused_data:
        # Over the bound, cut short, or more after the member (a second one, garbage).
        return None
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _stream_shape(data: dict[str, Any]) -> bool:
    index = data.get("index")
    return (
        len(data) == 3
        and isinstance(data.get("stream"), str)
        and isinstance(index, int)
        and not isinstance(index, bool)
        and index >= 0
        and isinstance(data.get(GZ_KEY), str)
    )


def _chunk_shape(data: dict[str, Any]) -> bool:
    return len(data) == 2 and isinstance(data.get("$chunk"), dict) and isinstance(data.get(GZ_KEY), str)


def expand(data: Any, *, max_part_bytes: int, max_text_bytes: int = MAX_STREAM_TEXT_BYTES) -> Any:
    """``data`` as it was published: a compressed stream event becomes
    ``{"stream", "index", "text"}`` and a compressed chunk
    ``{"$chunk", "part"}`` (the keys in the same order), a new dict; anything
    else is returned as it is (the same object), and so is a ``gz`` that
    does not decode: a stream event is handed over as it came, and a chunk
    without its ``part`` loses its message (``invalid``) in the reassembly.
    A chunk's text is at most ``max_part_bytes``, a stream event's
    ``max_text_bytes``."""
    if not isinstance(data, dict) or GZ_KEY not in data:
        return data
    if _stream_shape(data):
        key, bound = "text", max_text_bytes
    elif _chunk_shape(data):
        key, bound = "part", max_part_bytes
    else:
        return data
    text = gunzip_text(data[GZ_KEY], bound)
    if text is None:
        return data
    return {(key if k == GZ_KEY else k): (text if k == GZ_KEY else v) for k, v in data.items()}
