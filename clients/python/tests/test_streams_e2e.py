"""Streams and large outputs end to end on the local stack: the dev gateway
against the endpoint on 127.0.0.1:4566, the Python publisher over HTTP and
the Python client over WebSocket."""

from __future__ import annotations

import asyncio

from test_e2e import WAIT, Gateway, events_queue, gateway, pytestmark, tenant, token  # noqa: F401

from agentwire import Client, Event, Message, MessageLost, Publisher, PublishStream, publish_message


async def test_a_10_mb_output_arrives_whole_and_in_order_within_the_clients_bound(
    gateway: Gateway, tenant: str
) -> None:
    size = 10 * 1024 * 1024
    payload = bytes(((i * 2654435761) & 0xFFFFFFFF) >> 24 for i in range(size))
    tok = token(tenant, "viewer")
    # Held at most: the message plus one part (base64 is 4/3 of the bytes).
    async with Client(
        gateway.ws_url, token=tok, max_message_bytes=size, max_held_message_bytes=size * 4 // 3 + 128 * 1024
    ) as client:
        sub = await client.join("agent-big")
        await sub.wait_joined(WAIT)
        async with Publisher(gateway.http_url, token=tok) as p:
            mid, n = await publish_message(p, "agent-big", kind="output", data=payload, message_id="py-10mb")
            assert n >= 200
            done = await p.publish("agent-big", kind="done", data={})
            # Committed at once (201): after every part of the message.
            assert (done.status, done.queued) == (201, False) and isinstance(done.seq, int) and done.epoch, done
            assert done.seq > n
        got: list[Message] = []

        async def read() -> None:
            async for item in sub:
                if isinstance(item, MessageLost):
                    raise AssertionError(f"lost: {item}")
                if isinstance(item, Message):
                    got.append(item)
                elif isinstance(item, Event) and item.kind == "done":
                    return
                else:
                    raise AssertionError(f"unexpected: {item!r:.200}")

        await asyncio.wait_for(read(), 150)
        assert len(got) == 1
        assert got[0].id == mid and got[0].encoding == "base64"
        assert got[0].data == payload


async def test_a_token_stream_is_coalesced_and_joined_back_in_order(gateway: Gateway, tenant: str) -> None:
    tok = token(tenant, "viewer")
    async with Client(gateway.ws_url, token=tok) as client:
        sub = await client.join("agent-answer")
        await sub.wait_joined(WAIT)
        written = ""
        async with Publisher(gateway.http_url, token=tok) as p:
            async with PublishStream(p, "agent-answer", kind="answer") as s:
                for i in range(500):
                    piece = f"tok{i} "
                    written += piece
                    s.write(piece)
        text, indexes = "", []

        async def read() -> None:
            nonlocal text
            async for item in sub:
                assert isinstance(item, Event)
                indexes.append(item.data["index"])
                if item.data.get("end"):
                    return
                text += item.data["text"]

        await asyncio.wait_for(read(), WAIT)
        assert text == written
        assert indexes == list(range(len(indexes)))
        assert len(indexes) < 10


async def test_a_large_non_ascii_text_fits_the_gateways_limits(gateway: Gateway, tenant: str) -> None:
    # Sent as UTF-8, not \u-escaped: escaped, the chunks of this text make a
    # batch request over the gateway's body limit (message_too_large).
    tok = token(tenant, "viewer")
    text = "ü中🙂" * 60000
    async with Client(gateway.ws_url, token=tok) as client:
        sub = await client.join("agent-text")
        await sub.wait_joined(WAIT)
        async with Publisher(gateway.http_url, token=tok, max_retries=0) as p:
            mid, n = await publish_message(p, "agent-text", kind="text", data=text, message_id="py-utf8")
            assert n >= 8

        async def first() -> Message:
            async for item in sub:
                assert isinstance(item, Message), item
                return item
            raise AssertionError("the subscription ended")

        got = await asyncio.wait_for(first(), WAIT)
        assert (got.id, got.encoding, got.data) == (mid, "utf8", text)
