//! AG-UI events as agentwire events (docs/agui.md): an AG-UI event is one
//! agentwire event whose `kind` is the AG-UI `type` and whose `data` is the
//! AG-UI event itself, camelCase, `type` included, optional fields left
//! out. These builders make the events a Rust publisher needs (the
//! `agentwire run` command uses them); the field names are AG-UI's
//! (`@ag-ui/core`, `ag-ui-protocol`), and the clients' tests check the
//! same shapes against those packages' own schemas.

use serde_json::{Map, Value, json};

/// The `CUSTOM` event name of progress (`value: {done, total?, label?}`).
pub const PROGRESS: &str = "agentwire.progress";
/// The `CUSTOM` event name a consumer gives a gap (`value: {from, to}`).
pub const GAP: &str = "agentwire.gap";

/// The AG-UI event types (`EventType` of `@ag-ui/core`).
pub const EVENT_TYPES: &[&str] = &[
    "TEXT_MESSAGE_START",
    "TEXT_MESSAGE_CONTENT",
    "TEXT_MESSAGE_END",
    "TEXT_MESSAGE_CHUNK",
    "TOOL_CALL_START",
    "TOOL_CALL_ARGS",
    "TOOL_CALL_END",
    "TOOL_CALL_CHUNK",
    "TOOL_CALL_RESULT",
    "THINKING_START",
    "THINKING_END",
    "THINKING_TEXT_MESSAGE_START",
    "THINKING_TEXT_MESSAGE_CONTENT",
    "THINKING_TEXT_MESSAGE_END",
    "STATE_SNAPSHOT",
    "STATE_DELTA",
    "MESSAGES_SNAPSHOT",
    "ACTIVITY_SNAPSHOT",
    "ACTIVITY_DELTA",
    "RAW",
    "CUSTOM",
    "RUN_STARTED",
    "RUN_FINISHED",
    "RUN_ERROR",
    "STEP_STARTED",
    "STEP_FINISHED",
    "REASONING_START",
    "REASONING_MESSAGE_START",
    "REASONING_MESSAGE_CONTENT",
    "REASONING_MESSAGE_END",
    "REASONING_MESSAGE_CHUNK",
    "REASONING_END",
    "REASONING_ENCRYPTED_VALUE",
];

/// Whether `kind` names an AG-UI event type.
pub fn is_agui_kind(kind: &str) -> bool {
    EVENT_TYPES.contains(&kind)
}

/// One AG-UI event, ready to publish: its kind (the AG-UI type) and data.
#[derive(Debug, Clone, PartialEq)]
pub struct AgUiEvent {
    pub kind: &'static str,
    pub data: Value,
}

