"""A slow consumer never blocks the connection's read loop (pings and acks
keep flowing) and the events held for it are bounded: over `max_buffered` the
channel stops taking events and, once the application has drained half of
them, re-joins from the last seq it buffered, so nothing is lost or repeated.

An in-process scripted gateway (as in `test_conformance.py`) drives one
connection; every wait is on a condition, with a time-out, never a sleep."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from agentwire import Client, Event, Gap, Position

STEP = 5.0
BOUND = 10
TOTAL = 40
CH = "agent-1"
# A second channel, used as an in-order barrier: once the application has
# its event, the read loop has processed every frame sent before it.
PROBE = "probe"


def event(channel: str, epoch: str, seq: int) -> dict[str, Any]:
    return {
        "channel": channel,
        "epoch": epoch,
        "seq": seq,
        "id": f"{channel}-{seq}",
        "kind": "status",
        "data": {"n": seq},
        "ts": "2026-11-24T09:00:00.000Z",
    }


class Gateway:
    """The server's side of the one connection: reads the client's frames,
    answering (and counting) its pings whenever they come."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.pings = 0

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def frame(self) -> dict[str, Any]:
        try:
            text = await asyncio.wait_for(self.ws.recv(), STEP)
        except asyncio.TimeoutError:
            pytest.fail(f"the client sent nothing within {STEP}s")
        f = json.loads(text)
        assert isinstance(f, dict), f
        if f.get("action") == "ping":
            self.pings += 1
            await self.send({"type": "pong"})
        return f

    async def expect(self) -> dict[str, Any]:
        """The next frame that is not a ping."""
        while True:
            f = await self.frame()
            if f.get("action") != "ping":
                return f


async def next_item(sub: Any) -> Event | Gap:
    return await asyncio.wait_for(sub.__anext__(), STEP)


async def test_a_slow_consumer_never_blocks_the_read_loop_and_is_bounded() -> None:
    conns: asyncio.Queue[ServerConnection] = asyncio.Queue()

    async def handler(ws: ServerConnection) -> None:
        await conns.put(ws)
        await ws.wait_closed()

    async with serve(
        handler,
        "127.0.0.1",
        0,
        subprotocols=["agentwire.v1"],  # type: ignore[list-item]
        ping_interval=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        client = Client(
            f"ws://127.0.0.1:{port}",
            token="t1",
            ping_interval=0.2,
            ping_timeout=60.0,
            ack_debounce=None,
            max_buffered=BOUND,
            max_connection_age=None,
            handshake_timeout=STEP,
        )
        states: list[str] = []
        client.on_state(states.append)
        errors: list[Any] = []
        client.on_error(errors.append)
        try:
            sub = await client.join(CH, since=Position("e1", 0))
            probe = await client.join(PROBE, since="head")

            # -- the handshake and the join --------------------------------
            ws = await asyncio.wait_for(conns.get(), STEP)
            assert ws.subprotocol == "agentwire.v1"
            gw = Gateway(ws)
            hello = await gw.expect()
            assert hello["action"] == "hello" and hello["protocol"] == {"min": 1, "max": 1}, hello
            await gw.send(
                {
                    "type": "welcome",
                    "protocol": 1,
                    "connection_id": "c1",
                    "server": "scripted",
                    "heartbeat_s": 300,
                    "limits": {"max_frame_bytes": 32768, "max_channels_per_join": 50, "max_channel_name": 128},
                }
            )
            join = await gw.expect()
            assert join["action"] == "join", join
            assert join["channels"] == [
                {"name": CH, "since": {"epoch": "e1", "seq": 0}},
                {"name": PROBE, "since": "head"},
            ], join
            await gw.send(
                {
                    "type": "joined",
                    "id": join["id"],
                    "channels": [
                        {"name": CH, "epoch": "e1", "head": 0, "replayed": 0, "recovered": True},
                        {"name": PROBE, "epoch": "p1", "head": 0, "replayed": 0, "recovered": True},
                    ],
                }
            )
            await asyncio.wait_for(sub.wait_joined(), STEP)

            # -- 40 live events while the application takes nothing -------
            for seq in range(1, TOTAL + 1):
                await gw.send({"type": "event", **event(CH, "e1", seq)})
            await gw.send({"type": "event", **event(PROBE, "p1", 1)})
            item = await next_item(probe)
            assert isinstance(item, Event) and item.seq == 1, item
            # Every event frame was read: the channel holds exactly the bound.
            assert sub.buffered == BOUND
            assert sub.position is None  # nothing was taken

            # -- the connection stays alive: pings flow, pongs are read ----
            # Nothing is taken, so the client has nothing else to send: no
            # ack, no early re-join; only pings.
            start = gw.pings
            while gw.pings < start + 2:
                f = await gw.frame()
                assert f.get("action") == "ping", f"the client sent {f} while nothing was taken"
            await gw.send({"type": "event", **event(PROBE, "p1", 2)})
            item = await next_item(probe)
            assert isinstance(item, Event) and item.seq == 2, item
            assert sub.buffered == BOUND
            assert client.state == "connected"

            # -- the application consumes; the client re-joins -------------
            got: list[int] = []
            peak = 0

            def last_buffered() -> int:
                taken = sub.position.seq if sub.position is not None else 0
                return taken + sub.buffered

            async def consume() -> None:
                nonlocal peak
                async for it in sub:
                    assert not isinstance(it, Gap), it
                    # The buffer only grows between takes: its size just
                    # before each take is its largest since the last one.
                    peak = max(peak, sub.buffered + 1)
                    assert sub.buffered + 1 <= BOUND
                    got.append(it.seq)
                    if it.seq == TOTAL:
                        return

            rounds: list[int] = []

            async def answer_rejoins() -> None:
                while True:
                    f = await gw.expect()
                    assert f["action"] == "join", f
                    # Resumed from the last seq it buffered: while the
                    # channel is paused, nothing enters its buffer.
                    n = last_buffered()
                    assert f["channels"] == [{"name": CH, "since": {"epoch": "e1", "seq": n}}], f
                    assert not rounds or n > rounds[-1], (rounds, n)
                    rounds.append(n)
                    await gw.send(
                        {
                            "type": "joined",
                            "id": f["id"],
                            "channels": [
                                {"name": CH, "epoch": "e1", "head": TOTAL, "replayed": TOTAL - n, "recovered": True}
                            ],
                        }
                    )
                    await gw.send({"type": "batch", "events": [event(CH, "e1", s) for s in range(n + 1, TOTAL + 1)]})

            consumer = asyncio.create_task(consume())
            rejoins = asyncio.create_task(answer_rejoins())
            try:
                done, _ = await asyncio.wait(
                    {consumer, rejoins}, timeout=STEP, return_when=asyncio.FIRST_COMPLETED
                )
                if rejoins in done:
                    rejoins.result()  # raises what the gateway found wrong
                assert consumer in done, f"the application got {got} within {STEP}s (re-joins from {rounds})"
                consumer.result()
            finally:
                for t in (consumer, rejoins):
                    t.cancel()
                await asyncio.gather(consumer, rejoins, return_exceptions=True)

            assert got == list(range(1, TOTAL + 1))
            assert sub.poll() is None  # nothing more, in particular no repeat
            assert peak == BOUND
            assert rounds and rounds[0] == BOUND, rounds  # the first pause came after seq 10
            # One connection throughout: the pause never cost a reconnect.
            assert "reconnecting" not in states, states
            assert conns.empty()
            assert errors == []
        finally:
            # Bounded, so that a client whose read loop is stuck fails the
            # test instead of hanging it.
            await asyncio.wait_for(client.close(), STEP)
