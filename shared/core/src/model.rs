//! Domain types: channel keys, envelopes, connections and stored events.

use agentwire_protocol::limits::{
    MAX_EVENT_DATA_BYTES, validate_channel, validate_event_id, validate_kind, validate_tenant,
    validate_timestamp,
};
use agentwire_protocol::{ErrorCode, EventFrame, ProtocolError, RawData};
use serde::{Deserialize, Serialize};

/// A channel of a tenant (shown as `tenant#channel`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    pub tenant: String,
    pub channel: String,
}

impl ChannelKey {
    pub fn new(tenant: impl Into<String>, channel: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            channel: channel.into(),
        }
    }

    /// A name for event `id` of this channel that no other channel or tenant
    /// shares (hex SHA-256 of `tenant#channel#id`, 64 characters): the SQS
    /// deduplication id and the webhook's `webhook-id`, so the same
    /// idempotency key in two channels never looks like one event.
    pub fn scoped_id(&self, id: &str) -> String {
        sha256_hex(format!("{}#{}#{id}", self.tenant, self.channel).as_bytes())
    }

    /// The events queue's `MessageGroupId` (order is per group): `tenant#channel`,
    /// or, when that is over SQS's 128 characters (a 64-character tenant
    /// and a 128-character channel make 193), `sha256:` and the hex digest
    /// of it (71 characters).
    pub fn group_id(&self) -> String {
        let key = self.to_string();
        if key.len() <= SQS_MAX_GROUP_ID {
            return key;
        }
        format!("sha256:{}", sha256_hex(key.as_bytes()))
    }
}

/// The SHA-256 digest of `input`, in lowercase hex (64 characters).
pub fn sha256_hex(input: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(input)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SQS's longest `MessageGroupId`.
const SQS_MAX_GROUP_ID: usize = 128;

impl std::fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.tenant, self.channel)
    }
}

/// What an agent publishes: the body of a message on the events queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub tenant: String,
    pub channel: String,
    /// The publisher's idempotency key, unique per channel (the SQS
    /// deduplication id is derived from it, see [`ChannelKey::scoped_id`]).
    pub id: String,
    pub kind: String,
    /// Its JSON text, as published (checked to be JSON, never parsed into
    /// a tree: see [`RawData`]).
    #[serde(default)]
    pub data: RawData,
    /// When the publisher produced it (RFC 3339).
    pub ts: String,
}

impl Envelope {
    /// This envelope committed as `seq` of `key`'s log in `epoch`.
    pub fn stored(&self, key: &ChannelKey, epoch: &str, seq: u64) -> StoredEvent {
        StoredEvent {
            key: key.clone(),
            epoch: epoch.to_owned(),
            seq,
            id: self.id.clone(),
            kind: self.kind.clone(),
            data: self.data.clone(),
            ts: self.ts.clone(),
        }
    }

    pub fn key(&self) -> ChannelKey {
        ChannelKey::new(&self.tenant, &self.channel)
    }

