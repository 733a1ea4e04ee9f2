//! Fan-out: posting a committed run's frames to a channel's live
//! subscribers.
//!
//! Small channels are served inline by the function that committed the
//! run (the dispatcher, or the publish function for an HTTP publish: the
//! lowest latency). From [`FanoutPolicy::threshold`] subscribers on, it
//! splits the channel's subscription shards into ranges
//! and puts one [`FanoutJob`] per range on the fan-out queue, which the
//! fan-out function works in parallel: each job lists only its own shards
//! and posts to them. Either way each connection gets its frames in seq
//! order within a job; frames of different jobs may arrive out of order,
//! which the clients put right by seq.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use agentwire_protocol::ServerFrame;
use futures::StreamExt;
use serde_json::value::RawValue;

use super::push::{PushRetry, post_retrying};
use crate::clock::Clock;
use crate::model::{ChannelKey, FanoutJob, ShardRange, StoredEvent, Subscriber};
use crate::ports::{ConnectionRegistry, PushError, Pusher, StoreError};

/// When a channel's fan-out is sharded, and how finely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutPolicy {
    /// Channels with at least this many subscribers (the kept count) are
    /// fanned out by shard on the fan-out queue.
    pub threshold: u64,
    /// About how many subscribers one job posts to.
    pub per_job: u64,
}

impl Default for FanoutPolicy {
    /// Sharded from 500 subscribers, 250 per job: inline, 500 posts at 64
    /// in flight and 20-50 ms each take 0.2-0.4 s, about what the extra
    /// queue hop and a job's own posts cost.
    fn default() -> Self {
        Self {
            threshold: 500,
            per_job: 250,
        }
    }
}

impl FanoutPolicy {
    /// How many jobs a channel of `count` subscribers is split into; `None`
    /// to post inline.
    pub fn jobs(&self, count: u64) -> Option<usize> {
        if count < self.threshold.max(1) {
            return None;
        }
        let n = count.div_ceil(self.per_job.max(1));
        Some(usize::try_from(n).unwrap_or(usize::MAX).clamp(
            2.min(usize::from(crate::model::SUBSCRIPTION_SHARDS)),
            usize::from(crate::model::SUBSCRIPTION_SHARDS),
        ))
    }
}

/// Most bytes of frames one job carries (an SQS message holds 256 KiB; a
/// frame is at most 128 KiB, so one always fits).
pub const JOB_FRAMES_BUDGET: usize = 200 * 1024;

/// When each event was published (Unix ms, from its `ts`), for the
/// publish-to-post latency recorded once its frames are posted.
pub(crate) fn published_ms(events: &[StoredEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(StoredEvent::published_ms)
        .collect()
}

/// The jobs of one committed run: for each shard range, the run's frames
/// in chunks of at most [`JOB_FRAMES_BUDGET`] bytes (in seq order), with
/// the membership `version` read after the commit.
pub fn jobs_for(
    key: &ChannelKey,
    events: &[StoredEvent],
    frames: &[String],
    ranges: &[ShardRange],
    version: Option<u64>,
) -> Result<Vec<FanoutJob>, StoreError> {
    let raw = |f: &String| {
        RawValue::from_string(f.clone())
            .map_err(|e| StoreError::failed("build fan-out job", format!("frame is not JSON: {e}")))
    };
    let mut chunks: Vec<Vec<Box<RawValue>>> = vec![];
    let mut size = 0;
    for f in frames {
        if chunks.is_empty() || size + f.len() > JOB_FRAMES_BUDGET {
            chunks.push(vec![]);
            size = 0;
        }
        size += f.len();
        if let Some(c) = chunks.last_mut() {
            c.push(raw(f)?);
        }
    }
    let first_seq = events.first().map_or(0, |e| e.seq);
    let last_seq = events.last().map_or(0, |e| e.seq);
    let published = published_ms(events);
    let last = chunks.len().saturating_sub(1);
    let published = &published;
    Ok(ranges
        .iter()
        .flat_map(|r| {
            chunks.iter().enumerate().map(move |(i, frames)| FanoutJob {
                tenant: key.tenant.clone(),
                channel: key.channel.clone(),
                shards: *r,
                first_seq,
                last_seq,
                frames: frames.clone(),
                version,
                published_ms: if i == last {
                    published.clone()
                } else {
                    Vec::new()
                },
                path: None,
            })
        })
        .collect())
}

/// What posting to a set of subscribers came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanoutCounts {
    /// Subscribers still live afterwards (stale and expired ones left out).
    pub live: usize,
    /// Frames posted.
    pub posted: usize,
    /// Stale connections removed on `GoneException`.
    pub gone: usize,
    /// Connections given up for this run after a post failed.
    pub post_failures: usize,
    /// Posts retried after a throttle or server error.
    pub post_retries: usize,
    /// Subscribers whose token had expired: told and unsubscribed.
    pub token_expired: usize,
}

