//! Reading a channel over HTTP, for the servers around agentwire (a fleet
//! UI, a chat bridge catching up): its history in pages, with the gap when
//! the start is no longer retained; who is there; its head, epoch,
//! retention and webhook mode. A token reads what it may join: its
//! `channels` grants apply; every read is taken from its tenant's read
//! rate (`read_rate`), so one tenant's pollers cannot crowd the others.

use std::sync::Arc;
use std::time::Duration;

use agentwire_protocol::{ErrorCode, ProtocolError, RawData};
use serde::Serialize;

use crate::auth::{AuthError, Grants, Verifier};
use crate::clock::Clock;
use crate::model::{ChannelKey, ChannelState, StoredEvent};
use crate::ports::{ChannelLog, ConnectionRegistry, ReadBudget, StoreError, WebhookDirectory};
use crate::usecases::quotas::{Limited, Quotas};
use crate::webhook::{WebhookMode, WebhookScope};

/// Events one history page holds by default, and at most.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

/// The most events one page carries, in bytes of their JSON
/// ([`StoredEvent::approx_len`]): within a Lambda response (6 MB) with
/// room for the rest. A page stops at the event that would pass it (never
/// before its first), and `next_after` goes on from there.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Why a read was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("the token does not grant reading channel {0:?}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(ProtocolError),
    #[error("the channel could not be read: {0}")]
    Store(#[from] StoreError),
    /// Over the tenant's read rate.
    #[error("{0}")]
    RateLimited(Limited),
}

impl ReadError {
    /// The stable error code of the JSON error body.
    pub fn code(&self) -> ErrorCode {
        match self {
            ReadError::Unauthorized(e) => e.code(),
            ReadError::Forbidden(_) => ErrorCode::Forbidden,
            ReadError::Invalid(e) => e.code,
            ReadError::Store(_) => ErrorCode::Internal,
            ReadError::RateLimited(_) => ErrorCode::RateLimited,
        }
    }
}

/// One event as history returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEvent {
    pub seq: u64,
    pub id: String,
    pub kind: String,
    /// The event's JSON, as stored.
    pub data: RawData,
    pub ts: String,
}

impl From<StoredEvent> for HistoryEvent {
    fn from(e: StoredEvent) -> Self {
        Self {
            seq: e.seq,
            id: e.id,
            kind: e.kind,
            data: e.data,
            ts: e.ts,
        }
    }
}

/// A range of seqs no longer retained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub from: u64,
    pub to: u64,
}

/// One page of a channel's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPage {
    pub channel: String,
    pub epoch: String,
    pub head: u64,
    /// The oldest retained seq (`None`: nothing is).
    pub oldest: Option<u64>,
    pub events: Vec<HistoryEvent>,
    /// What after `after` is gone, if anything.
    pub gap: Option<Gap>,
    /// The `after` of the next page; `None` when this one reaches the head.
    pub next_after: Option<u64>,
}

/// Who is on a channel: the count and a sample of principals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresencePage {
    pub channel: String,
    pub count: u64,
    pub principals: Vec<String>,
}

/// Which webhook applies to a channel (never its URL or secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WebhookInfo {
    pub mode: WebhookMode,
    /// `channel` (its own) or `tenant` (the tenant's default).
    pub scope: &'static str,
}

/// A channel's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelInfo {
    pub channel: String,
    pub epoch: String,
    pub head: u64,
    pub oldest: Option<u64>,
    /// How long its events are kept, in seconds (its own or the deployment's).
    pub retention_s: u64,
    pub webhook: Option<WebhookInfo>,
}

/// The `after` and `limit` of a history request, from the query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    pub after: u64,
    pub limit: usize,
}

impl HistoryQuery {
    /// Parses the query parameters (absent: `after` 0, `limit` 100).
    pub fn parse(after: Option<&str>, limit: Option<&str>) -> Result<Self, ReadError> {
        let after = match after {
            None => 0,
            Some(s) => s.parse::<u64>().map_err(|_| {
                invalid(format!(
                    "after must be a seq, an integer of 0 or more, not {s:?}"
                ))
            })?,
        };
        let limit = match limit {
            None => DEFAULT_PAGE,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| invalid(format!("limit must be 1 to {MAX_PAGE}, not {s:?}")))?,
        };
        Ok(Self { after, limit })
    }
}

