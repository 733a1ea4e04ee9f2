"""The HTTP reads (history, its pages, presence, a channel's state) and the
batch publish against a real local HTTP server: what is sent (path, query
string, auth header, body), what is parsed, and every error body mapped to
the typed errors."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Awaitable, Callable, Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest

from agentwire import (
    AgentWireError,
    ChannelInfo,
    Event,
    Gap,
    HistoryPage,
    Presence,
    ProtocolError,
    PublishedEvent,
    Publisher,
    ServerError,
    UnauthorizedError,
    WebhookInfo,
)
from agentwire import publisher


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    auth: str
    body: bytes


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class _Api:
    """What the server saw and how it answers (set per test)."""

    seen: list[Seen] = []
    answer: Callable[[Seen], Answer] = staticmethod(lambda s: Answer(500, {}))


class _Handler(BaseHTTPRequestHandler):
    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        u = urlsplit(self.path)
        seen = Seen(
            method=self.command,
            path=u.path,
            query=dict(parse_qsl(u.query)),
            auth=self.headers.get("authorization", ""),
            body=self.rfile.read(length) if length else b"",
        )
        _Api.seen.append(seen)
        a = _Api.answer(seen)
        data = a.body.encode() if isinstance(a.body, str) else json.dumps(a.body).encode()
        self.send_response(a.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in a.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    do_GET = _serve  # noqa: N815 - the stdlib's names
    do_POST = _serve  # noqa: N815

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def listening() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def server(listening: str) -> str:
    """The server's base URL, with nothing seen yet."""
    _Api.seen = []
    _Api.answer = staticmethod(lambda s: Answer(500, {}))
    return listening


def answer(f: Callable[[Seen], Answer]) -> None:
    _Api.answer = staticmethod(f)


