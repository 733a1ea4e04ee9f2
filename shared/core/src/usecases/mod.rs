//! The use cases, one per function, knowing nothing of Lambda.

pub mod connect;
pub mod deliver;
pub mod disconnect;
pub mod dispatch;
pub mod fanout;
pub mod identity;
pub mod manage;
pub mod publish;
pub mod push;
pub mod quotas;
pub mod reads;
pub mod resume;
pub mod session;
pub mod webhooks;

pub use connect::{Accepted, Connect, ConnectError, ConnectRequest};
pub use disconnect::Disconnect;
pub use dispatch::{DispatchReport, Dispatcher, QueueMessage};
pub use fanout::{FanoutOutcome, FanoutPolicy, FanoutWorker};
pub use identity::{IdentityAdmin, IdentityError, Revoked};
pub use manage::{DEFAULT_ROTATION_OVERLAP, ManageError, Management, WebhookView};
pub use publish::{Publication, PublishError, Publisher};
pub use quotas::{Limited, Quotas, TenantAdmin, TenantView};
pub use reads::{ChannelReads, HistoryQuery, ReadError};
pub use session::Session;
pub use webhooks::{
    ChannelAdmin, DeadWebhooks, RedriveError, RetentionError, WebhookAdmin, WebhookAdminError,
};
