//! Webhook delivery building blocks: Standard Webhooks signatures, the URL
//! safety policy, the retry schedule, and the webhook configuration that is
//! durable state of a channel (or a tenant-wide default).

pub mod config;
pub mod schedule;
pub mod signature;
pub mod url_policy;

pub use config::{WebhookConfig, WebhookMode, WebhookScope};
pub use schedule::RetrySchedule;
pub use signature::{SigningSecret, WebhookSignError};
pub use url_policy::{UrlPolicy, UrlRefusal};
