//! The ports: what the use cases need from the outside world, grouped by use.
//! Adapters map their SDK errors into the typed errors here.

use std::time::Duration;

use async_trait::async_trait;

use crate::model::{
    ChannelKey, ChannelPresence, ChannelState, Connection, DeadWebhookJob, Envelope, FanoutJob,
    Membership, ShardRange, StoredEvent, Subscriber, WebhookJob,
};
use crate::webhook::{WebhookConfig, WebhookScope};

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
    /// Whether trying again may succeed (throttling, a time-out, a 5xx).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

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
    /// Records the connection as one of its tenant's counted connections
    /// (`conn.counted` set), only while the tenant has fewer than `max`:
    /// the count and the record move together or not at all. `false` when
    /// the tenant is at `max` (nothing written).
    async fn put_counted_connection(&self, conn: &Connection, max: u64)
    -> Result<bool, StoreError>;
    /// The tenant's counted connections.
    async fn counted_connections(&self, tenant: &str) -> Result<u64, StoreError>;
    /// Sets the tenant's count of connections to 0 (after a lost
    /// `$disconnect` left it high; the operator's remedy).
    async fn reset_connection_count(&self, tenant: &str) -> Result<(), StoreError>;
    /// The connection, unless unknown or expired.
    async fn get_connection(&self, id: &str) -> Result<Option<Connection>, StoreError>;
    /// Replaces the connection's token: its grants, publish grants,
    /// `token_exp` and `token_iat` (after an in-band refresh); `false` when
    /// the connection is gone.
    async fn update_token(&self, conn: &Connection) -> Result<bool, StoreError>;
    /// The live connections of one principal of a tenant (what a
    /// revocation closes).
    async fn connections_of(
        &self,
        tenant: &str,
        principal: &str,
    ) -> Result<Vec<Connection>, StoreError>;
    /// Records the negotiated protocol and whether the client takes gzip
    /// (its later subscriptions carry that); `false` when the connection is
    /// gone.
    async fn set_protocol(&self, id: &str, protocol: u32, gzip: bool) -> Result<bool, StoreError>;
    /// Adds `channel` to the connection's joined channels unless that
    /// would take it past `max` (a channel already joined always fits), in
    /// one conditional write: concurrent joins of one connection cannot
    /// all pass on a stale count. `subscribe` adds it again, harmlessly.
    async fn claim_channel(
        &self,
        conn_id: &str,
        channel: &str,
        max: u32,
    ) -> Result<Claim, StoreError>;
    /// Subscribes the connection to a channel; `false` when the connection is gone.
    async fn subscribe(
        &self,
        conn: &Connection,
        key: &ChannelKey,
        expires_at: u64,
    ) -> Result<bool, StoreError>;
    async fn unsubscribe(&self, conn_id: &str, key: &ChannelKey) -> Result<(), StoreError>;
    /// The channel's subscriptions, expired ones left out. (The DynamoDB
    /// adapter also corrects the channel's presence count to what it read.)
    async fn subscribers(&self, key: &ChannelKey) -> Result<Vec<Subscriber>, StoreError>;
    /// The live subscriptions stored in `shards` (see
    /// [`subscription_shard`](crate::model::subscription_shard)), reading
    /// no other shard's items: what one fan-out job lists.
    async fn subscribers_in(
        &self,
        key: &ChannelKey,
        shards: ShardRange,
    ) -> Result<Vec<Subscriber>, StoreError>;
    /// The kept count and the membership version, in one read of one item
    /// (a consistent read: a subscribe that returned before it is seen).
    async fn membership(&self, key: &ChannelKey) -> Result<Membership, StoreError>;
    /// How many connections are subscribed and a sample of their principals
    /// (at most [`PRESENCE_SAMPLE`](agentwire_protocol::PRESENCE_SAMPLE)),
    /// read at a cost that does not grow with the channel: the count is
    /// kept as connections subscribe and leave, not counted on read.
    async fn presence(&self, key: &ChannelKey) -> Result<ChannelPresence, StoreError>;
    /// Deletes the connection and all its subscriptions (and takes a
    /// counted connection off its tenant's count): the connection as it
    /// was when this call deleted it; `None` when it was unknown, or
    /// another remover (a `$disconnect` racing a gone post's removal)
    /// deleted it first.
    async fn remove_connection(&self, id: &str) -> Result<Option<Connection>, StoreError>;
    /// Moves the deployment's count of open connections by `delta` (never
    /// below zero) and returns it: the level behind the
    /// `connections_open` level.
    async fn count_open(&self, delta: i64) -> Result<u64, StoreError>;
}

