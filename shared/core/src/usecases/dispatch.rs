//! The dispatcher: a batch from the FIFO events queue is parsed, grouped
//! by channel, committed ([`Committer`]) and handed to [`Delivery`]; it
//! says which messages must come back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agentwire_protocol::ProtocolError;
use futures::StreamExt;

use crate::clock::Clock;
use crate::model::Envelope;
use crate::ports::{
    ChannelLog, ConnectionRegistry, DeadLetters, Dedup, FanoutQueue, Pusher, StoreError,
    WebhookDirectory, WebhookJobs,
};
use crate::usecases::commit::{Committed, Committer};
use crate::usecases::delivery::fanout::FanoutPolicy;
use crate::usecases::delivery::push::PushRetry;
use crate::usecases::delivery::{Delivery, DeliveryReport, SETTINGS_TTL};

/// One message of the batch, as the queue delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub message_id: String,
    /// The FIFO `MessageGroupId`; order and the failure rule are per group.
    pub group_id: Option<String>,
    pub body: String,
    /// How many times the queue has delivered it (SQS's
    /// `ApproximateReceiveCount`; 1 the first time).
    pub receive_count: u32,
}

/// The `reason` label of a dead letter: `commit_failed`,
/// `duplicate_unresolved`, else `invalid_event` (an envelope that does not
/// parse or validate, whatever its protocol code).
fn dead_letter_reason(reason: &str) -> &'static str {
    for r in ["commit_failed", "duplicate_unresolved"] {
        if reason.starts_with(r) {
            return r;
        }
    }
    "invalid_event"
}

/// What a batch came to. `failed` are the message ids to report as
/// `batchItemFailures`; everything else may be deleted from the queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchReport {
    pub failed: Vec<String>,
    /// Events given a new seq.
    pub committed: usize,
    /// Redelivered events that already had a seq (delivered again with it).
    pub duplicates: usize,
    /// Envelopes that can never be committed, kept in the dead-letter queue.
    pub dead_lettered: usize,
    /// What delivering the committed runs came to (a post that failed for
    /// good closes its connection; the events stay in the log and the
    /// client fetches them from it).
    pub delivery: DeliveryReport,
}

impl DispatchReport {
    fn merge(&mut self, o: DispatchReport) {
        self.failed.extend(o.failed);
        self.committed += o.committed;
        self.duplicates += o.duplicates;
        self.dead_lettered += o.dead_lettered;
        self.delivery.add(&o.delivery);
    }
}

/// Most events committed in one transaction (DynamoDB allows 100 items:
/// the head plus an event and a dedup item per event).
const MAX_RUN: usize = 40;
/// From this receive on, a group's messages are committed one at a time, so
/// that one that cannot be committed is told apart from the valid ones
/// behind it.
const ISOLATE_FROM_RECEIVE: u32 = 2;
/// From this receive on, a message that still cannot be committed for a
/// permanent reason (a store error that is not `Unavailable`) is
/// dead-lettered with its reason, and its group goes on. A transient
/// failure (throttling, 5xx, a time-out, a transaction conflict) is never
/// dead-lettered here: the message is retried, its group waiting behind it
/// in order (the events queue's `maxReceiveCount` is far above this).
pub const DEAD_LETTER_FROM_RECEIVE: u32 = 3;
/// Groups of one batch worked on at once.
const GROUP_CONCURRENCY: usize = 4;

/// The dispatch use case.
pub struct Dispatcher {
    committer: Committer,
    delivery: Delivery,
    dead_letters: Arc<dyn DeadLetters>,
}

impl Dispatcher {
    /// Events of channels with no live subscriber (or a webhook in mode
    /// `always`) are handed to the webhook queue.
    pub fn with_webhooks(
        mut self,
        directory: Arc<dyn WebhookDirectory>,
        jobs: Arc<dyn WebhookJobs>,
    ) -> Self {
        self.delivery = self.delivery.with_webhooks(directory, jobs, SETTINGS_TTL);
        self
    }

    pub fn new(
        log: Arc<dyn ChannelLog>,
        registry: Arc<dyn ConnectionRegistry>,
        pusher: Arc<dyn Pusher>,
        dead_letters: Arc<dyn DeadLetters>,
        clock: Arc<dyn Clock>,
        retention: Duration,
        concurrency: usize,
    ) -> Self {
        Self {
            committer: Committer::new(log, clock.clone(), retention),
            delivery: Delivery::new(registry, pusher, clock, concurrency),
            dead_letters,
        }
    }

    /// Around a committer and a delivery built elsewhere (the deployment's
    /// wiring, with its settings' time to live).
    pub fn with_parts(
        committer: Committer,
        delivery: Delivery,
        dead_letters: Arc<dyn DeadLetters>,
    ) -> Self {
        Self {
            committer,
            delivery,
            dead_letters,
        }
    }

    /// How throttled posts are retried (tests shorten the delays).
    pub fn with_push_retry(mut self, policy: PushRetry) -> Self {
        self.delivery = self.delivery.with_push_retry(policy);
        self
    }

