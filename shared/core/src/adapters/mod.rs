//! The ports on AWS: DynamoDB, SQS and the API Gateway Management API.

pub mod apigw;
pub mod dynamo;
pub mod http;
pub mod sqs;

pub use apigw::ApiGatewayPusher;
pub use dynamo::{DynamoCursors, DynamoLog, DynamoRegistry, DynamoWebhooks};
pub use http::ReqwestSender;
pub use sqs::{SqsDeadLetters, SqsEventQueue, SqsWebhookJobs};