/// Token buckets shared by every instance of every function (the
/// arithmetic is [`Gcra`](crate::limits::Gcra)).
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes up to `want` tokens (at least one) from `bucket` at `now_us`
    /// (Unix microseconds): as many as the bucket has room for, or none
    /// and the wait until one fits.
    async fn take(
        &self,
        bucket: &str,
        rate: crate::limits::Rate,
        want: u32,
        now_us: u64,
    ) -> Result<crate::limits::Take, StoreError>;
}

/// Each tenant's own limits (the operator's `agentwire tenant`).
#[async_trait]
pub trait LimitSettings: Send + Sync {
    async fn get(&self, tenant: &str) -> Result<Option<crate::limits::TenantLimits>, StoreError>;
    async fn put(
        &self,
        tenant: &str,
        limits: &crate::limits::TenantLimits,
    ) -> Result<(), StoreError>;
    /// `false` when the tenant had none.
    async fn clear(&self, tenant: &str) -> Result<bool, StoreError>;
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

/// Whether an append keeps a dedup record of each event's id, so that the
/// same id committed again resolves to its seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedup {
    /// Ids that may come again: every event of the queue (a redelivered
    /// message), and events a publisher gave an idempotency key.
    Record,
    /// Ids drawn by the committing function itself, which nobody can send
    /// again (an HTTP publish without a key).
    Skip,
}

/// The per-channel replayable log.
#[async_trait]
pub trait ChannelLog: Send + Sync {
    /// The channel's head and epoch, creating the channel (head 0, new epoch) if new.
    async fn ensure_channel(&self, key: &ChannelKey) -> Result<ChannelState, StoreError>;
    /// The channel's head and epoch, `None` when it has no log yet (read
    /// only: what clients do never creates a channel).
    async fn channel(&self, key: &ChannelKey) -> Result<Option<ChannelState>, StoreError>;
    /// Commits `events` as seqs `state.head + 1 ..`, all or none, only if
    /// those seqs are free and (with [`Dedup::Record`], which also keeps
    /// their dedup records) none of the ids is known. `HeadMoved` when
    /// another writer took one of the seqs (`state` is stale).
    async fn append(
        &self,
        key: &ChannelKey,
        state: &ChannelState,
        events: &[Envelope],
        dedup: Dedup,
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
            .read_range(key, 1, head, ReadBudget::events(1))
            .await?
            .first()
            .map(|e| e.seq))
    }
    /// Retained events with `from <= seq <= to`, ascending (expired ones
    /// left out, whether or not TTL has deleted them yet), within `budget`:
    /// at most its events, and no event that would take their size
    /// ([`StoredEvent::approx_len`]) past its bytes, except a first one.
    /// An adapter reads no more than the budget needs, give or take one
    /// round trip.
    async fn read_range(
        &self,
        key: &ChannelKey,
        from: u64,
        to: u64,
        budget: ReadBudget,
    ) -> Result<Vec<StoredEvent>, StoreError>;
}

/// What [`ConnectionRegistry::claim_channel`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The channel is among the connection's joined channels.
    Claimed,
    /// The connection has `max` other channels: nothing was written.
    Full,
    /// The connection is gone.
    Gone,
}

/// How much one read of a log may return: events, and bytes of their JSON
/// ([`StoredEvent::approx_len`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBudget {
    pub events: usize,
    pub bytes: usize,
}

impl ReadBudget {
    /// Up to `events` events, whatever their size (small reads: a probe,
    /// the first event).
    pub fn events(events: usize) -> Self {
        Self {
            events,
            bytes: usize::MAX,
        }
    }

    /// Takes `e` when it fits what is left of the budget, given `taken`
    /// events of `bytes` so far (a first event always fits). Returns the
    /// new byte total, or `None` when the read must stop before it.
    pub fn admit(&self, taken: usize, bytes: usize, e: &StoredEvent) -> Option<usize> {
        if taken >= self.events {
            return None;
        }
        let total = bytes.saturating_add(e.approx_len());
        (taken == 0 || total <= self.bytes).then_some(total)
    }
}