impl FanoutCounts {
    /// Adds another post round's counts (`live` too: the subscribers of
    /// several shard ranges).
    pub fn add(&mut self, o: FanoutCounts) {
        self.live += o.live;
        self.posted += o.posted;
        self.gone += o.gone;
        self.post_failures += o.post_failures;
        self.post_retries += o.post_retries;
        self.token_expired += o.token_expired;
    }
}

/// Posts frames to subscribers, `concurrency` connections at a time, each
/// connection's frames in order; prunes gone connections and stops live
/// delivery to expired tokens. Shared by the dispatcher (inline) and the
/// fan-out worker (one shard range).
pub(crate) struct Broadcaster {
    pub registry: Arc<dyn ConnectionRegistry>,
    pub pusher: Arc<dyn Pusher>,
    pub clock: Arc<dyn Clock>,
    pub concurrency: usize,
    pub push_retry: PushRetry,
}

impl Broadcaster {
    /// At least one post in flight; throttled posts retried by the default
    /// [`PushRetry`].
    pub(crate) fn new(
        registry: Arc<dyn ConnectionRegistry>,
        pusher: Arc<dyn Pusher>,
        clock: Arc<dyn Clock>,
        concurrency: usize,
    ) -> Self {
        Self {
            registry,
            pusher,
            clock,
            concurrency: concurrency.max(1),
            push_retry: PushRetry::default(),
        }
    }

    /// Posts `frames` to `subscribers`; then records the posts' metrics,
    /// how long it took, and (when anything was posted) each event's
    /// publish-to-post latency from `published_ms`, labelled with the
    /// `path` the events were committed by. The frames hold the
    /// events as stored: subscribers that announced gzip get them so, the
    /// others the same frames with their compressed texts expanded (made
    /// once for the run, only when one of them is live).
    pub(crate) async fn deliver<F: AsRef<str> + Sync>(
        &self,
        key: &ChannelKey,
        subscribers: &[Subscriber],
        frames: &[F],
        published_ms: &[u64],
        path: &str,
    ) -> FanoutCounts {
        let started = std::time::Instant::now();
        let counts = self.post_all(key, subscribers, frames).await;
        use crate::metrics as m;
        ::metrics::counter!(m::FRAMES_POSTED).increment(counts.posted as u64);
        ::metrics::counter!(m::POSTS_GONE).increment(counts.gone as u64);
        ::metrics::counter!(m::POSTS_FAILED).increment(counts.post_failures as u64);
        ::metrics::counter!(m::POSTS_THROTTLED).increment(counts.post_retries as u64);
        if counts.posted > 0 {
            ::metrics::histogram!(m::FANOUT_DURATION)
                .record(started.elapsed().as_secs_f64() * 1000.0);
            let now_ms = self.clock.epoch_ms();
            for p in published_ms {
                ::metrics::histogram!(m::DELIVERY_LATENCY, "path" => path.to_owned())
                    .record(now_ms.saturating_sub(*p) as f64);
            }
        }
        counts
    }

