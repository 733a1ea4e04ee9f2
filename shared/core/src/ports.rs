//! The ports: what the use cases need from the outside world, grouped by use.
//! Adapters map their SDK errors into the typed errors here.

use async_trait::async_trait;

use crate::model::{ChannelKey, ChannelState, Connection, Envelope, StoredEvent, Subscriber};

/// A storage or transport failure, with what failed and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend throttled or is unavailable; retrying may succeed.
    #[error("{op}: temporarily unavailable: {reason}")]
    Unavailable { op: &'static str, reason: String },
    /// The backend refused the request (misconfiguration, missing table, ...).
    #[error("{op}: {reason}")]
    Failed { op: &'static str, reason: String },
}

impl StoreError {
    pub fn failed(op: &'static str, reason: impl std::fmt::Display) -> Self {
        StoreError::Failed {
            op,
            reason: reason.to_string(),
        }
    }
}

/// Who is connected and what they joined.
#[async_trait]
pub trait ConnectionRegistry: Send + Sync {
    async fn put_connection(&self, conn: &Connection) -> Result<(), StoreError>;
    /// The connection, unless unknown or expired.
    async fn get_connection(&self, id: &str) -> Result<Option<Connection>, StoreError>;
    /// Records the negotiated protocol; `false` when the connection is gone.
    async fn set_protocol(&self, id: &str, protocol: u32) -> Result<bool, StoreError>;
    /// Subscribes the connection to a channel; `false` when the connection is gone.
    async fn subscribe(
        &self,
        conn: &Connection,
        key: &ChannelKey,
        expires_at: u64,
    ) -> Result<bool, StoreError>;
    async fn unsubscribe(&self, conn_id: &str, key: &ChannelKey) -> Result<(), StoreError>;
    /// The channel's subscriptions, expired ones left out.
    async fn subscribers(&self, key: &ChannelKey) -> Result<Vec<Subscriber>, StoreError>;
    /// Deletes the connection and all its subscriptions; `false` when it was unknown.
    async fn remove_connection(&self, id: &str) -> Result<bool, StoreError>;
}

/// Why an append did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// Another writer moved the head since it was read.
    #[error("channel head moved (another writer)")]
    HeadMoved,
    /// These event ids already have a seq.
    #[error("events already committed: {0:?}")]
    Duplicate(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The per-channel replayable log.
#[async_trait]
pub trait ChannelLog: Send + Sync {
    /// The channel's head and epoch, creating the channel (head 0, new epoch) if new.
    async fn ensure_channel(&self, key: &ChannelKey) -> Result<ChannelState, StoreError>;
    /// The channel's head and epoch, `None` when it has no log yet (read
    /// only: what clients do never creates a channel).
    async fn channel(&self, key: &ChannelKey) -> Result<Option<ChannelState>, StoreError>;
    /// Commits `events` as seqs `state.head + 1 ..` in one transaction, with
    /// their dedup records, only if the head is still `state.head` and none
    /// of the ids is known.
    async fn append(
        &self,
        key: &ChannelKey,
        state: &ChannelState,
        events: &[Envelope],
        expires_at: u64,
    ) -> Result<Vec<StoredEvent>, AppendError>;
    /// The committed event with this id, if any.
    async fn find_by_id(
        &self,
        key: &ChannelKey,
        id: &str,
    ) -> Result<Option<StoredEvent>, StoreError>;
    /// The oldest retained seq of `1..=head`, if any. The default reads
    /// one event; adapters whose expired items linger (DynamoDB's TTL
    /// deletes late) must find it without one round trip per expired item.
    async fn oldest_retained(
        &self,
        key: &ChannelKey,
        head: u64,
    ) -> Result<Option<u64>, StoreError> {
        if head == 0 {
            return Ok(None);
        }
        Ok(self
            .read_range(key, 1, head, 1)
            .await?
            .first()
            .map(|e| e.seq))
    }
    /// Retained events with `from <= seq <= to`, ascending, at most `limit`
    /// (expired ones left out, whether or not TTL has deleted them yet).
    async fn read_range(
        &self,
        key: &ChannelKey,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;
}

/// Durable per-principal read positions.
#[async_trait]
pub trait CursorStore: Send + Sync {
    /// Moves the cursor to `seq` if that is forward; returns the cursor after.
    async fn advance(
        &self,
        tenant: &str,
        principal: &str,
        channel: &str,
        seq: u64,
    ) -> Result<u64, StoreError>;
    async fn get(
        &self,
        tenant: &str,
        principal: &str,
        channel: &str,
    ) -> Result<Option<u64>, StoreError>;
}

/// Why a post to a connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The connection is closed (API Gateway's `GoneException`).
    #[error("connection is gone")]
    Gone,
    /// Throttled (`LimitExceededException`: the connection's outbound buffer
    /// is full, or the account's rate), a server error or a time-out:
    /// retrying may succeed.
    #[error("post throttled or unavailable: {0}")]
    Retryable(String),
    /// Refused for good (payload too large, forbidden, ...).
    #[error("post failed: {0}")]
    Failed(String),
}

/// Posts frames to live connections (API Gateway's `@connections`).
#[async_trait]
pub trait Pusher: Send + Sync {
    async fn post(&self, connection_id: &str, frame: &str) -> Result<(), PushError>;
}

/// Puts envelopes on the events queue.
#[async_trait]
pub trait EventQueue: Send + Sync {
    async fn send(&self, envelope: &Envelope) -> Result<(), StoreError>;
}

/// Keeps a message that can never be processed, with the reason.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    async fn record(&self, message_id: &str, body: &str, reason: &str) -> Result<(), StoreError>;
}

/// Webhook configurations, per channel and per tenant default.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn get(
        &self,
        scope: &crate::webhook::WebhookScope,
    ) -> Result<Option<crate::webhook::WebhookConfig>, StoreError>;
    async fn put(
        &self,
        scope: &crate::webhook::WebhookScope,
        config: &crate::webhook::WebhookConfig,
    ) -> Result<(), StoreError>;
    /// `false` when there was none.
    async fn remove(&self, scope: &crate::webhook::WebhookScope) -> Result<bool, StoreError>;
}

/// What one webhook POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The receiver answered (any status), with its `Retry-After` if any.
    Answered {
        status: u16,
        retry_after: Option<std::time::Duration>,
    },
    /// No answer within the per-request timeout.
    TimedOut,
    /// The connection failed (refused, reset, TLS).
    ConnectFailed(String),
}

/// Sends one webhook request: POST `body` to `url`, connecting only to
/// `addrs` (the addresses the URL policy checked), with these headers.
#[async_trait]
pub trait WebhookSender: Send + Sync {
    async fn send(
        &self,
        url: &url::Url,
        addrs: &[std::net::SocketAddr],
        headers: &[(&str, String)],
        body: &str,
    ) -> SendOutcome;
}

/// The webhook job queue: later attempts, and the dead letters.
#[async_trait]
pub trait WebhookJobs: Send + Sync {
    /// Puts the job back to be received after `delay` (at most SQS's 15 minutes).
    async fn schedule(
        &self,
        job: &crate::usecases::deliver::WebhookJob,
        delay: std::time::Duration,
    ) -> Result<(), StoreError>;
    /// Keeps a job that will not be delivered, with the reason.
    async fn dead_letter(
        &self,
        job: &crate::usecases::deliver::WebhookJob,
        reason: &str,
    ) -> Result<(), StoreError>;
}