    /// Checks every field against the protocol's rules and sizes.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        self.validate_names()?;
        if let Some(size) = oversize_data(&self.data) {
            return Err(ProtocolError::new(
                ErrorCode::InvalidEvent,
                format!("event data is {size} bytes; at most {MAX_EVENT_DATA_BYTES} are allowed"),
            ));
        }
        self.validate_compressed()
    }

    /// Data a publisher sent compressed must decode, and its plain form
    /// fit one event ([`agentwire_protocol::gzip::check_raw`]).
    pub fn validate_compressed(&self) -> Result<(), ProtocolError> {
        agentwire_protocol::gzip::check_raw(&self.data)
            .map_err(|e| ProtocolError::new(ErrorCode::InvalidEvent, e))
    }

    /// This envelope as the log stores it: a stream event's or chunk's
    /// text gzip-compressed when that makes it smaller, and compressed data
    /// from a publisher in the gateway's own form
    /// ([`agentwire_protocol::gzip::canonical_raw`]).
    pub fn compressed(&self) -> Envelope {
        match agentwire_protocol::gzip::canonical_raw(&self.data) {
            Some(data) => Envelope {
                data,
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    /// Checks the tenant, channel, id, kind and `ts` (everything but the
    /// data's size, see [`oversize_data`]). With the data within 96 KiB and
    /// these within their bounds, the `event` frame an envelope becomes
    /// always fits API Gateway's 128 KiB message.
    pub fn validate_names(&self) -> Result<(), ProtocolError> {
        validate_tenant(&self.tenant)?;
        validate_channel(&self.channel)?;
        validate_event_id(&self.id)?;
        validate_kind(&self.kind)?;
        validate_timestamp(&self.ts)
    }

    /// Reads and validates an envelope from a queue message body.
    pub fn parse(body: &str) -> Result<Self, ProtocolError> {
        let env: Envelope = serde_json::from_str(body).map_err(|e| {
            ProtocolError::new(
                ErrorCode::InvalidEvent,
                format!("not an event envelope: {e}"),
            )
        })?;
        env.validate()?;
        Ok(env)
    }
}

/// The size of event data's JSON text when larger than the protocol
/// allows (`MAX_EVENT_DATA_BYTES`), or `None` when it fits.
pub fn oversize_data(data: &RawData) -> Option<usize> {
    let size = data.len();
    (size > MAX_EVENT_DATA_BYTES).then_some(size)
}

/// Data as stored, its compressed text expanded. The gateway compressed it
/// itself, so it always decodes; should it not, it goes as stored (the
/// clients hand such an event over as it came) and the log says so.
pub fn plain_data(data: RawData) -> RawData {
    match agentwire_protocol::gzip::expand_raw(&data) {
        Ok(Some(plain)) => plain,
        Ok(None) => data,
        Err(e) => {
            tracing::warn!(error = %e, "a stored payload does not decode; sent as stored");
            data
        }
    }
}

/// One event of a channel's log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub key: ChannelKey,
    pub epoch: String,
    pub seq: u64,
    pub id: String,
    pub kind: String,
    pub data: RawData,
    pub ts: String,
}

impl StoredEvent {
    /// When it was published (its `ts`), in Unix milliseconds, if readable.
    pub fn published_ms(&self) -> Option<u64> {
        let t = humantime::parse_rfc3339_weak(&self.ts).ok()?;
        Some(crate::clock::epoch_ms(t))
    }

    /// Its size as an `event` frame, within a few bytes: what reading,
    /// holding or sending it costs.
    pub fn approx_len(&self) -> usize {
        self.data.len()
            + self.key.channel.len()
            + self.epoch.len()
            + self.id.len()
            + self.kind.len()
            + self.ts.len()
            + 80
    }

    /// Its `event` frame, the data as stored (no parse).
    pub fn frame(&self) -> EventFrame<RawData> {
        EventFrame {
            channel: self.key.channel.clone(),
            epoch: self.epoch.clone(),
            seq: self.seq,
            id: self.id.clone(),
            kind: self.kind.clone(),
            data: self.data.clone(),
            ts: self.ts.clone(),
        }
    }

    /// This event as a connection that did not announce gzip gets it (and
    /// the history and webhooks): a compressed text expanded (see
    /// [`agentwire_protocol::gzip`]); any other data as stored.
    pub fn expanded(mut self) -> Self {
        self.data = plain_data(self.data);
        self
    }

    /// Its `event` frame, moving the data (no copy, no parse).
    pub fn into_frame(self) -> EventFrame<RawData> {
        EventFrame {
            channel: self.key.channel,
            epoch: self.epoch,
            seq: self.seq,
            id: self.id,
            kind: self.kind,
            data: self.data,
            ts: self.ts,
        }
    }
}

/// The head of a channel's log: the last assigned seq, and the epoch that
/// names this incarnation of the log. The default is a channel with no log
/// yet: head 0 and the empty epoch (whose first event's epoch a client
/// adopts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelState {
    pub epoch: String,
    pub head: u64,
    /// This channel's retention, overriding the deployment's.
    pub retention_s: Option<u64>,
}

/// One subscription of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub connection_id: String,
    pub principal: String,
    /// The `exp` of the connection's token (Unix seconds; 0: unknown).
    pub token_exp: u64,
    /// Whether the connection announced gzip in `hello`: it gets stream
    /// and chunk texts compressed as stored; others get them expanded.
    pub gzip: bool,
}

impl Subscriber {
    /// Whether the connection's token has expired (with the verifier's
    /// leeway): live delivery to it stops.
    pub fn token_expired(&self, now: u64) -> bool {
        token_expired(self.token_exp, now)
    }
}

/// Whether a token with this `exp` (0: none known) has expired at `now`,
/// with the same clock-skew leeway as token verification.
pub fn token_expired(exp: u64, now: u64) -> bool {
    exp != 0 && exp.saturating_add(crate::auth::LEEWAY_S) < now
}