    async fn post_all<F: AsRef<str> + Sync>(
        &self,
        key: &ChannelKey,
        subscribers: &[Subscriber],
        frames: &[F],
    ) -> FanoutCounts {
        let now = self.clock.epoch_s();
        let (expired, live): (Vec<&Subscriber>, Vec<&Subscriber>) =
            subscribers.iter().partition(|s| s.token_expired(now));
        let as_stored: Vec<&str> = frames.iter().map(AsRef::as_ref).collect();
        let expanded: Option<Vec<String>> = if live.iter().any(|s| !s.gzip) {
            agentwire_protocol::gzip::expand_frames(frames)
        } else {
            None
        };
        let plain: Vec<&str> = match &expanded {
            Some(e) => e.iter().map(String::as_str).collect(),
            None => as_stored.clone(),
        };
        for s in &expired {
            self.stop_expired(key, &s.connection_id).await;
        }
        let mut counts = FanoutCounts {
            token_expired: expired.len(),
            ..FanoutCounts::default()
        };
        if live.is_empty() || frames.is_empty() {
            counts.live = live.len();
            return counts;
        }
        let total = live.len();
        let posted = AtomicUsize::new(0);
        let gone = AtomicUsize::new(0);
        let failed = AtomicUsize::new(0);
        let retries = AtomicUsize::new(0);
        futures::stream::iter(live)
            .for_each_concurrent(self.concurrency.max(1), |s| {
                let (posted, gone, failed, retries) = (&posted, &gone, &failed, &retries);
                let conn = s.connection_id.as_str();
                let frames = if s.gzip { &as_stored } else { &plain };
                async move {
                    for frame in frames {
                        let p =
                            post_retrying(self.pusher.as_ref(), conn, frame, self.push_retry).await;
                        retries.fetch_add(p.retries as usize, Ordering::Relaxed);
                        match p.result {
                            Ok(()) => {
                                posted.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(PushError::Gone) => {
                                gone.fetch_add(1, Ordering::Relaxed);
                                if let Err(e) = super::super::lifecycle::remove(
                                    self.registry.as_ref(),
                                    self.clock.as_ref(),
                                    conn,
                                )
                                .await
                                {
                                    tracing::warn!(connection_id = %conn, error = %e, "could not remove stale connection");
                                }
                                return;
                            }
                            Err(e) => {
                                // The connection missed this frame. The rest
                                // of the run would only widen the hole, and
                                // nothing may follow to show it (the run's
                                // last event): the connection is closed, so
                                // the client learns at once, reconnects and
                                // resumes from the log (a slow consumer's
                                // close).
                                failed.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(connection_id = %conn, error = %e, retries = p.retries, "post failed; closing the connection (the client resumes from the log)");
                                close_missed(self.pusher.as_ref(), conn).await;
                                return;
                            }
                        }
                    }
                }
            })
            .await;
        counts.gone = gone.into_inner();
        counts.live = total - counts.gone;
        counts.posted = posted.into_inner();
        counts.post_failures = failed.into_inner();
        counts.post_retries = retries.into_inner();
        counts
    }

    /// Live delivery to a connection whose token expired stops: it is told
    /// `token_expired` (the client reconnects with a fresh token and resumes
    /// from its last seq) and unsubscribed from the channel.
    async fn stop_expired(&self, key: &ChannelKey, connection_id: &str) {
        let frame = ServerFrame::error(
            agentwire_protocol::ErrorCode::TokenExpired,
            format!(
                "the token of this connection has expired; live delivery on {} stopped: reconnect with a fresh token and resume from your last seq",
                key.channel
            ),
            None,
        )
        .to_json();
        if let Err(e) = self.pusher.post(connection_id, &frame).await {
            tracing::info!(connection_id, error = %e, "could not tell a connection its token expired");
        }
        if let Err(e) = self.registry.unsubscribe(connection_id, key).await {
            tracing::warn!(connection_id, channel = %key, error = %e, "could not unsubscribe a connection whose token expired");
        }
    }
}

/// Closes a connection that missed a post for good (API Gateway's
/// `DeleteConnection`): its client reconnects and resumes from its last
/// seq, so the missed events come from the log. A connection already gone
/// needs nothing; a close that fails is logged (the client then learns of
/// the hole at the channel's next frame).
pub(crate) async fn close_missed(pusher: &dyn Pusher, connection_id: &str) {
    match pusher.close(connection_id).await {
        Ok(()) | Err(PushError::Gone) => {}
        Err(e) => {
            tracing::warn!(connection_id, error = %e, "could not close a connection that missed a post");
        }
    }
}

/// Most subscribers one warm dispatcher or fan-out worker keeps listed
/// across invocations (all its lists together); past it the cache starts
/// afresh.
pub const CACHED_SUBSCRIBERS_MAX: usize = 200_000;

/// Subscriber lists, each with the membership version read before it was
/// listed, reused while the channel's version is the same (see
/// docs/architecture.md, "Subscriber lists").
pub(crate) struct ListCache<K> {
    lists: std::sync::Mutex<Lists<K>>,
}

/// Key → (membership version, the subscribers listed after reading it).
type Lists<K> = HashMap<K, (u64, Arc<Vec<Subscriber>>)>;

impl<K> Default for ListCache<K> {
    fn default() -> Self {
        Self {
            lists: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> ListCache<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lists<K>> {
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, key: &K, version: u64) -> Option<Arc<Vec<Subscriber>>> {
        self.lock()
            .get(key)
            .filter(|(v, _)| *v == version)
            .map(|(_, l)| l.clone())
    }

    pub(crate) fn put(&self, key: &K, version: u64, list: Arc<Vec<Subscriber>>) {
        let mut lists = self.lock();
        lists.remove(key);
        let held: usize = lists.values().map(|(_, l)| l.len()).sum();
        if held + list.len() > CACHED_SUBSCRIBERS_MAX {
            lists.clear();
        }
        if list.len() <= CACHED_SUBSCRIBERS_MAX {
            lists.insert(key.clone(), (version, list));
        }
    }
}

/// What handling one message of the fan-out queue came to.
#[derive(Debug)]
pub enum FanoutOutcome {
    /// Posted (or given up per connection, as inline fan-out does).
    Done(FanoutCounts),
    /// The shard's subscribers could not be listed: the job comes back
    /// from the queue (nothing was posted yet).
    Retry(StoreError),
    /// Not a job at all: left to the queue's redrive policy, which moves it
    /// to the fan-out dead-letter queue.
    Invalid(String),
}

/// The fan-out function's use case: one job, one shard range, delivered by
/// [`Delivery::deliver_job`](super::Delivery::deliver_job).
pub struct FanoutWorker {
    delivery: super::Delivery,
}

impl FanoutWorker {
    pub fn new(
        registry: Arc<dyn ConnectionRegistry>,
        pusher: Arc<dyn Pusher>,
        clock: Arc<dyn Clock>,
        concurrency: usize,
    ) -> Self {
        Self {
            delivery: super::Delivery::new(registry, pusher, clock, concurrency),
        }
    }

    /// How throttled posts are retried (tests shorten the delays).
    pub fn with_push_retry(mut self, policy: PushRetry) -> Self {
        self.delivery = self.delivery.with_push_retry(policy);
        self
    }

    /// Lists the job's shards and posts its frames (see
    /// [`Delivery::deliver_job`](super::Delivery::deliver_job)).
    pub async fn run(&self, job: &FanoutJob) -> Result<FanoutCounts, StoreError> {
        self.delivery.deliver_job(job).await
    }

    /// One message body from the fan-out queue.
    pub async fn handle_message(&self, body: &str) -> FanoutOutcome {
        let job: FanoutJob = match serde_json::from_str(body) {
            Ok(j) => j,
            Err(e) => return FanoutOutcome::Invalid(format!("not a fan-out job: {e}")),
        };
        if !job.shards.is_valid() {
            return FanoutOutcome::Invalid(format!("shard range {} is not valid", job.shards));
        }
        match self.run(&job).await {
            Ok(counts) => {
                tracing::debug!(channel = %job.key(), shards = %job.shards, first_seq = job.first_seq, last_seq = job.last_seq, posted = counts.posted, "fan-out job done");
                FanoutOutcome::Done(counts)
            }
            Err(e) => FanoutOutcome::Retry(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::memory::{MemoryPusher, MemoryRegistry, connection};
    use crate::model::subscription_shard;

    #[test]
    fn small_channels_stay_inline_and_big_ones_split_by_size() {
        let p = FanoutPolicy {
            threshold: 500,
            per_job: 250,
        };
        assert_eq!(p.jobs(0), None);
        assert_eq!(p.jobs(499), None);
        assert_eq!(p.jobs(500), Some(2));
        assert_eq!(p.jobs(10_000), Some(40));
        assert_eq!(p.jobs(10_000_000), Some(256));
        let one = FanoutPolicy {
            threshold: 1,
            per_job: 1_000,
        };
        assert_eq!(
            one.jobs(1),
            Some(2),
            "a sharded channel is split at least in two"
        );
    }

    #[test]
    fn shard_ranges_cover_every_shard_once() {
        for n in [1, 2, 3, 7, 40, 255, 256, 1_000] {
            let ranges = ShardRange::split(n);
            assert_eq!(ranges.len(), n.min(256));
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges.last().map(|r| r.end), Some(256));
            for w in ranges.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert!(w[0].is_valid());
            }
        }
    }

    #[test]
    fn big_runs_are_chunked_within_the_job_budget_in_order() {
        let key = ChannelKey::new("t", "c");
        let frame = |i: usize| {
            format!(
                r#"{{"type":"event","seq":{i},"pad":"{}"}}"#,
                "x".repeat(90 * 1024)
            )
        };
        let frames: Vec<String> = (1..=5).map(frame).collect();
        let ranges = ShardRange::split(3);
        let jobs = jobs_for(&key, &[], &frames, &ranges, Some(1)).unwrap();
        // Two frames of ~90 KiB per job: 3 chunks per range.
        assert_eq!(jobs.len(), 9);
        for r in &ranges {
            let of_range: Vec<String> = jobs
                .iter()
                .filter(|j| j.shards == *r)
                .flat_map(|j| j.frames.iter().map(|f| f.get().to_owned()))
                .collect();
            assert_eq!(of_range, frames, "every frame once per range, in order");
        }
        for j in &jobs {
            let body = serde_json::to_string(j).unwrap();
            assert!(body.len() < 256 * 1024, "{} bytes", body.len());
        }
    }

    #[tokio::test]
    async fn a_job_lists_only_its_shards_and_posts_to_them() {
        let reg = Arc::new(MemoryRegistry::default());
        let pusher = Arc::new(MemoryPusher::default());
        let key = ChannelKey::new("t", "big");
        let ids: Vec<String> = (0..60).map(|i| format!("conn-{i}")).collect();
        for id in &ids {
            let c = connection(id, "t", "p", &["*"]);
            reg.put_connection(&c).await.unwrap();
            reg.subscribe(&c, &key, u64::MAX).await.unwrap();
        }
        let worker = FanoutWorker::new(reg.clone(), pusher.clone(), Arc::new(SystemClock), 8);
        let ranges = ShardRange::split(4);
        let frames = vec![r#"{"type":"event","seq":1}"#.to_owned()];
        let jobs = jobs_for(&key, &[], &frames, &ranges, Some(1)).unwrap();
        let mut reached = 0;
        for job in &jobs {
            let body = serde_json::to_string(job).unwrap();
            let FanoutOutcome::Done(c) = worker.handle_message(&body).await else {
                panic!("job failed")
            };
            let expected = ids
                .iter()
                .filter(|id| job.shards.contains(subscription_shard(id)))
                .count();
            assert_eq!(c.posted, expected, "range {}", job.shards);
            reached += c.posted;
        }
        assert_eq!(reached, ids.len());
        for id in &ids {
            assert_eq!(pusher.posts(id), frames, "{id} got the frame once");
        }
    }

    /// A job carries the frames as stored (compressed texts); the worker
    /// posts them so to subscribers that announced gzip and expanded to
    /// the others.
    #[tokio::test]
    async fn a_job_posts_compressed_texts_to_gzip_subscribers_and_texts_to_the_rest() {
        let reg = Arc::new(MemoryRegistry::default());
        let pusher = Arc::new(MemoryPusher::default());
        let key = ChannelKey::new("t", "big");
        for i in 0..6 {
            let mut c = connection(&format!("conn-{i}"), "t", "p", &["*"]);
            c.gzip = i % 2 == 0;
            reg.put_connection(&c).await.unwrap();
            reg.subscribe(&c, &key, u64::MAX).await.unwrap();
        }
        let plain =
            serde_json::json!({"stream": "s", "index": 0, "text": "$ cargo test\n".repeat(100)});
        let event = StoredEvent {
            key: key.clone(),
            epoch: "e".into(),
            seq: 1,
            id: "s:0".into(),
            kind: "out".into(),
            data: agentwire_protocol::gzip::compress_raw(&(&plain).into()).unwrap(),
            ts: "2026-12-08T09:00:00.000Z".into(),
        };
        let frames = agentwire_protocol::framing::coalesce(vec![event.frame()]);
        let jobs = jobs_for(&key, &[event], &frames, &ShardRange::split(1), Some(1)).unwrap();
        let worker = FanoutWorker::new(reg.clone(), pusher.clone(), Arc::new(SystemClock), 8);
        for job in &jobs {
            let body = serde_json::to_string(job).unwrap();
            assert!(matches!(
                worker.handle_message(&body).await,
                FanoutOutcome::Done(_)
            ));
        }
        for i in 0..6 {
            let posts = pusher.posts(&format!("conn-{i}"));
            assert_eq!(posts.len(), 1);
            let data =
                serde_json::from_str::<serde_json::Value>(&posts[0]).unwrap()["data"].clone();
            if i % 2 == 0 {
                assert!(data["gz"].is_string(), "conn-{i}: {data}");
            } else {
                assert_eq!(data, plain, "conn-{i}");
            }
        }
    }

    #[tokio::test]
    async fn a_warm_worker_reuses_its_shard_list_until_membership_moves() {
        let reg = Arc::new(MemoryRegistry::default());
        let pusher = Arc::new(MemoryPusher::default());
        let key = ChannelKey::new("t", "big");
        let subscribe = |id: String| {
            let reg = reg.clone();
            let key = key.clone();
            async move {
                let c = connection(&id, "t", "p", &["*"]);
                reg.put_connection(&c).await.unwrap();
                reg.subscribe(&c, &key, u64::MAX).await.unwrap();
            }
        };
        for i in 0..20 {
            subscribe(format!("c{i}")).await;
        }
        let worker = FanoutWorker::new(reg.clone(), pusher.clone(), Arc::new(SystemClock), 8);
        let frames = vec![r#"{"type":"event","seq":1}"#.to_owned()];
        let job = &jobs_for(&key, &[], &frames, &[ShardRange::ALL], None).unwrap()[0];
        for _ in 0..3 {
            assert_eq!(worker.run(job).await.unwrap().posted, 20);
        }
        assert_eq!(reg.listings(), 1, "three jobs, one listing");
        subscribe("late".into()).await;
        assert_eq!(
            worker.run(job).await.unwrap().posted,
            21,
            "the joiner is listed"
        );
        assert_eq!(reg.listings(), 2);
        assert_eq!(
            reg.membership_reads(),
            4,
            "a job without a version reads it"
        );
    }

    /// A job carries the version the dispatcher read after its commit: the
    /// worker reads no membership and reuses its list while jobs carry the
    /// version it was listed for.
    #[tokio::test]
    async fn a_job_with_the_dispatchers_version_needs_no_membership_read() {
        let reg = Arc::new(MemoryRegistry::default());
        let pusher = Arc::new(MemoryPusher::default());
        let key = ChannelKey::new("t", "big");
        for i in 0..20 {
            let c = connection(&format!("c{i}"), "t", "p", &["*"]);
            reg.put_connection(&c).await.unwrap();
            reg.subscribe(&c, &key, u64::MAX).await.unwrap();
        }
        let worker = FanoutWorker::new(reg.clone(), pusher.clone(), Arc::new(SystemClock), 8);
        let frames = vec![r#"{"type":"event","seq":1}"#.to_owned()];
        let job = |v| jobs_for(&key, &[], &frames, &[ShardRange::ALL], Some(v)).unwrap();
        let v = reg.membership(&key).await.unwrap().version;
        for _ in 0..3 {
            assert_eq!(worker.run(&job(v)[0]).await.unwrap().posted, 20);
        }
        assert_eq!((reg.listings(), reg.membership_reads()), (1, 1));
        let late = connection("late", "t", "p", &["*"]);
        reg.put_connection(&late).await.unwrap();
        reg.subscribe(&late, &key, u64::MAX).await.unwrap();
        assert_eq!(
            worker.run(&job(v + 1)[0]).await.unwrap().posted,
            21,
            "a job of the moved version lists again"
        );
        assert_eq!((reg.listings(), reg.membership_reads()), (2, 1));
    }

    #[tokio::test]
    async fn a_malformed_job_is_invalid_not_retried() {
        let reg = Arc::new(MemoryRegistry::default());
        let worker = FanoutWorker::new(
            reg,
            Arc::new(MemoryPusher::default()),
            Arc::new(SystemClock),
            8,
        );
        assert!(matches!(
            worker.handle_message("{").await,
            FanoutOutcome::Invalid(_)
        ));
        let bad = r#"{"tenant":"t","channel":"c","shards":{"start":9,"end":3},"first_seq":1,"last_seq":1,"frames":[]}"#;
        assert!(matches!(
            worker.handle_message(bad).await,
            FanoutOutcome::Invalid(r) if r.contains("9..3")
        ));
    }
}
