"""AG-UI over agentwire end to end on the local stack (docs/agui.md): a whole
run published with `AgUiPublisher` through the dev gateway, read back over
HTTP history (chunked events reassembled), compared with what was sent, and
checked by the AG-UI package's own models and by the `ag-ui-validate`
conformance checker (PyPI)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from ag_ui.core import (
    CustomEvent,
    Event,
    RunFinishedEvent,
    RunStartedEvent,
    StateDeltaEvent,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TextPart,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)
from pydantic import TypeAdapter
from test_e2e import WAIT, Gateway, events_queue, gateway, pytestmark, tenant, token  # noqa: F401

from agentwire import Client, Event as WireEvent, Message, MessageLost, Publisher
from agentwire._chunks import MAX_EVENT_DATA_BYTES, Reassembler
from agentwire.agui import PROGRESS_EVENT, AgUiPublisher

EVENT = TypeAdapter(Event)
CHANNEL = "agent-agui"
COALESCED = ("TEXT_MESSAGE_CONTENT", "TOOL_CALL_ARGS")


def run_events(run_id: str) -> tuple[list[Any], list[Any]]:
    """A run in two parts (progress is published between them)."""
    answer = [f"Token {i} — ça va? " for i in range(400)]
    args = [json.dumps({"query": "find all the files"})[i : i + 3] for i in range(0, 34, 3)]
    # Mostly non-ASCII: sent as UTF-8, not \\u-escaped, or its chunks would
    # not fit the gateway's limits.
    result = "".join(f"{i:06d} ✓ 源文件 «ok» {'ü中🙂' * 8}\n" for i in range(8000))
    first = [
        RunStartedEvent(thread_id=CHANNEL, run_id=run_id),
        StepStartedEvent(step_name="answer"),
        TextMessageStartEvent(message_id="m1", role="assistant"),
        *[TextMessageContentEvent(message_id="m1", delta=d) for d in answer],
        TextMessageEndEvent(message_id="m1"),
        StepFinishedEvent(step_name="answer"),
    ]
    second = [
        StepStartedEvent(step_name="search"),
        ToolCallStartEvent(tool_call_id="c1", tool_call_name="search", parent_message_id="m1"),
        *[ToolCallArgsEvent(tool_call_id="c1", delta=d) for d in args],
        ToolCallEndEvent(tool_call_id="c1"),
        ToolCallResultEvent(message_id="t1", tool_call_id="c1", content=result, role="tool"),
        ToolCallStartEvent(tool_call_id="c2", tool_call_name="summarise", parent_message_id="m1"),
        ToolCallArgsEvent(tool_call_id="c2", delta="{}"),
        ToolCallEndEvent(tool_call_id="c2"),
        # Valid in AG-UI 1.0 (content parts); see the ag-ui-validate check below.
        ToolCallResultEvent(message_id="t2", tool_call_id="c2", content=[TextPart(text="4000 files")], role="tool"),
        StateSnapshotEvent(snapshot={"files": 4000, "done": [], "notes": None}),
        StateDeltaEvent(delta=[{"op": "add", "path": "/done/-", "value": "search"}, {"op": "replace", "path": "/files", "value": 3999}]),
        StepFinishedEvent(step_name="search"),
        RunFinishedEvent(thread_id=CHANNEL, run_id=run_id, result={"files": 3999}),
    ]
    return first, second


async def read_back(p: Publisher, channel: str) -> tuple[list[tuple[int, str, Any]], int]:
    """The channel's events from seq 1 as `(seq, kind, data)`, chunked ones
    reassembled (at their last chunk's seq); and how many chunk events there were."""
    r = Reassembler()
    out: list[tuple[int, str, Any]] = []
    chunks = 0
    async for page in p.history_pages(channel, limit=1000):
        assert page.gap is None
        for e in page.events:
            got = r.accept(channel, e.seq, e.epoch, e.kind, e.data)
            if got == "not_chunk":
                out.append((e.seq, e.kind, e.data))
                continue
            chunks += 1
            assert not isinstance(got, MessageLost), got
            if isinstance(got, Message):
                assert got.encoding == "json"
                out.append((got.seq, got.kind, got.data))
    assert r.partial == 0
    return out, chunks


def collapse(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive deltas of one id joined: what any faithful coalescing gives."""
    out: list[dict[str, Any]] = []
    for e in events:
        prev = out[-1] if out else None
        if (
            prev is not None
            and e["type"] in COALESCED
            and prev["type"] == e["type"]
            and {k: v for k, v in prev.items() if k != "delta"} == {k: v for k, v in e.items() if k != "delta"}
        ):
            out[-1] = {**prev, "delta": prev["delta"] + e["delta"]}
        else:
            out.append(dict(e))
    return out


# A busy local endpoint takes tens of seconds to commit a batch (and fails
# some, retried once visible again): a bound well past the usual seconds.
COMMITTED = 240.0


@pytest.mark.timeout(300)
async def test_a_whole_ag_ui_run_is_read_back_as_sent_and_valid(gateway: Gateway, tenant: str) -> None:
    tok = token(tenant, "agent")
    run_id = "run-e2e-1"
    first, second = run_events(run_id)
    async with Client(gateway.ws_url, token=tok) as client, Publisher(gateway.http_url, token=tok) as p:
        sub = await client.join(CHANNEL)
        await sub.wait_joined(WAIT)
        async with AgUiPublisher(p, CHANNEL, run_id=run_id) as agui:
            await agui.publish_all(first)
            for i in range(1, 101):
                await agui.progress(i, 100, f"Analyzing code... {i}/100 files")
            await agui.publish_all(second)

        async def run_finished() -> int:
            # The gateway took every event: committed at once (201), or queued
            # (202) and committed shortly; all are once the live subscriber
            # sees the last one.
            async for item in sub:
                assert not isinstance(item, MessageLost), item
                if isinstance(item, WireEvent) and item.kind == "RUN_FINISHED":
                    return item.seq
            raise AssertionError("the subscription ended")

        last = await asyncio.wait_for(run_finished(), COMMITTED)
        got, chunks = await read_back(p, CHANNEL)
        assert got[-1][0] == last

    kinds = [k for _, k, _ in got]
    datas = [d for _, _, d in got]
    seqs = [s for s, _, _ in got]
    assert seqs == sorted(seqs)
    assert all(k == d["type"] for k, d in zip(kinds, datas)), "kind is the AG-UI type"

    # The big tool result came as a chunked message and was put back whole.
    (sent_result,) = [e.model_dump(mode="json", by_alias=True) for e in second if isinstance(e, ToolCallResultEvent) and isinstance(e.content, str)]
    assert len(json.dumps(sent_result, ensure_ascii=False).encode()) > MAX_EVENT_DATA_BYTES
    assert chunks >= 3
    assert sent_result in datas

    # What was sent, modulo coalescing and progress (latest-wins).
    sent = [e.model_dump(mode="json", by_alias=True) for e in first + second]
    progress = [d for d in datas if d["type"] == "CUSTOM" and d["name"] == PROGRESS_EVENT]
    others = [d for d in datas if not (d["type"] == "CUSTOM" and d["name"] == PROGRESS_EVENT)]
    assert collapse(others) == collapse(sent)
    text = "".join(d["delta"] for d in others if d["type"] == "TEXT_MESSAGE_CONTENT")
    assert text == "".join(e["delta"] for e in sent if e["type"] == "TEXT_MESSAGE_CONTENT")
    sent_deltas = sum(1 for e in sent if e["type"] == "TEXT_MESSAGE_CONTENT")
    got_deltas = sum(1 for d in others if d["type"] == "TEXT_MESSAGE_CONTENT")
    assert 1 <= got_deltas < sent_deltas // 4, (got_deltas, sent_deltas)

    # Progress: fewer events than calls, in order, the last one kept, all inside the run.
    dones = [d["value"]["done"] for d in progress]
    assert 1 <= len(dones) < 100 and dones == sorted(dones) and dones[-1] == 100
    assert progress[-1]["value"] == {"done": 100, "total": 100, "label": "Analyzing code... 100/100 files"}
    assert kinds[0] == "RUN_STARTED" and kinds[-1] == "RUN_FINISHED"

    # The AG-UI package's own models take every event read back.
    for d in datas:
        EVENT.validate_python(d)

    # The ag-ui-validate checker (PyPI). Its event table is generated from
    # ag-ui-protocol 0.1.21, where TOOL_CALL_RESULT `content` is a string:
    # AG-UI 1.0 also allows an array of content parts (our second result), so
    # it reports exactly that one event as AGUI504; anything else is a finding.
    # (ag-ui-validate needs Python 3.11: the `test` extra has it from there on.)
    checker = pytest.importorskip("ag_ui_validate.pytest_plugin")
    assert_valid_agui, validate_agui = checker.assert_valid_agui, checker.validate_agui

    report = validate_agui(datas)
    assert report.internal_errors == []
    findings = [(d.rule, d.severity, d.event_index, d.pointer) for d in report.diagnostics if d.severity != "info"]
    array_result = next(i for i, d in enumerate(datas) if d["type"] == "TOOL_CALL_RESULT" and isinstance(d["content"], list))
    assert findings == [("AGUI504", "error", array_result, "/content")]
    assert_valid_agui([d for i, d in enumerate(datas) if i != array_result], max_warnings=0)