/// A live WebSocket connection, as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub id: String,
    pub tenant: String,
    pub principal: String,
    /// Channel patterns the token grants for joining.
    pub grants: Vec<String>,
    /// Channel patterns the token grants for publishing.
    pub publish: Vec<String>,
    /// The negotiated protocol version, once `hello` (or the subprotocol) set it.
    pub protocol: Option<u32>,
    /// Whether its `hello` announced gzip (see [`Subscriber::gzip`]).
    pub gzip: bool,
    pub connected_at: u64,
    /// When the registry forgets it (Unix seconds; DynamoDB TTL).
    pub expires_at: u64,
    /// Channel names (not keys) this connection has joined.
    pub channels: Vec<String>,
    /// The `exp` of the token it connected with (Unix seconds; 0: unknown).
    /// After it, joins and acks are refused with `token_expired` and live
    /// delivery stops: the client reconnects with a fresh token.
    pub token_exp: u64,
    /// The `iat` of that token, when it had one (a revocation refuses the
    /// tokens issued before it).
    pub token_iat: Option<u64>,
    /// Whether it counts against its tenant's `max_connections` (recorded
    /// with [`put_counted_connection`](crate::ports::ConnectionRegistry::put_counted_connection)).
    pub counted: bool,
}

/// Who is on a channel: the subscribed connections' count and a bounded
/// sample of their principals (distinct, at most `PRESENCE_SAMPLE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelPresence {
    pub count: u64,
    pub principals: Vec<String>,
}

/// A channel's membership as kept beside its subscriptions: how many there
/// are (see [`ChannelPresence`] on its accuracy) and a version that every
/// subscribe, re-subscribe and leave moves. A subscriber list read after
/// the version is current for as long as the version stays the same.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Membership {
    pub count: u64,
    pub version: u64,
}

/// How many shards a channel's subscriptions are spread over. Fixed: the
/// shard is part of each subscription's stored key.
pub const SUBSCRIPTION_SHARDS: u16 = 256;

/// The shard a connection's subscriptions are stored in: the first byte of
/// the SHA-256 of its id (stable across versions and processes).
pub fn subscription_shard(connection_id: &str) -> u16 {
    use sha2::Digest;
    u16::from(sha2::Sha256::digest(connection_id.as_bytes())[0])
}

/// The subscription shards `start..end`: what one fan-out job lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardRange {
    pub start: u16,
    pub end: u16,
}

impl ShardRange {
    /// Every shard.
    pub const ALL: ShardRange = ShardRange {
        start: 0,
        end: SUBSCRIPTION_SHARDS,
    };

    pub fn contains(&self, shard: u16) -> bool {
        (self.start..self.end).contains(&shard)
    }

    /// `n` ranges (1 to [`SUBSCRIPTION_SHARDS`]) of nearly equal width that
    /// cover every shard once, in order.
    pub fn split(n: usize) -> Vec<ShardRange> {
        let total = usize::from(SUBSCRIPTION_SHARDS);
        let n = n.clamp(1, total);
        let bound = |i: usize| u16::try_from(i * total / n).unwrap_or(SUBSCRIPTION_SHARDS);
        (0..n)
            .map(|i| ShardRange {
                start: bound(i),
                end: bound(i + 1),
            })
            .collect()
    }

    /// Whether the range is well-formed (a job from the queue is checked).
    pub fn is_valid(&self) -> bool {
        self.start < self.end && self.end <= SUBSCRIPTION_SHARDS
    }
}

impl std::fmt::Display for ShardRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// One shard range's share of the fan-out of a committed run, as it
/// travels on the fan-out queue: the frames to post (already coalesced, in
/// seq order) to the channel's subscribers in `shards`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutJob {
    pub tenant: String,
    pub channel: String,
    pub shards: ShardRange,
    /// The seqs the frames carry, for logs.
    pub first_seq: u64,
    pub last_seq: u64,
    /// Each a frame's JSON as posted (kept raw: no escaping, so a job's
    /// size is its frames' size plus a few bytes).
    pub frames: Vec<Box<serde_json::value::RawValue>>,
    /// The membership version the dispatcher read after committing these
    /// events: a list of the shards read for it (or after it was read)
    /// reaches every subscriber that must get them live, so the worker
    /// needs no read of its own. Absent from jobs of earlier versions (the
    /// worker then reads the membership itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// When its events were published (Unix ms, from their `ts`), on the
    /// last job of each shard range only: the worker records each one's
    /// publish-to-post latency once its frames are posted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published_ms: Vec<u64>,
    /// How the events were committed (`direct` or `queue`): the label of
    /// their delivery latency. Absent from jobs of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl FanoutJob {
    pub fn key(&self) -> ChannelKey {
        ChannelKey::new(&self.tenant, &self.channel)
    }
}

/// One event on its way to a webhook, as it travels on the webhook queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookJob {
    pub tenant: String,
    pub event: EventFrame<RawData>,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the next attempt is due (Unix seconds); 0 for now.
    #[serde(default)]
    pub due_at: u64,
    /// What the last attempt got, for the dead-letter record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl WebhookJob {
    pub fn new(tenant: &str, event: EventFrame<RawData>) -> Self {
        Self {
            tenant: tenant.to_owned(),
            event,
            attempts: 0,
            due_at: 0,
            last_status: None,
            last_error: None,
        }
    }

    pub fn key(&self) -> ChannelKey {
        ChannelKey::new(&self.tenant, &self.event.channel)
    }
}