fn invalid(message: String) -> ReadError {
    ReadError::Invalid(ProtocolError::new(ErrorCode::InvalidRequest, message))
}

/// The read use case, over the log, the registry and the webhooks.
pub struct ChannelReads {
    log: Arc<dyn ChannelLog>,
    registry: Arc<dyn ConnectionRegistry>,
    webhooks: Arc<dyn WebhookDirectory>,
    clock: Arc<dyn Clock>,
    retention: Duration,
    quotas: Option<Arc<Quotas>>,
}

impl ChannelReads {
    pub fn new(
        log: Arc<dyn ChannelLog>,
        registry: Arc<dyn ConnectionRegistry>,
        webhooks: Arc<dyn WebhookDirectory>,
        clock: Arc<dyn Clock>,
        retention: Duration,
    ) -> Self {
        Self {
            log,
            registry,
            webhooks,
            clock,
            retention,
            quotas: None,
        }
    }

    /// Every read is taken from its tenant's read rate.
    pub fn with_quotas(mut self, quotas: Arc<Quotas>) -> Self {
        self.quotas = Some(quotas);
        self
    }

    /// Verifies the token and its `channels` grant for `channel`.
    async fn authorize(
        &self,
        verifier: &Verifier,
        token: Option<&str>,
        channel: &str,
    ) -> Result<ChannelKey, ReadError> {
        let claims = verifier
            .verify(token.ok_or(AuthError::Missing)?, self.clock.epoch_s())
            .await
            .map_err(|e| match e.unavailable() {
                // Keys or a store unavailable: ours, retryable (503).
                Some(s) => ReadError::Store(s),
                None => ReadError::Unauthorized(e),
            })?;
        agentwire_protocol::limits::validate_channel(channel).map_err(ReadError::Invalid)?;
        let grants = Grants::compile(&claims.channels).map_err(AuthError::from)?;
        if !grants.allows(channel) {
            return Err(ReadError::Forbidden(channel.to_owned()));
        }
        if let Some(quotas) = &self.quotas {
            quotas
                .check_read(&claims.tenant)
                .await
                .map_err(ReadError::RateLimited)?;
        }
        Ok(ChannelKey::new(&claims.tenant, channel))
    }

    /// The channel's state, or that of a channel with no log yet.
    async fn state(&self, key: &ChannelKey) -> Result<(ChannelState, Option<u64>), ReadError> {
        let state = self.log.channel(key).await?.unwrap_or_default();
        let oldest = self.log.oldest_retained(key, state.head).await?;
        Ok((state, oldest))
    }

