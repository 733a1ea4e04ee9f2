"""Compressed payloads (docs/protocol.md, "Compressed payloads"): `gz` decoded
back to the stream event's `text` or the chunk's `part`, strictly and within
bounds; anything else untouched."""

from __future__ import annotations

import base64
import gzip
import json
import tracemalloc
import zlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentwire import Client, Message, MessageLost
from agentwire._chunks import Reassembler, split_message
from agentwire._gzip import MAX_STREAM_TEXT_BYTES, expand, gunzip_text

BOUND = 1024


def gz(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(gzip.compress(raw)).decode()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_a_stream_event_gets_its_text_back() -> None:
    text = "\x1b[32m   Compiling\x1b[0m agentwire-core v0.1.0 — ünïcödé 🚀\n" * 20
    data = {"stream": "s1", "index": 3, "gz": gz(text)}
    out = expand(data, max_part_bytes=BOUND)
    assert out == {"stream": "s1", "index": 3, "text": text}
    assert list(out) == ["stream", "index", "text"], "the keys keep their order"
    assert data == {"stream": "s1", "index": 3, "gz": gz(text)}, "the frame's data is not changed in place"


def test_a_chunk_gets_its_part_back() -> None:
    header = {"message": "m1", "index": 0, "count": 1, "encoding": "utf8", "bytes": 12}
    out = expand({"$chunk": header, "gz": gz("Hello, world")}, max_part_bytes=BOUND)
    assert out == {"$chunk": header, "part": "Hello, world"}
    assert out["$chunk"] is header


def test_the_scenarios_payloads_decode() -> None:
    # conformance/scenarios/gzip-payloads-are-decoded.json
    assert gunzip_text("H4sIAAAAAAACA/NIzcnJ11EAAAVvV94HAAAA", BOUND) == "Hello, "
    text = gunzip_text(
        "H4sIAAAAAAACA5OONjbKVVBQcM7PLcjMycxLl442yFVITE/NKynPLErVTc4vSlUoM9Az1DPgkqaRWgBYTBrGhAAAAA==", BOUND
    )
    assert text == "\x1b[32m   Compiling\x1b[0m agentwire-core v0.1.0\n" * 3


def test_an_empty_text_decodes() -> None:
    assert expand({"stream": "s", "index": 0, "gz": gz("")}, max_part_bytes=BOUND) == {
        "stream": "s",
        "index": 0,
        "text": "",
    }


GOOD = gzip.compress("some text".encode())
INVALID = {
    "not base64": "not gzip!",
    "base64 without its padding": b64(GOOD).rstrip("="),
    "base64 with whitespace": b64(GOOD)[:8] + "\n" + b64(GOOD)[8:],
    "the url-safe alphabet": b64(b"\xfb\xff" + GOOD).replace("+", "-").replace("/", "_"),
    "data after the padding": b64(GOOD) + "QQ==",
    "not gzip": b64(b"not gzip"),
    "a zlib stream, not gzip": b64(zlib.compress(b"some text")),
    "cut short": b64(GOOD[:-4]),
    "a bad checksum": b64(GOOD[:-8] + bytes([GOOD[-8] ^ 1]) + GOOD[-7:]),
    "trailing garbage": b64(GOOD + b"garbage"),
    "two gzip members": b64(GOOD + GOOD),
    "not UTF-8": b64(gzip.compress(b"\xff\xfe text")),
    "a lone surrogate": b64(gzip.compress(b"\xed\xa0\x80")),
    "empty": "",
}


def test_a_gz_that_does_not_decode_is_none() -> None:
    assert gunzip_text(b64(GOOD), BOUND) == "some text"
    for why, bad in INVALID.items():
        assert gunzip_text(bad, BOUND) is None, why


def test_a_stream_event_that_does_not_decode_is_handed_over_as_it_came() -> None:
    for why, bad in INVALID.items():
        data = {"stream": "s1", "index": 1, "gz": bad}
        assert expand(data, max_part_bytes=BOUND) is data, why


def test_a_chunk_that_does_not_decode_loses_its_message() -> None:
    r = Reassembler()
    for i, (why, bad) in enumerate(INVALID.items()):
        header = {"message": f"m{i}", "index": 0, "count": 1, "encoding": "utf8", "bytes": 9}
        data = {"$chunk": header, "gz": bad}
        out = expand(data, max_part_bytes=BOUND)
        assert out is data, why
        assert r.accept("c", i + 1, "e1", "out", out) == MessageLost("c", f"m{i}", "invalid"), why


def test_other_shapes_are_untouched() -> None:
    g = gz("some text")
    header = {"message": "m", "index": 0, "count": 1, "encoding": "utf8", "bytes": 9}
    others: list[Any] = [
        None,
        "gz",
        [g],
        {"gz": g},
        {"gz": "not ours", "n": 3},
        {"stream": "s", "gz": g},
        {"index": 0, "gz": g},
        {"stream": "s", "index": 0, "gz": g, "end": True},
        {"stream": "s", "index": 0, "text": "plain"},
        {"stream": "s", "index": 0, "text": "plain", "gz": g},
        {"stream": "s", "index": 0, "gz": 3},
        {"stream": "s", "index": 0, "gz": None},
        {"stream": 1, "index": 0, "gz": g},
        {"stream": "s", "index": "0", "gz": g},
        {"stream": "s", "index": -1, "gz": g},
        {"stream": "s", "index": True, "gz": g},
        {"stream": "s", "index": 0.5, "gz": g},
        {"$chunk": header, "part": "plain"},
        {"$chunk": header, "part": "plain", "gz": g},
        {"$chunk": header, "gz": g, "n": 1},
        {"$chunk": header, "gz": [g]},
        {"$chunk": "header", "gz": g},
        {"$chunk": None, "gz": g},
    ]
    for data in others:
        before = json.dumps(data)
        assert expand(data, max_part_bytes=BOUND) is data, data
        assert json.dumps(data) == before


def test_a_text_over_the_bound_does_not_decode() -> None:
    assert gunzip_text(gz("x" * BOUND), BOUND) == "x" * BOUND, "at the bound: decoded"
    assert gunzip_text(gz("x" * (BOUND + 1)), BOUND) is None
    assert gunzip_text(gz("é" * (BOUND // 2) + "x"), BOUND) is None, "the bound counts UTF-8 bytes"
    header = {"message": "m", "index": 0, "count": 1, "encoding": "utf8", "bytes": BOUND + 1}
    chunk = {"$chunk": header, "gz": gz("x" * (BOUND + 1))}
    assert expand(chunk, max_part_bytes=BOUND) is chunk
    assert Reassembler().accept("c", 1, "e1", "out", chunk) == MessageLost("c", "m", "invalid")
    stream = {"stream": "s", "index": 0, "gz": gz("x" * (BOUND + 1))}
    assert expand(stream, max_part_bytes=BOUND * 100, max_text_bytes=BOUND) is stream
    assert expand(stream, max_part_bytes=0)["text"] == "x" * (BOUND + 1), "a stream event has its own bound"


def bomb(mib: int) -> str:
    """The gz of `mib` MiB of zeros (about 1 KiB of gzip per MiB)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    raw = b"".join(z.compress(block) for _ in range(mib)) + z.flush()
    return b64(raw)


def test_a_gzip_bomb_is_never_inflated_past_the_bound() -> None:
    gz256 = bomb(256)
    assert len(gz256) < 1024 * 1024
    data = {"stream": "s", "index": 0, "gz": gz256}
    tracemalloc.start()
    try:
        assert expand(data, max_part_bytes=BOUND) is data
        assert gunzip_text(gz256, MAX_STREAM_TEXT_BYTES) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Inflated whole it would be 256 MiB; bounded, a few times the bound (4 MiB) at most
    # (zlib's output buffer and its copy, the gz's bytes).
    assert peak < 4 * MAX_STREAM_TEXT_BYTES, peak


async def test_the_client_decodes_events_before_anything_else_sees_them() -> None:
    client = Client("ws://localhost:1", token="t", max_message_bytes=BOUND)
    frame = {
        "type": "event",
        "channel": "c",
        "epoch": "e1",
        "seq": 1,
        "id": "i1",
        "kind": "out",
        "data": {"stream": "s", "index": 0, "gz": gz("some text")},
        "ts": "t",
    }
    ev = client._event(frame)
    assert ev.data == {"stream": "s", "index": 0, "text": "some text"}
    assert (ev.channel, ev.seq, ev.id, ev.kind, ev.epoch, ev.ts) == ("c", 1, "i1", "out", "e1", "t")
    plain = dict(frame, data={"n": 1})
    assert client._event(plain).data is plain["data"]
    # A chunk's bound is what the client holds a message's parts to.
    header = {"message": "m", "index": 0, "count": 1, "encoding": "base64", "bytes": BOUND}
    part = b64(bytes(BOUND))  # the base64 of a message at the client's bound: longer than the bound
    ev = client._event(dict(frame, data={"$chunk": header, "gz": gz(part)}))
    a = client._messages.accept(ev.channel, ev.seq, ev.epoch, ev.kind, ev.data)
    assert isinstance(a, Message) and a.data == bytes(BOUND)
    over = "x" * (2 * BOUND + 1)
    ev = client._event(dict(frame, data={"$chunk": header, "gz": gz(over)}))
    assert ev.data == {"$chunk": header, "gz": gz(over)}


@settings(max_examples=50, deadline=None)
@given(
    payload=st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=5),
    )
)
def test_compressed_chunks_reassemble_like_plain_ones(payload: Any) -> None:
    plain, compressed = Reassembler(), Reassembler()
    for seq, (_, data) in enumerate(split_message("m", payload), 1):
        packed = {"$chunk": data["$chunk"], "gz": gz(data["part"])}
        a = plain.accept("c", seq, "e1", "out", data)
        b = compressed.accept("c", seq, "e1", "out", expand(packed, max_part_bytes=BOUND))
        assert a == b
    assert isinstance(b, Message) and b.data == (bytes(payload) if isinstance(payload, bytes) else payload)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=2000))
def test_any_text_round_trips(text: str) -> None:
    data = {"stream": "s", "index": 7, "gz": gz(text)}
    limit = len(text.encode())
    assert expand(data, max_part_bytes=0, max_text_bytes=limit) == {"stream": "s", "index": 7, "text": text}
    if limit:
        assert expand(data, max_part_bytes=0, max_text_bytes=limit - 1) is data
