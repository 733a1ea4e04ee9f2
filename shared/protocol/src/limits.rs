//! Sizes and name rules shared by the gateway, the functions and the clients.

use crate::{ErrorCode, ProtocolError};

/// Largest client frame the protocol accepts (API Gateway's frame size).
pub const MAX_CLIENT_FRAME_BYTES: usize = 32 * 1024;
/// Largest message API Gateway carries in either direction.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// Largest serialised `data` of one event, so that one event frame always
/// fits one API Gateway message with room for its envelope.
pub const MAX_EVENT_DATA_BYTES: usize = 96 * 1024;
/// Longest channel name.
pub const MAX_CHANNEL_NAME: usize = 128;
/// Longest tenant name.
pub const MAX_TENANT_NAME: usize = 64;
/// Longest event id (SQS's MessageDeduplicationId limit).
pub const MAX_EVENT_ID: usize = 128;
/// Longest event kind.
pub const MAX_KIND: usize = 64;
/// Most channels in one `join` or `leave`.
pub const MAX_CHANNELS_PER_JOIN: usize = 50;

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@')
}

fn check_name(what: &str, name: &str, max: usize, code: ErrorCode) -> Result<(), ProtocolError> {
    if name.is_empty() {
        return Err(ProtocolError::new(code, format!("{what} name is empty")));
    }
    if name.len() > max {
        return Err(ProtocolError::new(
            code,
            format!(
                "{what} name is {} bytes; at most {max} are allowed",
                name.len()
            ),
        ));
    }
    if let Some(bad) = name.chars().find(|c| !name_char(*c)) {
        return Err(ProtocolError::new(
            code,
            format!("{what} name {name:?} has {bad:?}; use letters, digits and - _ . : / @"),
        ));
    }
    Ok(())
}

/// A channel name: 1 to 128 of `A-Z a-z 0-9 - _ . : / @`.
pub fn validate_channel(name: &str) -> Result<(), ProtocolError> {
    check_name("channel", name, MAX_CHANNEL_NAME, ErrorCode::InvalidChannel)
}

/// A tenant name: 1 to 64 of the channel characters.
pub fn validate_tenant(name: &str) -> Result<(), ProtocolError> {
    check_name("tenant", name, MAX_TENANT_NAME, ErrorCode::InvalidEvent)
}

/// An event kind: 1 to 64 of the channel characters.
pub fn validate_kind(kind: &str) -> Result<(), ProtocolError> {
    check_name("kind", kind, MAX_KIND, ErrorCode::InvalidEvent)
}

/// An event id: 1 to 128 printable ASCII characters (what SQS accepts as a
/// deduplication id).
pub fn validate_event_id(id: &str) -> Result<(), ProtocolError> {
    if id.is_empty() || id.len() > MAX_EVENT_ID {
        return Err(ProtocolError::new(
            ErrorCode::InvalidEvent,
            format!(
                "event id must be 1 to {MAX_EVENT_ID} characters, not {}",
                id.len()
            ),
        ));
    }
    if !id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ProtocolError::new(
            ErrorCode::InvalidEvent,
            format!("event id {id:?} must be printable ASCII without spaces"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        assert!(validate_channel("agent-42").is_ok());
        assert!(validate_channel("fleet/eu:run_7@host.a").is_ok());
        for bad in ["", "has space", "a#b", "star*", "é"] {
            let e = validate_channel(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidChannel, "{bad:?}");
        }
        assert!(validate_channel(&"x".repeat(MAX_CHANNEL_NAME)).is_ok());
        assert!(validate_channel(&"x".repeat(MAX_CHANNEL_NAME + 1)).is_err());
    }

    #[test]
    fn event_ids() {
        assert!(validate_event_id("run-7/step:3#final").is_ok());
        assert!(validate_event_id("").is_err());
        assert!(validate_event_id("a b").is_err());
        assert!(validate_event_id(&"i".repeat(129)).is_err());
    }
}
