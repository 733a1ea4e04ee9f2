//! Publishing an event: who may publish where, the envelope's validation
//! and sizes, and where it goes. One path for the HTTP publish function,
//! the `agentwire publish` command and Rust agents.
//!
//! - The library path (`agentwire publish`, Rust agents with AWS
//!   credentials) puts events on the events queue; the dispatcher commits
//!   them.
//! - The HTTP path, with [`Publisher::with_direct`] (the publish function),
//!   commits an event itself ([`Committer`]) and delivers it ([`Delivery`]),
//!   and the answer carries its seq ([`Outcome::Committed`], or
//!   [`Outcome::Repeat`] for an idempotency key already committed). When
//!   the commit cannot be made now (throttled, unavailable, a channel so
//!   busy the next seq keeps being taken), the call fails with a retryable
//!   error ([`PublishError::Commit`] with [`StoreError::Unavailable`]: 503
//!   and `Retry-After`) and nothing is committed under that id unless an
//!   attempt did land, which a retry with the same key resolves to (200).
//!   The events queue is not the fallback: a publisher that waits for each
//!   answer must see its events in its order, and an event parked on the
//!   queue could be overtaken by its successor committed directly (a
//!   stream's chunks would arrive out of order).

use std::sync::Arc;

use agentwire_protocol::agui::AgUiEvent;
use agentwire_protocol::chunks::{self, MAX_MESSAGE_ID, Payload};
use agentwire_protocol::limits::{MAX_EVENT_DATA_BYTES, MAX_MESSAGE_BYTES};
use agentwire_protocol::{ErrorCode, ProtocolError, RawData};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{AuthError, Grants, Verifier};
use crate::clock::{Clock, rfc3339};
use crate::model::{ChannelKey, Envelope, StoredEvent, oversize_data};
use crate::ports::{Dedup, EventQueue, StoreError};
use crate::stream::{DEFAULT_MAX_BYTES, DEFAULT_WINDOW, StreamSink, StreamWriter};
use crate::usecases::commit::{Committed, Committer};
use crate::usecases::delivery::Delivery;
use crate::usecases::quotas::{Limited, Quotas};

/// The largest request body the publish endpoint reads: one event's data
/// (96 KiB) with room for `kind` and the JSON around it. Larger bodies are
/// refused with 413 before they are parsed.
pub const MAX_PUBLISH_BODY_BYTES: usize = MAX_MESSAGE_BYTES;

/// How an event came in: the path decides whether quotas apply and is
/// the `path` label of `events_published`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PublishPath {
    /// The HTTP route, with a tenant's token: quotas apply.
    Http,
    /// The library (`agentwire publish`, Rust agents with AWS credentials
    /// to the queue itself): trusted, no quota applies.
    Library,
}

impl PublishPath {
    fn label(self) -> &'static str {
        match self {
            PublishPath::Http => "http",
            PublishPath::Library => "library",
        }
    }
}

/// The most events one batch request carries (an SQS batch).
pub const MAX_BATCH_EVENTS: usize = 10;

/// The largest batch request body: ten single publishes' worth.
pub const MAX_BATCH_BODY_BYTES: usize = MAX_BATCH_EVENTS * MAX_PUBLISH_BODY_BYTES;

/// The body of `POST /v1/channels/{channel}/events:batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    pub events: Vec<BatchEvent>,
}

/// One event of a batch; `id` is its idempotency key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchEvent {
    pub kind: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub id: Option<String>,
}

fn invalid_request(message: String) -> PublishError {
    PublishError::Invalid(ProtocolError::new(ErrorCode::InvalidRequest, message))
}

/// A batch event's refusal, naming its index.
fn at_index(i: usize, e: PublishError) -> PublishError {
    match e {
        PublishError::Invalid(p) => PublishError::Invalid(ProtocolError::new(
            p.code,
            format!("event {i}: {}", p.message),
        )),
        PublishError::TooLarge { size, max, .. } => PublishError::Invalid(ProtocolError::new(
            ErrorCode::MessageTooLarge,
            format!("event {i}: its data is {size} bytes; at most {max} are accepted"),
        )),
        other => other,
    }
}

/// A stream's events on the library path.
struct PublisherSink {
    publisher: Arc<Publisher>,
    tenant: String,
    channel: String,
    kind: String,
}

#[async_trait::async_trait]
impl StreamSink for PublisherSink {
    type Error = PublishError;

    async fn send(&self, events: Vec<(String, Value)>) -> Result<(), PublishError> {
        let publications = events
            .into_iter()
            .map(|(id, data)| Publication {
                tenant: self.tenant.clone(),
                channel: self.channel.clone(),
                kind: self.kind.clone(),
                data,
                id: Some(id),
            })
            .collect();
        self.publisher.publish_many(publications).await.map(|_| ())
    }
}

/// One event to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub tenant: String,
    pub channel: String,
    pub kind: String,
    pub data: Value,
    /// The idempotency key: publishing the same id twice makes one event.
    /// `None` draws a new UUID.
    pub id: Option<String>,
}

/// The body of `POST /v1/channels/{channel}/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    pub kind: String,
    #[serde(default)]
    pub data: Value,
}

/// Why an event was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("the token does not grant publishing to channel {0:?}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(ProtocolError),
    #[error("{what} is {size} bytes; at most {max} are accepted")]
    TooLarge {
        what: &'static str,
        size: usize,
        max: usize,
    },
    #[error("the events queue did not take the event: {0}")]
    Queue(#[from] StoreError),
    /// The direct path's commit failed: retryable when `Unavailable`.
    #[error("the event could not be committed: {0}")]
    Commit(StoreError),
    #[error("{0}")]
    RateLimited(Limited),
}

