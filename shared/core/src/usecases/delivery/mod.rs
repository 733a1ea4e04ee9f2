//! What happens after commit: committed events reach their channel's live
//! subscribers and, when nobody is live (or the webhook wants every
//! event), its webhook. One home for the dispatcher (events from the
//! queue), the publish function (HTTP publishes committed directly) and
//! the fan-out worker (one shard range of a big channel):
//!
//! - [`Delivery::deliver`]: after a commit. A small channel's frames are
//!   posted inline ([`fanout::Broadcaster`], the subscriber list reused
//!   while the membership version stands); a big one's are split into
//!   fan-out jobs by shard range ([`fanout::jobs_for`]); then the webhook
//!   hand-off.
//! - [`Delivery::deliver_job`]: one fan-out job, in the fan-out worker.
//! - [`push`]: one post with its bounded retries.
//! - [`webhook`]: the webhook function's delivery of a handed-off job
//!   (signed POST, retries on a schedule, holds, dead letters).
//!
//! Events are committed with their stream and chunk texts compressed;
//! the frames carry them so to subscribers that announced gzip, and
//! expanded to the others and to webhooks.
//!
//! Posting never fails a commit: a connection that misses a frame is
//! closed and resumes from the log. Listing the subscribers and the
//! hand-off can fail ([`Delivered::outcome`]); the caller has the run
//! delivered again (the dispatcher lets the queue redeliver it; the publish
//! function answers a retryable 503, and the publisher's retry with its
//! key resolves to the committed events and delivers them again).

pub mod fanout;
pub mod push;
pub mod webhook;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agentwire_protocol::framing::coalesce;

use crate::cache::TtlCache;
use crate::clock::Clock;
use crate::model::{ChannelKey, FanoutJob, ShardRange, StoredEvent, WebhookJob};
use crate::ports::{
    ConnectionRegistry, FanoutQueue, Pusher, StoreError, WebhookDirectory, WebhookJobs,
};
use crate::webhook::config::{WebhookConfig, WebhookScope};
use fanout::{Broadcaster, FanoutCounts, FanoutPolicy, ListCache, jobs_for, published_ms};
use push::PushRetry;

/// How long a warm function reuses a channel's webhook setting: a webhook
/// set, changed or removed applies to new events within this time.
pub const SETTINGS_TTL: Duration = Duration::from_secs(10);

/// What delivering a run came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The posts (live subscribers left: 0 when they could not be listed,
    /// so the webhook gets the events rather than nobody).
    pub posts: FanoutCounts,
    /// Events handed to the webhook queue.
    pub webhook_jobs: usize,
    /// Jobs put on the fan-out queue (big channels).
    pub fanout_jobs: usize,
    /// Subscriber lists read from the registry.
    pub lists_read: usize,
    /// Subscriber lists reused because the membership had not changed.
    pub lists_reused: usize,
}

impl DeliveryReport {
    /// Adds another run's counts (several runs' live subscribers add up).
    pub fn add(&mut self, o: &DeliveryReport) {
        self.posts.add(o.posts);
        self.webhook_jobs += o.webhook_jobs;
        self.fanout_jobs += o.fanout_jobs;
        self.lists_read += o.lists_read;
        self.lists_reused += o.lists_reused;
    }
}

/// A run delivered: the report, and whether every step that must not be
/// skipped was made: listing the subscribers (retried
/// [`LIST_ATTEMPTS`] times) and the webhook hand-off when the channel
/// wanted one. An error is `Unavailable` when trying again may succeed;
/// the caller has the run delivered again (the queue's redelivery, the
/// publisher's retry), never drops it silently.
#[derive(Debug)]
pub struct Delivered {
    pub report: DeliveryReport,
    pub outcome: Result<(), StoreError>,
}

/// Attempts at listing a channel's subscribers before the delivery fails
/// (with backoff: 25, 50, 100, 200 ms).
pub const LIST_ATTEMPTS: u32 = 5;

/// Where big channels' fan-out goes.
struct Sharded {
    queue: Arc<dyn FanoutQueue>,
    /// The policy's threshold, changeable on a running function.
    threshold: AtomicU64,
    per_job: u64,
}

impl Sharded {
    fn policy(&self) -> FanoutPolicy {
        FanoutPolicy {
            threshold: self.threshold.load(Ordering::Relaxed),
            per_job: self.per_job,
        }
    }
}

/// Where events without a live subscriber go.
struct Webhooks {
    directory: Arc<dyn WebhookDirectory>,
    jobs: Arc<dyn WebhookJobs>,
    /// Each channel's effective webhook, for [`SETTINGS_TTL`].
    settings: TtlCache<ChannelKey, Option<(WebhookScope, WebhookConfig)>>,
}

/// How the events a [`Delivery`] delivers were committed: the `path`
/// label of their delivery latency (`delivery_latency_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryPath {
    /// By the publish function (an HTTP publish).
    Direct,
    /// By the dispatcher, from the events queue.
    Queue,
}