/// A channel's settings, changed by the operator.
#[async_trait]
pub trait ChannelSettings: Send + Sync {
    /// Sets (or, with `None`, removes) the channel's own retention, creating
    /// the channel if new; it applies to events committed from then on.
    async fn set_retention(
        &self,
        key: &ChannelKey,
        retention: Option<Duration>,
    ) -> Result<ChannelState, StoreError>;
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
    /// Throttled: `LimitExceededException` or 429 (the connection's
    /// outbound buffer is full, or the account's rate).
    #[error("post throttled")]
    Throttled,
    /// A server error (`status`), a time-out or a failed connection
    /// (`status` `None`): retrying may succeed.
    #[error("post unavailable ({}): {reason}", status_text(*.status))]
    Unavailable { status: Option<u16>, reason: String },
    /// Refused for good (payload too large, forbidden, ...).
    #[error("post refused ({}): {reason}", status_text(*.status))]
    Refused { status: Option<u16>, reason: String },
}

fn status_text(status: Option<u16>) -> String {
    status.map_or_else(|| "no answer".to_owned(), |s| format!("HTTP {s}"))
}

impl PushError {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PushError::Throttled | PushError::Unavailable { .. })
    }
}

/// Posts frames to live connections (API Gateway's `@connections`).
#[async_trait]
pub trait Pusher: Send + Sync {
    async fn post(&self, connection_id: &str, frame: &str) -> Result<(), PushError>;
    /// Closes the connection (API Gateway's `DeleteConnection`); a
    /// connection already gone is `Gone`.
    async fn close(&self, connection_id: &str) -> Result<(), PushError>;
}

/// The fan-out queue: big channels' deliveries, one job per shard range,
/// worked in parallel by the fan-out function.
#[async_trait]
pub trait FanoutQueue: Send + Sync {
    /// Enqueues every job, or fails (some may have been enqueued: a job
    /// worked twice posts its frames twice, which clients drop by seq).
    async fn enqueue(&self, jobs: &[FanoutJob]) -> Result<(), StoreError>;
}

/// Puts envelopes on the events queue.
#[async_trait]
pub trait EventQueue: Send + Sync {
    async fn send(&self, envelope: &Envelope) -> Result<(), StoreError>;
    /// Sends `envelopes` in order (one channel's); an error may leave a
    /// prefix or some of them sent (sending them again with the same ids
    /// makes each one event). The default sends them one at a time.
    async fn send_batch(&self, envelopes: &[Envelope]) -> Result<(), StoreError> {
        for envelope in envelopes {
            self.send(envelope).await?;
        }
        Ok(())
    }
}

/// Keeps a message that can never be processed, with the reason.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    async fn record(&self, message_id: &str, body: &str, reason: &str) -> Result<(), StoreError>;
}

/// Webhook configurations, per channel and per tenant default.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn get(&self, scope: &WebhookScope) -> Result<Option<WebhookConfig>, StoreError>;
    async fn put(&self, scope: &WebhookScope, config: &WebhookConfig) -> Result<(), StoreError>;
    /// `false` when there was none.
    async fn remove(&self, scope: &WebhookScope) -> Result<bool, StoreError>;
}

/// Webhook receivers that stopped answering. When a POST times out, the
/// receiver (a tenant's host) is held until a time: its other jobs wait in
/// the queue rather than each holding one of the webhook function's few
/// instances for the POST's time-out, and when the hold ends one job at a
/// time claims the probe. Times are Unix milliseconds.
#[async_trait]
pub trait ReceiverHolds: Send + Sync {
    /// When the receiver's hold ends, if it has one (ended or not).
    async fn held_until(&self, receiver: &str) -> Result<Option<u64>, StoreError>;
    /// Moves the hold to `until` if it is still `seen` (`None`: no hold);
    /// `false` when another instance moved it first.
    async fn hold(&self, receiver: &str, seen: Option<u64>, until: u64)
    -> Result<bool, StoreError>;
    /// Ends the hold if it is still `seen`.
    async fn release(&self, receiver: &str, seen: u64) -> Result<(), StoreError>;
}

/// Where a channel's events go when they go to a webhook: the lookup on
/// the dispatcher's and the deliverer's hot path.
#[async_trait]
pub trait WebhookDirectory: Send + Sync {
    /// The channel's own webhook, else its tenant's default, with the scope
    /// it was found in; `None` when neither exists or has not expired.
    async fn effective(
        &self,
        key: &ChannelKey,
    ) -> Result<Option<(WebhookScope, WebhookConfig)>, StoreError>;
}

