//! agentwire wire protocol v1.
//!
//! The JSON text frames a client and the gateway exchange over the WebSocket,
//! as typed serde enums: [`ClientFrame`] (routed on `action`) and
//! [`ServerFrame`] (tagged by `type`). Also the version negotiation
//! ([`negotiate`]), the stable error codes ([`ErrorCode`]) and the validation
//! of channel names, tenants, event ids and frame sizes ([`limits`]), and
//! the coalescing of events into frames within the message size
//! ([`framing`]), and messages larger than one event as chunk events with
//! their reassembly ([`chunks`]), stream and chunk texts gzip-compressed
//! ([`gzip`]), and AG-UI events as agentwire events ([`agui`]). Event data
//! travels through the gateway as the JSON text it was stored as
//! ([`RawData`]).
//!
//! This crate has no AWS dependency: the Lambda functions, the dev gateway and
//! the client library all speak through it.

pub mod agui;
pub mod chunks;
mod data;
mod error;
mod frames;
pub mod framing;
pub mod gzip;
pub mod limits;
mod negotiate;
mod parse;

pub use data::RawData;
pub use error::{ErrorCode, ProtocolError};
pub use frames::{
    ChannelHealth, ClientFrame, ErrorFrame, EventFrame, Health, JoinChannel, JoinedChannel, Limits,
    Presence, ServerFrame, Since,
};
pub use negotiate::{
    PROTOCOL_MAX, PROTOCOL_MIN, ProtocolRange, SUBPROTOCOL_PREFIX, negotiate, subprotocol_name,
    supported, version_of_subprotocol,
};
pub use parse::parse_client_frame;

/// Most principals listed in a channel's `presence`.
pub const PRESENCE_SAMPLE: usize = 20;

/// The server identifier sent in `welcome` and `health`.
pub const SERVER: &str = concat!("agentwire/", env!("CARGO_PKG_VERSION"));
