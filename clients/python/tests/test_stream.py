"""Streams and messages in chunks: the coalescer's window and bound, the
chunk format round trip, and the HTTP calls against a real local server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from agentwire import Coalescer, Message, MessageLost, Publisher, PublishStream, publish_message, split_message
from agentwire._chunks import Reassembler


def test_pieces_within_the_window_are_one_event() -> None:
    c = Coalescer("s1", 0.05, 64 * 1024)
    assert c.deadline() is None
    for i, t in enumerate(["Hel", "lo", ", ", "world"]):
        assert c.push(t, 1.0 + i * 0.01) == []
    assert c.deadline() == pytest.approx(1.05)
    assert c.flush() == {"stream": "s1", "index": 0, "text": "Hello, world"}
    assert c.finish() == [{"stream": "s1", "index": 1, "end": True}]
    assert c.finish() == []


def test_the_size_bound_cuts_on_characters_counting_json_escapes() -> None:
    c = Coalescer("s", 0.05, 10)
    due = c.push('ééééééé"""', 0.0)
    assert due == [{"stream": "s", "index": 0, "text": "ééééé"}]
    assert c.finish()[0] == {"stream": "s", "index": 1, "text": 'éé"""'}


@pytest.mark.parametrize(
    "payload",
    [
        "".join(["a", "é", '"', "\n", "\x01", "🙂"][i % 6] for i in range(200_000)),
        bytes(i % 251 for i in range(300_000)),
        {"rows": list(range(20_000))},
    ],
)
def test_payloads_round_trip_through_chunks_that_fit_in_one_event(payload: Any) -> None:
    chunks = split_message("m1", payload)
    assert len(chunks) > 1
    for _, data in chunks:
        assert len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()) <= 96 * 1024
    r = Reassembler()
    out = [r.accept("ch", 10 + i, "e", "out", data) for i, (_, data) in enumerate(chunks)]
    done = [a for a in out if a != "pending"]
    assert len(done) == 1 and isinstance(done[0], Message)
    assert done[0].data == payload
    assert done[0].seq == 10 + len(chunks) - 1
    assert r.held == 0


def test_a_missing_chunk_loses_its_message_once() -> None:
    a = split_message("a", "y" * 200_000)
    r = Reassembler()
    assert r.accept("c", 1, "e", "k", a[0][1]) == "pending"
    assert r.accept("c", 3, "e", "k", a[2][1]) == MessageLost("c", "a", "missing")
    assert r.accept("c", 4, "e", "k", a[3][1]) == "pending"
    small = Reassembler(100_000, 1_000_000)
    big = split_message("big", bytes(200_000))
    assert small.accept("c", 1, "e", "k", big[0][1]) == MessageLost("c", "big", "too_large")
    assert small.held == 0


class _Recorder(BaseHTTPRequestHandler):
    bodies: list[tuple[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        _Recorder.bodies.append((self.path, body))
        answer = {"channel": "c", "ids": [e["id"] for e in body["events"]]} if "events" in body else {"id": "x", "channel": "c"}
        data = json.dumps(answer).encode()
        self.send_response(202)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Recorder.bodies = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


async def test_a_stream_sends_its_events_in_order_each_with_its_key(server: str) -> None:
    async with Publisher(server, token="t") as p:
        async with PublishStream(p, "build-1", kind="output", stream_id="s9", window=0.02) as s:
            for i in range(100):
                s.write(f"line {i}\n")
            await s.flush()
            s.write("tail\n")
    assert all(path == "/v1/channels/build-1/events:batch" for path, _ in _Recorder.bodies)
    events = [e for _, b in _Recorder.bodies for e in b["events"]]
    assert [e["data"]["index"] for e in events] == list(range(len(events)))
    assert [e["id"] for e in events] == [f"s9:{i}" for i in range(len(events))]
    assert events[-1]["data"]["end"] is True
    text = "".join(e["data"].get("text", "") for e in events)
    assert text == "".join(f"line {i}\n" for i in range(100)) + "tail\n"


async def test_a_large_message_goes_as_chunks_ten_per_batch(server: str) -> None:
    payload = bytes((i * 7) % 256 for i in range(1_000_000))
    async with Publisher(server, token="t") as p:
        mid, n = await publish_message(p, "c", kind="blob", data=payload, message_id="m1")
        assert (mid, n) == ("m1", -(-1_000_000 // 49_152))
        assert all(len(b["events"]) <= 10 for _, b in _Recorder.bodies)
        events = [e for _, b in _Recorder.bodies for e in b["events"]]
        r = Reassembler()
        got = [r.accept("c", i + 1, "e", "blob", e["data"]) for i, e in enumerate(events)]
        assert [m.data for m in got if isinstance(m, Message)] == [payload]
        _Recorder.bodies.clear()
        assert (await publish_message(p, "c", kind="note", data="hi"))[1] == 1
        assert _Recorder.bodies[0][0] == "/v1/channels/c/events"
