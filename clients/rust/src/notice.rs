//! The richer stream of [`crate::ClientBuilder::connect_with_notices`]:
//! every [`ClientEvent`], the `joined` answers with their presence and
//! health snapshot, connection state changes, and resyncs. The plain
//! [`crate::Client`] stream stays as it is; this one adds to it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use agentwire_protocol::{Health, JoinedChannel, Presence};

use crate::{ClientError, ClientEvent};

/// Where the client's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Before the client starts.
    Idle,
    /// The first connection attempt.
    Connecting,
    /// A connection is up and its `welcome` arrived.
    Connected,
    /// A connection ended (or an attempt failed) and another attempt follows.
    Reconnecting,
    /// The client stopped: closed by the application or a fatal error.
    Closed,
}

impl ConnectionState {
    /// `idle`, `connecting`, `connected`, `reconnecting` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Reconnecting => "reconnecting",
            Self::Closed => "closed",
        }
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change of [`ConnectionState`], with why: the same fields as the
/// TypeScript client's `state` event and the Python and Go clients' state
/// changes.
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    pub previous: ConnectionState,
    pub current: ConnectionState,
    /// Why (the failure before a reconnect, `closed by the application`…).
    pub reason: String,
    /// Reconnecting after a backoff delay: the attempt that follows (from 1).
    pub attempt: Option<u32>,
    /// Reconnecting after a backoff delay: the delay.
    pub delay: Option<Duration>,
    /// Closed by a fatal error: the error.
    pub error: Option<ClientError>,
}

/// A (re)join answered, with the snapshot the gateway sent with it: who is
/// on each channel and the server's health with each channel's log bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinedSnapshot {
    /// Where each joined channel's log stands (as in [`ClientEvent::Joined`]).
    pub channels: Vec<JoinedChannel>,
    /// Per joined channel: the subscribed connections and a sample of
    /// their principals (empty when the gateway sent none).
    pub presence: BTreeMap<String, Presence>,
    /// The server, protocol and time, and per channel `head` and `oldest`.
    pub health: Option<Health>,
}

/// One item of the stream of [`crate::ClientBuilder::connect_with_notices`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Notice {
    /// Every [`ClientEvent`] but `Joined`, which comes as [`Notice::Joined`].
    Event(ClientEvent),
    /// A (re)join answered, with its presence and health.
    Joined(JoinedSnapshot),
    /// The connection state changed.
    State(StateChange),
    /// [`crate::Handle::resync`] dropped the channel's position: what was
    /// delivered before came first; it joins again from the head.
    Resync { channel: String },
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::ClientEvent {}
    impl Sealed for super::Notice {}
}

/// What a [`crate::Client`] yields: [`ClientEvent`] (the default) or
/// [`Notice`]. Sealed.
pub trait StreamItem: sealed::Sealed + Sized + Send + 'static {
    #[doc(hidden)]
    fn from_notice(n: Notice) -> Option<Self>;
    #[doc(hidden)]
    const NOTICES: bool;
}

impl StreamItem for ClientEvent {
    fn from_notice(n: Notice) -> Option<Self> {
        match n {
            Notice::Event(e) => Some(e),
            Notice::Joined(s) => Some(ClientEvent::Joined {
                channels: s.channels,
            }),
            Notice::State(_) | Notice::Resync { .. } => None,
        }
    }
    const NOTICES: bool = false;
}

impl StreamItem for Notice {
    fn from_notice(n: Notice) -> Option<Self> {
        Some(n)
    }
    const NOTICES: bool = true;
}