    /// Channels with at least `policy.threshold` subscribers are fanned
    /// out by shard through `queue` (see [`crate::usecases::delivery::fanout`]).
    pub fn with_fanout_queue(mut self, queue: Arc<dyn FanoutQueue>, policy: FanoutPolicy) -> Self {
        self.delivery = self.delivery.with_fanout_queue(queue, policy);
        self
    }

    /// Changes the fan-out threshold of a running dispatcher (the dev
    /// gateway's benchmarks compare inline and sharded on one crowd).
    pub fn set_fanout_threshold(&self, threshold: u64) {
        self.delivery.set_fanout_threshold(threshold);
    }

    /// Stores texts compressed or not, while running (see
    /// [`Committer::set_compression`](crate::usecases::Committer::set_compression)).
    pub fn set_compression(&self, on: bool) {
        self.committer.set_compression(on);
    }

    /// Changes how long channel settings are reused (commit and delivery).
    pub fn set_settings_ttl(&self, ttl: Duration) {
        self.committer.set_settings_ttl(ttl);
        self.delivery.set_settings_ttl(ttl);
    }

    /// Works through a batch. Per group, in order: invalid envelopes go to the
    /// dead-letter sink with their reason; valid ones are committed and then
    /// fanned out. The first message that cannot be committed (or
    /// dead-lettered) fails, and so does every later message of its group, so
    /// FIFO order survives the retry. Fan-out failures never fail a message:
    /// the event is in the log.
    pub async fn dispatch(&self, messages: Vec<QueueMessage>) -> DispatchReport {
        let groups = group_in_order(messages);
        let reports: Vec<DispatchReport> = futures::stream::iter(groups)
            .map(|msgs| self.dispatch_group(msgs))
            .buffer_unordered(GROUP_CONCURRENCY)
            .collect()
            .await;
        let mut total = DispatchReport::default();
        for r in reports {
            total.merge(r);
        }
        total
    }

    async fn dispatch_group(&self, msgs: Vec<QueueMessage>) -> DispatchReport {
        let mut report = DispatchReport::default();
        let parsed: Vec<Result<Envelope, ProtocolError>> =
            msgs.iter().map(|m| Envelope::parse(&m.body)).collect();
        let mut i = 0;
        while i < msgs.len() {
            let env = match &parsed[i] {
                Err(e) => {
                    let m = &msgs[i];
                    tracing::warn!(message_id = %m.message_id, reason = %e, "invalid envelope, dead-lettering");
                    if let Err(err) = self.dead_letter(m, &e.to_string(), &mut report).await {
                        tracing::error!(message_id = %m.message_id, error = %err, "dead-letter failed");
                        fail_rest(&mut report, &msgs[i..]);
                        break;
                    }
                    i += 1;
                    continue;
                }
                Ok(env) => env,
            };
            let key = env.key();
            let mut run = vec![env.clone()];
            let mut j = i + 1;
            let max_run = if msgs[i].receive_count >= ISOLATE_FROM_RECEIVE {
                1
            } else {
                MAX_RUN
            };
            while j < msgs.len() && run.len() < max_run {
                match &parsed[j] {
                    Ok(next) if next.key() == key => run.push(next.clone()),
                    _ => break,
                }
                j += 1;
            }
            match self.committer.commit(&key, &run, Dedup::Record).await {
                Ok(Committed {
                    events,
                    fresh,
                    unresolved,
                }) => {
                    report.committed += fresh;
                    ::metrics::counter!(crate::metrics::EVENTS_COMMITTED).increment(fresh as u64);
                    report.duplicates += run.len().saturating_sub(fresh + unresolved.len());
                    if !unresolved.is_empty()
                        && let Err(e) = self
                            .dead_letter_unresolved(
                                &msgs[i..j],
                                &parsed[i..j],
                                &unresolved,
                                &mut report,
                            )
                            .await
                    {
                        tracing::error!(channel = %key, error = %e, "dead-letter failed; the rest of the group will be retried");
                        fail_rest(&mut report, &msgs[i..]);
                        break;
                    }
                    let delivered = self.delivery.deliver(&key, &events).await;
                    report.delivery.add(&delivered.report);
                    if let Err(e) = delivered.outcome {
                        tracing::error!(channel = %key, error = %e, "delivery failed (subscribers unlisted or the webhook hand-off); the run will be redelivered");
                        fail_rest(&mut report, &msgs[i..]);
                        break;
                    }
                    i = j;
                }
                Err(e @ StoreError::Failed { .. })
                    if run.len() == 1 && msgs[i].receive_count >= DEAD_LETTER_FROM_RECEIVE =>
                {
                    let m = &msgs[i];
                    let reason = format!(
                        "commit_failed: not committed after {} receives: {e}",
                        m.receive_count
                    );
                    tracing::error!(channel = %key, message_id = %m.message_id, reason, "dead-lettering a message that keeps failing; its group goes on");
                    if let Err(err) = self.dead_letter(m, &reason, &mut report).await {
                        tracing::error!(message_id = %m.message_id, error = %err, "dead-letter failed");
                        fail_rest(&mut report, &msgs[i..]);
                        break;
                    }
                    i = j;
                }
                Err(e) => {
                    tracing::error!(channel = %key, error = %e, "commit failed; the rest of the group will be retried");
                    fail_rest(&mut report, &msgs[i..]);
                    break;
                }
            }
        }
        report
    }

