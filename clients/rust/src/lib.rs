//! agentwire's Rust client: connect, lose the network, resume where you
//! left off, without babysitting.
//!
//! One task per client holds the WebSocket and does what every integrator
//! would otherwise hand-roll:
//! - **negotiation**: offers its protocol range as `agentwire.vN`
//!   subprotocols and in `hello`; `version_unsupported` ends the client with
//!   [`ClientError::VersionUnsupported`] instead of a reconnect loop;
//! - **reconnect**: exponential backoff with full jitter ([`Backoff`]: 0.5 s
//!   doubling to 30 s, reset after a stable connection, optional attempt
//!   cap); a 401 stops a fixed-token client, and asks a token provider for a
//!   fresh token once before it stops;
//! - **resume**: every reconnect re-joins each channel from the last seq it
//!   delivered; each channel's [`Sequencer`] delivers every seq exactly once
//!   and in order (live events that overtake a replay wait, duplicates are
//!   dropped) and surfaces holes as [`ClientEvent::Gap`];
//! - **liveness**: a `ping` every 30 s; nothing received within 20 s of one
//!   means the connection is dead (noticed within 50 s), and it reconnects;
//!   it also rolls over by itself ahead of API Gateway's 2-hour limit;
//! - **acks**: delivered seqs are acknowledged to the durable cursor,
//!   debounced (1 s), and on close;
//! - **commands while disconnected**: a join or leave issued while
//!   reconnecting takes effect on the next connection;
//! - **resync**: [`Handle::resync`] drops a channel's position and joins it
//!   again from the head;
//! - **notices**: [`ClientBuilder::connect_with_notices`] adds to the stream
//!   each `joined` answer's presence and health, every connection state
//!   change (previous, current, reason, attempt, delay, error) and every
//!   resync.
//!
//! ```no_run
//! use agentwire_client::{Client, ClientEvent};
//!
//! # async fn run() -> Result<(), agentwire_client::ClientError> {
//! let mut client = Client::builder()
//!     .url("ws://127.0.0.1:8080")
//!     .token(std::env::var("AGENTWIRE_TOKEN").unwrap_or_default())
//!     .channel("orders")
//!     .connect()?;
//! while let Some(event) = client.next().await {
//!     match event {
//!         ClientEvent::Event(e) => println!("{} #{} {}", e.channel, e.seq, e.data),
//!         ClientEvent::Gap { channel, from, to } => eprintln!("{channel}: {from}..={to} are gone"),
//!         ClientEvent::Error(e) if e.is_fatal() => return Err(e),
//!         other => eprintln!("{other:?}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! `examples/follow.rs` runs this against the local stack
//! (`cargo run -p agentwire-client --example follow`). This crate depends on
//! `agentwire-protocol` only, not on the AWS SDK.

pub mod backoff;
mod client;
mod driver;
mod error;
mod event;
mod notice;
mod options;
pub mod sequencer;
mod socket;
mod token;

pub use agentwire_protocol::{ChannelHealth, Health, Presence};
pub use agentwire_protocol::{EventFrame, JoinedChannel, ProtocolRange, Since};
pub use backoff::Backoff;
pub use client::{Client, ClientBuilder, Handle};
pub use error::ClientError;
pub use event::ClientEvent;
pub use notice::{ConnectionState, JoinedSnapshot, Notice, StateChange, StreamItem};
pub use options::Options;
pub use sequencer::{Delivery, Sequencer};
pub use token::{TokenError, TokenFuture, TokenProvider};