/// A webhook message that was dead-lettered, as the operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadWebhookJob {
    pub event_id: String,
    pub channel: String,
    pub reason: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    /// The message as it was dead-lettered (a [`WebhookJob`], or what came
    /// instead of one).
    #[serde(skip)]
    pub body: String,
    /// The queue's handle for removing it (SQS's receipt handle).
    #[serde(skip)]
    pub handle: String,
}

impl DeadWebhookJob {
    /// A dead-lettered message; the event, channel and attempts are read
    /// from the body when it is a job, left empty when not.
    pub fn new(body: &str, reason: &str, handle: &str) -> Self {
        let job: Option<WebhookJob> = serde_json::from_str(body).ok();
        Self {
            event_id: job.as_ref().map(|j| j.event.id.clone()).unwrap_or_default(),
            channel: job
                .as_ref()
                .map(|j| j.key().to_string())
                .unwrap_or_default(),
            reason: reason.to_owned(),
            attempts: job.as_ref().map(|j| j.attempts).unwrap_or(0),
            last_status: job.as_ref().and_then(|j| j.last_status),
            body: body.to_owned(),
            handle: handle.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_valid_envelope_becomes_a_frame_within_the_message_limit() {
        use agentwire_protocol::limits::MAX_MESSAGE_BYTES;
        // Escaped characters make the JSON text the limit applies to.
        let data = RawData::from(serde_json::Value::String(
            "\u{1}".repeat(MAX_EVENT_DATA_BYTES / 6 - 1),
        ));
        assert!(oversize_data(&data).is_none());
        let env = Envelope {
            tenant: "t".repeat(64),
            channel: "c".repeat(128),
            id: "i".repeat(128),
            kind: "k".repeat(64),
            data,
            ts: "2026-11-23T09:00:00.123456789+02:00".into(),
        };
        env.validate().unwrap();
        let e = StoredEvent {
            key: env.key(),
            epoch: "e".repeat(64),
            seq: u64::MAX,
            id: env.id.clone(),
            kind: env.kind.clone(),
            data: env.data.clone(),
            ts: env.ts.clone(),
        };
        let frame = agentwire_protocol::framing::event_frame(&e.frame());
        assert!(frame.len() <= MAX_MESSAGE_BYTES, "{}", frame.len());
    }

    #[test]
    fn approx_len_is_the_event_frame_within_a_few_bytes() {
        for data in [
            serde_json::json!(null),
            serde_json::json!({"text": "x".repeat(40_000)}),
        ] {
            let e = StoredEvent {
                key: ChannelKey::new("acme", "agent-1"),
                epoch: "e1".into(),
                seq: 12_345,
                id: "id-1".into(),
                kind: "status".into(),
                data: data.into(),
                ts: "2026-11-23T09:00:00.000Z".into(),
            };
            let frame = agentwire_protocol::framing::event_frame(&e.frame()).len();
            assert!(
                e.approx_len() + 16 >= frame,
                "{} vs {frame}",
                e.approx_len()
            );
            assert!(
                e.approx_len() <= frame + 80,
                "{} vs {frame}",
                e.approx_len()
            );
        }
    }

    #[test]
    fn a_group_id_is_the_key_or_its_digest_within_sqs_limit() {
        assert_eq!(
            ChannelKey::new("acme", "agent-1").group_id(),
            "acme#agent-1"
        );
        let long = ChannelKey::new("t".repeat(64), "c".repeat(128));
        let g = long.group_id();
        assert!(g.len() <= 128 && g.starts_with("sha256:"), "{g}");
        assert_eq!(g, long.group_id(), "stable");
        assert_ne!(
            g,
            ChannelKey::new("t".repeat(64), format!("{}d", "c".repeat(127))).group_id()
        );
    }

    #[test]
    fn scoped_ids_differ_across_channels_and_tenants_and_are_stable() {
        let a = ChannelKey::new("acme", "agent-1").scoped_id("run-7/final");
        assert_eq!(
            a,
            ChannelKey::new("acme", "agent-1").scoped_id("run-7/final")
        );
        assert_eq!(a.len(), 64, "within SQS's 128-character deduplication id");
        assert_ne!(
            a,
            ChannelKey::new("acme", "agent-2").scoped_id("run-7/final")
        );
        assert_ne!(
            a,
            ChannelKey::new("globex", "agent-1").scoped_id("run-7/final")
        );
        assert_ne!(
            a,
            ChannelKey::new("acme", "agent-1").scoped_id("run-7/status")
        );
    }
}