impl DeliveryPath {
    pub fn label(self) -> &'static str {
        match self {
            DeliveryPath::Direct => "direct",
            DeliveryPath::Queue => "queue",
        }
    }
}

/// The delivery component (see the module documentation).
pub struct Delivery {
    path: DeliveryPath,
    registry: Arc<dyn ConnectionRegistry>,
    clock: Arc<dyn Clock>,
    broadcaster: Broadcaster,
    sharded: Option<Sharded>,
    webhooks: Option<Webhooks>,
    /// A channel's whole subscriber list (inline posts).
    lists: ListCache<ChannelKey>,
    /// One shard range's list (fan-out jobs).
    shard_lists: ListCache<(ChannelKey, ShardRange)>,
}

impl Delivery {
    /// Posts inline to every channel, `concurrency` connections at a time,
    /// without a webhook; see the `with_` methods.
    pub fn new(
        registry: Arc<dyn ConnectionRegistry>,
        pusher: Arc<dyn Pusher>,
        clock: Arc<dyn Clock>,
        concurrency: usize,
    ) -> Self {
        Self {
            path: DeliveryPath::Queue,
            broadcaster: Broadcaster::new(registry.clone(), pusher, clock.clone(), concurrency),
            registry,
            clock,
            sharded: None,
            webhooks: None,
            lists: ListCache::default(),
            shard_lists: ListCache::default(),
        }
    }

    /// Events committed by `path` (the queue's, unless told).
    pub fn with_path(mut self, path: DeliveryPath) -> Self {
        self.path = path;
        self
    }

    /// How throttled posts are retried (tests shorten the delays).
    pub fn with_push_retry(mut self, policy: PushRetry) -> Self {
        self.broadcaster.push_retry = policy;
        self
    }

    /// Channels with at least `policy.threshold` subscribers are fanned
    /// out by shard through `queue`.
    pub fn with_fanout_queue(mut self, queue: Arc<dyn FanoutQueue>, policy: FanoutPolicy) -> Self {
        self.sharded = Some(Sharded {
            queue,
            threshold: policy.threshold.into(),
            per_job: policy.per_job,
        });
        self
    }

    /// Events of channels with no live subscriber (or a webhook in mode
    /// `always`) are handed to the webhook queue; each channel's setting is
    /// reused for `settings_ttl`.
    pub fn with_webhooks(
        mut self,
        directory: Arc<dyn WebhookDirectory>,
        jobs: Arc<dyn WebhookJobs>,
        settings_ttl: Duration,
    ) -> Self {
        self.webhooks = Some(Webhooks {
            directory,
            jobs,
            settings: TtlCache::new(settings_ttl, self.clock.clone()),
        });
        self
    }

    /// Changes the fan-out threshold of a running function (the dev
    /// gateway's benchmarks compare inline and sharded on one crowd).
    pub fn set_fanout_threshold(&self, threshold: u64) {
        if let Some(s) = &self.sharded {
            s.threshold.store(threshold.max(1), Ordering::Relaxed);
        }
    }

    /// Changes how long a channel's webhook setting is reused, on a running
    /// function.
    pub fn set_settings_ttl(&self, ttl: Duration) {
        if let Some(w) = &self.webhooks {
            w.settings.set_ttl(ttl);
        }
    }

    /// The channel's effective webhook, from `w`'s cache while it is fresh.
    async fn webhook(
        w: &Webhooks,
        key: &ChannelKey,
    ) -> Result<Option<(WebhookScope, WebhookConfig)>, StoreError> {
        if let Some(hit) = w.settings.get(key) {
            return Ok(hit);
        }
        let effective = w.directory.effective(key).await?;
        w.settings.put(key.clone(), effective.clone());
        Ok(effective)
    }

    /// Delivers a committed run (its events in seq order): posts to the
    /// live subscribers, then the webhook hand-off when the channel wants
    /// it.
    pub async fn deliver(&self, key: &ChannelKey, events: &[StoredEvent]) -> Delivered {
        let mut report = DeliveryReport::default();
        if events.is_empty() {
            return Delivered {
                report,
                outcome: Ok(()),
            };
        }
        let posted = self.post(key, events, &mut report).await;
        let handoff = self.hand_off(key, events, &mut report).await;
        Delivered {
            report,
            outcome: posted.and(handoff),
        }
    }

