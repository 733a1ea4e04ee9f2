"""Writes agui_events.json beside this file: AG-UI events as the Python
AG-UI package (ag-ui-protocol 1.x, `ag_ui.core`) serialises them, for
agui_test.go to compare the Go builders' JSON with. Each entry's name is the
Go builder call that must give the same JSON (agui_test.go lists the calls).

Run it again when ag-ui-protocol changes (its venv has the package through
the `agui` extra):

    clients/python/.venv/bin/python clients/go/testdata/agui_fixtures.py
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

from ag_ui.core import (
    CustomEvent,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StateDeltaEvent,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)

EVENTS = {
    "run_started": RunStartedEvent(thread_id="agent-1", run_id="run-7"),
    "run_finished": RunFinishedEvent(thread_id="agent-1", run_id="run-7"),
    "run_finished_result": RunFinishedEvent(thread_id="agent-1", run_id="run-7", result={"exitCode": 0, "durationMs": 3200}),
    "run_error": RunErrorEvent(message="exited with status 2 after 3.2 s", code="exit:2"),
    "run_error_no_code": RunErrorEvent(message="failed"),
    "step_started": StepStartedEvent(step_name="plan"),
    "step_finished": StepFinishedEvent(step_name="plan"),
    "text_message_start": TextMessageStartEvent(message_id="m1", role="assistant"),
    "text_message_start_no_role": TextMessageStartEvent(message_id="m1"),
    "text_message_content": TextMessageContentEvent(message_id="m1", delta="Hello, \"world\" <é> 🙂\n"),
    "text_message_content_empty": TextMessageContentEvent(message_id="m1", delta=""),
    "text_message_end": TextMessageEndEvent(message_id="m1"),
    "tool_call_start": ToolCallStartEvent(tool_call_id="c1", tool_call_name="search", parent_message_id="m1"),
    "tool_call_start_no_parent": ToolCallStartEvent(tool_call_id="c1", tool_call_name="search"),
    "tool_call_args": ToolCallArgsEvent(tool_call_id="c1", delta='{"q":'),
    "tool_call_end": ToolCallEndEvent(tool_call_id="c1"),
    "tool_call_result": ToolCallResultEvent(message_id="t1", tool_call_id="c1", content="3 files", role="tool"),
    "state_snapshot": StateSnapshotEvent(snapshot={"files": 3, "done": [], "note": None}),
    "state_delta": StateDeltaEvent(
        delta=[
            {"op": "add", "path": "/done/-", "value": "plan"},
            {"op": "add", "path": "/note", "value": None},
            {"op": "replace", "path": "/files", "value": 4},
            {"op": "remove", "path": "/tmp"},
            {"op": "move", "from": "/a", "path": "/b"},
            {"op": "copy", "from": "/b", "path": "/c"},
            {"op": "test", "path": "/files", "value": 4},
        ]
    ),
    "custom": CustomEvent(name="deploy", value={"env": "prod"}),
    "custom_null": CustomEvent(name="cleared", value=None),
    "progress": CustomEvent(name="agentwire.progress", value={"done": 3, "total": 10, "label": "Analyzing code... 3/10 files"}),
    "progress_count": CustomEvent(name="agentwire.progress", value={"done": 42}),
}


def main() -> None:
    out = {
        "generator": "clients/go/testdata/agui_fixtures.py",
        "ag_ui_protocol": version("ag-ui-protocol"),
        "events": {name: e.model_dump(mode="json", by_alias=True) for name, e in EVENTS.items()},
    }
    path = Path(__file__).with_name("agui_events.json")
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    print(f"{path}: {len(EVENTS)} events (ag-ui-protocol {out['ag_ui_protocol']})")


if __name__ == "__main__":
    main()
