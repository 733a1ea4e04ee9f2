"""`agentwire.agui.AgUiPublisher` against a mock HTTP API: what goes on the
wire for AG-UI events (docs/agui.md): coalescing, order, chunking,
validation, idempotency keys and progress."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from ag_ui.core import (
    CustomEvent,
    Event,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StateDeltaEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallResultEvent,
)
from pydantic import TypeAdapter

from agentwire import AgentWireError, Message, Publisher, ServerError
from agentwire._chunks import MAX_EVENT_DATA_BYTES, Reassembler
from agentwire.agui import AgUiPublisher, AgUiValidationError, validate_event

EVENT = TypeAdapter(Event)


class Api:
    """The batch route: records each request's events; answers the
    statuses queued in `fail` first, then those in `ok` (201 committed when
    it runs out; 200 a repeat; 202 queued)."""

    def __init__(self) -> None:
        self.requests: list[list[dict[str, Any]]] = []
        self.fail: list[int] = []
        self.ok: list[int] = []
        self.seq = 0
        self.arrived = asyncio.Event()

    async def handle(self, req: httpx.Request) -> httpx.Response:
        assert req.url.path.endswith("/events:batch"), req.url
        events = json.loads(req.content)["events"]
        self.requests.append(events)
        self.arrived.set()
        if self.fail:
            status = self.fail.pop(0)
            return httpx.Response(status, json={"type": "error", "code": "internal", "message": "try again"})
        status = self.ok.pop(0) if self.ok else 201
        ids = [e["id"] for e in events]
        if status == 202:
            return httpx.Response(202, json={"channel": "agent-1", "ids": ids, "queued": True})
        committed = []
        for i in ids:
            self.seq += status == 201
            committed.append({"id": i, "seq": self.seq, "epoch": "E"})
        return httpx.Response(status, json={"channel": "agent-1", "ids": ids, "events": committed})

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events of every request, in order (a retry's again)."""
        return [e for r in self.requests for e in r]


@pytest.fixture
async def api() -> AsyncIterator[tuple[Api, Publisher]]:
    a = Api()
    async with httpx.AsyncClient(transport=httpx.MockTransport(a.handle)) as http:
        yield a, Publisher("https://api.example", token="t", http=http, max_retries=0)


def text_message(mid: str, pieces: list[str]) -> list[Any]:
    return [
        TextMessageStartEvent(message_id=mid, role="assistant"),
        *[TextMessageContentEvent(message_id=mid, delta=p) for p in pieces],
        TextMessageEndEvent(message_id=mid),
    ]