    /// The channel's subscribers, the listing retried on a transient
    /// failure.
    async fn list(&self, key: &ChannelKey) -> Result<Vec<crate::model::Subscriber>, StoreError> {
        let mut attempt = 0;
        loop {
            match self.registry.subscribers(key).await {
                Ok(list) => return Ok(list),
                Err(e) if e.is_retryable() && attempt + 1 < LIST_ATTEMPTS => {
                    tracing::warn!(channel = %key, attempt, error = %e, "could not list subscribers; retrying");
                    tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Posts the events to every live subscriber: by shard on the fan-out
    /// queue for a big channel, else inline, each connection's frames in
    /// seq order.
    ///
    /// The membership (kept count and version) is read after the commit.
    /// A subscriber list read after a membership read is reused while the
    /// version stays the same: a join subscribes (moving the version)
    /// before it reads the head, so a join whose head is older than this
    /// run moved the version before this read, and the list is read anew.
    async fn post(
        &self,
        key: &ChannelKey,
        events: &[StoredEvent],
        report: &mut DeliveryReport,
    ) -> Result<(), StoreError> {
        let frames = coalesce(events.iter().map(StoredEvent::frame).collect());
        let membership = match self.registry.membership(key).await {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(channel = %key, error = %e, "could not read the membership; listing the subscribers");
                None
            }
        };
        if let (Some(m), Some(sharded)) = (membership, &self.sharded)
            && let Some(n) = sharded.policy().jobs(m.count)
        {
            let enqueued =
                match jobs_for(key, events, &frames, &ShardRange::split(n), Some(m.version)) {
                    Ok(mut jobs) => {
                        for j in &mut jobs {
                            j.path = Some(self.path.label().to_owned());
                        }
                        sharded.queue.enqueue(&jobs).await.map(|()| jobs.len())
                    }
                    Err(e) => Err(e),
                };
            match enqueued {
                Ok(jobs) => {
                    report.fanout_jobs += jobs;
                    report.posts.live = usize::try_from(m.count).unwrap_or(usize::MAX);
                    return Ok(());
                }
                Err(e) => {
                    // Inline is slower, never wrong (jobs that did go out
                    // post again; clients drop what they have by seq).
                    tracing::warn!(channel = %key, error = %e, "could not enqueue fan-out jobs; posting inline");
                }
            }
        }
        let subscribers = match membership.and_then(|m| self.lists.get(key, m.version)) {
            Some(list) => {
                report.lists_reused += 1;
                list
            }
            None => match self.list(key).await {
                Ok(list) => {
                    report.lists_read += 1;
                    let list = Arc::new(list);
                    if let Some(m) = membership {
                        self.lists.put(key, m.version, list.clone());
                    }
                    list
                }
                Err(e) => {
                    // Nobody was posted to: the run must be delivered
                    // again, not left for the subscribers to find out at
                    // the channel's next event.
                    tracing::error!(channel = %key, error = %e, "could not list subscribers; the run is to be delivered again");
                    report.posts.post_failures += 1;
                    return Err(e);
                }
            },
        };
        let counts = self
            .broadcaster
            .deliver(
                key,
                subscribers.as_slice(),
                &frames,
                &published_ms(events),
                self.path.label(),
            )
            .await;
        report.posts = counts;
        Ok(())
    }

    /// Hands the events to the channel's webhook when it wants them: no live
    /// subscriber (mode `fallback`) or always (mode `always`).
    async fn hand_off(
        &self,
        key: &ChannelKey,
        events: &[StoredEvent],
        report: &mut DeliveryReport,
    ) -> Result<(), StoreError> {
        let Some(w) = &self.webhooks else {
            return Ok(());
        };
        let Some((_, config)) = Self::webhook(w, key).await? else {
            return Ok(());
        };
        if !config.wants(report.posts.live, self.clock.epoch_s()) {
            return Ok(());
        }
        for e in events {
            let event = e.clone().expanded().into_frame();
            w.jobs
                .schedule(&WebhookJob::new(&key.tenant, event), Duration::ZERO)
                .await?;
            report.webhook_jobs += 1;
        }
        Ok(())
    }

    /// One fan-out job: lists the job's shards (and no other) and posts its
    /// frames. A warm worker reuses the list it read for the same shards
    /// while the membership version stands: the version read after the
    /// commit and put in the job (so the ordering argument of the inline
    /// path holds here too, see docs/architecture.md), or, for a job
    /// without one, the version it reads itself.
    pub async fn deliver_job(&self, job: &FanoutJob) -> Result<FanoutCounts, StoreError> {
        let key = job.key();
        let version = match job.version {
            Some(v) => Some(v),
            None => match self.registry.membership(&key).await {
                Ok(m) => Some(m.version),
                Err(e) => {
                    tracing::warn!(channel = %key, error = %e, "could not read the membership; listing the shards");
                    None
                }
            },
        };
        let slot = (key.clone(), job.shards);
        let subscribers = match version.and_then(|v| self.shard_lists.get(&slot, v)) {
            Some(list) => list,
            None => {
                let list = Arc::new(self.registry.subscribers_in(&key, job.shards).await?);
                if let Some(v) = version {
                    self.shard_lists.put(&slot, v, list.clone());
                }
                list
            }
        };
        let frames: Vec<&str> = job.frames.iter().map(|f| f.get()).collect();
        Ok(self
            .broadcaster
            .deliver(
                &key,
                &subscribers,
                &frames,
                &job.published_ms,
                match job.path.as_deref() {
                    Some("direct") => DeliveryPath::Direct.label(),
                    Some("queue") => DeliveryPath::Queue.label(),
                    _ => "unknown",
                },
            )
            .await)
    }
}
