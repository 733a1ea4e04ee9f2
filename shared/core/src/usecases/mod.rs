//! The use cases, one per function, knowing nothing of Lambda.

pub mod commit;
pub mod connect;
pub mod delivery;
pub mod disconnect;
pub mod dispatch;
pub mod identity;
pub mod lifecycle;
pub mod manage;
pub mod publish;
pub mod quotas;
pub mod reads;
pub mod resume;
pub mod session;
pub mod webhooks;

pub use commit::{Committed, Committer};
pub use connect::{Accepted, Connect, ConnectError, ConnectRequest};
pub use delivery::fanout::{FanoutOutcome, FanoutPolicy, FanoutWorker};
pub use delivery::{Delivered, Delivery, DeliveryReport};
pub use disconnect::Disconnect;
pub use dispatch::{DispatchReport, Dispatcher, QueueMessage};
pub use identity::{IdentityAdmin, IdentityError, Revoked};
pub use manage::{DEFAULT_ROTATION_OVERLAP, ManageError, Management, WebhookView};
pub use publish::{Outcome, Publication, PublishError, Published, PublishedEvent, Publisher};
pub use quotas::{Limited, Quotas, TenantAdmin, TenantView};
pub use reads::{ChannelReads, HistoryQuery, ReadError};
pub use session::Session;
pub use webhooks::{
    ChannelAdmin, DeadWebhooks, RedriveError, RetentionError, WebhookAdmin, WebhookAdminError,
};