def error(code: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": f"m {code}", **extra}


def log(head: int, oldest: int | None) -> Callable[[Seen], Answer]:
    """A channel whose log holds seqs `oldest..=head`, paged like the gateway."""

    def page(s: Seen) -> Answer:
        after = int(s.query.get("after", "0"))
        limit = int(s.query.get("limit", "100"))
        want = after + 1
        gap = None
        start = want
        if want <= head and oldest is not None and oldest > want:
            gap = {"from": want, "to": oldest - 1}
            start = oldest
        events = [
            {"seq": q, "id": f"e{q}", "kind": "status", "data": {"n": q}, "ts": f"2026-12-05T13:00:0{q % 10}.000Z"}
            for q in range(start, head + 1)
        ][:limit]
        last = events[-1]["seq"] if events else None
        next_after = last if last is not None and isinstance(last, int) and last < head else None
        return Answer(
            200,
            {
                "channel": "agent-1",
                "epoch": "01JEPOCH",
                "head": head,
                "oldest": oldest,
                "events": events,
                "gap": gap,
                "next_after": next_after,
            },
        )

    return page


def no_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []

    async def fake_sleep(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr(publisher, "_sleep", fake_sleep)
    return waits


async def test_history_sends_after_limit_and_the_token_and_parses_a_page_with_a_gap(server: str) -> None:
    answer(log(12, 4))
    async with Publisher(server, token="tok") as p:
        page = await p.history("agent-1", after=1, limit=3)
    (s,) = _Api.seen
    assert (s.method, s.path, s.query, s.auth) == ("GET", "/v1/channels/agent-1/events", {"after": "1", "limit": "3"}, "Bearer tok")
    assert page == HistoryPage(
        channel="agent-1",
        epoch="01JEPOCH",
        head=12,
        oldest=4,
        events=[
            Event("agent-1", "01JEPOCH", q, f"e{q}", "status", {"n": q}, f"2026-12-05T13:00:0{q}.000Z") for q in (4, 5, 6)
        ],
        gap=Gap("agent-1", 2, 3),
        next_after=6,
    )
    assert page.raw["head"] == 12


async def test_history_defaults_an_encoded_channel_and_an_empty_channel(server: str) -> None:
    empty = {"channel": "team:a@b", "epoch": "", "head": 0, "oldest": None, "events": [], "gap": None, "next_after": None}
    answer(lambda s: Answer(200, empty))
    async with Publisher(server, token="t") as p:
        page = await p.history("team:a@b")
    (s,) = _Api.seen
    assert s.path == "/v1/channels/team%3Aa%40b/events"
    assert s.query == {"after": "0", "limit": "100"}
    assert page == HistoryPage("team:a@b", "", 0, None, [], None, None)


async def test_history_pages_follow_next_after_to_the_head(server: str) -> None:
    answer(log(5, 1))
    async with Publisher(server, token="t") as p:
        pages = [page async for page in p.history_pages("agent-1", limit=2)]
    assert [[e.seq for e in page.events] for page in pages] == [[1, 2], [3, 4], [5]]
    assert [page.next_after for page in pages] == [2, 4, None]
    assert [s.query for s in _Api.seen] == [{"after": a, "limit": "2"} for a in ("0", "2", "4")]


async def test_history_pages_from_a_seq_past_a_gap(server: str) -> None:
    answer(log(6, 4))
    async with Publisher(server, token="t") as p:
        pages = [page async for page in p.history_pages("agent-1", after=1, limit=2)]
        assert pages[0].gap == Gap("agent-1", 2, 3)
        assert [[e.seq for e in page.events] for page in pages] == [[4, 5], [6]]
        _Api.seen.clear()
        last = [page async for page in p.history_pages("agent-1", after=6)]
    assert len(_Api.seen) == 1 and [(len(x.events), x.next_after) for x in last] == [(0, None)]


async def test_history_pages_stop_when_next_after_does_not_go_forward(server: str) -> None:
    stuck = {"channel": "c", "epoch": "e", "head": 9, "oldest": 1, "events": [], "gap": None, "next_after": 0}
    answer(lambda s: Answer(200, stuck))
    async with Publisher(server, token="t") as p:
        with pytest.raises(ProtocolError) as e:
            async for _ in p.history_pages("c"):
                pass
    assert e.value.code == "decode" and len(_Api.seen) == 1


@pytest.mark.parametrize("bad", [{"limit": 0}, {"limit": 1001}, {"limit": 2.5}, {"after": -1}, {"after": True}, {"after": "3"}])
async def test_history_checks_after_and_limit_before_sending(server: str, bad: dict[str, Any]) -> None:
    async with Publisher(server, token="t") as p:
        with pytest.raises(ValueError):
            await p.history("c", **bad)
        with pytest.raises(ValueError):
            async for _ in p.history_pages("c", **bad):
                pass
    assert _Api.seen == []


async def test_presence_and_the_channel_state_are_parsed(server: str) -> None:
    info = {
        "channel": "agent-1",
        "epoch": "01JEPOCH",
        "head": 12,
        "oldest": 3,
        "retention_s": 259200,
        "webhook": {"mode": "fallback", "scope": "tenant"},
    }
    answer(
        lambda s: Answer(200, {"channel": "agent-1", "count": 3, "principals": ["alice", "bob"]})
        if s.path.endswith("/presence")
        else Answer(200, info)
    )
    async with Publisher(server, token="tok") as p:
        assert await p.presence("agent-1") == Presence("agent-1", 3, ["alice", "bob"])
        assert await p.channel("agent-1") == ChannelInfo(
            "agent-1", "01JEPOCH", 12, 3, 259200, WebhookInfo("fallback", "tenant")
        )
        answer(lambda s: Answer(200, {**info, "channel": "new", "epoch": "", "head": 0, "oldest": None, "webhook": None}))
        assert await p.channel("new") == ChannelInfo("new", "", 0, None, 259200, None)
    assert [(s.method, s.path, s.auth) for s in _Api.seen] == [
        ("GET", "/v1/channels/agent-1/presence", "Bearer tok"),
        ("GET", "/v1/channels/agent-1", "Bearer tok"),
        ("GET", "/v1/channels/new", "Bearer tok"),
    ]


def echo_ids(s: Seen) -> Answer:
    events = json.loads(s.body)["events"]
    return Answer(202, {"channel": "agent-1", "ids": [e.get("id", f"gen-{i}") for i, e in enumerate(events)]})


async def test_a_batch_is_posted_in_order_and_the_202_parsed(server: str) -> None:
    answer(echo_ids)
    async with Publisher(server, token="pub", max_retries=0) as p:
        r = await p.publish_batch(
            "agent-1", [{"kind": "a", "data": {"n": 1}, "id": "b-1"}, {"kind": "b", "data": [2]}, {"kind": "c"}]
        )
    # A 202 without `queued` (a gateway from before 201): taken, not committed yet.
    assert (r.channel, r.ids, r.status, r.events, r.queued) == ("agent-1", ["b-1", "gen-1", "gen-2"], 202, None, True)
    (s,) = _Api.seen
    assert (s.method, s.path, s.auth) == ("POST", "/v1/channels/agent-1/events:batch", "Bearer pub")
    assert json.loads(s.body) == {
        "events": [{"kind": "a", "data": {"n": 1}, "id": "b-1"}, {"kind": "b", "data": [2]}, {"kind": "c", "data": None}]
    }


def committed_ids(status: int, first_seq: int) -> Callable[[Seen], Answer]:
    """The gateway's answer to a committed batch (201) or a repeat (200)."""

    def commit(s: Seen) -> Answer:
        events = json.loads(s.body)["events"]
        ids = [e["id"] for e in events]
        return Answer(
            status,
            {
                "channel": "agent-1",
                "ids": ids,
                "events": [{"id": i, "seq": first_seq + n, "epoch": "01JEPOCH"} for n, i in enumerate(ids)],
            },
        )

    return commit


async def test_a_201_batch_has_each_events_seq_and_epoch_in_order(server: str) -> None:
    answer(committed_ids(201, 5))
    async with Publisher(server, token="pub") as p:
        r = await p.publish_batch("agent-1", [{"kind": "a", "id": "b-1"}, {"kind": "b", "id": "b-2"}, {"kind": "c"}])
    assert (r.status, r.queued) == (201, False)
    assert r.events is not None and [e.id for e in r.events] == r.ids
    assert r.events == [
        PublishedEvent("b-1", 5, "01JEPOCH"),
        PublishedEvent("b-2", 6, "01JEPOCH"),
        PublishedEvent(r.ids[2], 7, "01JEPOCH"),
    ]


async def test_a_200_batch_is_a_repeat_with_the_seqs_they_have(server: str) -> None:
    answer(committed_ids(200, 1))
    async with Publisher(server, token="pub") as p:
        r = await p.publish_batch("agent-1", [{"kind": "a", "id": "b-1"}, {"kind": "b", "id": "b-2"}])
    assert (r.status, r.queued, r.events) == (
        200,
        False,
        [PublishedEvent("b-1", 1, "01JEPOCH"), PublishedEvent("b-2", 2, "01JEPOCH")],
    )


async def test_a_202_batch_is_queued_without_seqs(server: str) -> None:
    def queued(s: Seen) -> Answer:
        return Answer(202, {"channel": "agent-1", "ids": [e["id"] for e in json.loads(s.body)["events"]], "queued": True})

    answer(queued)
    async with Publisher(server, token="pub") as p:
        r = await p.publish_batch("agent-1", [{"kind": "a", "id": "b-1"}])
    assert (r.status, r.ids, r.events, r.queued) == (202, ["b-1"], None, True)


async def test_a_batch_answer_never_fails_on_extra_or_odd_fields(server: str) -> None:
    answer(
        lambda s: Answer(
            201,
            {
                "channel": "agent-1",
                "ids": ["a", "b"],
                "events": [{"id": "a", "seq": 1, "epoch": "E", "new": 1}, {"seq": None}],
                "later": True,
            },
        )
    )
    async with Publisher(server, token="pub") as p:
        r = await p.publish_batch("agent-1", [{"kind": "a", "id": "a"}, {"kind": "b", "id": "b"}])
        assert r.events == [PublishedEvent("a", 1, "E"), PublishedEvent("b", None, None)] and not r.queued
        answer(lambda s: Answer(201, {"channel": "agent-1", "ids": ["a"], "events": "not a list"}))
        r = await p.publish_batch("agent-1", [{"kind": "a", "id": "a"}])
        assert (r.status, r.events, r.queued) == (201, None, False)
    assert r.raw["events"] == "not a list"


async def test_a_retried_batch_sends_the_same_ids_again(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    no_waits(monkeypatch)
    calls = iter([Answer(503, error("internal")), None])

    def flaky(s: Seen) -> Answer:
        a = next(calls)
        return a if a is not None else echo_ids(s)

    answer(flaky)
    async with Publisher(server, token="t") as p:  # max_retries 4 by default
        r = await p.publish_batch("agent-1", [{"kind": "a", "id": "mine"}, {"kind": "b"}])
    first, second = _Api.seen
    assert first.body == second.body
    ids = [e["id"] for e in json.loads(first.body)["events"]]
    assert ids[0] == "mine" and ids[1] and r.ids == ids


@pytest.mark.parametrize(
    "events",
    [[], [{"kind": "k"}] * 11, [{"kind": ""}], [{"data": 1}], [{"kind": "k", "extra": 1}], [{"kind": "k", "id": 7}], "kk"],
)
async def test_a_batch_is_checked_before_sending(server: str, events: Any) -> None:
    async with Publisher(server, token="t") as p:
        with pytest.raises(ValueError):
            await p.publish_batch("c", events)
    assert _Api.seen == []


CASES: list[tuple[Answer, type[AgentWireError], dict[str, Any]]] = [
    (Answer(403, error("forbidden")), ServerError, {"code": "forbidden", "status": 403}),
    (Answer(400, error("invalid_request")), ServerError, {"code": "invalid_request", "status": 400}),
    (Answer(400, error("invalid_channel")), ServerError, {"code": "invalid_channel", "status": 400}),
    (Answer(401, error("token_expired")), UnauthorizedError, {"code": "token_expired", "status": 401}),
    (
        Answer(429, error("rate_limited", scope="tenant", retry_after_ms=1500), {"retry-after": "2"}),
        ServerError,
        {"code": "rate_limited", "status": 429, "retry_after_ms": 1500, "scope": "tenant"},
    ),
    (
        Answer(429, error("rate_limited"), {"retry-after": "3"}),
        ServerError,
        {"code": "rate_limited", "status": 429, "retry_after_ms": 3000, "scope": None},
    ),
    (Answer(503, error("internal")), ServerError, {"code": "internal", "status": 503}),
]


@pytest.mark.parametrize(("reply", "cls", "want"), CASES, ids=[f"{c[0].status}-{c[2]['code']}" for c in CASES])
async def test_error_bodies_map_to_the_typed_errors(
    server: str, reply: Answer, cls: type[AgentWireError], want: dict[str, Any]
) -> None:
    answer(lambda s: reply)
    async with Publisher(server, token="t", max_retries=0) as p:
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "history": lambda: p.history("agent-1"),
            "presence": lambda: p.presence("agent-1"),
            "channel": lambda: p.channel("agent-1"),
            "publish_batch": lambda: p.publish_batch("agent-1", [{"kind": "k"}]),
        }
        for name, call in calls.items():
            with pytest.raises(cls) as e:
                await call()
            got = {k: getattr(e.value, k) for k in want}
            assert got == want, name
    assert len(_Api.seen) == 4


async def test_a_batch_refusal_names_the_event(server: str) -> None:
    answer(lambda s: Answer(400, error("invalid_event", message="event 1: kind name is empty")))
    async with Publisher(server, token="t") as p:
        with pytest.raises(ServerError) as e:
            await p.publish_batch("c", [{"kind": "a"}, {"kind": "b"}])
    assert e.value.code == "invalid_event" and "event 1" in e.value.message
    assert len(_Api.seen) == 1, "a 400 is not retried"


async def test_reads_retry_429_after_retry_after_ms_within_max_retries(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    waits = no_waits(monkeypatch)
    replies = iter([Answer(429, error("rate_limited", retry_after_ms=700)), Answer(200, {"channel": "c", "count": 1, "principals": ["p"]})])
    answer(lambda s: next(replies))
    async with Publisher(server, token="t", min_retry_delay=0.001, max_retry_delay=0.001) as p:
        assert await p.presence("c") == Presence("c", 1, ["p"])
    assert waits == [0.7] and len(_Api.seen) == 2
    _Api.seen.clear()
    answer(lambda s: Answer(429, error("rate_limited")))
    async with Publisher(server, token="t", max_retries=0) as p:
        with pytest.raises(ServerError) as e:
            await p.presence("c")
    assert e.value.code == "rate_limited" and len(_Api.seen) == 1


async def test_an_unreadable_answer_is_a_decode_error(server: str) -> None:
    async with Publisher(server, token="t") as p:
        answer(lambda s: Answer(200, "not json"))
        with pytest.raises(ProtocolError) as e:
            await p.history("c")
        assert e.value.code == "decode"
        answer(lambda s: Answer(200, {"channel": "c", "head": 1}))
        with pytest.raises(ProtocolError):
            await p.history("c")
        answer(lambda s: Answer(202, {"channel": "c"}))
        with pytest.raises(ProtocolError):
            await p.publish_batch("c", [{"kind": "k"}])


async def test_a_route_template_url_reads_from_its_base(server: str) -> None:
    answer(lambda s: Answer(200, {"channel": "c", "count": 0, "principals": []}))
    async with Publisher(server.rstrip("/") + "/v1/channels/{channel}/events", token="t") as p:
        await p.presence("c")
    assert _Api.seen[0].path == "/v1/channels/c/presence"
