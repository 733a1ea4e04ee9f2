//! agentwire's core: everything the Lambda functions do, with no Lambda in it.
//!
//! - [`usecases`]: connect, session (hello/join/leave/ack), disconnect and
//!   dispatch, each a plain struct over the ports.
//! - [`ports`]: the traits the use cases need, grouped by use: the connection
//!   registry, the channel log, the cursor store, the pusher that posts to
//!   live connections, the event queue and the dead-letter sink.
//! - [`adapters`]: DynamoDB, SQS and API Gateway Management implementations
//!   of the ports, mapping SDK errors to the ports' typed errors.
//! - [`memory`]: in-memory implementations of the ports, for unit tests.
//! - [`auth`], [`config`], [`model`]: tokens and grants, settings from the
//!   environment, and the domain types.
//! - [`webhook`]: Standard Webhooks signatures, the URL safety policy, the
//!   retry schedule and the webhook configuration model.
//! - [`wiring`]: builds the real dependencies once per cold start.

pub mod adapters;
pub mod auth;
pub mod clock;
pub mod config;
pub mod memory;
pub mod model;
pub mod ports;
pub mod telemetry;
pub mod usecases;
pub mod webhook;
pub mod wiring;

pub use agentwire_protocol as protocol;
