//! The client's knobs, with defaults chosen for API Gateway's limits.

use std::time::Duration;

use agentwire_protocol::{ProtocolRange, supported};

use crate::Backoff;

/// How the client behaves. `Options::default()` suits API Gateway.
#[derive(Debug, Clone)]
pub struct Options {
    /// Reconnect delays (default 0.5 s doubling to 30 s, full jitter, reset
    /// after a connection that lasted 60 s, no attempt cap).
    pub backoff: Backoff,
    /// How often a `ping` is sent (default 30 s, well inside API Gateway's
    /// 10-minute idle cut).
    pub ping_interval: Duration,
    /// A connection that receives nothing for this long after a `ping` is
    /// dead (default 20 s). A dead connection is noticed within
    /// `ping_interval + ping_timeout` (50 s by default).
    pub ping_timeout: Duration,
    /// Reconnect by itself after this long, ahead of API Gateway's 2-hour
    /// cut (default 115 min); `None` leaves it to the gateway.
    pub max_connection_age: Option<Duration>,
    /// Delivered seqs are acknowledged to the durable cursor this long after
    /// the first unacknowledged one (default 1 s), and on close; `None`
    /// never acknowledges.
    pub ack_debounce: Option<Duration>,
    /// The longest a WebSocket handshake or a `hello` may take (default 10 s).
    pub handshake_timeout: Duration,
    /// The protocol versions offered (default: all this build speaks).
    pub protocol: ProtocolRange,
    /// Sent in `hello` as the client's name.
    pub client_name: String,
    /// Events buffered for the application before the client stops reading
    /// the socket (default 1024).
    pub buffer: usize,
    /// The largest message reassembled from chunk events (default 64 MiB);
    /// a larger one is [`crate::ClientEvent::MessageLost`] `too_large`.
    pub max_message_bytes: u64,
    /// The most held at once in messages still being reassembled, over
    /// all channels (default 128 MiB).
    pub max_held_message_bytes: u64,
    /// How long before the token's `exp` a client with a token provider
    /// refreshes it in band, where the gateway offers it (default 60 s; at
    /// most half the time left when the `welcome` arrives).
    pub refresh_lead: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(20),
            max_connection_age: Some(Duration::from_secs(115 * 60)),
            ack_debounce: Some(Duration::from_secs(1)),
            handshake_timeout: Duration::from_secs(10),
            protocol: supported(),
            client_name: concat!("agentwire-client/", env!("CARGO_PKG_VERSION")).into(),
            buffer: 1024,
            max_message_bytes: 64 * 1024 * 1024,
            max_held_message_bytes: 128 * 1024 * 1024,
            refresh_lead: Duration::from_secs(60),
        }
    }
}