impl AgUiEvent {
    /// `type` plus the given fields; `None` values are left out.
    fn new(
        kind: &'static str,
        fields: impl IntoIterator<Item = (&'static str, Option<Value>)>,
    ) -> Self {
        let mut data = Map::new();
        data.insert("type".into(), Value::from(kind));
        for (name, value) in fields {
            if let Some(v) = value {
                data.insert(name.into(), v);
            }
        }
        Self {
            kind,
            data: Value::Object(data),
        }
    }
}

fn text(s: &str) -> Option<Value> {
    Some(Value::from(s))
}

pub fn run_started(thread_id: &str, run_id: &str) -> AgUiEvent {
    AgUiEvent::new(
        "RUN_STARTED",
        [("threadId", text(thread_id)), ("runId", text(run_id))],
    )
}

pub fn run_finished(thread_id: &str, run_id: &str, result: Option<Value>) -> AgUiEvent {
    AgUiEvent::new(
        "RUN_FINISHED",
        [
            ("threadId", text(thread_id)),
            ("runId", text(run_id)),
            ("result", result),
        ],
    )
}

pub fn run_error(message: &str, code: Option<&str>) -> AgUiEvent {
    AgUiEvent::new(
        "RUN_ERROR",
        [("message", text(message)), ("code", code.and_then(text))],
    )
}

pub fn step_started(step_name: &str) -> AgUiEvent {
    AgUiEvent::new("STEP_STARTED", [("stepName", text(step_name))])
}

pub fn step_finished(step_name: &str) -> AgUiEvent {
    AgUiEvent::new("STEP_FINISHED", [("stepName", text(step_name))])
}

/// A text message's start; `role` is AG-UI's (`assistant` when `None`).
pub fn text_message_start(message_id: &str, role: Option<&str>) -> AgUiEvent {
    AgUiEvent::new(
        "TEXT_MESSAGE_START",
        [
            ("messageId", text(message_id)),
            ("role", role.and_then(text)),
        ],
    )
}

pub fn text_message_content(message_id: &str, delta: &str) -> AgUiEvent {
    AgUiEvent::new(
        "TEXT_MESSAGE_CONTENT",
        [("messageId", text(message_id)), ("delta", text(delta))],
    )
}

pub fn text_message_end(message_id: &str) -> AgUiEvent {
    AgUiEvent::new("TEXT_MESSAGE_END", [("messageId", text(message_id))])
}

pub fn tool_call_start(
    tool_call_id: &str,
    name: &str,
    parent_message_id: Option<&str>,
) -> AgUiEvent {
    AgUiEvent::new(
        "TOOL_CALL_START",
        [
            ("toolCallId", text(tool_call_id)),
            ("toolCallName", text(name)),
            ("parentMessageId", parent_message_id.and_then(text)),
        ],
    )
}

pub fn tool_call_args(tool_call_id: &str, delta: &str) -> AgUiEvent {
    AgUiEvent::new(
        "TOOL_CALL_ARGS",
        [("toolCallId", text(tool_call_id)), ("delta", text(delta))],
    )
}

pub fn tool_call_end(tool_call_id: &str) -> AgUiEvent {
    AgUiEvent::new("TOOL_CALL_END", [("toolCallId", text(tool_call_id))])
}

pub fn tool_call_result(message_id: &str, tool_call_id: &str, content: &str) -> AgUiEvent {
    AgUiEvent::new(
        "TOOL_CALL_RESULT",
        [
            ("messageId", text(message_id)),
            ("toolCallId", text(tool_call_id)),
            ("content", text(content)),
        ],
    )
}

pub fn state_snapshot(snapshot: Value) -> AgUiEvent {
    AgUiEvent::new("STATE_SNAPSHOT", [("snapshot", Some(snapshot))])
}

/// `delta` is a JSON Patch (RFC 6902) array.
pub fn state_delta(delta: Value) -> AgUiEvent {
    AgUiEvent::new("STATE_DELTA", [("delta", Some(delta))])
}

pub fn custom(name: &str, value: Value) -> AgUiEvent {
    AgUiEvent::new("CUSTOM", [("name", text(name)), ("value", Some(value))])
}

/// Progress of the current run: `done` of `total` (when known), with an
/// optional label ("Analyzing code... 3/10 files").
pub fn progress(done: f64, total: Option<f64>, label: Option<&str>) -> AgUiEvent {
    let mut value = Map::new();
    value.insert("done".into(), number(done));
    if let Some(t) = total {
        value.insert("total".into(), number(t));
    }
    if let Some(l) = label {
        value.insert("label".into(), Value::from(l));
    }
    custom(PROGRESS, Value::Object(value))
}

/// Whole numbers as JSON integers (`3`, not `3.0`).
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_their_type_and_camel_case_fields_and_leave_out_what_is_absent() {
        let e = run_started("agent-1", "r1");
        assert_eq!(e.kind, "RUN_STARTED");
        assert_eq!(
            e.data,
            json!({"type": "RUN_STARTED", "threadId": "agent-1", "runId": "r1"})
        );
        assert_eq!(
            run_error("exited with status 2 after 1.0 s", Some("exit:2")).data,
            json!({"type": "RUN_ERROR", "message": "exited with status 2 after 1.0 s", "code": "exit:2"})
        );
        assert_eq!(
            run_finished("t", "r", None).data,
            json!({"type": "RUN_FINISHED", "threadId": "t", "runId": "r"})
        );
        assert_eq!(
            tool_call_start("c1", "search", None).data,
            json!({"type": "TOOL_CALL_START", "toolCallId": "c1", "toolCallName": "search"})
        );
        assert_eq!(
            text_message_start("m1", Some("assistant")).data,
            json!({"type": "TEXT_MESSAGE_START", "messageId": "m1", "role": "assistant"})
        );
    }

    #[test]
    fn progress_is_a_custom_event_with_whole_numbers_as_integers() {
        let p = progress(3.0, Some(10.0), Some("3/10 files"));
        assert_eq!(p.kind, "CUSTOM");
        assert_eq!(
            p.data,
            json!({"type": "CUSTOM", "name": "agentwire.progress", "value": {"done": 3, "total": 10, "label": "3/10 files"}})
        );
        assert_eq!(
            progress(0.5, None, None).data["value"],
            json!({"done": 0.5})
        );
    }

    #[test]
    fn every_builder_makes_a_kind_the_list_knows() {
        for e in [
            run_started("t", "r"),
            step_started("s"),
            step_finished("s"),
            text_message_content("m", "d"),
            text_message_end("m"),
            tool_call_args("c", "{"),
            tool_call_end("c"),
            tool_call_result("m", "c", "ok"),
            state_snapshot(json!({})),
            state_delta(json!([])),
        ] {
            assert!(is_agui_kind(e.kind), "{}", e.kind);
            assert_eq!(e.data["type"], e.kind);
        }
        assert!(!is_agui_kind("stdout"));
    }
}