    /// Dead-letters the messages whose id had a live dedup record but no
    /// retained event, with the reason.
    async fn dead_letter_unresolved(
        &self,
        msgs: &[QueueMessage],
        parsed: &[Result<Envelope, ProtocolError>],
        unresolved: &[String],
        report: &mut DispatchReport,
    ) -> Result<(), StoreError> {
        for (m, p) in msgs.iter().zip(parsed) {
            if p.as_ref().is_ok_and(|e| unresolved.contains(&e.id)) {
                self.dead_letter(
                    m,
                    "duplicate_unresolved: the event id has a live dedup record but its event is no longer in the log",
                    report,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Keeps a message that will not be committed in the events DLQ, with
    /// its reason, and counts it.
    async fn dead_letter(
        &self,
        m: &QueueMessage,
        reason: &str,
        report: &mut DispatchReport,
    ) -> Result<(), StoreError> {
        self.dead_letters
            .record(&m.message_id, &m.body, reason)
            .await?;
        report.dead_lettered += 1;
        ::metrics::counter!(crate::metrics::DEAD_LETTERED, "reason" => dead_letter_reason(reason))
            .increment(1);
        Ok(())
    }
}

fn fail_rest(report: &mut DispatchReport, rest: &[QueueMessage]) {
    report
        .failed
        .extend(rest.iter().map(|m| m.message_id.clone()));
}

/// Messages grouped by `MessageGroupId` (or, without one, each alone), the
/// groups in order of first appearance and each group in queue order.
fn group_in_order(messages: Vec<QueueMessage>) -> Vec<Vec<QueueMessage>> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<QueueMessage>> = HashMap::new();
    for m in messages {
        let g = m
            .group_id
            .clone()
            .unwrap_or_else(|| format!("\0{}", m.message_id));
        if !groups.contains_key(&g) {
            order.push(g.clone());
        }
        groups.entry(g).or_default().push(m);
    }
    order
        .into_iter()
        .filter_map(|g| groups.remove(&g))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::memory::{MemoryDeadLetters, MemoryLog, MemoryPusher, MemoryRegistry, connection};
    use crate::model::{ChannelKey, ShardRange};
    use serde_json::json;

    struct Fx {
        d: Dispatcher,
        log: Arc<MemoryLog>,
        reg: Arc<MemoryRegistry>,
        pusher: Arc<MemoryPusher>,
        dlq: Arc<MemoryDeadLetters>,
    }

    fn fx() -> Fx {
        let log = Arc::new(MemoryLog::default());
        let reg = Arc::new(MemoryRegistry::default());
        let pusher = Arc::new(MemoryPusher::default());
        let dlq = Arc::new(MemoryDeadLetters::default());
        let d = Dispatcher::new(
            log.clone(),
            reg.clone(),
            pusher.clone(),
            dlq.clone(),
            Arc::new(SystemClock),
            Duration::from_secs(3600),
            4,
        );
        Fx {
            d,
            log,
            reg,
            pusher,
            dlq,
        }
    }

    fn msg(n: usize, channel: &str, id: &str) -> QueueMessage {
        let env = json!({"tenant":"acme","channel":channel,"id":id,"kind":"status","data":{"n":n},"ts":"2026-11-23T09:00:00.000Z"});
        QueueMessage {
            message_id: format!("m{n}"),
            group_id: Some(format!("acme#{channel}")),
            body: env.to_string(),
            receive_count: 1,
        }
    }

    async fn subscribe(fx: &Fx, conn: &str, channel: &str) {
        subscribe_as(fx, connection(conn, "acme", conn, &["*"]), channel).await;
    }

    /// Records `c` and subscribes it to `channel`.
    async fn subscribe_as(fx: &Fx, c: crate::model::Connection, channel: &str) {
        fx.reg.put_connection(&c).await.unwrap();
        fx.reg
            .subscribe(&c, &ChannelKey::new("acme", channel), u64::MAX)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn assigns_gap_free_seqs_and_coalesces_a_run() {
        let fx = fx();
        subscribe(&fx, "c1", "a").await;
        let r =
            fx.d.dispatch(vec![
                msg(1, "a", "e1"),
                msg(2, "a", "e2"),
                msg(3, "a", "e3"),
            ])
            .await;
        assert!(r.failed.is_empty());
        assert_eq!(r.committed, 3);
        let seqs: Vec<u64> = fx
            .log
            .events(&ChannelKey::new("acme", "a"))
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        let posts = fx.pusher.posts("c1");
        assert_eq!(
            posts.len(),
            1,
            "three events of one run are one batch frame"
        );
        let v: serde_json::Value = serde_json::from_str(&posts[0]).unwrap();
        assert_eq!(v["type"], "batch");
        assert_eq!(v["events"][2]["seq"], 3);
    }

    #[tokio::test]
    async fn a_redelivered_id_keeps_its_seq() {
        let fx = fx();
        fx.d.dispatch(vec![msg(1, "a", "e1"), msg(2, "a", "e2")])
            .await;
        let r =
            fx.d.dispatch(vec![msg(3, "a", "e2"), msg(4, "a", "e3")])
                .await;
        assert_eq!((r.committed, r.duplicates), (1, 1));
        let ev = fx.log.events(&ChannelKey::new("acme", "a"));
        let pairs: Vec<(u64, &str)> = ev.iter().map(|e| (e.seq, e.id.as_str())).collect();
        assert_eq!(pairs, vec![(1, "e1"), (2, "e2"), (3, "e3")]);
    }

    #[tokio::test]
    async fn a_failed_commit_fails_the_rest_of_its_group_only() {
        let fx = fx();
        fx.log.fail_channel(&ChannelKey::new("acme", "b"));
        let batch = vec![
            msg(1, "a", "a1"),
            msg(2, "b", "b1"),
            msg(3, "a", "a2"),
            msg(4, "b", "b2"),
            msg(5, "c", "c1"),
        ];
        let mut r = fx.d.dispatch(batch).await;
        r.failed.sort();
        assert_eq!(r.failed, vec!["m2".to_string(), "m4".to_string()]);
        assert_eq!(fx.log.events(&ChannelKey::new("acme", "a")).len(), 2);
        assert_eq!(fx.log.events(&ChannelKey::new("acme", "c")).len(), 1);
        assert!(fx.log.events(&ChannelKey::new("acme", "b")).is_empty());
    }

    /// A message that keeps failing is isolated from its group on the second
    /// receive and dead-lettered on the third, so the valid messages behind
    /// it are committed instead of following it to the DLQ.
    #[tokio::test]
    async fn a_message_that_keeps_failing_is_dead_lettered_and_its_group_goes_on() {
        let fx = fx();
        fx.log.fail_id("poison");
        let batch = |receive_count| {
            vec![
                msg(1, "a", "poison"),
                msg(2, "a", "ok-1"),
                msg(3, "a", "ok-2"),
            ]
            .into_iter()
            .map(|mut m| {
                m.receive_count = receive_count;
                m
            })
            .collect::<Vec<_>>()
        };
        let mut r = fx.d.dispatch(batch(1)).await;
        r.failed.sort();
        assert_eq!(
            r.failed,
            vec!["m1", "m2", "m3"],
            "one transaction: all retried"
        );
        let mut r = fx.d.dispatch(batch(2)).await;
        r.failed.sort();
        assert_eq!(
            r.failed,
            vec!["m1", "m2", "m3"],
            "isolated, not dead-lettered yet"
        );
        let r = fx.d.dispatch(batch(3)).await;
        assert!(r.failed.is_empty(), "{r:?}");
        assert_eq!((r.dead_lettered, r.committed), (1, 2));
        let dl = fx.dlq.records();
        assert_eq!(dl[0].0, "m1");
        assert!(
            dl[0]
                .2
                .starts_with("commit_failed: not committed after 3 receives"),
            "{}",
            dl[0].2
        );
        let ids: Vec<String> = fx
            .log
            .events(&ChannelKey::new("acme", "a"))
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec!["ok-1", "ok-2"]);
    }

    /// A store that stays unavailable (throttled, 5xx) is waited out: its
    /// messages are retried on every receive, never dead-lettered, and the
    /// group keeps its order once the store answers.
    #[tokio::test]
    async fn transient_failures_are_retried_and_never_dead_lettered() {
        let fx = fx();
        let key = ChannelKey::new("acme", "a");
        fx.log.fail_channel(&key);
        let batch = |receive_count| {
            vec![msg(1, "a", "t-1"), msg(2, "a", "t-2")]
                .into_iter()
                .map(|mut m| {
                    m.receive_count = receive_count;
                    m
                })
                .collect::<Vec<_>>()
        };
        for receive in 1..=20 {
            let mut r = fx.d.dispatch(batch(receive)).await;
            r.failed.sort();
            assert_eq!(r.failed, vec!["m1", "m2"], "receive {receive}: retried");
            assert_eq!(r.dead_lettered, 0, "receive {receive}: never dead-lettered");
        }
        assert!(fx.dlq.records().is_empty());
        fx.log.heal_channel(&key);
        let r = fx.d.dispatch(batch(21)).await;
        assert_eq!((r.committed, r.dead_lettered), (2, 0), "{r:?}");
        let ids: Vec<String> = fx.log.events(&key).into_iter().map(|e| e.id).collect();
        assert_eq!(ids, vec!["t-1", "t-2"], "in order");
    }

    #[tokio::test]
    async fn invalid_envelopes_are_dead_lettered_with_a_reason_and_do_not_block() {
        let fx = fx();
        let bad = QueueMessage {
            message_id: "bad".into(),
            group_id: Some("acme#a".into()),
            body: "{\"tenant\":\"acme\"}".into(),
            receive_count: 1,
        };
        let r =
            fx.d.dispatch(vec![msg(1, "a", "e1"), bad, msg(2, "a", "e2")])
                .await;
        assert!(r.failed.is_empty());
        assert_eq!(r.dead_lettered, 1);
        let dl = fx.dlq.records();
        assert_eq!(dl.len(), 1);
        assert_eq!(dl[0].0, "bad");
        assert!(dl[0].2.contains("invalid_event"), "{}", dl[0].2);
        assert_eq!(fx.log.events(&ChannelKey::new("acme", "a")).len(), 2);
    }

    #[tokio::test]
    async fn a_failed_dead_letter_fails_the_rest_of_the_group() {
        let fx = fx();
        fx.dlq.fail();
        let bad = QueueMessage {
            message_id: "bad".into(),
            group_id: Some("acme#a".into()),
            body: "nope".into(),
            receive_count: 1,
        };
        let mut r =
            fx.d.dispatch(vec![msg(1, "a", "e1"), bad, msg(2, "a", "e2")])
                .await;
        r.failed.sort();
        assert_eq!(r.failed, vec!["bad".to_string(), "m2".to_string()]);
    }

    #[tokio::test]
    async fn gone_connections_are_removed_and_others_still_get_the_event() {
        let fx = fx();
        subscribe(&fx, "live", "a").await;
        subscribe(&fx, "dead", "a").await;
        fx.pusher.set_gone("dead");
        let r = fx.d.dispatch(vec![msg(1, "a", "e1")]).await;
        assert_eq!((r.delivery.posts.posted, r.delivery.posts.gone), (1, 1));
        assert_eq!(fx.pusher.posts("live").len(), 1);
        assert!(fx.reg.get_connection("dead").await.unwrap().is_none());
        assert_eq!(
            fx.reg.subscriber_ids(&ChannelKey::new("acme", "a")),
            vec!["live".to_string()]
        );
    }

    #[tokio::test]
    async fn a_subscriber_whose_token_expired_is_told_and_gets_no_more_events() {
        let fx = fx();
        let mut stale = connection("stale", "acme", "stale", &["*"]);
        stale.token_exp = SystemClock.epoch_s() - 60;
        subscribe_as(&fx, stale, "a").await;
        subscribe(&fx, "live", "a").await;
        let r = fx.d.dispatch(vec![msg(1, "a", "e1")]).await;
        assert_eq!(
            (r.delivery.posts.token_expired, r.delivery.posts.posted),
            (1, 1)
        );
        let told = fx.pusher.posts("stale");
        assert_eq!(told.len(), 1);
        assert!(told[0].contains(r#""code":"token_expired""#), "{}", told[0]);
        assert_eq!(
            fx.reg.subscriber_ids(&ChannelKey::new("acme", "a")),
            vec!["live".to_string()],
            "unsubscribed"
        );
        fx.d.dispatch(vec![msg(2, "a", "e2")]).await;
        assert_eq!(fx.pusher.posts("stale").len(), 1, "nothing more");
        assert_eq!(fx.pusher.posts("live").len(), 2);
    }

    #[tokio::test]
    async fn throttled_posts_are_retried_and_a_lasting_failure_closes_that_connection_only() {
        let fx = fx();
        subscribe(&fx, "slow", "a").await;
        subscribe(&fx, "busy", "a").await;
        subscribe(&fx, "ok", "a").await;
        fx.pusher.fail_next("busy", 2, true); // throttled twice, then through
        fx.pusher.fail_next("slow", 100, true); // stays throttled
        let d = fx.d.with_push_retry(PushRetry {
            attempts: 4,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(4),
        });
        let r = d.dispatch(vec![msg(1, "a", "e1")]).await;
        assert!(r.failed.is_empty(), "a failed post never fails the message");
        assert_eq!(r.delivery.posts.posted, 2);
        assert_eq!(r.delivery.posts.post_failures, 1);
        assert_eq!(r.delivery.posts.post_retries, 2 + 3);
        assert_eq!(fx.pusher.attempts("slow"), 4, "bounded: 4 attempts");
        assert_eq!(fx.pusher.posts("busy").len(), 1);
        assert_eq!(fx.pusher.posts("ok").len(), 1);
        assert!(
            fx.reg.get_connection("slow").await.unwrap().is_some(),
            "a throttled connection is not removed"
        );
        // It missed the event: it is closed, so its client reconnects and
        // resumes from the log now rather than at the channel's next frame.
        assert!(
            fx.pusher.is_gone("slow"),
            "the connection that missed a post is closed"
        );
        assert!(!fx.pusher.is_gone("busy") && !fx.pusher.is_gone("ok"));
    }

    /// A listing that fails now and then is retried; one that keeps
    /// failing fails the run, which the queue delivers again (with its
    /// seq), instead of leaving the subscribers to find out at the
    /// channel's next event.
    #[tokio::test]
    async fn subscribers_that_cannot_be_listed_fail_the_run_for_redelivery() {
        let fx = fx();
        subscribe(&fx, "c1", "a").await;
        fx.reg.fail_listings(2);
        let r = fx.d.dispatch(vec![msg(1, "a", "e1")]).await;
        assert!(r.failed.is_empty(), "two failures are retried");
        assert_eq!(fx.pusher.posts("c1").len(), 1);
        subscribe(&fx, "c2", "a").await;
        fx.reg
            .fail_listings(crate::usecases::delivery::LIST_ATTEMPTS as usize);
        let r = fx.d.dispatch(vec![msg(2, "a", "e2")]).await;
        assert_eq!(r.failed, ["m2"], "the run comes back");
        assert_eq!(r.committed, 1, "committed all the same");
        assert!(fx.pusher.posts("c2").is_empty());
        let again = fx.d.dispatch(vec![msg(2, "a", "e2")]).await;
        assert!(again.failed.is_empty());
        assert_eq!((again.committed, again.duplicates), (0, 1));
        let seqs: Vec<u64> = fx
            .pusher
            .posts("c2")
            .iter()
            .map(|p| {
                serde_json::from_str::<serde_json::Value>(p).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, [2], "delivered on redelivery with its seq");
    }

    /// Four dispatchers on four threads commit to one channel; the log
    /// yields between each writer's read of the head and its commit, so
    /// commits really race and the `HeadMoved` retry path is taken (counted).
    /// A message whose commit kept losing is redelivered, as SQS would.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_never_share_or_skip_a_seq() {
        let fx = fx();
        fx.log.interleave_writers();
        let d = Arc::new(fx.d);
        let mut tasks = Vec::new();
        for w in 0..4 {
            let d = d.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0..10 {
                    let m = msg(w * 100 + k, "a", &format!("w{w}-{k}"));
                    while !d.dispatch(vec![m.clone()]).await.failed.is_empty() {}
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let events = fx.log.events(&ChannelKey::new("acme", "a"));
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=40).collect::<Vec<u64>>());
        let ids: std::collections::HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), 40, "each event once");
        assert!(
            fx.log.head_moved() > 0,
            "the race happened: commits were refused because the head moved"
        );
    }

    async fn with_webhook(
        fx: Fx,
        mode: crate::webhook::WebhookMode,
    ) -> (Dispatcher, Arc<crate::memory::MemoryWebhookJobs>) {
        use crate::usecases::WebhookAdmin;
        use crate::webhook::{UrlPolicy, WebhookScope};
        let store = Arc::new(crate::memory::MemoryWebhooks::default());
        let admin = Arc::new(WebhookAdmin::new(
            store.clone(),
            UrlPolicy {
                allow_insecure_loopback: true,
                allow_hosts: vec![],
            },
            Arc::new(SystemClock),
        ));
        admin
            .set(
                &WebhookScope::TenantDefault("acme".into()),
                "http://127.0.0.1:9/h",
                mode,
                None,
            )
            .await
            .unwrap();
        let jobs = Arc::new(crate::memory::MemoryWebhookJobs::default());
        (fx.d.with_webhooks(store, jobs.clone()), jobs)
    }

    #[tokio::test]
    async fn without_a_live_subscriber_every_event_goes_to_the_webhook_in_order() {
        let fx = fx();
        let (d, jobs) = with_webhook(fx, crate::webhook::WebhookMode::Fallback).await;
        let r = d
            .dispatch(vec![msg(1, "a", "status-1"), msg(2, "a", "final-1")])
            .await;
        assert!(r.failed.is_empty());
        assert_eq!(r.delivery.webhook_jobs, 2);
        let sent: Vec<(u64, String)> = jobs
            .take_scheduled()
            .into_iter()
            .map(|(j, delay)| {
                assert_eq!(delay, Duration::ZERO);
                (j.event.seq, j.event.id)
            })
            .collect();
        assert_eq!(
            sent,
            vec![(1, "status-1".to_string()), (2, "final-1".to_string())]
        );
    }

    #[tokio::test]
    async fn a_live_subscriber_means_no_fallback_but_always_mirrors() {
        let fx1 = fx();
        subscribe(&fx1, "c1", "a").await;
        let (d, jobs) = with_webhook(fx1, crate::webhook::WebhookMode::Fallback).await;
        d.dispatch(vec![msg(1, "a", "e1")]).await;
        assert!(jobs.take_scheduled().is_empty());

        let fx2 = fx();
        subscribe(&fx2, "c1", "a").await;
        let (d, jobs) = with_webhook(fx2, crate::webhook::WebhookMode::Always).await;
        d.dispatch(vec![msg(1, "a", "e1")]).await;
        assert_eq!(jobs.take_scheduled().len(), 1);
    }

    #[tokio::test]
    async fn a_subscriber_that_turns_out_gone_counts_as_nobody() {
        let fx = fx();
        subscribe(&fx, "dead", "a").await;
        fx.pusher.set_gone("dead");
        let (d, jobs) = with_webhook(fx, crate::webhook::WebhookMode::Fallback).await;
        let r = d.dispatch(vec![msg(1, "a", "e1")]).await;
        assert_eq!((r.delivery.posts.gone, r.delivery.webhook_jobs), (1, 1));
        assert_eq!(jobs.take_scheduled().len(), 1);
    }

    #[tokio::test]
    async fn a_failed_hand_off_fails_the_run_so_it_comes_back() {
        let fx = fx();
        let (d, jobs) = with_webhook(fx, crate::webhook::WebhookMode::Fallback).await;
        jobs.fail();
        let mut r = d.dispatch(vec![msg(1, "a", "e1"), msg(2, "a", "e2")]).await;
        r.failed.sort();
        assert_eq!(r.failed, vec!["m1".to_string(), "m2".to_string()]);
    }

    /// Stream texts are stored compressed; a subscriber that announced gzip
    /// gets them so, another (and the webhook) gets the texts back, each
    /// through the same run's frames.
    #[tokio::test]
    async fn stream_texts_are_stored_compressed_and_each_subscriber_gets_its_form() {
        let fx = fx();
        let mut zipped = connection("zipped", "acme", "zipped", &["*"]);
        zipped.gzip = true;
        subscribe_as(&fx, zipped, "a").await;
        subscribe(&fx, "plain", "a").await;
        let text = "\u{1b}[1m\u{1b}[32m   Compiling\u{1b}[0m serde v1.0.228\n".repeat(300);
        let stream = |i: usize| {
            let env = json!({"tenant":"acme","channel":"a","id":format!("s:{i}"),"kind":"out",
                "data":{"stream":"s","index":i,"text":text},"ts":"2026-12-08T09:00:00.000Z"});
            QueueMessage {
                message_id: format!("s{i}"),
                group_id: Some("acme#a".into()),
                body: env.to_string(),
                receive_count: 1,
            }
        };
        let (log, pusher) = (fx.log.clone(), fx.pusher.clone());
        let (d, jobs) = with_webhook(fx, crate::webhook::WebhookMode::Always).await;
        let r = d
            .dispatch(vec![stream(0), stream(1), msg(3, "a", "status")])
            .await;
        assert!(r.failed.is_empty());
        let plain = |i: usize| json!({"stream":"s","index":i,"text":text});

        let stored = log.events(&ChannelKey::new("acme", "a"));
        assert_eq!(stored.len(), 3);
        for (i, e) in stored[..2].iter().enumerate() {
            assert!(
                e.data.len() * 10 < text.len(),
                "stored compressed: {} bytes",
                e.data.len()
            );
            assert_eq!(
                agentwire_protocol::gzip::expand(&e.data.value(), 1 << 20).unwrap(),
                Some(plain(i))
            );
        }
        assert_eq!(
            stored[2].data.value(),
            json!({"n": 3}),
            "other data as published"
        );

        let datas = |conn: &str| -> Vec<serde_json::Value> {
            events_posted(&pusher, conn)
                .iter()
                .map(|e| e["data"].clone())
                .collect()
        };
        let zipped = datas("zipped");
        assert_eq!(zipped.len(), 3);
        assert_eq!(pusher.posts("zipped").len(), 1, "compressed, one frame");
        assert!(zipped[0]["gz"].is_string() && zipped[1]["gz"].is_string());
        assert_eq!(
            agentwire_protocol::gzip::expand(&zipped[1], 1 << 20).unwrap(),
            Some(plain(1))
        );
        assert_eq!(datas("plain"), [plain(0), plain(1), json!({"n": 3})]);
        let webhook: Vec<serde_json::Value> = jobs
            .take_scheduled()
            .into_iter()
            .map(|(j, _)| j.event.data.value())
            .collect();
        assert_eq!(
            webhook,
            [plain(0), plain(1), json!({"n": 3})],
            "the webhook gets the texts"
        );
    }

    /// Every event posted to `conn`, single or batched, in order.
    fn events_posted(pusher: &MemoryPusher, conn: &str) -> Vec<serde_json::Value> {
        pusher
            .posts(conn)
            .iter()
            .flat_map(|f| {
                let v: serde_json::Value = serde_json::from_str(f).unwrap();
                match v["type"].as_str() {
                    Some("batch") => v["events"].as_array().unwrap().clone(),
                    Some("event") => vec![v],
                    _ => vec![],
                }
            })
            .collect()
    }

    /// The seqs of every event frame (single or batched) posted to `conn`.
    fn seqs_posted(pusher: &MemoryPusher, conn: &str) -> Vec<u64> {
        events_posted(pusher, conn)
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_stable_channel_is_listed_once_and_re_listed_when_membership_moves() {
        let fx = fx();
        subscribe(&fx, "c1", "a").await;
        subscribe(&fx, "c2", "a").await;
        for n in 1..=5 {
            let r = fx.d.dispatch(vec![msg(n, "a", &format!("e{n}"))]).await;
            assert_eq!(r.delivery.posts.posted, 2);
        }
        assert_eq!(fx.reg.listings(), 1, "five events, one listing");
        subscribe(&fx, "c3", "a").await;
        let r = fx.d.dispatch(vec![msg(6, "a", "e6")]).await;
        assert_eq!(
            (
                r.delivery.lists_read,
                r.delivery.lists_reused,
                r.delivery.posts.posted
            ),
            (1, 0, 3)
        );
        fx.reg
            .unsubscribe("c1", &ChannelKey::new("acme", "a"))
            .await
            .unwrap();
        let r = fx.d.dispatch(vec![msg(7, "a", "e7")]).await;
        assert_eq!((r.delivery.lists_read, r.delivery.posts.posted), (1, 2));
        let r = fx.d.dispatch(vec![msg(8, "a", "e8")]).await;
        assert_eq!((r.delivery.lists_read, r.delivery.lists_reused), (0, 1));
        assert_eq!(seqs_posted(&fx.pusher, "c1"), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(seqs_posted(&fx.pusher, "c2"), (1..=8).collect::<Vec<_>>());
        assert_eq!(seqs_posted(&fx.pusher, "c3"), vec![6, 7, 8]);
    }

    /// A join is "subscribe, then read the head": every seq after the head
    /// it read must reach it live. The join is made to happen at each point
    /// of a warm dispatcher's run where a reused list could miss it.
    #[tokio::test]
    async fn a_join_during_a_commit_gets_every_seq_after_the_head_it_read() {
        for hold_before_commit in [true, false] {
            let Fx {
                d,
                log,
                reg,
                pusher,
                ..
            } = fx();
            let d = Arc::new(d);
            let key = ChannelKey::new("acme", "a");
            let c1 = connection("c1", "acme", "c1", &["*"]);
            reg.put_connection(&c1).await.unwrap();
            reg.subscribe(&c1, &key, u64::MAX).await.unwrap();
            // Warm: the list [c1] is cached.
            d.dispatch(vec![msg(1, "a", "e1")]).await;
            d.dispatch(vec![msg(2, "a", "e2")]).await;
            assert_eq!(reg.listings(), 1);

            if hold_before_commit {
                log.before_append.arm();
            } else {
                reg.before_membership.arm();
            }
            let run = tokio::spawn({
                let d = d.clone();
                async move { d.dispatch(vec![msg(3, "a", "e3")]).await }
            });
            if hold_before_commit {
                log.before_append.reached().await;
            } else {
                reg.before_membership.reached().await;
            }
            // The join, exactly there.
            let j = connection("j", "acme", "j", &["*"]);
            reg.put_connection(&j).await.unwrap();
            assert!(reg.subscribe(&j, &key, u64::MAX).await.unwrap());
            let head = log.channel(&key).await.unwrap().unwrap().head;
            assert_eq!(head, if hold_before_commit { 2 } else { 3 });
            if hold_before_commit {
                log.before_append.release();
            } else {
                reg.before_membership.release();
            }
            run.await.unwrap();
            d.dispatch(vec![msg(4, "a", "e4")]).await;

            let live: Vec<u64> = seqs_posted(&pusher, "j")
                .into_iter()
                .filter(|s| *s > head)
                .collect();
            assert_eq!(
                live,
                ((head + 1)..=4).collect::<Vec<_>>(),
                "held before the commit: {hold_before_commit}"
            );
            assert_eq!(seqs_posted(&pusher, "c1"), vec![1, 2, 3, 4]);
        }
    }

    #[tokio::test]
    async fn a_big_channel_is_handed_to_the_fanout_queue_by_shard() {
        let log = Arc::new(MemoryLog::default());
        let reg = Arc::new(MemoryRegistry::default());
        let pusher = Arc::new(MemoryPusher::default());
        let queue = Arc::new(crate::memory::MemoryFanoutQueue::default());
        let d = Dispatcher::new(
            log.clone(),
            reg.clone(),
            pusher.clone(),
            Arc::new(MemoryDeadLetters::default()),
            Arc::new(SystemClock),
            Duration::from_secs(3600),
            4,
        )
        .with_fanout_queue(
            queue.clone(),
            FanoutPolicy {
                threshold: 10,
                per_job: 4,
            },
        );
        let key = ChannelKey::new("acme", "big");
        let small = ChannelKey::new("acme", "small");
        for i in 0..10 {
            let c = connection(&format!("b{i}"), "acme", "p", &["*"]);
            reg.put_connection(&c).await.unwrap();
            reg.subscribe(&c, &key, u64::MAX).await.unwrap();
            if i < 9 {
                reg.subscribe(&c, &small, u64::MAX).await.unwrap();
            }
        }
        let r = d
            .dispatch(vec![
                msg(1, "big", "x1"),
                msg(2, "big", "x2"),
                msg(3, "small", "s1"),
            ])
            .await;
        assert_eq!(r.delivery.fanout_jobs, 3, "10 subscribers at 4 per job");
        assert_eq!(r.delivery.posts.posted, 9, "the small channel stays inline");
        assert_eq!(
            reg.listings(),
            1,
            "the big channel is not listed by the dispatcher"
        );
        let jobs = queue.take();
        assert_eq!(jobs.len(), 3);
        let covered: Vec<ShardRange> = jobs.iter().map(|j| j.shards).collect();
        assert_eq!(covered, ShardRange::split(3));
        assert!(jobs.iter().all(|j| (j.first_seq, j.last_seq) == (1, 2)));

        // The worker posts each job's frames to its shards only.
        let worker = crate::usecases::FanoutWorker::new(
            reg.clone(),
            pusher.clone(),
            Arc::new(SystemClock),
            4,
        );
        for j in &jobs {
            worker.run(j).await.unwrap();
        }
        for i in 0..10 {
            let got: Vec<u64> = seqs_posted(&pusher, &format!("b{i}"))
                .into_iter()
                .filter(|_| true)
                .collect();
            // b0..b8 also got s1 (seq 1 of the small channel) inline.
            let expected: Vec<u64> = if i < 9 { vec![1, 1, 2] } else { vec![1, 2] };
            let mut sorted = got.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, expected, "b{i}");
        }

        // A queue that fails: inline instead, nothing lost.
        queue.fail(true);
        let r = d.dispatch(vec![msg(4, "big", "x3")]).await;
        assert_eq!((r.delivery.fanout_jobs, r.delivery.posts.posted), (0, 10));
    }
}