impl PublishError {
    /// The stable error code of the JSON error body.
    pub fn code(&self) -> ErrorCode {
        match self {
            PublishError::Unauthorized(e) => e.code(),
            PublishError::Forbidden(_) => ErrorCode::Forbidden,
            PublishError::Invalid(e) => e.code,
            PublishError::TooLarge { .. } => ErrorCode::MessageTooLarge,
            PublishError::Queue(_) | PublishError::Commit(_) => ErrorCode::Internal,
            PublishError::RateLimited(_) => ErrorCode::RateLimited,
        }
    }
}

/// How an accepted publish was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed now: the events have their seqs (HTTP 201).
    Committed,
    /// Every event's idempotency key was already committed: the seqs are
    /// the ones they have (HTTP 200).
    Repeat,
    /// On the events queue: committed shortly by the dispatcher (HTTP 202;
    /// a publisher without the direct path).
    Queued,
}

/// One accepted event: its id and, once committed, its seq and epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedEvent {
    pub id: String,
    pub seq: Option<u64>,
    pub epoch: Option<String>,
}

/// What a publish came to: its events in the request's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub channel: String,
    pub outcome: Outcome,
    pub events: Vec<PublishedEvent>,
}

impl Published {
    fn queued(envelopes: &[Envelope]) -> Self {
        Self {
            channel: envelopes
                .first()
                .map(|e| e.channel.clone())
                .unwrap_or_default(),
            outcome: Outcome::Queued,
            events: envelopes
                .iter()
                .map(|e| PublishedEvent {
                    id: e.id.clone(),
                    seq: None,
                    epoch: None,
                })
                .collect(),
        }
    }

    fn committed(envelopes: &[Envelope], c: &Committed) -> Self {
        let events = envelopes
            .iter()
            .map(|e| {
                let stored: Option<&StoredEvent> = c.event(&e.id);
                PublishedEvent {
                    id: e.id.clone(),
                    seq: stored.map(|s| s.seq),
                    epoch: stored.map(|s| s.epoch.clone()),
                }
            })
            .collect();
        Self {
            channel: envelopes
                .first()
                .map(|e| e.channel.clone())
                .unwrap_or_default(),
            outcome: if c.fresh > 0 {
                Outcome::Committed
            } else {
                Outcome::Repeat
            },
            events,
        }
    }
}

/// The direct path's parts.
struct Direct {
    committer: Committer,
    delivery: Delivery,
}

/// Validates events and commits or enqueues them.
pub struct Publisher {
    queue: Arc<dyn EventQueue>,
    clock: Arc<dyn Clock>,
    quotas: Option<Arc<Quotas>>,
    direct: Option<Direct>,
    /// Whether the direct path is taken (the dev gateway's benchmarks turn
    /// it off to compare with the queue path in one run).
    direct_on: std::sync::atomic::AtomicBool,
}

impl Publisher {
    pub fn new(queue: Arc<dyn EventQueue>, clock: Arc<dyn Clock>) -> Self {
        Self {
            queue,
            clock,
            quotas: None,
            direct: None,
            direct_on: true.into(),
        }
    }

    /// HTTP publishes are committed and delivered here, without the queue
    /// hop (a commit that cannot be made now is a retryable error, not a
    /// queued event; see the module documentation).
    pub fn with_direct(mut self, committer: Committer, delivery: Delivery) -> Self {
        self.direct = Some(Direct {
            committer,
            delivery,
        });
        self
    }

