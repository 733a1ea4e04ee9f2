//! agentwire's core: the domain and everything the functions do, with no
//! Lambda, no AWS SDK and no HTTP client in it.
//!
//! - [`model`]: the domain types (channel keys, envelopes, stored events,
//!   connections, webhook jobs).
//! - [`ports`]: the traits the use cases need, grouped by use: the
//!   connection registry, the channel log and its settings, the cursor
//!   store, the pusher that posts to live connections, the event queue, the
//!   dead-letter sink, and the webhook store, directory, sender, job queue
//!   and dead-letter queue.
//! - [`usecases`]: connect, session (hello/join/leave/ack), disconnect,
//!   dispatch, publish, webhook delivery and the operator's admin, each a
//!   plain struct over the ports.
//! - [`auth`], [`config`], [`clock`]: tokens and grants, settings from the
//!   environment, and the time every use case and adapter reads.
//! - [`limits`]: tenants' quotas and the token-bucket arithmetic.
//! - [`stream`]: coalescing a stream's small pieces into few events.
//! - [`sync`]: a mutex's guard that outlives a panicked holder.
//! - [`metrics`]: the names, units and labels of every metric emitted.
//! - [`webhook`]: Standard Webhooks signatures, the URL safety policy, the
//!   retry schedule and the webhook configuration model.
//! - [`memory`] and [`contract`] (feature `test-util`): in-memory fakes of
//!   every port, and the contract tests each implementation of a port must
//!   pass (run against the fakes here and against the DynamoDB adapters on
//!   the local endpoint in `agentwire-e2e`).
//!
//! The adapters on AWS are in `agentwire-aws`; dependencies point one way:
//! protocol <- core <- aws <- entry points.

pub mod auth;
pub mod cache;
pub mod clock;
pub mod config;
#[cfg(any(test, feature = "test-util"))]
pub mod contract;
pub mod limits;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod metrics;
pub mod model;
pub mod ports;
pub mod stream;
pub mod sync;
pub mod usecases;
pub mod webhook;

pub use agentwire_protocol as protocol;