async def test_consecutive_deltas_of_one_message_are_one_event_keyed_by_run_and_counter(
    api: tuple[Api, Publisher],
) -> None:
    a, p = api
    pieces = [f"tok{i} é\n" for i in range(200)]
    async with AgUiPublisher(p, "agent-1", run_id="run-7", window=60) as agui:
        # The AG-UI events it took (start, 200 deltas, end), not an HTTP status.
        assert await agui.publish_all(text_message("m1", pieces)) == 1 + len(pieces) + 1
    kinds = [e["kind"] for e in a.events]
    assert kinds == ["TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END"]
    assert all(e["kind"] == e["data"]["type"] for e in a.events)
    assert a.events[1]["data"] == {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m1", "delta": "".join(pieces)}
    assert [e["id"] for e in a.events] == ["run-7:1", "run-7:2", "run-7:3"]
    assert a.events[0]["data"] == {"type": "TEXT_MESSAGE_START", "messageId": "m1", "role": "assistant"}


async def test_any_other_event_sends_the_pending_text_first_so_order_is_kept(api: tuple[Api, Publisher]) -> None:
    a, p = api
    sent = [
        TextMessageContentEvent(message_id="m1", delta="a"),
        TextMessageContentEvent(message_id="m1", delta="b"),
        ToolCallArgsEvent(tool_call_id="c1", delta='{"q":'),
        ToolCallArgsEvent(tool_call_id="c1", delta='"x"}'),
        TextMessageContentEvent(message_id="m2", delta="other"),
        TextMessageContentEvent(message_id="m1", delta="c"),
        StateDeltaEvent(delta=[{"op": "add", "path": "/n", "value": None}]),
        TextMessageContentEvent(message_id="m1", delta="d"),
        TextMessageEndEvent(message_id="m1"),
    ]
    async with AgUiPublisher(p, "agent-1", window=60) as agui:
        await agui.publish_all(sent)
    got = [(e["kind"], e["data"].get("messageId") or e["data"].get("toolCallId"), e["data"].get("delta")) for e in a.events]
    assert got == [
        ("TEXT_MESSAGE_CONTENT", "m1", "ab"),
        ("TOOL_CALL_ARGS", "c1", '{"q":"x"}'),
        ("TEXT_MESSAGE_CONTENT", "m2", "other"),
        ("TEXT_MESSAGE_CONTENT", "m1", "c"),
        ("STATE_DELTA", None, [{"op": "add", "path": "/n", "value": None}]),
        ("TEXT_MESSAGE_CONTENT", "m1", "d"),
        ("TEXT_MESSAGE_END", "m1", None),
    ]
    # The keys count the events sent, without holes.
    n = [int(e["id"].rsplit(":", 1)[1]) for e in a.events]
    assert n == list(range(1, len(n) + 1))


async def test_reasoning_deltas_coalesce_like_text(api: tuple[Api, Publisher]) -> None:
    a, p = api
    async with AgUiPublisher(p, "agent-1", window=60) as agui:
        await agui.publish_all(
            [
                ReasoningMessageStartEvent(message_id="r1", role="reasoning"),
                *[ReasoningMessageContentEvent(message_id="r1", delta=f"think {i}. ") for i in range(30)],
                ReasoningMessageEndEvent(message_id="r1"),
            ]
        )
    assert [e["kind"] for e in a.events] == ["REASONING_MESSAGE_START", "REASONING_MESSAGE_CONTENT", "REASONING_MESSAGE_END"]
    assert a.events[1]["data"]["delta"] == "".join(f"think {i}. " for i in range(30))


async def test_deltas_that_differ_beyond_their_text_are_not_merged_and_a_merge_drops_raw_event(
    api: tuple[Api, Publisher],
) -> None:
    a, p = api
    async with AgUiPublisher(p, "agent-1", window=60) as agui:
        await agui.publish(TextMessageContentEvent(message_id="m", delta="a", timestamp=1, raw_event={"i": 1}))
        await agui.publish(TextMessageContentEvent(message_id="m", delta="b", timestamp=2, raw_event={"i": 2}))
        await agui.publish(TextMessageContentEvent(message_id="m", delta="c", metadata={"lang": "fr"}))
        await agui.publish(TextMessageContentEvent(message_id="m", delta="d", raw_event={"i": 4}))
    assert [e["data"] for e in a.events] == [
        {"type": "TEXT_MESSAGE_CONTENT", "timestamp": 1, "messageId": "m", "delta": "ab"},
        {"type": "TEXT_MESSAGE_CONTENT", "metadata": {"lang": "fr"}, "messageId": "m", "delta": "c"},
        {"type": "TEXT_MESSAGE_CONTENT", "rawEvent": {"i": 4}, "messageId": "m", "delta": "d"},
    ]


async def test_the_size_bound_cuts_coalesced_text_and_keeps_it_whole(api: tuple[Api, Publisher]) -> None:
    a, p = api
    pieces = ["0123456789é" * 3 for _ in range(50)]
    async with AgUiPublisher(p, "agent-1", window=60, max_delta_bytes=100) as agui:
        await agui.publish_all(ToolCallArgsEvent(tool_call_id="c", delta=x) for x in pieces)
    deltas = [e["data"]["delta"] for e in a.events]
    assert "".join(deltas) == "".join(pieces)
    assert len(deltas) > 1 and all(len(d.encode()) <= 100 for d in deltas)


async def test_the_window_sends_pending_text_without_a_flush(api: tuple[Api, Publisher]) -> None:
    a, p = api
    agui = AgUiPublisher(p, "agent-1", window=0.02)
    await agui.publish(TextMessageContentEvent(message_id="m", delta="hel"))
    await agui.publish(TextMessageContentEvent(message_id="m", delta="lo"))
    await asyncio.wait_for(a.arrived.wait(), 10)
    assert [e["data"]["delta"] for e in a.events] == ["hello"]
    await agui.aclose()
    assert agui.sent == 1


async def test_an_event_over_96_kib_goes_as_a_chunked_message_of_its_type(api: tuple[Api, Publisher]) -> None:
    a, p = api
    content = "".join(f"line {i}: ünïcødé \"quoted\" \\ 🙂\n" for i in range(8000))
    big = ToolCallResultEvent(message_id="r1", tool_call_id="c1", content=content, role="tool")
    async with AgUiPublisher(p, "agent-1", run_id="run-9") as agui:
        await agui.publish(RunStartedEvent(thread_id="agent-1", run_id="run-9"))
        await agui.publish(big)
        await agui.publish(RunFinishedEvent(thread_id="agent-1", run_id="run-9"))
    assert all(len(r) <= 10 for r in a.requests)
    chunks = [e for e in a.events if e["kind"] == "TOOL_CALL_RESULT"]
    assert len(chunks) > 2
    assert [e["id"] for e in chunks] == [f"run-9:2#{i}" for i in range(len(chunks))]
    for e in chunks:
        assert len(json.dumps(e["data"], ensure_ascii=False, separators=(",", ":")).encode()) <= MAX_EVENT_DATA_BYTES
    r = Reassembler()
    out = [r.accept("agent-1", i, "e", e["kind"], e["data"]) for i, e in enumerate(a.events)]
    messages = [m for m in out if isinstance(m, Message)]
    assert len(messages) == 1 and messages[0].kind == "TOOL_CALL_RESULT"
    assert messages[0].data == big.model_dump(mode="json", by_alias=True)
    assert EVENT.validate_python(messages[0].data) == big
    assert [o for o in out if o != "pending" and not isinstance(o, Message)] == ["not_chunk", "not_chunk"]


@pytest.mark.parametrize(
    "bad",
    [
        TextMessageContentEvent.model_construct(message_id="m"),  # no delta
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": 7, "delta": "x"},
        {"type": "NOT_AN_AG_UI_TYPE"},
        {"type": "STATE_DELTA", "delta": [{"op": "add", "path": "no-slash", "value": 1}]},
        CustomEvent(name="agentwire.progress", value={"total": 3}),
        "TEXT_MESSAGE_CONTENT",
    ],
)
async def test_an_invalid_event_is_refused_typed_and_nothing_is_sent(api: tuple[Api, Publisher], bad: Any) -> None:
    a, p = api
    async with AgUiPublisher(p, "agent-1") as agui:
        with pytest.raises(AgUiValidationError) as e:
            await agui.publish(bad)
        assert isinstance(e.value, AgentWireError) and isinstance(e.value, ValueError)
        assert e.value.code == "invalid_agui_event"
        await agui.publish(TextMessageEndEvent(message_id="m"))
    assert [e["kind"] for e in a.events] == ["TEXT_MESSAGE_END"]


def test_events_are_written_as_the_ag_ui_package_writes_them_nulls_that_mean_something_kept() -> None:
    assert validate_event(CustomEvent(name="cleared", value=None)) == {"type": "CUSTOM", "name": "cleared", "value": None}
    assert validate_event(StateDeltaEvent(delta=[{"op": "add", "path": "/a", "value": None}]))["delta"] == [
        {"op": "add", "path": "/a", "value": None}
    ]
    # A mapping is taken as JSON, validated and written back canonically.
    assert validate_event({"type": "RUN_STARTED", "threadId": "t", "runId": "r", "timestamp": "5"}) == {
        "type": "RUN_STARTED",
        "threadId": "t",
        "runId": "r",
        "timestamp": 5,
    }


async def test_a_failed_batch_sent_again_keeps_its_idempotency_keys(api: tuple[Api, Publisher]) -> None:
    a, p = api
    a.fail = [503]
    agui = AgUiPublisher(p, "agent-1", run_id="r")
    await agui.publish(RunStartedEvent(thread_id="agent-1", run_id="r"))
    with pytest.raises(ServerError):
        await agui.flush()
    await agui.publish(RunFinishedEvent(thread_id="agent-1", run_id="r"))
    await agui.aclose()
    assert [[e["id"] for e in r] for r in a.requests] == [["r:1"], ["r:1", "r:2"]]


async def test_the_publishers_own_retries_resend_the_same_ids() -> None:
    a = Api()
    a.fail = [503, 500]
    async with httpx.AsyncClient(transport=httpx.MockTransport(a.handle)) as http:
        p = Publisher("https://api.example", token="t", http=http, max_retries=3, min_retry_delay=0.001, max_retry_delay=0.002)
        async with AgUiPublisher(p, "agent-1") as agui:
            await agui.publish_all(text_message("m", ["a", "b"]))
    assert len(a.requests) == 3
    assert a.requests[0] == a.requests[1] == a.requests[2]


async def test_progress_is_sent_at_most_once_a_window_latest_wins_and_before_the_run_ends(
    api: tuple[Api, Publisher],
) -> None:
    a, p = api
    async with AgUiPublisher(p, "agent-1", window=60) as agui:
        await agui.publish(RunStartedEvent(thread_id="agent-1", run_id="r"))
        for i in range(1, 11):
            await agui.progress(i, 10, f"step {i}/10")
        await agui.publish(TextMessageContentEvent(message_id="m", delta="x"))
        await agui.publish(RunFinishedEvent(thread_id="agent-1", run_id="r", result={"ok": True}))
    got = [(e["kind"], e["data"].get("value")) for e in a.events]
    assert got == [
        ("RUN_STARTED", None),
        ("CUSTOM", {"done": 1, "total": 10, "label": "step 1/10"}),
        ("TEXT_MESSAGE_CONTENT", None),
        ("CUSTOM", {"done": 10, "total": 10, "label": "step 10/10"}),
        ("RUN_FINISHED", None),
    ]
    assert a.events[1]["data"]["name"] == "agentwire.progress"


async def test_an_async_iterable_is_published_in_one_call_in_batches_of_ten(api: tuple[Api, Publisher]) -> None:
    a, p = api

    async def agent() -> AsyncIterator[Any]:
        yield RunStartedEvent(thread_id="agent-1", run_id="r")
        for i in range(25):
            yield CustomEvent(name="tick", value=i)
        yield {"type": "RUN_FINISHED", "threadId": "agent-1", "runId": "r"}

    async with AgUiPublisher(p, "agent-1", window=0) as agui:
        assert await agui.publish_all(agent()) == 27
    assert [len(r) for r in a.requests] and all(len(r) <= 10 for r in a.requests)
    assert [e["data"].get("value") for e in a.events[1:-1]] == list(range(25))
    assert [e["kind"] for e in (a.events[0], a.events[-1])] == ["RUN_STARTED", "RUN_FINISHED"]


@pytest.mark.parametrize("statuses", [[201, 200, 202], [202, 202, 202], [200, 201, 200]])
async def test_a_batch_answered_200_201_or_202_is_sent_alike(api: tuple[Api, Publisher], statuses: list[int]) -> None:
    # Committed now, already committed under the same keys, or queued on the
    # gateway (committed shortly): the gateway took it, and sending goes on.
    a, p = api
    a.ok = list(statuses)
    async with AgUiPublisher(p, "agent-1", run_id="r", window=0) as agui:
        assert await agui.publish_all(CustomEvent(name="tick", value=i) for i in range(25)) == 25
        assert agui.sent == 25
    assert len(a.requests) >= 3 and all(len(r) <= 10 for r in a.requests) and not a.ok
    assert [e["id"] for e in a.events] == [f"r:{n}" for n in range(1, 26)]


def test_a_run_id_must_make_valid_keys() -> None:
    p = Publisher("https://api.example", token="t")
    with pytest.raises(ValueError):
        AgUiPublisher(p, "agent-1", run_id="has space")
    with pytest.raises(ValueError):
        AgUiPublisher(p, "agent-1", run_id="x" * 65)
    assert len(AgUiPublisher(p, "agent-1").run_id) == 32


def test_the_package_imports_without_the_agui_extra_and_agui_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['ag_ui'] = None\n"
        "import agentwire\n"
        "try:\n"
        "    import agentwire.agui\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'agentwire[agui]'" in out.stdout


async def test_empty_deltas_disappear_into_text_and_alone_go_as_one(api: tuple[Api, Publisher]) -> None:
    a, p = api
    async with AgUiPublisher(p, "agent-1", window=60) as agui:
        await agui.publish_all(TextMessageContentEvent(message_id="m", delta=d) for d in ["", "a", "", "b"])
        await agui.publish(TextMessageEndEvent(message_id="m"))
        await agui.publish_all(TextMessageContentEvent(message_id="k", delta="") for _ in range(3))
    assert [(e["data"]["messageId"], e["data"].get("delta")) for e in a.events] == [("m", "ab"), ("m", None), ("k", "")]