    /// `GET /v1/channels/{channel}/events?after&limit`.
    pub async fn history(
        &self,
        verifier: &Verifier,
        token: Option<&str>,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<HistoryPage, ReadError> {
        let ck = self.authorize(verifier, token, channel).await?;
        let (state, oldest) = self.state(&ck).await?;
        let head = state.head;
        let want = query.after.saturating_add(1);
        let (gap, from) = match oldest {
            _ if want > head => (None, None),
            Some(o) if o > want => (
                Some(Gap {
                    from: want,
                    to: o - 1,
                }),
                Some(o),
            ),
            Some(_) => (None, Some(want)),
            None => (
                Some(Gap {
                    from: want,
                    to: head,
                }),
                None,
            ),
        };
        // Bounded by bytes as well as events: the adapter stops reading
        // once the page is full, whatever the events hold.
        let budget = ReadBudget {
            events: query.limit,
            bytes: MAX_PAGE_BYTES,
        };
        let stored = match from {
            Some(from) => self.log.read_range(&ck, from, head, budget).await?,
            None => vec![],
        };
        // Compressed texts are expanded (a reader over HTTP has no `hello`
        // to take them compressed), and the page is cut again at the
        // bound, the expanded events counted.
        let mut size = 0;
        let events: Vec<HistoryEvent> = stored
            .into_iter()
            .map(StoredEvent::expanded)
            .take_while(|e| {
                size += e.approx_len();
                size == e.approx_len() || size <= MAX_PAGE_BYTES
            })
            .map(HistoryEvent::from)
            .collect();
        let last = events.last().map(|e| e.seq);
        let next_after = match (from, last) {
            (Some(_), Some(last)) if last < head => Some(last),
            // A page the retention emptied between the two reads: go on
            // past it rather than loop.
            (Some(from), None) if from <= head => Some(head),
            _ => None,
        };
        Ok(HistoryPage {
            channel: channel.to_owned(),
            epoch: state.epoch,
            head,
            oldest,
            events,
            gap,
            next_after,
        })
    }

    /// `GET /v1/channels/{channel}/presence`.
    pub async fn presence(
        &self,
        verifier: &Verifier,
        token: Option<&str>,
        channel: &str,
    ) -> Result<PresencePage, ReadError> {
        let ck = self.authorize(verifier, token, channel).await?;
        let p = self.registry.presence(&ck).await?;
        Ok(PresencePage {
            channel: channel.to_owned(),
            count: p.count,
            principals: p.principals,
        })
    }

    /// `GET /v1/channels/{channel}`.
    pub async fn channel(
        &self,
        verifier: &Verifier,
        token: Option<&str>,
        channel: &str,
    ) -> Result<ChannelInfo, ReadError> {
        let ck = self.authorize(verifier, token, channel).await?;
        let (state, oldest) = self.state(&ck).await?;
        let webhook = self
            .webhooks
            .effective(&ck)
            .await?
            .map(|(scope, config)| WebhookInfo {
                mode: config.mode,
                scope: match scope {
                    WebhookScope::Channel(_) => "channel",
                    WebhookScope::TenantDefault(_) => "tenant",
                },
            });
        Ok(ChannelInfo {
            channel: channel.to_owned(),
            epoch: state.epoch,
            head: state.head,
            oldest,
            retention_s: state.retention_s.unwrap_or(self.retention.as_secs()),
            webhook,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenKey;
    use crate::clock::ManualClock;
    use crate::memory::{MemoryLog, MemoryRegistry, MemoryWebhooks, connection};
    use crate::model::Envelope;
    use crate::ports::WebhookStore;
    use crate::webhook::WebhookConfig;
    use serde_json::json;

    struct Fixture {
        reads: ChannelReads,
        log: Arc<MemoryLog>,
        registry: Arc<MemoryRegistry>,
        webhooks: Arc<MemoryWebhooks>,
        key: Verifier,
        token: String,
        clock: Arc<ManualClock>,
    }

    fn fixture() -> Fixture {
        let clock = Arc::new(ManualClock::new());
        let log = Arc::new(MemoryLog::with_clock(clock.clone()));
        let registry = Arc::new(MemoryRegistry::with_clock(clock.clone()));
        let webhooks = Arc::new(MemoryWebhooks::with_clock(clock.clone()));
        let key = TokenKey::hs256(b"k");
        let claims = TokenKey::claims(
            "t1",
            "ui",
            vec!["agent-*".into()],
            vec![],
            clock.epoch_s(),
            Duration::from_secs(60),
        );
        let token = key.sign(&claims).unwrap();
        let key = Verifier::new(key, clock.clone());
        Fixture {
            reads: ChannelReads::new(
                log.clone(),
                registry.clone(),
                webhooks.clone(),
                clock.clone(),
                Duration::from_secs(3600),
            ),
            log,
            registry,
            webhooks,
            key,
            token,
            clock,
        }
    }

    async fn commit(f: &Fixture, channel: &str, n: u64) -> ChannelKey {
        let ck = ChannelKey::new("t1", channel);
        let state = f.log.ensure_channel(&ck).await.unwrap();
        let events: Vec<Envelope> = (1..=n)
            .map(|i| Envelope {
                tenant: "t1".into(),
                channel: channel.into(),
                id: format!("e{i}"),
                kind: "note".into(),
                data: json!({"i": i}).into(),
                ts: "2026-12-05T10:00:00.000Z".into(),
            })
            .collect();
        f.log
            .append(
                &ck,
                &state,
                &events,
                crate::ports::Dedup::Record,
                f.clock.epoch_s() + 3600,
            )
            .await
            .unwrap();
        ck
    }

    fn q(after: u64, limit: usize) -> HistoryQuery {
        HistoryQuery { after, limit }
    }

    #[tokio::test]
    async fn history_pages_to_the_head() {
        let f = fixture();
        commit(&f, "agent-1", 5).await;
        let t = Some(f.token.as_str());
        let p = f
            .reads
            .history(&f.key, t, "agent-1", q(0, 2))
            .await
            .unwrap();
        assert_eq!(p.head, 5);
        assert_eq!(p.oldest, Some(1));
        assert!(!p.epoch.is_empty());
        assert_eq!(
            p.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(p.events[0].id, "e1");
        assert_eq!(p.events[1].data.value(), json!({"i": 2}));
        assert_eq!((p.gap, p.next_after), (None, Some(2)));
        let p = f
            .reads
            .history(&f.key, t, "agent-1", q(2, 10))
            .await
            .unwrap();
        assert_eq!(
            p.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(p.next_after, None, "this page reaches the head");
        let p = f
            .reads
            .history(&f.key, t, "agent-1", q(5, 10))
            .await
            .unwrap();
        assert!(p.events.is_empty());
        assert_eq!((p.gap, p.next_after), (None, None));
    }

    #[tokio::test]
    async fn history_from_before_the_oldest_retained_names_the_gap() {
        let f = fixture();
        let ck = commit(&f, "agent-1", 5).await;
        f.log.expire_through(&ck, 3);
        let t = Some(f.token.as_str());
        let p = f
            .reads
            .history(&f.key, t, "agent-1", q(1, 10))
            .await
            .unwrap();
        assert_eq!(p.gap, Some(Gap { from: 2, to: 3 }));
        assert_eq!(p.oldest, Some(4));
        assert_eq!(
            p.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![4, 5]
        );
        f.log.expire_through(&ck, 5);
        let p = f
            .reads
            .history(&f.key, t, "agent-1", q(0, 10))
            .await
            .unwrap();
        assert_eq!(p.gap, Some(Gap { from: 1, to: 5 }), "nothing retained");
        assert_eq!((p.oldest, p.next_after), (None, None));
    }

    #[tokio::test]
    async fn a_channel_without_a_log_reads_as_empty() {
        let f = fixture();
        let t = Some(f.token.as_str());
        let p = f
            .reads
            .history(&f.key, t, "agent-9", q(0, 10))
            .await
            .unwrap();
        assert_eq!((p.epoch.as_str(), p.head, p.oldest), ("", 0, None));
        assert!(p.events.is_empty() && p.gap.is_none() && p.next_after.is_none());
        let info = f.reads.channel(&f.key, t, "agent-9").await.unwrap();
        assert_eq!(info.retention_s, 3600);
        assert_eq!(info.webhook, None);
    }

    #[tokio::test]
    async fn reads_need_the_channels_grant_and_a_valid_token() {
        let f = fixture();
        let t = Some(f.token.as_str());
        let e = f
            .reads
            .history(&f.key, t, "other", q(0, 10))
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Forbidden);
        let e = f.reads.presence(&f.key, None, "agent-1").await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unauthorized);
        let e = f.reads.channel(&f.key, t, "bad channel").await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidChannel);
        f.clock.advance(Duration::from_secs(120));
        let e = f.reads.channel(&f.key, t, "agent-1").await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::TokenExpired);
    }

    #[test]
    fn the_query_is_checked() {
        assert_eq!(HistoryQuery::parse(None, None).unwrap(), q(0, DEFAULT_PAGE));
        assert_eq!(
            HistoryQuery::parse(Some("7"), Some("1000")).unwrap(),
            q(7, 1000)
        );
        for (after, limit) in [
            (Some("-1"), None),
            (Some("x"), None),
            (None, Some("0")),
            (None, Some("1001")),
            (None, Some("")),
        ] {
            let e = HistoryQuery::parse(after, limit).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidRequest, "{after:?} {limit:?}");
        }
    }

    #[tokio::test]
    async fn presence_and_the_channel_show_who_is_there_and_which_webhook_applies() {
        let f = fixture();
        let ck = commit(&f, "agent-1", 2).await;
        let c = connection("c1", "t1", "alice", &["agent-*"]);
        f.registry.put_connection(&c).await.unwrap();
        f.registry.subscribe(&c, &ck, c.expires_at).await.unwrap();
        let t = Some(f.token.as_str());
        let p = f.reads.presence(&f.key, t, "agent-1").await.unwrap();
        assert_eq!(p.count, 1);
        assert_eq!(p.principals, vec!["alice".to_owned()]);

        let config =
            WebhookConfig::new("https://h.example/", WebhookMode::Always, None, 0).unwrap();
        f.webhooks
            .put(&WebhookScope::TenantDefault("t1".into()), &config)
            .await
            .unwrap();
        let info = f.reads.channel(&f.key, t, "agent-1").await.unwrap();
        assert_eq!((info.head, info.oldest), (2, Some(1)));
        assert_eq!(
            info.webhook,
            Some(WebhookInfo {
                mode: WebhookMode::Always,
                scope: "tenant"
            })
        );
        let text = serde_json::to_string(&info).unwrap();
        assert!(!text.contains("h.example") && !text.contains(&config.secret));
    }

    #[tokio::test]
    async fn a_page_of_large_events_stops_within_its_byte_bound() {
        let f = fixture();
        let ck = ChannelKey::new("t1", "agent-1");
        let state = f.log.ensure_channel(&ck).await.unwrap();
        let big = "x".repeat(90 * 1024);
        let events: Vec<Envelope> = (1..=60)
            .map(|i| Envelope {
                tenant: "t1".into(),
                channel: "agent-1".into(),
                id: format!("e{i}"),
                kind: "blob".into(),
                data: json!(big).into(),
                ts: "2026-12-05T10:00:00.000Z".into(),
            })
            .collect();
        f.log
            .append(
                &ck,
                &state,
                &events,
                crate::ports::Dedup::Record,
                f.clock.epoch_s() + 3600,
            )
            .await
            .unwrap();
        let t = Some(f.token.as_str());
        let p = f
            .reads
            .history(&f.key, t, "agent-1", q(0, 1000))
            .await
            .unwrap();
        let n = p.events.len() as u64;
        assert!(n > 1 && n < 60, "{n} events");
        assert!(serde_json::to_string(&p).unwrap().len() < 5 * 1024 * 1024);
        assert_eq!(p.next_after, Some(n), "the next page goes on after it");
        let p2 = f
            .reads
            .history(&f.key, t, "agent-1", q(n, 1000))
            .await
            .unwrap();
        assert_eq!(p2.events[0].seq, n + 1);
    }

    #[tokio::test]
    async fn reads_are_taken_from_the_tenants_read_rate_and_refused_past_it() {
        use crate::limits::{Scope, TenantLimits};
        use crate::memory::MemoryLimits;
        let f = fixture();
        commit(&f, "agent-1", 3).await;
        let store = Arc::new(MemoryLimits::default());
        let quotas = Quotas::new(
            store.clone(),
            store,
            TenantLimits {
                read_rate: Some(2),
                read_burst: Some(3),
                ..Default::default()
            },
            f.clock.clone(),
        );
        let Fixture {
            reads,
            key,
            token,
            clock,
            ..
        } = f;
        let reads = reads.with_quotas(Arc::new(quotas));
        let t = Some(token.as_str());
        // History, presence and state draw from one bucket of 3.
        reads.history(&key, t, "agent-1", q(0, 10)).await.unwrap();
        reads.presence(&key, t, "agent-1").await.unwrap();
        reads.channel(&key, t, "agent-2").await.unwrap();
        let e = reads
            .history(&key, t, "agent-1", q(0, 10))
            .await
            .unwrap_err();
        let ReadError::RateLimited(l) = &e else {
            panic!("{e}")
        };
        assert_eq!((l.scope, l.retry_after_ms), (Scope::Read, 500));
        assert_eq!(e.code(), ErrorCode::RateLimited);
        // A refused token is refused before it costs a read.
        let e = reads
            .history(&key, Some("nope"), "agent-1", q(0, 10))
            .await
            .unwrap_err();
        assert!(matches!(e, ReadError::Unauthorized(_)), "{e}");
        clock.advance(Duration::from_millis(500));
        let p = reads.history(&key, t, "agent-1", q(0, 10)).await.unwrap();
        assert_eq!(p.events.len(), 3);
    }
}
