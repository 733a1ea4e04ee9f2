use serde::{Deserialize, Serialize};

use crate::{ErrorCode, ProtocolError};

/// Lowest protocol version this build speaks.
pub const PROTOCOL_MIN: u32 = 1;
/// Highest protocol version this build speaks.
pub const PROTOCOL_MAX: u32 = 1;
/// WebSocket subprotocol names are this prefix plus the version: `agentwire.v1`.
pub const SUBPROTOCOL_PREFIX: &str = "agentwire.v";

/// An inclusive range of protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolRange {
    pub min: u32,
    pub max: u32,
}

/// The range this build supports.
pub fn supported() -> ProtocolRange {
    ProtocolRange {
        min: PROTOCOL_MIN,
        max: PROTOCOL_MAX,
    }
}

/// The highest version in both the client's range and ours, or the typed
/// `version_unsupported` error.
pub fn negotiate(client: ProtocolRange) -> Result<u32, ProtocolError> {
    let ours = supported();
    let low = client.min.max(ours.min);
    let high = client.max.min(ours.max);
    if client.min > client.max {
        return Err(ProtocolError::new(
            ErrorCode::InvalidFrame,
            format!(
                "protocol range is empty: min {} > max {}",
                client.min, client.max
            ),
        ));
    }
    if low > high {
        return Err(ProtocolError::new(
            ErrorCode::VersionUnsupported,
            format!(
                "no common protocol version: client speaks {}..={}, server speaks {}..={}",
                client.min, client.max, ours.min, ours.max
            ),
        ));
    }
    Ok(high)
}

/// `agentwire.v1` for version 1.
pub fn subprotocol_name(version: u32) -> String {
    format!("{SUBPROTOCOL_PREFIX}{version}")
}

/// The version named by an `agentwire.vN` subprotocol, if it is one.
pub fn version_of_subprotocol(name: &str) -> Option<u32> {
    name.trim().strip_prefix(SUBPROTOCOL_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_highest_common_version() {
        assert_eq!(negotiate(ProtocolRange { min: 1, max: 5 }), Ok(1));
        assert_eq!(negotiate(ProtocolRange { min: 1, max: 1 }), Ok(1));
    }

    #[test]
    fn disjoint_ranges_are_version_unsupported() {
        let err = negotiate(ProtocolRange { min: 2, max: 3 }).unwrap_err();
        assert_eq!(err.code, ErrorCode::VersionUnsupported);
    }

    #[test]
    fn empty_range_is_invalid() {
        let err = negotiate(ProtocolRange { min: 3, max: 1 }).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidFrame);
    }

    #[test]
    fn subprotocol_names_round_trip() {
        assert_eq!(subprotocol_name(1), "agentwire.v1");
        assert_eq!(version_of_subprotocol(" agentwire.v1"), Some(1));
        assert_eq!(version_of_subprotocol("graphql-ws"), None);
    }
}
