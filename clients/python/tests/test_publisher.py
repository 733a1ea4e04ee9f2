"""The publisher against a mock HTTP API: errors typed with the API's code,
only safe failures retried, always with the same idempotency key."""

from __future__ import annotations

import json

import httpx
import pytest

from agentwire import Publisher, ServerError, UnauthorizedError


def api(answers: list[tuple[int, dict]], seen: list[httpx.Request]) -> httpx.AsyncClient:
    def handle(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        status, body = answers.pop(0)
        return httpx.Response(status, json=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


async def test_a_publish_is_posted_with_its_key_and_answered_with_the_id() -> None:
    seen: list[httpx.Request] = []
    async with api([(202, {"id": "run-7/final", "channel": "agent-1"})], seen) as http:
        p = Publisher("https://api.example/", token="t", http=http)
        r = await p.publish("agent-1", kind="final", data={"text": "done"}, idempotency_key="run-7/final")
    assert (r.id, r.channel) == ("run-7/final", "agent-1")
    (req,) = seen
    assert str(req.url) == "https://api.example/v1/channels/agent-1/events"
    assert req.headers["authorization"] == "Bearer t"
    assert req.headers["idempotency-key"] == "run-7/final"
    assert json.loads(req.content) == {"kind": "final", "data": {"text": "done"}}


async def test_429_and_5xx_are_retried_with_the_same_generated_key() -> None:
    seen: list[httpx.Request] = []
    answers = [
        (429, {"type": "error", "code": "rate_limited", "message": "slow down"}),
        (503, {"type": "error", "code": "internal", "message": "retry it"}),
        (202, {"id": "x", "channel": "agent-1"}),
    ]
    async with api(answers, seen) as http:
        p = Publisher("https://api.example", token="t", http=http, min_retry_delay=0.001, max_retry_delay=0.01)
        await p.publish("agent-1", kind="k")
    keys = {r.headers["idempotency-key"] for r in seen}
    assert len(seen) == 3 and len(keys) == 1 and keys.pop()


async def test_refusals_are_typed_and_not_retried() -> None:
    seen: list[httpx.Request] = []
    answers = [
        (403, {"type": "error", "code": "forbidden", "message": "not yours"}),
        (401, {"type": "error", "code": "unauthorized", "message": "bad signature"}),
        (413, {"type": "error", "code": "message_too_large", "message": "too big"}),
    ]
    async with api(answers, seen) as http:
        p = Publisher("https://api.example", token="t", http=http)
        with pytest.raises(ServerError) as e:
            await p.publish("agent-1", kind="k")
        assert (e.value.code, e.value.status) == ("forbidden", 403)
        with pytest.raises(UnauthorizedError):
            await p.publish("agent-1", kind="k")
        with pytest.raises(ServerError) as e:
            await p.publish("agent-1", kind="k")
        assert e.value.code == "message_too_large"
    assert len(seen) == 3


async def test_retries_run_out_with_the_last_error() -> None:
    seen: list[httpx.Request] = []
    answers = [(500, {"type": "error", "code": "internal", "message": "m"})] * 3
    async with api(list(answers), seen) as http:
        p = Publisher("https://api.example", token="t", http=http, max_retries=2, min_retry_delay=0.001)
        with pytest.raises(ServerError) as e:
            await p.publish("agent-1", kind="k")
    assert e.value.code == "internal" and len(seen) == 3
