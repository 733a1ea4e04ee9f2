"""The publisher against a mock HTTP API: errors typed with the API's code,
only safe failures retried, always with the same idempotency key."""

from __future__ import annotations

import json

import httpx
import pytest

from agentwire import Publisher, PublishResult, ServerError, UnauthorizedError, publish_sync
from agentwire import publisher


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


def api_with_headers(answers: list[tuple[int, dict, dict[str, str]]], seen: list[httpx.Request]) -> httpx.AsyncClient:
    def handle(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        status, body, headers = answers.pop(0)
        return httpx.Response(status, json=body, headers=headers)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


def recorded_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The publisher's waits, recorded instead of slept."""
    waits: list[float] = []

    async def fake_sleep(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr(publisher, "_sleep", fake_sleep)
    monkeypatch.setattr(publisher, "_sleep_sync", waits.append)
    return waits


async def test_a_429_waits_its_retry_after_ms_then_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    waits = recorded_sleeps(monkeypatch)
    seen: list[httpx.Request] = []
    limited = {"type": "error", "code": "rate_limited", "message": "m", "scope": "tenant", "retry_after_ms": 300}
    answers = [(429, limited, {"retry-after": "1"}), (202, {"id": "x", "channel": "agent-1"}, {})]
    async with api_with_headers(answers, seen) as http:
        # The backoff's own delay (at most 1 ms here) is shorter: the body's 300 ms wins over it and the header.
        p = Publisher("https://api.example", token="t", http=http, min_retry_delay=0.001, max_retry_delay=0.001)
        r = await p.publish("agent-1", kind="k")
    assert r.id == "x" and len(seen) == 2
    assert waits == [0.3]


async def test_a_429_retry_after_is_never_shortened_by_max_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    waits = recorded_sleeps(monkeypatch)
    seen: list[httpx.Request] = []
    limited = {"type": "error", "code": "rate_limited", "message": "m", "scope": "channel", "retry_after_ms": 7000}
    answers = [(429, limited, {}), (202, {"id": "x", "channel": "agent-1"}, {})]
    async with api_with_headers(answers, seen) as http:
        p = Publisher("https://api.example", token="t", http=http, min_retry_delay=0.001, max_retry_delay=0.01)
        await p.publish("agent-1", kind="k")
    assert waits == [7.0]


async def test_the_429_error_carries_retry_after_ms_from_the_header_without_a_body_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits = recorded_sleeps(monkeypatch)
    seen: list[httpx.Request] = []
    limited = {"type": "error", "code": "rate_limited", "message": "m"}
    answers = [(429, limited, {"retry-after": "2"})] * 2
    async with api_with_headers(list(answers), seen) as http:
        p = Publisher("https://api.example", token="t", http=http, max_retries=1, min_retry_delay=0.001)
        with pytest.raises(ServerError) as e:
            await p.publish("agent-1", kind="k")
    assert (e.value.code, e.value.status, e.value.retry_after_ms, e.value.scope) == ("rate_limited", 429, 2000, None)
    assert waits == [2.0] and len(seen) == 2


async def test_the_429_error_carries_the_body_retry_after_ms_and_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    recorded_sleeps(monkeypatch)
    seen: list[httpx.Request] = []
    limited = {"type": "error", "code": "rate_limited", "message": "m", "scope": "tenant", "retry_after_ms": 180}
    async with api_with_headers([(429, limited, {"retry-after": "1"})], seen) as http:
        p = Publisher("https://api.example", token="t", http=http, max_retries=0)
        with pytest.raises(ServerError) as e:
            await p.publish("agent-1", kind="k")
    assert (e.value.retry_after_ms, e.value.scope) == (180, "tenant")


def test_publish_sync_honours_retry_after_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    waits = recorded_sleeps(monkeypatch)
    answers = [
        httpx.Response(429, json={"type": "error", "code": "rate_limited", "message": "m", "retry_after_ms": 250}),
        httpx.Response(202, json={"id": "x", "channel": "agent-1"}),
    ]
    real_client = httpx.Client

    def mocked(**kw: object) -> httpx.Client:
        return real_client(transport=httpx.MockTransport(lambda req: answers.pop(0)))

    monkeypatch.setattr(publisher.httpx, "Client", mocked)
    r = publish_sync("https://api.example", token="t", channel="agent-1", kind="k", min_retry_delay=0.001, max_retry_delay=0.001)
    assert r.id == "x" and waits == [0.25]


async def test_bodies_are_utf8_json_not_ascii_escaped() -> None:
    seen: list[httpx.Request] = []
    answers = [(202, {"id": "x", "channel": "agent-1"}), (202, {"channel": "agent-1", "ids": ["a"]})]
    async with api(answers, seen) as http:
        p = Publisher("https://api.example", token="t", http=http)
        await p.publish("agent-1", kind="k", data={"text": "été 漢字 🙂"})
        await p.publish_batch("agent-1", [{"kind": "k", "data": "été 漢字 🙂", "id": "a"}])
    for req in seen:
        assert "été 漢字 🙂".encode() in req.content and b"\\u" not in req.content


async def test_a_201_is_committed_with_its_seq_and_epoch_and_extra_fields_are_kept_in_raw() -> None:
    seen: list[httpx.Request] = []
    body = {"id": "k1", "channel": "agent-1", "seq": 42, "epoch": "01JEPOCH", "later": {"field": 1}}
    async with api([(201, body)], seen) as http:
        p = Publisher("https://api.example", token="t", http=http)
        r = await p.publish("agent-1", kind="k", idempotency_key="k1")
    assert r == PublishResult("k1", "agent-1", 201, seq=42, epoch="01JEPOCH", queued=False)
    assert r.raw == body


async def test_a_200_is_a_repeat_with_the_seq_it_already_has() -> None:
    seen: list[httpx.Request] = []
    answers = [
        (201, {"id": "k1", "channel": "agent-1", "seq": 7, "epoch": "E"}),
        (200, {"id": "k1", "channel": "agent-1", "seq": 7, "epoch": "E"}),
    ]
    async with api(answers, seen) as http:
        p = Publisher("https://api.example", token="t", http=http)
        first = await p.publish("agent-1", kind="k", idempotency_key="k1")
        again = await p.publish("agent-1", kind="k", idempotency_key="k1")
    assert (first.status, again.status) == (201, 200)
    assert (again.seq, again.epoch, again.queued) == (first.seq, first.epoch, False) == (7, "E", False)


@pytest.mark.parametrize(
    "body",
    [
        {"id": "k1", "channel": "agent-1", "queued": True},
        # A gateway from before 201 answered only this: taken, not committed yet.
        {"id": "k1", "channel": "agent-1"},
    ],
)
async def test_a_202_is_queued_without_a_seq(body: dict) -> None:
    seen: list[httpx.Request] = []
    async with api([(202, body)], seen) as http:
        p = Publisher("https://api.example", token="t", http=http)
        r = await p.publish("agent-1", kind="k", idempotency_key="k1")
    assert (r.id, r.status, r.seq, r.epoch, r.queued) == ("k1", 202, None, None, True)


async def test_a_retry_answered_200_is_a_success_with_the_first_attempts_seq() -> None:
    # The first attempt was committed but its answer lost (a 503 from a proxy, say):
    # the retry, under the same key, is a repeat.
    seen: list[httpx.Request] = []
    answers = [
        (503, {"type": "error", "code": "internal", "message": "m"}),
        (200, {"id": "x", "channel": "agent-1", "seq": 3, "epoch": "E"}),
    ]
    async with api(answers, seen) as http:
        p = Publisher("https://api.example", token="t", http=http, min_retry_delay=0.001, max_retry_delay=0.001)
        r = await p.publish("agent-1", kind="k")
    assert (r.status, r.seq, r.queued) == (200, 3, False) and len(seen) == 2


async def test_an_answer_with_odd_commit_fields_is_still_a_success() -> None:
    seen: list[httpx.Request] = []
    answers = [
        (201, {"id": "x", "channel": "agent-1", "seq": "7", "epoch": 5}),
        (201, {"id": "x", "channel": "agent-1", "seq": True, "epoch": ""}),
    ]
    async with api(answers, seen) as http:
        p = Publisher("https://api.example", token="t", http=http)
        for _ in range(2):
            r = await p.publish("agent-1", kind="k")
            assert (r.status, r.seq, r.epoch, r.queued) == (201, None, None, False)


@pytest.mark.parametrize(
    ("status", "body", "want"),
    [
        (201, {"id": "x", "channel": "agent-1", "seq": 1, "epoch": "E"}, (201, 1, "E", False)),
        (200, {"id": "x", "channel": "agent-1", "seq": 1, "epoch": "E"}, (200, 1, "E", False)),
        (202, {"id": "x", "channel": "agent-1", "queued": True}, (202, None, None, True)),
    ],
)
def test_publish_sync_parses_each_success(monkeypatch: pytest.MonkeyPatch, status: int, body: dict, want: tuple) -> None:
    real_client = httpx.Client

    def mocked(**kw: object) -> httpx.Client:
        return real_client(transport=httpx.MockTransport(lambda req: httpx.Response(status, json=body)))

    monkeypatch.setattr(publisher.httpx, "Client", mocked)
    r = publish_sync("https://api.example", token="t", channel="agent-1", kind="k")
    assert (r.status, r.seq, r.epoch, r.queued) == want


def test_a_result_built_by_position_keeps_its_old_fields() -> None:
    r = PublishResult("x", "agent-1", 202, {"id": "x"})
    assert (r.id, r.channel, r.status, r.raw, r.seq, r.epoch, r.queued) == ("x", "agent-1", 202, {"id": "x"}, None, None, False)