    /// Turns the direct path off (HTTP publishes go onto the events queue,
    /// answered 202, as before it) or on again, while running.
    pub fn set_direct_enabled(&self, on: bool) {
        self.direct_on
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Changes how long the direct path reuses channel settings.
    pub fn set_settings_ttl(&self, ttl: std::time::Duration) {
        if let Some(d) = &self.direct {
            d.committer.set_settings_ttl(ttl);
            d.delivery.set_settings_ttl(ttl);
        }
    }

    /// Stores texts compressed or not on the direct path, while running
    /// (see [`Committer::set_compression`]).
    pub fn set_compression(&self, on: bool) {
        if let Some(d) = &self.direct {
            d.committer.set_compression(on);
        }
    }

    /// Changes the direct path's fan-out threshold while running (the dev
    /// gateway's benchmarks).
    pub fn set_fanout_threshold(&self, threshold: u64) {
        if let Some(d) = &self.direct {
            d.delivery.set_fanout_threshold(threshold);
        }
    }

    /// Takes checked, admitted HTTP envelopes of one channel: committed
    /// and delivered here with the direct path (a failure is
    /// [`PublishError::Commit`]), else put on the events queue. `keyed`:
    /// the publisher gave idempotency keys (their ids may come again).
    async fn take(&self, envelopes: &[Envelope], keyed: bool) -> Result<Published, PublishError> {
        let on = self.direct_on.load(std::sync::atomic::Ordering::Relaxed);
        let Some(d) = self.direct.as_ref().filter(|_| on) else {
            self.send(envelopes).await?;
            return Ok(Published::queued(envelopes));
        };
        let Some(first) = envelopes.first() else {
            return Ok(Published::queued(envelopes));
        };
        self.commit_and_deliver(d, &first.key(), envelopes, keyed)
            .await
            .map_err(|e| {
                if e.is_retryable() {
                    ::metrics::counter!(crate::metrics::COMMITS_UNAVAILABLE)
                        .increment(envelopes.len() as u64);
                }
                PublishError::Commit(e)
            })
    }

    async fn send(&self, envelopes: &[Envelope]) -> Result<(), StoreError> {
        match envelopes {
            [one] => self.queue.send(one).await,
            many => self.queue.send_batch(many).await,
        }
    }

    /// The direct path. Dedup records are kept when the publisher gave keys
    /// (its retry carries the same ids); an id drawn here nobody can send
    /// again. A delivery that fails after the commit (the subscribers could
    /// not be listed, or the hand-off failed) is a retryable error: the
    /// publisher's retry with its key resolves to the committed events and
    /// delivers them again, hand-off included (receivers deduplicate on
    /// `webhook-id`).
    async fn commit_and_deliver(
        &self,
        d: &Direct,
        key: &ChannelKey,
        envelopes: &[Envelope],
        keyed: bool,
    ) -> Result<Published, StoreError> {
        let dedup = if keyed { Dedup::Record } else { Dedup::Skip };
        let committed = d.committer.commit(key, envelopes, dedup).await?;
        if !committed.unresolved.is_empty() {
            return Err(StoreError::failed(
                "commit",
                format!(
                    "ids {:?} have a live dedup record but their events are no longer in the log",
                    committed.unresolved
                ),
            ));
        }
        ::metrics::counter!(crate::metrics::EVENTS_COMMITTED).increment(committed.fresh as u64);
        let delivered = d.delivery.deliver(key, &committed.events).await;
        if let Err(e) = delivered.outcome {
            tracing::error!(channel = %key, error = %e, "delivery failed after the commit (subscribers unlisted or the webhook hand-off); the publisher is asked to retry");
            return Err(e);
        }
        Ok(Published::committed(envelopes, &committed))
    }

    /// Checks the tenant's and the channel's publish rates on the HTTP
    /// path, before an event is taken.
    pub fn with_quotas(mut self, quotas: Arc<Quotas>) -> Self {
        self.quotas = Some(quotas);
        self
    }

    /// Checks the publication and puts it on the events queue; the envelope
    /// sent (its `id` is the event id) on success.
    pub async fn publish(&self, p: Publication) -> Result<Envelope, PublishError> {
        self.enqueue(p, PublishPath::Library).await
    }

    /// Publishes several events in order (a stream's pending events), in
    /// batches of up to [`MAX_BATCH_EVENTS`]: one queue call per batch
    /// instead of one per event. All are checked before any is sent.
    pub async fn publish_many(
        &self,
        publications: Vec<Publication>,
    ) -> Result<Vec<Envelope>, PublishError> {
        let envelopes = publications
            .into_iter()
            .map(|p| self.envelope(p))
            .collect::<Result<Vec<_>, _>>()?;
        for batch in envelopes.chunks(MAX_BATCH_EVENTS) {
            self.queue.send_batch(batch).await?;
            ::metrics::counter!(crate::metrics::EVENTS_PUBLISHED, "path" => PublishPath::Library.label())
                .increment(batch.len() as u64);
        }
        Ok(envelopes)
    }

    /// A stream to `channel` on the library path: pieces written to the
    /// [`StreamWriter`] are coalesced (a 50 ms window, 64 KiB) and sent in
    /// order as batches (see [`crate::stream`]). `id` is the stream's id
    /// (a new UUID when `None`).
    pub fn stream(
        self: &Arc<Self>,
        tenant: &str,
        channel: &str,
        kind: &str,
        id: Option<String>,
    ) -> StreamWriter<PublishError> {
        StreamWriter::open(
            PublisherSink {
                publisher: self.clone(),
                tenant: tenant.to_owned(),
                channel: channel.to_owned(),
                kind: kind.to_owned(),
            },
            id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            DEFAULT_WINDOW,
            DEFAULT_MAX_BYTES,
        )
    }

    /// Publishes data of any size: one event when it fits (and is not
    /// bytes), else its chunk events (`protocol::chunks`), sent in order in
    /// batches; the envelopes sent. `p.data` is ignored for `payload`. The
    /// message id is `p.id` (a new UUID when `None`); sending the same
    /// message again with the same id makes each chunk once.
    pub async fn publish_payload(
        &self,
        p: Publication,
        payload: &Payload,
    ) -> Result<Vec<Envelope>, PublishError> {
        if let Some(data) = payload.as_event_data() {
            return Ok(vec![self.publish(Publication { data, ..p }).await?]);
        }
        let message = p.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if message.len() > MAX_MESSAGE_ID {
            return Err(PublishError::Invalid(ProtocolError::new(
                ErrorCode::InvalidEvent,
                format!(
                    "a message id is at most {MAX_MESSAGE_ID} bytes (its chunks add #<index>), not {}",
                    message.len()
                ),
            )));
        }
        let publications = chunks::split(&message, payload)
            .into_iter()
            .map(|c| Publication {
                tenant: p.tenant.clone(),
                channel: p.channel.clone(),
                kind: p.kind.clone(),
                data: c.data,
                id: Some(c.id),
            })
            .collect();
        self.publish_many(publications).await
    }

    /// Publishes AG-UI events in order (docs/agui.md): each is one event
    /// whose kind is its AG-UI type and whose data is the event, with the
    /// idempotency key given beside it; one larger than an event holds
    /// goes as a chunked message of it (JSON encoding, as the other
    /// clients' AG-UI publishers send it: reassembled, it is the event
    /// itself). The envelopes sent.
    pub async fn publish_agui(
        &self,
        tenant: &str,
        channel: &str,
        events: Vec<(String, AgUiEvent)>,
    ) -> Result<Vec<Envelope>, PublishError> {
        let mut sent = Vec::new();
        let mut pending: Vec<Publication> = Vec::new();
        for (id, event) in events {
            let p = Publication {
                tenant: tenant.to_owned(),
                channel: channel.to_owned(),
                kind: event.kind.to_owned(),
                data: Value::Null,
                id: Some(id),
            };
            if oversize_data(&RawData::from(&event.data)).is_none() {
                pending.push(Publication {
                    data: event.data,
                    ..p
                });
                continue;
            }
            sent.extend(self.publish_many(std::mem::take(&mut pending)).await?);
            sent.extend(self.publish_payload(p, &Payload::Json(event.data)).await?);
        }
        sent.extend(self.publish_many(pending).await?);
        Ok(sent)
    }

    /// Validates, checks the quotas on the HTTP path, sends, counts.
    async fn enqueue(&self, p: Publication, path: PublishPath) -> Result<Envelope, PublishError> {
        let envelope = self.envelope(p)?;
        self.admit(path, &envelope).await?;
        self.queue.send(&envelope).await?;
        ::metrics::counter!(crate::metrics::EVENTS_PUBLISHED, "path" => path.label()).increment(1);
        Ok(envelope)
    }

    /// The envelope of a publication, checked.
    fn envelope(&self, p: Publication) -> Result<Envelope, PublishError> {
        // From here on the data travels as this text, never parsed again.
        let data = RawData::from(&p.data);
        if let Some(size) = oversize_data(&data) {
            return Err(PublishError::TooLarge {
                what: "the event data",
                size,
                max: MAX_EVENT_DATA_BYTES,
            });
        }
        let envelope = Envelope {
            tenant: p.tenant,
            channel: p.channel,
            id: p.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            kind: p.kind,
            data,
            ts: rfc3339(self.clock.now()),
        };
        envelope.validate_names().map_err(PublishError::Invalid)?;
        envelope
            .validate_compressed()
            .map_err(PublishError::Invalid)?;
        Ok(envelope)
    }

    /// The quotas, on the HTTP path only.
    async fn admit(&self, path: PublishPath, envelope: &Envelope) -> Result<(), PublishError> {
        if path == PublishPath::Http
            && let Some(quotas) = &self.quotas
        {
            quotas
                .check_publish(&envelope.tenant, &envelope.channel)
                .await
                .map_err(PublishError::RateLimited)?;
        }
        Ok(())
    }

    /// Verifies the bearer token and its `publish` grant for `channel`;
    /// the token's tenant and principal.
    async fn authorize(
        &self,
        verifier: &Verifier,
        token: Option<&str>,
        channel: &str,
    ) -> Result<(String, String), PublishError> {
        let claims = verifier
            .verify(token.ok_or(AuthError::Missing)?, self.clock.epoch_s())
            .await
            .map_err(|e| match e.unavailable() {
                // Keys or a store unavailable: ours, retryable (503).
                Some(s) => PublishError::Queue(s),
                None => PublishError::Unauthorized(e),
            })?;
        agentwire_protocol::limits::validate_channel(channel).map_err(PublishError::Invalid)?;
        let grants = Grants::compile(&claims.publish).map_err(AuthError::from)?;
        if !grants.allows(channel) {
            return Err(PublishError::Forbidden(channel.to_owned()));
        }
        Ok((claims.tenant, claims.sub))
    }

    /// `POST /v1/channels/{channel}/events:batch`: up to
    /// [`MAX_BATCH_EVENTS`] events, each with its own idempotency key (its
    /// `id`), all or nothing: one invalid event, or one over a rate, and
    /// none is taken. Committed together (one transaction) with the direct
    /// path; the events in the request's order.
    ///
    /// A queue failure (`Queue`) may leave some of them enqueued; the
    /// request sent again with the same ids commits each event once (the
    /// queue and the log both drop a known id).
    pub async fn publish_batch_http(
        &self,
        verifier: &Verifier,
        token: Option<&str>,
        channel: &str,
        body: &[u8],
    ) -> Result<Published, PublishError> {
        let (tenant, publisher) = self.authorize(verifier, token, channel).await?;
        if body.len() > MAX_BATCH_BODY_BYTES {
            return Err(PublishError::TooLarge {
                what: "the request body",
                size: body.len(),
                max: MAX_BATCH_BODY_BYTES,
            });
        }
        let parsed: BatchBody = serde_json::from_slice(body).map_err(|e| {
            let code = if e.is_syntax() || e.is_eof() {
                ErrorCode::BadJson
            } else {
                ErrorCode::InvalidRequest
            };
            PublishError::Invalid(ProtocolError::new(
                code,
                format!(
                    "the body must be {{\"events\": [{{\"kind\": string, \"data\": any, \"id\"?: string}}]}}: {e}"
                ),
            ))
        })?;
        let n = parsed.events.len();
        let keyed = parsed.events.iter().any(|e| e.id.is_some());
        if n == 0 || n > MAX_BATCH_EVENTS {
            return Err(invalid_request(format!(
                "a batch holds 1 to {MAX_BATCH_EVENTS} events, not {n}"
            )));
        }
        let mut envelopes: Vec<Envelope> = Vec::with_capacity(n);
        for (i, e) in parsed.events.into_iter().enumerate() {
            let envelope = self
                .envelope(Publication {
                    tenant: tenant.clone(),
                    channel: channel.to_owned(),
                    kind: e.kind,
                    data: e.data,
                    id: e
                        .id
                        .as_deref()
                        .map(|k| publisher_scoped_id(&publisher, k))
                        .transpose()
                        .map_err(|err| at_index(i, err))?,
                })
                .map_err(|err| at_index(i, err))?;
            if let Some(j) = envelopes.iter().position(|p| p.id == envelope.id) {
                return Err(invalid_request(format!(
                    "events {j} and {i} have the same id {:?}; each event needs its own",
                    envelope.id
                )));
            }
            envelopes.push(envelope);
        }
        for envelope in &envelopes {
            self.admit(PublishPath::Http, envelope).await?;
        }
        let published = self.take(&envelopes, keyed).await?;
        ::metrics::counter!(crate::metrics::EVENTS_PUBLISHED, "path" => PublishPath::Http.label())
            .increment(envelopes.len() as u64);
        Ok(published)
    }

    /// The HTTP publish path: verifies the bearer token and its `publish`
    /// grant for `channel`, parses and checks the body, then publishes.
    pub async fn publish_http(
        &self,
        verifier: &Verifier,
        token: Option<&str>,
        channel: &str,
        body: &[u8],
        idempotency_key: Option<&str>,
    ) -> Result<Published, PublishError> {
        let (tenant, publisher) = self.authorize(verifier, token, channel).await?;
        let id = idempotency_key
            .map(|k| publisher_scoped_id(&publisher, k))
            .transpose()?;
        if body.len() > MAX_PUBLISH_BODY_BYTES {
            return Err(PublishError::TooLarge {
                what: "the request body",
                size: body.len(),
                max: MAX_PUBLISH_BODY_BYTES,
            });
        }
        let parsed: PublishBody = serde_json::from_slice(body).map_err(|e| {
            let code = if e.is_syntax() || e.is_eof() {
                ErrorCode::BadJson
            } else {
                ErrorCode::InvalidEvent
            };
            PublishError::Invalid(ProtocolError::new(
                code,
                format!("the body must be {{\"kind\": string, \"data\": any}}: {e}"),
            ))
        })?;
        let keyed = id.is_some();
        let envelope = self.envelope(Publication {
            tenant,
            channel: channel.to_owned(),
            kind: parsed.kind,
            data: parsed.data,
            id,
        })?;
        self.admit(PublishPath::Http, &envelope).await?;
        let published = self.take(std::slice::from_ref(&envelope), keyed).await?;
        ::metrics::counter!(crate::metrics::EVENTS_PUBLISHED, "path" => PublishPath::Http.label())
            .increment(1);
        Ok(published)
    }
}

/// Hex digits of an HTTP publisher's tag in its event ids.
const TAG_HEX: usize = 12;

/// Characters the tag takes in an event id: its hex digits and `~`.
const PUBLISHER_TAG: usize = TAG_HEX + 1;

/// The longest idempotency key an HTTP publisher may give: the event id
/// (at most [`MAX_EVENT_ID`](agentwire_protocol::limits::MAX_EVENT_ID)) is
/// the key behind the publisher's tag.
pub const MAX_IDEMPOTENCY_KEY: usize = agentwire_protocol::limits::MAX_EVENT_ID - PUBLISHER_TAG;

/// The event id of an HTTP publish whose idempotency key is `key`:
/// `<tag>~<key>`, the tag the first 12 hex digits of SHA-256 of the
/// publisher's principal (the token's `sub`). So a key is the publisher's
/// own: another publisher of the channel using the same key makes another
/// event instead of being taken for a retry of yours, while a retry with
/// the same token and key makes the same id (one event). Event ids stay
/// unique per channel, and the key stays readable in the id.
pub fn publisher_scoped_id(publisher: &str, key: &str) -> Result<String, PublishError> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(PublishError::Invalid(ProtocolError::new(
            ErrorCode::InvalidEvent,
            format!(
                "an idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY} characters, not {}",
                key.len()
            ),
        )));
    }
    let digest = crate::model::sha256_hex(publisher.as_bytes());
    Ok(format!("{}~{key}", &digest[..TAG_HEX]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenKey;
    use crate::clock::SystemClock;
    use crate::memory::MemoryEventQueue;
    use std::time::Duration;

    fn setup() -> (Publisher, Arc<MemoryEventQueue>, Verifier) {
        let queue = Arc::new(MemoryEventQueue::default());
        let p = Publisher::new(queue.clone(), Arc::new(SystemClock));
        let verifier = Verifier::new(TokenKey::hs256(b"k"), Arc::new(SystemClock));
        (p, queue, verifier)
    }

    /// A token signed with the key `setup`'s verifier holds.
    fn token(_: &Verifier, publish: &[&str], ttl: Duration, iat: u64) -> String {
        let claims = TokenKey::claims(
            "t1",
            "agent",
            vec![],
            publish.iter().map(|s| s.to_string()).collect(),
            iat,
            ttl,
        );
        TokenKey::hs256(b"k").sign(&claims).unwrap()
    }

    fn now() -> u64 {
        SystemClock.epoch_s()
    }

    /// A publisher with the direct path over memory fakes and a subscriber
    /// `c1` on `jobs-1`.
    struct Direct {
        p: Publisher,
        queue: Arc<MemoryEventQueue>,
        log: Arc<crate::memory::MemoryLog>,
        pusher: Arc<crate::memory::MemoryPusher>,
        key: Verifier,
    }

    async fn direct() -> Direct {
        use crate::memory::{MemoryLog, MemoryPusher, MemoryRegistry, connection};
        use crate::ports::ConnectionRegistry;
        let (_, queue, key) = setup();
        let log = Arc::new(MemoryLog::default());
        let reg = Arc::new(MemoryRegistry::default());
        let pusher = Arc::new(MemoryPusher::default());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let c = connection("c1", "t1", "c1", &["*"]);
        reg.put_connection(&c).await.unwrap();
        reg.subscribe(&c, &ChannelKey::new("t1", "jobs-1"), u64::MAX)
            .await
            .unwrap();
        let retention = Duration::from_secs(3600);
        let p = Publisher::new(queue.clone(), clock.clone()).with_direct(
            Committer::new(log.clone(), clock.clone(), retention),
            Delivery::new(reg.clone(), pusher.clone(), clock.clone(), 4),
        );
        Direct {
            p,
            queue,
            log,
            pusher,
            key,
        }
    }

    impl Direct {
        /// A publish to `jobs-1` with `key`: its outcome and seq.
        async fn send(&self, key: Option<&str>) -> Result<(Outcome, Option<u64>), PublishError> {
            let t = token(&self.key, &["jobs-*"], Duration::from_secs(60), now());
            let body = br#"{"kind":"status","data":{"n":1}}"#;
            let p = self
                .p
                .publish_http(&self.key, Some(&t), "jobs-1", body, key)
                .await?;
            Ok((p.outcome, p.events[0].seq))
        }
    }

    #[tokio::test]
    async fn the_direct_path_commits_delivers_and_answers_the_seq() {
        let d = direct().await;
        let t = token(&d.key, &["jobs-*"], Duration::from_secs(60), now());
        assert_eq!(d.send(None).await.unwrap(), (Outcome::Committed, Some(1)));
        assert_eq!(
            d.send(Some("k")).await.unwrap(),
            (Outcome::Committed, Some(2))
        );
        assert_eq!(d.send(Some("k")).await.unwrap(), (Outcome::Repeat, Some(2)));
        assert!(d.queue.sent().is_empty(), "nothing went through the queue");
        let posts = d.pusher.posts("c1");
        let seqs: Vec<u64> = posts
            .iter()
            .map(|p| {
                serde_json::from_str::<Value>(p).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            seqs,
            [1, 2, 2],
            "delivered at once; the repeat again with its seq"
        );
        // A batch is one run.
        let batch = br#"{"events":[{"kind":"a","id":"b1"},{"kind":"b"},{"kind":"c","id":"k"}]}"#;
        let b =
            d.p.publish_batch_http(&d.key, Some(&t), "jobs-1", batch)
                .await
                .unwrap();
        let seqs: Vec<Option<u64>> = b.events.iter().map(|e| e.seq).collect();
        assert_eq!(
            (b.outcome, seqs),
            (Outcome::Committed, vec![Some(3), Some(4), Some(2)])
        );
    }

    #[tokio::test]
    async fn a_commit_that_cannot_be_made_now_is_a_retryable_error_and_the_retry_one_event() {
        let d = direct().await;
        let ch = ChannelKey::new("t1", "jobs-1");
        d.log.fail_channel(&ch);
        let err = d.send(Some("k")).await.unwrap_err();
        assert!(
            matches!(&err, PublishError::Commit(e) if e.is_retryable()),
            "{err}"
        );
        assert!(d.queue.sent().is_empty(), "not parked on the queue");
        assert!(d.log.events(&ch).is_empty());
        d.log.heal_channel(&ch);
        assert_eq!(
            d.send(Some("k")).await.unwrap(),
            (Outcome::Committed, Some(1))
        );
        assert_eq!(d.send(Some("k")).await.unwrap(), (Outcome::Repeat, Some(1)));
        assert_eq!(d.log.events(&ch).len(), 1, "one event");
    }

    #[tokio::test]
    async fn a_granted_publish_is_enqueued_with_the_idempotency_key_as_id() {
        let (p, queue, key) = setup();
        let t = token(&key, &["jobs-*"], Duration::from_secs(60), now());
        let env = p
            .publish_http(
                &key,
                Some(&t),
                "jobs-1",
                br#"{"kind":"status","data":{"n":1}}"#,
                Some("key-1"),
            )
            .await
            .unwrap();
        assert_eq!(env.outcome, Outcome::Queued);
        let id = &env.events[0].id;
        assert_eq!(*id, publisher_scoped_id("agent", "key-1").unwrap());
        assert!(id.ends_with("~key-1"), "{id}");
        let sent = queue.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!((&sent[0].tenant, &sent[0].id), (&"t1".to_owned(), id));
        assert_eq!(sent[0].data.value()["n"], 1);
    }

    #[tokio::test]
    async fn agui_events_go_in_order_as_kind_and_data_and_a_big_one_as_chunks() {
        use agentwire_protocol::agui;
        let (p, queue, _) = setup();
        let big = "x".repeat(MAX_EVENT_DATA_BYTES + 1);
        let events = vec![
            ("r:0".to_owned(), agui::run_started("agent-1", "r")),
            ("r:1".to_owned(), agui::tool_call_result("m1", "c1", &big)),
            ("r:2".to_owned(), agui::run_finished("agent-1", "r", None)),
        ];
        let sent = p.publish_agui("t1", "agent-1", events).await.unwrap();
        let queued = queue.sent();
        assert_eq!(sent.len(), queued.len());
        assert_eq!(queued.first().unwrap().kind, "RUN_STARTED");
        assert_eq!(queued.first().unwrap().id, "r:0");
        assert_eq!(queued.first().unwrap().data.value()["threadId"], "agent-1");
        assert_eq!(queued.last().unwrap().kind, "RUN_FINISHED");
        // The big result: its chunks in between, all of its kind, and
        // together the event itself.
        let chunks = &queued[1..queued.len() - 1];
        assert!(chunks.len() >= 2);
        assert!(chunks.iter().all(|e| e.kind == "TOOL_CALL_RESULT"));
        let mut reassembler = chunks::Reassembler::new(1 << 24, 1 << 24);
        let mut whole = None;
        for (i, e) in chunks.iter().enumerate() {
            let seq = i as u64 + 2;
            if let chunks::Assembled::Complete(m) =
                reassembler.accept("agent-1", seq, &e.kind, &e.data.value())
            {
                whole = Some(m);
            }
        }
        let Some(Payload::Json(whole)) = whole.map(|m| m.payload) else {
            panic!("the chunks make one JSON message");
        };
        assert_eq!(whole["content"].as_str().unwrap().len(), big.len());
        assert_eq!(whole["type"], "TOOL_CALL_RESULT");
    }

    #[tokio::test]
    async fn each_refusal_has_its_code() {
        let (p, queue, key) = setup();
        let ok = token(&key, &["jobs-*"], Duration::from_secs(60), now());
        let expired = token(&key, &["jobs-*"], Duration::from_secs(1), now() - 120);
        let long_key = "k".repeat(MAX_IDEMPOTENCY_KEY + 1);
        // (token, channel, body, idempotency key, code)
        type Case<'a> = (
            Option<&'a str>,
            &'a str,
            Vec<u8>,
            Option<&'a str>,
            ErrorCode,
        );
        let cases: Vec<Case> = vec![
            (
                None,
                "jobs-1",
                br#"{"kind":"k"}"#.to_vec(),
                None,
                ErrorCode::Unauthorized,
            ),
            (
                Some("nope"),
                "jobs-1",
                br#"{"kind":"k"}"#.to_vec(),
                None,
                ErrorCode::Unauthorized,
            ),
            (
                Some(&expired),
                "jobs-1",
                br#"{"kind":"k"}"#.to_vec(),
                None,
                ErrorCode::TokenExpired,
            ),
            (
                Some(&ok),
                "other",
                br#"{"kind":"k"}"#.to_vec(),
                None,
                ErrorCode::Forbidden,
            ),
            (
                Some(&ok),
                "jobs-1",
                b"{not json".to_vec(),
                None,
                ErrorCode::BadJson,
            ),
            (
                Some(&ok),
                "jobs-1",
                br#"{"data":1}"#.to_vec(),
                None,
                ErrorCode::InvalidEvent,
            ),
            (
                Some(&ok),
                "jobs-1",
                br#"{"kind":"bad kind!"}"#.to_vec(),
                None,
                ErrorCode::InvalidEvent,
            ),
            (
                // A stream text sent compressed that is not gzip.
                Some(&ok),
                "jobs-1",
                br#"{"kind":"k","data":{"stream":"s","index":0,"gz":"bm90IGd6aXA="}}"#.to_vec(),
                None,
                ErrorCode::InvalidEvent,
            ),
            (
                Some(&ok),
                "jobs-1",
                br#"{"kind":"k"}"#.to_vec(),
                Some("has space"),
                ErrorCode::InvalidEvent,
            ),
            (
                Some(&ok),
                "jobs-1",
                br#"{"kind":"k"}"#.to_vec(),
                Some(&long_key),
                ErrorCode::InvalidEvent,
            ),
            (
                Some(&ok),
                "bad channel",
                br#"{"kind":"k"}"#.to_vec(),
                None,
                ErrorCode::InvalidChannel,
            ),
            (
                Some(&ok),
                "jobs-1",
                vec![b' '; MAX_PUBLISH_BODY_BYTES + 1],
                None,
                ErrorCode::MessageTooLarge,
            ),
        ];
        for (tok, ch, body, idem, code) in cases {
            let err = p
                .publish_http(&key, tok, ch, &body, idem)
                .await
                .unwrap_err();
            assert_eq!(err.code(), code, "{err}");
        }
        let big = format!(
            r#"{{"kind":"k","data":"{}"}}"#,
            "x".repeat(MAX_EVENT_DATA_BYTES)
        );
        let err = p
            .publish_http(&key, Some(&ok), "jobs-1", big.as_bytes(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, PublishError::TooLarge { .. }), "{err}");
        assert!(queue.sent().is_empty(), "nothing refused was enqueued");
    }

    #[tokio::test]
    async fn an_idempotency_key_is_its_publishers_own() {
        let (p, queue, key) = setup();
        let as_sub = |sub: &str| {
            let claims = TokenKey::claims(
                "t1",
                sub,
                vec![],
                vec!["jobs-*".into()],
                now(),
                Duration::from_secs(60),
            );
            TokenKey::hs256(b"k").sign(&claims).unwrap()
        };
        let body = br#"{"kind":"status","data":1}"#;
        let mut ids = vec![];
        for sub in ["alice", "bob", "alice"] {
            let t = as_sub(sub);
            let env = p
                .publish_http(&key, Some(&t), "jobs-1", body, Some("run-7/final"))
                .await
                .unwrap();
            ids.push(env.events[0].id.clone());
        }
        assert_ne!(ids[0], ids[1], "bob's key is not alice's");
        assert_eq!(ids[0], ids[2], "alice's retry is the same event");
        assert!(ids.iter().all(|id| id.ends_with("~run-7/final")), "{ids:?}");
        assert!(ids.iter().all(|id| id.len() == 13 + 11), "{ids:?}");
        // A batch's ids are scoped the same way.
        let t = as_sub("bob");
        let sent = p
            .publish_batch_http(
                &key,
                Some(&t),
                "jobs-1",
                br#"{"events":[{"kind":"a","id":"run-7/final"}]}"#,
            )
            .await
            .unwrap();
        assert_eq!(sent.events[0].id, ids[1]);
        // The longest key makes the longest event id.
        let longest = "k".repeat(MAX_IDEMPOTENCY_KEY);
        let env = p
            .publish_http(&key, Some(&t), "jobs-1", body, Some(&longest))
            .await
            .unwrap();
        assert_eq!(
            env.events[0].id.len(),
            agentwire_protocol::limits::MAX_EVENT_ID
        );
        assert_eq!(queue.sent().len(), 5);
    }

    #[tokio::test]
    async fn a_batch_is_enqueued_in_order_with_each_events_id() {
        let (p, queue, key) = setup();
        let t = token(&key, &["jobs-*"], Duration::from_secs(60), now());
        let body = serde_json::json!({"events": [
            {"kind": "a", "data": 1, "id": "k1"},
            {"kind": "b"},
            {"kind": "c", "data": {"x": true}, "id": "k3"},
        ]});
        let sent = p
            .publish_batch_http(&key, Some(&t), "jobs-1", body.to_string().as_bytes())
            .await
            .unwrap();
        assert_eq!((sent.outcome, sent.events.len()), (Outcome::Queued, 3));
        let scoped = |k| publisher_scoped_id("agent", k).unwrap();
        let ids: Vec<&str> = sent.events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            (ids[0], ids[2]),
            (scoped("k1").as_str(), scoped("k3").as_str())
        );
        let queued = queue.sent();
        let queued_ids: Vec<&str> = queued.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(queued_ids, ids, "all of them, in order");
        assert_eq!(queued[1].data.value(), Value::Null);
    }

    #[tokio::test]
    async fn a_batch_with_one_bad_event_enqueues_nothing() {
        let (p, queue, key) = setup();
        let t = token(&key, &["jobs-*"], Duration::from_secs(60), now());
        let big = "x".repeat(MAX_EVENT_DATA_BYTES + 1);
        let cases = [
            (
                serde_json::json!({"events": []}),
                ErrorCode::InvalidRequest,
                "1 to 10",
            ),
            (
                serde_json::json!({"events": (0..11).map(|_| serde_json::json!({"kind": "a"})).collect::<Vec<_>>()}),
                ErrorCode::InvalidRequest,
                "not 11",
            ),
            (
                serde_json::json!({"events": [{"kind": "a"}, {"kind": ""}]}),
                ErrorCode::InvalidEvent,
                "event 1:",
            ),
            (
                serde_json::json!({"events": [{"kind": "a", "id": "k"}, {"kind": "b", "id": "k"}]}),
                ErrorCode::InvalidRequest,
                "same id",
            ),
            (
                serde_json::json!({"events": [{"kind": "a", "data": big}]}),
                ErrorCode::MessageTooLarge,
                "event 0:",
            ),
            (
                serde_json::json!({"event": []}),
                ErrorCode::InvalidRequest,
                "body must be",
            ),
        ];
        for (body, code, says) in cases {
            let e = p
                .publish_batch_http(&key, Some(&t), "jobs-1", body.to_string().as_bytes())
                .await
                .unwrap_err();
            assert_eq!(e.code(), code, "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
        let e = p
            .publish_batch_http(&key, Some(&t), "jobs-1", b"{not json")
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadJson);
        let e = p
            .publish_batch_http(&key, Some(&t), "other", b"{}")
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Forbidden);
        assert!(queue.sent().is_empty());
    }

    #[tokio::test]
    async fn a_large_payload_goes_as_its_chunks_and_a_small_one_as_one_event() {
        use agentwire_protocol::chunks::{Assembled, Reassembler};
        let (p, queue, _) = setup();
        let publication = |id: Option<&str>| Publication {
            tenant: "t1".into(),
            channel: "logs".into(),
            kind: "output".into(),
            data: Value::Null,
            id: id.map(str::to_owned),
        };
        let small = p
            .publish_payload(publication(Some("s")), &Payload::Text("ok".into()))
            .await
            .unwrap();
        assert_eq!(small.len(), 1);
        assert_eq!(small[0].data.value(), Value::String("ok".into()));

        let log: String = (0..40_000).map(|i| format!("line {i}\n")).collect();
        let sent = p
            .publish_payload(publication(Some("build-7")), &Payload::Text(log.clone()))
            .await
            .unwrap();
        assert!(sent.len() > 3, "{} chunks", sent.len());
        assert_eq!(sent[0].id, "build-7#0");
        assert_eq!(queue.sent()[1..], sent[..], "in order, after the small one");
        let mut r = Reassembler::default();
        let mut whole = None;
        for (i, e) in sent.iter().enumerate() {
            if let Assembled::Complete(m) = r.accept("logs", i as u64 + 1, &e.kind, &e.data.value())
            {
                whole = Some(m);
            }
        }
        assert_eq!(whole.unwrap().payload, Payload::Text(log));

        let e = p
            .publish_payload(
                publication(Some(&"x".repeat(113))),
                &Payload::Bytes(vec![1]),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidEvent);
    }

    #[tokio::test]
    async fn a_stream_goes_to_the_queue_in_order_with_its_keys() {
        let (p, queue, _) = setup();
        let p = Arc::new(p);
        let w = p.stream("t1", "logs", "output", Some("s".into()));
        for i in 0..1000 {
            assert!(w.write(format!("line {i}\n")));
        }
        let report = w.finish().await.unwrap();
        let sent = queue.sent();
        assert_eq!(sent.len(), report.events);
        assert!(
            report.events < 5,
            "{} events for 1,000 lines",
            report.events
        );
        let ids: Vec<String> = (0..sent.len()).map(|i| format!("s:{i}")).collect();
        assert_eq!(sent.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), ids);
        let text: String = sent
            .iter()
            .filter_map(|e| e.data.value()["text"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(
            text,
            (0..1000).map(|i| format!("line {i}\n")).collect::<String>()
        );
        assert_eq!(sent.last().unwrap().data.value()["end"], true);
    }
}
