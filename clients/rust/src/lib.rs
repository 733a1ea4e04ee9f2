//! agentwire's Rust client library.
//!
//! The parts that need no network, each tested on its own:
//! - [`backoff`]: reconnect delays, exponential with full jitter.
//! - [`sequencer`]: per-channel delivery of each seq exactly once and in
//!   order: a reorder buffer for live events that overtake a replay,
//!   duplicates dropped, holes surfaced as gaps.
//!
//! The connection loop built on them (negotiation, reconnect, re-join with
//! the last delivered seq, liveness pings, debounced acks) comes next.

pub mod backoff;
pub mod sequencer;

pub use backoff::Backoff;
pub use sequencer::{Delivery, Sequencer};
