//! agentwire on AWS: the adapters that implement `agentwire-core`'s ports
//! with the AWS SDK and reqwest, and the composition root that wires them
//! into the use cases.
//!
//! - [`dynamo`]: the DynamoDB adapters, one file per port, and the only
//!   code that knows the table layout ([`dynamo::item`] maps items to domain
//!   types and back).
//! - [`sqs`]: the events queue, its dead-letter sink, the webhook job queue
//!   and its dead-letter queue.
//! - [`apigw`]: the pusher on the API Gateway Management API.
//! - [`webhook_sender`]: webhook POSTs on reqwest (rustls).
//! - [`error`]: SDK errors mapped to the ports' typed errors.
//! - [`deps`]: the composition root (SDK configuration, clients, use cases),
//!   built once per cold start.
//! - [`telemetry`]: the log set-up of the functions and the tools.
//!
//! Dependencies point one way: protocol <- core <- aws <- entry points.

pub mod apigw;
pub mod cloudwatch;
pub mod deps;
pub mod dynamo;
pub mod error;
pub mod jwks;
pub mod secrets;
pub mod sqs;
pub mod telemetry;
pub mod webhook_sender;

pub use apigw::ApiGatewayPusher;
pub use deps::{Deps, sdk_config_from_env};
pub use dynamo::{
    DynamoCursors, DynamoIdentity, DynamoLimits, DynamoLog, DynamoRegistry, DynamoWebhooks,
};
pub use jwks::ReqwestJwks;
pub use sqs::{SqsDeadLetters, SqsEventQueue, SqsFanoutQueue, SqsWebhookJobs, resolve_queue_url};
pub use webhook_sender::ReqwestSender;
