//! What the client's event stream yields.

use std::time::Duration;

use agentwire_protocol::chunks::{LostReason, Message};
use agentwire_protocol::{EventFrame, JoinedChannel};

use crate::ClientError;

/// One item of the client's event stream, in the order things happened.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A connection is up and its protocol version negotiated.
    Connected {
        protocol: u32,
        connection_id: String,
    },
    /// The gateway confirmed a (re)join: where each channel's log stands,
    /// and whether the resume position was still retained (`recovered`).
    Joined { channels: Vec<JoinedChannel> },
    /// The gateway confirmed a leave (or, for a leave issued while
    /// disconnected, the channels were not re-joined).
    Left { channels: Vec<String> },
    /// The next event of a channel: each seq exactly once, in order.
    Event(EventFrame),
    /// A message larger than one event, reassembled from its chunk events
    /// (which are never delivered as [`ClientEvent::Event`]); `seq` is its
    /// last chunk's.
    Message(Message),
    /// A message that will never be delivered: a chunk of it is gone, it is
    /// over [`crate::Options::max_message_bytes`], or its chunks disagree.
    /// Reported once; the channel goes on.
    MessageLost {
        channel: String,
        id: String,
        reason: LostReason,
    },
    /// Seqs `from..=to` of `channel` will never be delivered (older than the
    /// retention, or lost on the way); delivery continues after `to`.
    Gap { channel: String, from: u64, to: u64 },
    /// The connection ended; the client reconnects unless the reason was
    /// fatal (then an `Error` follows and the stream ends).
    Disconnected { reason: String },
    /// The next connection attempt, after `delay`.
    Reconnecting {
        attempt: u32,
        delay: Duration,
        reason: String,
    },
    /// A typed error; when [`ClientError::is_fatal`], the last item.
    Error(ClientError),
}
