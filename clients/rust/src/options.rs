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
    /// The most messages being reassembled at once, over all channels
    /// (default 64): starting one more makes the oldest
    /// [`crate::ClientEvent::MessageLost`] `too_large`. Message ids longer
    /// than 128 bytes are lost as `invalid`.
    pub max_partial_messages: usize,
    /// How long a hole in the live stream (an event after a missing seq)
    /// waits for the missing frames before the channel re-joins to fetch
    /// them (default 250 ms; zero: at once). Frames that fill the hole
    /// meanwhile cancel the re-join.
    pub hole_grace: Duration,
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
            max_partial_messages: agentwire_protocol::chunks::DEFAULT_MAX_PARTIAL,
            hole_grace: Duration::from_millis(250),
            refresh_lead: Duration::from_secs(60),
        }
    }
}
