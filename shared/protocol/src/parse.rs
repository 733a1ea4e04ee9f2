use serde_json::Value;

use crate::limits::MAX_CLIENT_FRAME_BYTES;
use crate::{ClientFrame, ErrorCode, ProtocolError};

const ACTIONS: [&str; 6] = ["hello", "join", "leave", "ack", "ping", "refresh"];

/// Reads one client frame, with the typed error a client mistake deserves:
/// `frame_too_large`, `bad_json`, `unknown_action` or `invalid_frame` (the
/// last two carry the frame's `id` when it had a readable one).
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, ProtocolError> {
    if text.len() > MAX_CLIENT_FRAME_BYTES {
        return Err(ProtocolError::new(
            ErrorCode::FrameTooLarge,
            format!(
                "frame is {} bytes; at most {MAX_CLIENT_FRAME_BYTES} are allowed",
                text.len()
            ),
        ));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ProtocolError::new(ErrorCode::BadJson, format!("frame is not valid JSON: {e}"))
    })?;
    let Value::Object(map) = &value else {
        return Err(ProtocolError::new(
            ErrorCode::InvalidFrame,
            "frame must be a JSON object with an \"action\"",
        ));
    };
    let id = map.get("id").and_then(Value::as_str).map(str::to_owned);
    let action = match map.get("action") {
        Some(Value::String(a)) => a.as_str(),
        Some(_) => {
            return Err(ProtocolError::new(
                ErrorCode::UnknownAction,
                "\"action\" must be a string",
            )
            .with_id(id));
        }
        None => {
            return Err(
                ProtocolError::new(ErrorCode::UnknownAction, "frame has no \"action\"").with_id(id),
            );
        }
    };
    if !ACTIONS.contains(&action) {
        return Err(ProtocolError::new(
            ErrorCode::UnknownAction,
            format!(
                "unknown action {action:?}; protocol v1 has {}",
                ACTIONS.join(", ")
            ),
        )
        .with_id(id));
    }
    let action = action.to_owned();
    serde_json::from_value(value).map_err(|e| {
        ProtocolError::new(
            ErrorCode::InvalidFrame,
            format!("invalid {action} frame: {e}"),
        )
        .with_id(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JoinChannel, Since};

    #[test]
    fn reads_join_with_bare_and_positioned_channels() {
        let f = parse_client_frame(
            r#"{"action":"join","id":"r1","channels":["a",{"name":"b","since":"head"},{"name":"c","since":{"epoch":"e","seq":17}}]}"#,
        )
        .unwrap();
        let ClientFrame::Join { id, channels } = f else {
            panic!("not a join: {f:?}")
        };
        assert_eq!(id.as_deref(), Some("r1"));
        assert_eq!(
            channels,
            vec![
                JoinChannel {
                    name: "a".into(),
                    since: None
                },
                JoinChannel {
                    name: "b".into(),
                    since: Some(Since::Head)
                },
                JoinChannel {
                    name: "c".into(),
                    since: Some(Since::Position {
                        epoch: "e".into(),
                        seq: 17
                    })
                },
            ]
        );
    }

    #[test]
    fn bad_input_gets_stable_codes() {
        let cases = [
            ("{not json", ErrorCode::BadJson),
            ("[1,2]", ErrorCode::InvalidFrame),
            (r#"{"id":"x"}"#, ErrorCode::UnknownAction),
            (r#"{"action":7}"#, ErrorCode::UnknownAction),
            (
                r#"{"action":"subscribe","id":"q"}"#,
                ErrorCode::UnknownAction,
            ),
            (r#"{"action":"join","id":"r"}"#, ErrorCode::InvalidFrame),
            (
                r#"{"action":"ack","channel":"a","seq":-1}"#,
                ErrorCode::InvalidFrame,
            ),
            (
                r#"{"action":"join","channels":[{"name":"a","since":"tail"}]}"#,
                ErrorCode::InvalidFrame,
            ),
        ];
        for (text, code) in cases {
            let e = parse_client_frame(text).unwrap_err();
            assert_eq!(e.code, code, "{text}: {e}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn errors_carry_the_request_id() {
        let e = parse_client_frame(r#"{"action":"join","id":"r9","channels":5}"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("r9"));
        let e = parse_client_frame(r#"{"action":"nope","id":"r8"}"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("r8"));
    }

    #[test]
    fn oversize_frames_are_refused_before_parsing() {
        let big = format!(
            r#"{{"action":"ping","pad":"{}"}}"#,
            "x".repeat(MAX_CLIENT_FRAME_BYTES)
        );
        assert_eq!(
            parse_client_frame(&big).unwrap_err().code,
            ErrorCode::FrameTooLarge
        );
    }
}
