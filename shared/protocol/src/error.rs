use serde::{Deserialize, Serialize};

/// The stable error codes of protocol v1. Clients match on these; the text
/// of `message` may change, a code never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON.
    BadJson,
    /// The frame is JSON but not a valid frame of its action (missing or mistyped field).
    InvalidFrame,
    /// The `action` is missing or not one of protocol v1.
    UnknownAction,
    /// The frame is larger than the protocol allows for one client frame.
    FrameTooLarge,
    /// The message is larger than the gateway accepts (API Gateway's limit).
    MessageTooLarge,
    /// Binary frames are not part of protocol v1.
    BinaryUnsupported,
    /// A channel name is empty, too long or has characters outside the allowed set.
    InvalidChannel,
    /// The token does not grant the channel.
    Forbidden,
    /// No protocol version both sides support.
    VersionUnsupported,
    /// No token, or a token that is malformed or badly signed.
    Unauthorized,
    /// The token has expired.
    TokenExpired,
    /// The token's principal was revoked after the token was issued.
    TokenRevoked,
    /// The connection is not known (it expired or was removed).
    NotConnected,
    /// An event envelope is invalid.
    InvalidEvent,
    /// The gateway failed; the request may be retried.
    Internal,
    /// Over a rate limit (the tenant's or the channel's publish rate, the
    /// connection's join/ack rate): retry after `retry_after_ms`.
    RateLimited,
    /// The tenant has as many connections open as it may (`$connect`, 429).
    TooManyConnections,
    /// The connection has joined as many channels as its tenant allows.
    TooManyChannels,
    /// An HTTP API request is not one the route takes (a query parameter
    /// out of range, a batch body of the wrong shape or size).
    InvalidRequest,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::InvalidFrame => "invalid_frame",
            ErrorCode::UnknownAction => "unknown_action",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::BinaryUnsupported => "binary_unsupported",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::VersionUnsupported => "version_unsupported",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenRevoked => "token_revoked",
            ErrorCode::NotConnected => "not_connected",
            ErrorCode::InvalidEvent => "invalid_event",
            ErrorCode::Internal => "internal",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::TooManyChannels => "too_many_channels",
            ErrorCode::InvalidRequest => "invalid_request",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client mistake found while reading or validating a frame: a code and a
/// message meant for the client, plus the request `id` when one could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    pub id: Option<String>,
    /// A stable sub-code (a refused token's `reason`).
    pub reason: Option<String>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            id: None,
            reason: None,
        }
    }

    /// The same error, with a stable sub-code.
    pub fn with_reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }

    /// The same error, answering the request `id`.
    pub fn with_id(mut self, id: Option<String>) -> Self {
        self.id = id;
        self
    }
}
