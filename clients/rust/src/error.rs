//! What can go wrong, typed. The fatal ones end the client's event stream;
//! the others are reported as [`crate::ClientEvent::Error`] and the client
//! carries on.

use agentwire_protocol::{ErrorCode, ProtocolRange};

/// A client error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The builder was given something unusable (no URL, no token, a bad
    /// channel name, no tokio runtime). Nothing was started.
    #[error("invalid client configuration: {0}")]
    Config(String),

    /// The gateway speaks no version of the client's range. Fatal: a retry
    /// would get the same answer.
    #[error("no protocol version in common (client offers {offered_min}..={offered_max}{}): {message}", server_range(.supported))]
    VersionUnsupported {
        offered_min: u32,
        offered_max: u32,
        /// The gateway's range, when it said.
        supported: Option<ProtocolRange>,
        message: String,
    },

    /// A channel name the protocol does not allow. Nothing was sent.
    #[error("invalid channel: {0}")]
    InvalidChannel(String),

    /// The gateway refused the token (`unauthorized` or `token_expired`).
    /// Fatal with a fixed token; with a token provider, fatal only when a
    /// freshly provided token is refused too.
    #[error("the gateway refused the token ({code}): {message}")]
    Unauthorized { code: ErrorCode, message: String },

    /// The token provider failed.
    #[error("the token provider failed: {0}")]
    TokenProvider(crate::token::TokenError),

    /// The gateway refused the connection for a reason a retry cannot fix
    /// (HTTP 400, 403, 404, ...).
    #[error("the gateway refused the connection: HTTP {status}: {message}")]
    Refused { status: u16, message: String },

    /// The reconnect attempts ran out (`Backoff::max_attempts`).
    #[error("gave up after {attempts} reconnect attempts; last failure: {last}")]
    Exhausted { attempts: u32, last: String },

    /// The gateway answered a request with an error frame (for example
    /// `forbidden` for a join the token does not grant). Not fatal.
    #[error("{code}: {message}")]
    Server {
        code: ErrorCode,
        message: String,
        /// The id of the request it answers, when it had one.
        id: Option<String>,
    },

    /// The gateway sent a frame this client cannot read. Not fatal.
    #[error("unreadable frame from the gateway: {0}")]
    Decode(String),

    /// The client has stopped; commands can no longer be applied.
    #[error("the client is closed")]
    Closed,
}

fn server_range(r: &Option<ProtocolRange>) -> String {
    match r {
        Some(r) => format!(", gateway speaks {}..={}", r.min, r.max),
        None => String::new(),
    }
}

impl ClientError {
    /// Whether this error ended the client.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            ClientError::Server { .. } | ClientError::Decode(_) | ClientError::InvalidChannel(_)
        )
    }
}
