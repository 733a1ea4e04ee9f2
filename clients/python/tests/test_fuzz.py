"""Property tests (Hypothesis, bounded examples): no frame ends the client, and the reassembly of
chunk events stays within its bounds whatever arrives.

A scripted gateway sends arbitrary and adversarial frames (random JSON, deep nesting, text that is
not JSON, events and batches with wrong types, chunk events with huge ids, many messages left in
progress, absurd seqs and gaps) on one channel, then one event on a second channel: the client
must deliver it, without a fatal error and without dropping the connection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from agentwire import Client, Event, MessageLost, Position
from agentwire._chunks import MAX_RECEIVED_ID_BYTES, Reassembler

WAIT = 10.0

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


def deep(n: int) -> str:
    return "[" * n + "]" * n


def chunk(message: str, index: Any, count: Any, encoding: Any, part: Any) -> dict[str, Any]:
    return {
        "$chunk": {"message": message, "index": index, "count": count, "encoding": encoding, "bytes": 10},
        "part": part,
    }


ids = st.sampled_from(["a", "b", "c"]) | st.integers(129, 4000).map(lambda n: "x" * n) | st.integers(0, 500).map(
    lambda n: f"m{n}"
)
nums = st.integers(0, 3) | json_values
parts = st.text(max_size=16) | st.integers(1, 50_000).map(deep) | json_values
encodings = st.sampled_from(["json", "utf8", "base64"]) | json_values
seqs = st.integers(0, 8) | st.integers(0, 2**64) | json_values
datas = json_values | st.builds(chunk, ids, nums, nums, encodings, parts)


def event(seq: Any, data: Any, epoch: Any) -> dict[str, Any]:
    return {"type": "event", "channel": "agent-1", "epoch": epoch, "seq": seq, "id": "i", "kind": "k",
            "data": data, "ts": "2026-01-01T00:00:00Z"}  # fmt: skip


events = st.builds(event, seqs, datas, st.just("e1") | json_values)
frames = st.one_of(
    events.map(json.dumps),
    st.lists(events, max_size=40).map(lambda es: json.dumps({"type": "batch", "events": es})),
    st.builds(lambda a, b: json.dumps({"type": "gap", "channel": "agent-1", "from": a, "to": b}), seqs, seqs),
    st.builds(
        lambda h, r, e: json.dumps({"type": "joined", "channels": [
            {"name": "agent-1", "epoch": e, "head": h, "replayed": r, "recovered": True}]}),  # fmt: skip
        seqs, seqs, json_values,
    ),
    st.builds(lambda v, t: json.dumps({"type": t, "channel": "agent-1", "data": v}), json_values, st.text(max_size=10)),
    json_values.map(json.dumps),
    st.text(max_size=64),
    st.integers(1, 100_000).map(deep),
    st.integers(1, 20_000).map(
        lambda n: '{"type":"event","channel":"agent-1","epoch":"e1","seq":1,"id":"i","kind":"k","ts":"t","data":'
        + deep(n)
        + "}"
    ),
)


async def run_against(sent: list[str]) -> None:
    joined = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        answered: set[str] = set()
        try:
            async for raw in ws:
                f = json.loads(raw)
                if f.get("action") == "hello":
                    await ws.send(json.dumps({"type": "welcome", "protocol": 1, "connection_id": "c1",
                        "server": "fuzz", "heartbeat_s": 300, "limits": {"max_frame_bytes": 32768,
                        "max_channels_per_join": 50, "max_channel_name": 128}}))  # fmt: skip
                elif f.get("action") == "join" and len(answered) < 2:
                    chans = [{"name": c["name"], "epoch": "p" if c["name"] == "probe" else "e1", "head": 0,
                              "replayed": 0, "recovered": True} for c in f["channels"]]  # fmt: skip
                    answered.update(c["name"] for c in chans)
                    await ws.send(json.dumps({"type": "joined", "id": f["id"], "channels": chans}))
                    if len(answered) == 2:
                        joined.set()
                        for s in sent:
                            await ws.send(s)
                        await ws.send(json.dumps({"type": "event", "channel": "probe", "epoch": "p", "seq": 1,
                            "id": "probe", "kind": "k", "data": {"alive": True}, "ts": "t"}))  # fmt: skip
        except ConnectionClosed:
            pass

    async with serve(handler, "127.0.0.1", 0, subprotocols=["agentwire.v1"], ping_interval=None) as server:  # type: ignore[list-item]
        port = server.sockets[0].getsockname()[1]
        states: list[str] = []
        async with Client(
            f"ws://127.0.0.1:{port}",
            token="t",
            min_reconnect_delay=0.005,
            max_reconnect_delay=0.01,
            max_attempts=1,
            max_connection_age=None,
            ack_debounce=None,
            hole_grace=0.02,
            max_message_bytes=1 << 20,
            max_held_message_bytes=4 << 20,
        ) as client:
            client.on_state(states.append)
            await client.join("agent-1", Position("e1", 0))
            probe = await client.join("probe", Position("p", 0))
            first = await asyncio.wait_for(probe.__anext__(), WAIT)
            assert isinstance(first, Event) and first.channel == "probe" and first.seq == 1
            assert joined.is_set()
            assert client._messages.held <= 4 << 20
            assert client._messages.partial <= 64
            assert states.count("reconnecting") == 0, states


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(frames, min_size=1, max_size=25))
def test_no_frame_stops_the_client(sent: list[str]) -> None:
    asyncio.run(run_against(sent))


def test_a_deeply_nested_chunked_message_is_lost_as_invalid_and_the_client_goes_on() -> None:
    text = deep(200_000)
    parts = [text[i : i + 60_000] for i in range(0, len(text), 60_000)]
    sent = [
        json.dumps({"type": "event", "channel": "agent-1", "epoch": "e1", "seq": i + 1, "id": f"nest#{i}",
            "kind": "k", "ts": "t", "data": {"$chunk": {"message": "nest", "index": i, "count": len(parts),
                "encoding": "json", "bytes": len(text)}, "part": p}})  # fmt: skip
        for i, p in enumerate(parts)
    ]
    seen: list[Any] = []

    async def main() -> None:
        async def handler(ws: ServerConnection) -> None:
            try:
                async for raw in ws:
                    f = json.loads(raw)
                    if f.get("action") == "hello":
                        await ws.send(json.dumps({"type": "welcome", "protocol": 1, "connection_id": "c1",
                            "server": "fuzz", "heartbeat_s": 300}))  # fmt: skip
                    elif f.get("action") == "join":
                        await ws.send(json.dumps({"type": "joined", "id": f["id"], "channels": [
                            {"name": "agent-1", "epoch": "e1", "head": len(parts) + 1, "replayed": 0,
                             "recovered": True}]}))  # fmt: skip
                        for s in sent:
                            await ws.send(s)
                        await ws.send(json.dumps({"type": "event", "channel": "agent-1", "epoch": "e1",
                            "seq": len(parts) + 1, "id": "after", "kind": "k", "data": {}, "ts": "t"}))  # fmt: skip
            except ConnectionClosed:
                pass

        async with serve(handler, "127.0.0.1", 0, subprotocols=["agentwire.v1"], ping_interval=None) as server:  # type: ignore[list-item]
            port = server.sockets[0].getsockname()[1]
            async with Client(f"ws://127.0.0.1:{port}", token="t", ack_debounce=None, max_connection_age=None) as c:
                sub = await c.join("agent-1", Position("e1", 0))
                while not (seen and isinstance(seen[-1], Event)):
                    seen.append(await asyncio.wait_for(sub.__anext__(), WAIT))

    asyncio.run(main())
    assert seen == [MessageLost("agent-1", "nest", "invalid"), seen[-1]]
    assert seen[-1].seq == len(parts) + 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 200).map(lambda n: f"m{n}") | st.integers(129, 600).map(lambda n: "é" * n),
            st.integers(0, 2),
            st.integers(1, 3),
            st.sampled_from(["utf8", "json", "base64"]),
            st.text(max_size=64) | st.integers(1, 3000).map(deep),
            st.integers(0, 300),
        ),
        min_size=1,
        max_size=400,
    )
)
def test_the_reassembly_stays_within_its_bounds(chunks: list[tuple[str, int, int, str, str, int]]) -> None:
    r = Reassembler(4_000, 16_000, 8)
    for seq, (mid, index, count, encoding, part, size) in enumerate(chunks):
        data = {"$chunk": {"message": mid, "index": index, "count": count, "encoding": encoding, "bytes": size},
                "part": part}  # fmt: skip
        got = r.accept("ch", seq, "e1", "k", data)
        for a in [*r.take_evicted(), got]:
            if isinstance(a, MessageLost):
                assert len(a.id.encode()) <= MAX_RECEIVED_ID_BYTES
        assert r.partial <= 8
        assert r.held <= 16_000
