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
/// The size of `v` as JSON text, the measure of an event's data.
pub fn json_size(v: &serde_json::Value) -> usize {
    serde_json::to_string(v).map_or(usize::MAX, |s| s.len())
}

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

/// Longest event timestamp accepted (RFC 3339 with nanoseconds and an
/// offset is 35).
pub const MAX_TIMESTAMP: usize = 40;

/// An event's `ts`: an RFC 3339 date-time
/// (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`), at most 40 characters.
pub fn validate_timestamp(ts: &str) -> Result<(), ProtocolError> {
    let bad = |why: &str| {
        Err(ProtocolError::new(
            ErrorCode::InvalidEvent,
            format!(
                "ts {:?} is not an RFC 3339 date-time ({why}); e.g. 2026-11-23T09:00:00.000Z",
                ts.chars().take(MAX_TIMESTAMP).collect::<String>()
            ),
        ))
    };
    if ts.len() > MAX_TIMESTAMP {
        return bad("too long");
    }
    let b = ts.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let fields = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    );
    let (Some(_), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = fields else {
        return bad("expected YYYY-MM-DDTHH:MM:SS");
    };
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't'))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return bad("expected YYYY-MM-DDTHH:MM:SS");
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return bad("a field is out of range");
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return bad("the fraction has 1 to 9 digits");
        }
        rest = &frac[digits..];
    }
    match rest {
        [b'Z' | b'z'] => Ok(()),
        [b'+' | b'-', h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
        {
            Ok(())
        }
        _ => bad("expected Z or an offset ±HH:MM"),
    }
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
    fn timestamps_are_rfc3339_and_short() {
        for ok in [
            "2026-11-23T09:00:00Z",
            "2026-11-23T09:00:00.000Z",
            "2026-11-23T09:00:00.123456789+02:00",
            "2026-11-23t09:00:00-05:30",
        ] {
            assert!(validate_timestamp(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "yesterday",
            "2026-11-23",
            "2026-11-23 09:00:00Z",
            "2026-13-23T09:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T09:00:00",
            "2026-11-23T09:00:00.Z",
            "2026-11-23T09:00:00.1234567890Z",
            "2026-11-23T09:00:00+0200",
            "2026-11-23T09:00:00Z and then some padding",
        ] {
            let e = validate_timestamp(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidEvent, "{bad}");
        }
    }

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