/// The rule every [`WebhookDirectory`] keeps, read from a [`WebhookStore`]:
/// the channel's own webhook, else its tenant's default, an expired one
/// skipped (at `now`, Unix seconds).
pub async fn effective_webhook<S: WebhookStore + ?Sized>(
    store: &S,
    key: &ChannelKey,
    now: u64,
) -> Result<Option<(WebhookScope, WebhookConfig)>, StoreError> {
    for scope in [
        WebhookScope::Channel(key.clone()),
        WebhookScope::TenantDefault(key.tenant.clone()),
    ] {
        if let Some(c) = store.get(&scope).await?
            && !c.expired(now)
        {
            return Ok(Some((scope, c)));
        }
    }
    Ok(None)
}

/// What one webhook POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The receiver answered (any status), with its `Retry-After` if any.
    Answered {
        status: u16,
        retry_after: Option<Duration>,
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
    async fn schedule(&self, job: &WebhookJob, delay: Duration) -> Result<(), StoreError>;
    /// Keeps a job that will not be delivered, with the reason.
    async fn dead_letter(&self, job: &WebhookJob, reason: &str) -> Result<(), StoreError>;
    /// Keeps a message that is not a job at all, with the reason.
    async fn dead_letter_raw(&self, body: &str, reason: &str) -> Result<(), StoreError>;
}

/// The webhook dead-letter queue, as the operator works it.
#[async_trait]
pub trait WebhookDeadLetterQueue: Send + Sync {
    /// Up to `max` dead-lettered messages, hidden from other readers for
    /// `hold` while the caller looks at them.
    async fn list(&self, max: usize, hold: Duration) -> Result<Vec<DeadWebhookJob>, StoreError>;
    /// Removes one (after it was sent back for delivery).
    async fn delete(&self, dead: &DeadWebhookJob) -> Result<(), StoreError>;
}

/// An issuer's JWKS document as fetched, with how long it may be kept
/// (`Cache-Control: max-age`).
#[derive(Debug, Clone)]
pub struct FetchedJwks {
    pub doc: serde_json::Value,
    pub max_age: Option<Duration>,
}

/// Why a JWKS could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not reachable now (timeout, connection refused, 5xx): retryable.
    #[error("JWKS unavailable: {0}")]
    Unavailable(String),
    /// An answer that is not a JWKS (4xx, not JSON, too large).
    #[error("JWKS malformed: {0}")]
    Malformed(String),
    /// The URL is refused by the address policy.
    #[error("JWKS URL refused: {0}")]
    Refused(String),
}

/// Fetches JWKS documents (over HTTPS, under the URL policy).
#[async_trait]
pub trait JwksFetcher: Send + Sync {
    async fn fetch(&self, url: &str) -> Result<FetchedJwks, JwksError>;
}

/// The trusted issuers: one entry per issuer, each owned by one tenant (or
/// the deployment).
#[async_trait]
pub trait TrustStore: Send + Sync {
    /// The entry for this `iss`, if any.
    async fn issuer(&self, iss: &str)
    -> Result<Option<crate::auth::trust::TrustEntry>, StoreError>;
    /// Saves the entry, unless its issuer is owned by another tenant (or
    /// the deployment): `false` then, nothing written.
    async fn put_issuer(&self, entry: &crate::auth::trust::TrustEntry) -> Result<bool, StoreError>;
    /// The entries one tenant owns (`None`: the deployment-level ones).
    async fn issuers_of(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<crate::auth::trust::TrustEntry>, StoreError>;
    /// Removes the tenant's entry for `iss`; `false` when it had none.
    async fn remove_issuer(&self, tenant: Option<&str>, iss: &str) -> Result<bool, StoreError>;
}

/// A principal's revocation: its tokens issued before `at_ms` are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub tenant: String,
    pub sub: String,
    /// Unix milliseconds.
    pub at_ms: u64,
}

/// Revoked principals, per tenant.
#[async_trait]
pub trait Revocations: Send + Sync {
    /// When `sub`'s tokens were last revoked in `tenant`.
    async fn revoked_at(&self, tenant: &str, sub: &str) -> Result<Option<u64>, StoreError>;
    /// Revokes every token of `sub` issued before `at_ms`.
    async fn revoke(&self, tenant: &str, sub: &str, at_ms: u64) -> Result<(), StoreError>;
    /// The tenant's revocations.
    async fn revocations(&self, tenant: &str) -> Result<Vec<Revocation>, StoreError>;
}
