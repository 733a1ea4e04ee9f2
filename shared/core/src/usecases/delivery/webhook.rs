//! Delivering one webhook job: sign, POST, and decide what the answer means.
//!
//! - 2xx: delivered.
//! - 408, 429, 5xx, a timeout or a connection failure: retried on the
//!   schedule (honouring `Retry-After`), the job put back on the queue with
//!   an SQS delay, so no function sleeps; exhausted: dead-lettered.
//! - 410: the webhook is disabled (with the reason) and the job
//!   dead-lettered.
//! - any other status: a permanent failure, dead-lettered.
//! - no webhook any more (removed, expired, turned off, disabled) or a URL
//!   that the policy now refuses: dead-lettered with that reason.
//!
//! - a receiver that timed out is held (per tenant and host, for
//!   `hold_for`, 30 s in a deployment): its other jobs are not sent while
//!   the hold lasts but counted as an attempt that failed and rescheduled
//!   to its end at least, so they wait in the queue instead of each taking
//!   one of the function's few instances for the POST's time-out. When the
//!   hold ends, one job claims the probe (a conditional write); an answer
//!   of any kind ends the hold, another time-out renews it. One tenant's
//!   hanging receiver thus takes at most the instances its jobs held when
//!   it started hanging, then one probe at a time, and the other tenants'
//!   deliveries go on.
//!
//! Every attempt of a job carries the same `webhook-id` (the event id scoped
//! to its tenant and channel, [`ChannelKey::scoped_id`]), so a
//! receiver deduplicates on it.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, random_unit};
use crate::model::{ChannelKey, WebhookJob};
use crate::ports::{
    ReceiverHolds, SendOutcome, StoreError, WebhookDirectory, WebhookJobs, WebhookSender,
    WebhookStore,
};
use crate::webhook::schedule::hop;
use crate::webhook::signature::signature_header;
use crate::webhook::{RetrySchedule, UrlPolicy, UrlRefusal, WebhookMode, WebhookScope};

/// What became of a webhook job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Delivered {
        status: u16,
    },
    /// Failed; attempt again after `delay`.
    Retrying {
        delay: Duration,
    },
    /// Not due yet; sent on for another hop.
    Deferred {
        delay: Duration,
    },
    /// Not sent: its receiver is held after a time-out; attempted again
    /// after `delay`.
    Held {
        delay: Duration,
    },
    DeadLettered {
        reason: String,
    },
}

/// The delivery use case.
pub struct Deliverer {
    directory: Arc<dyn WebhookDirectory>,
    store: Arc<dyn WebhookStore>,
    policy: UrlPolicy,
    sender: Arc<dyn WebhookSender>,
    jobs: Arc<dyn WebhookJobs>,
    schedule: RetrySchedule,
    clock: Arc<dyn Clock>,
    /// Where in the ±10% jitter band a delay falls (0..1); random in production.
    jitter: Arc<dyn Fn() -> f64 + Send + Sync>,
    holds: Option<Holds>,
}

/// The receiver holds and their timing.
struct Holds {
    store: Arc<dyn ReceiverHolds>,
    /// How long a receiver that timed out is held.
    hold_for: Duration,
    /// How long a probe may take (the POST's time-out and some): others
    /// wait that long for its answer.
    probe_for: Duration,
}

/// What a receiver's hold lets a job do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// No hold: send.
    Open,
    /// The hold had ended and this job claimed the probe (the hold now
    /// ends at this time, Unix ms): send, then end or renew the hold.
    Probe(u64),
    /// Held until this time (Unix ms): do not send.
    Held(u64),
}

/// The receiver a job's POST goes to: its tenant's, on that host and port.
fn receiver(tenant: &str, url: &url::Url) -> String {
    format!(
        "{tenant}#{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or(0)
    )
}

impl Deliverer {
    /// `directory` finds a job's webhook, `store` records a webhook
    /// disabled by a 410, `policy` checks its URL again at every attempt.
    pub fn new(
        directory: Arc<dyn WebhookDirectory>,
        store: Arc<dyn WebhookStore>,
        policy: UrlPolicy,
        sender: Arc<dyn WebhookSender>,
        jobs: Arc<dyn WebhookJobs>,
        schedule: RetrySchedule,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            directory,
            store,
            policy,
            sender,
            jobs,
            schedule,
            clock,
            jitter: Arc::new(random_unit),
            holds: None,
        }
    }

    /// Holds a receiver that timed out for `hold_for`, its probes allowed
    /// `probe_for` (see the module's documentation).
    pub fn with_holds(
        mut self,
        store: Arc<dyn ReceiverHolds>,
        hold_for: Duration,
        probe_for: Duration,
    ) -> Self {
        self.holds = Some(Holds {
            store,
            hold_for,
            probe_for,
        });
        self
    }

    /// Whether a job to `receiver` may be sent now. A store that fails
    /// lets it through (logged): a hold never stops deliveries.
    async fn gate(&self, receiver: &str) -> Gate {
        let Some(h) = &self.holds else {
            return Gate::Open;
        };
        let now = self.clock.epoch_ms();
        let seen = match h.store.held_until(receiver).await {
            Ok(None) => return Gate::Open,
            Ok(Some(until)) if until > now => return Gate::Held(until),
            Ok(Some(until)) => until,
            Err(e) => {
                tracing::warn!(receiver, error = %e, "receiver hold unreadable; sending");
                return Gate::Open;
            }
        };
        let claim = now + ms(h.probe_for);
        match h.store.hold(receiver, Some(seen), claim).await {
            Ok(true) => Gate::Probe(claim),
            // Another job claimed the probe: wait for its answer.
            Ok(false) => Gate::Held(claim),
            Err(e) => {
                tracing::warn!(receiver, error = %e, "receiver hold not claimed; sending");
                Gate::Open
            }
        }
    }

    /// After a POST: a time-out holds the receiver (or renews the hold of
    /// a probe); a probe that got any other outcome ends its hold.
    async fn after_send(&self, receiver: &str, gate: Gate, timed_out: bool) {
        let Some(h) = &self.holds else { return };
        let seen = match gate {
            Gate::Probe(claim) => Some(claim),
            Gate::Open | Gate::Held(_) => None,
        };
        let result = if timed_out {
            let until = self.clock.epoch_ms() + ms(h.hold_for);
            tracing::warn!(
                receiver,
                hold_ms = ms(h.hold_for),
                "webhook receiver timed out; its jobs are held"
            );
            // Lost to another instance: the receiver is held all the same.
            h.store.hold(receiver, seen, until).await.map(|_| ())
        } else if let Some(claim) = seen {
            h.store.release(receiver, claim).await
        } else {
            Ok(())
        };
        if let Err(e) = result {
            tracing::warn!(receiver, error = %e, "receiver hold not updated");
        }
    }

    /// Fixes where delays fall in the jitter band (tests).
    pub fn with_jitter(mut self, jitter: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.jitter = Arc::new(jitter);
        self
    }

    async fn dead(&self, job: &WebhookJob, reason: String) -> Result<JobOutcome, StoreError> {
        tracing::warn!(event_id = %job.event.id, channel = %job.key(), attempts = job.attempts, reason, "webhook job dead-lettered");
        self.jobs.dead_letter(job, &reason).await?;
        Ok(JobOutcome::DeadLettered { reason })
    }

    /// Works one message of the webhook queue: a job is delivered; anything
    /// else is dead-lettered as it came, with the reason.
    pub async fn handle_message(&self, body: &str) -> Result<JobOutcome, StoreError> {
        let outcome = match serde_json::from_str::<WebhookJob>(body) {
            Ok(job) => self.deliver(job).await?,
            Err(e) => {
                let reason = format!("not a webhook job: {e}");
                tracing::warn!(reason, "malformed webhook message dead-lettered");
                self.jobs.dead_letter_raw(body, &reason).await?;
                JobOutcome::DeadLettered { reason }
            }
        };
        use crate::metrics as m;
        match &outcome {
            JobOutcome::Delivered { .. } => {
                ::metrics::counter!(m::WEBHOOK_ATTEMPTS, "outcome" => "delivered").increment(1);
            }
            JobOutcome::Retrying { .. } => {
                ::metrics::counter!(m::WEBHOOK_ATTEMPTS, "outcome" => "retry").increment(1);
            }
            JobOutcome::DeadLettered { .. } => {
                ::metrics::counter!(m::WEBHOOK_ATTEMPTS, "outcome" => "failed").increment(1);
                ::metrics::counter!(m::DEAD_LETTERED, "reason" => "webhook").increment(1);
            }
            JobOutcome::Held { .. } => {
                ::metrics::counter!(m::WEBHOOK_ATTEMPTS, "outcome" => "held").increment(1);
            }
            JobOutcome::Deferred { .. } => {}
        }
        Ok(outcome)
    }

    /// Stops deliveries to a scope's webhook, keeping it (and the reason)
    /// for the operator to see with `webhooks get`.
    async fn disable(&self, scope: &WebhookScope, reason: &str) -> Result<(), StoreError> {
        if let Some(mut c) = self.store.get(scope).await? {
            c.disabled = Some(reason.to_owned());
            c.updated_at = self.clock.epoch_s();
            self.store.put(scope, &c).await?;
        }
        Ok(())
    }

    /// Works one job. An `Err` means the job could not be rescheduled or
    /// dead-lettered: the caller reports it as failed so SQS redelivers it.
    pub async fn deliver(&self, mut job: WebhookJob) -> Result<JobOutcome, StoreError> {
        let now = self.clock.epoch_s();
        if job.due_at > now {
            let delay = hop(Duration::from_secs(job.due_at - now));
            self.jobs.schedule(&job, delay).await?;
            return Ok(JobOutcome::Deferred { delay });
        }
        let key = job.key();
        let Some((scope, config)) = self.directory.effective(&key).await? else {
            return self
                .dead(&job, format!("no webhook is configured for {key} any more"))
                .await;
        };
        if let Some(why) = &config.disabled {
            return self
                .dead(&job, format!("the webhook is disabled: {why}"))
                .await;
        }
        if config.mode == WebhookMode::Off {
            return self.dead(&job, "the webhook was turned off".into()).await;
        }
        let target = match self.policy.check(&config.url).await {
            Ok(checked) => Ok(checked),
            // DNS trouble (no answer in time, a failed lookup) is an outage
            // of the receiver's, not a bad URL: retried like a connection
            // that failed.
            Err(UrlRefusal::Resolve { host, reason }) => {
                Err(format!("cannot resolve {host}: {reason}"))
            }
            Err(refusal) => return self.dead(&job, format!("refused URL: {refusal}")).await,
        };
        let secrets = match config.signing_secrets(now) {
            Ok(s) => s,
            Err(e) => return self.dead(&job, format!("cannot sign: {e}")).await,
        };
        let receiver = target
            .as_ref()
            .ok()
            .map(|(url, _)| receiver(&job.tenant, url));
        let gate = match &receiver {
            Some(r) => self.gate(r).await,
            None => Gate::Open,
        };
        job.attempts += 1;
        let (retry_after, at_least) = if let Gate::Held(until) = gate {
            // Counted as an attempt that timed out, without sending: the
            // job keeps to its schedule and is dead-lettered at its end if
            // the receiver never answers again.
            job.last_status = None;
            job.last_error = Some("not sent: the receiver is held after a time-out".into());
            let left = until.saturating_sub(self.clock.epoch_ms());
            (None, Duration::from_secs(left.div_ceil(1000)))
        } else {
            let outcome = match &target {
                Ok((url, addrs)) => {
                    let (headers, body) = signed(&job, &secrets, now);
                    self.sender.send(url, addrs, &headers, &body).await
                }
                Err(why) => SendOutcome::ConnectFailed(why.clone()),
            };
            if let Some(r) = &receiver {
                self.after_send(r, gate, outcome == SendOutcome::TimedOut)
                    .await;
            }
            let retry_after = match &outcome {
                SendOutcome::Answered { status, .. } if (200..300).contains(status) => {
                    return Ok(JobOutcome::Delivered { status: *status });
                }
                SendOutcome::Answered { status: 410, .. } => {
                    job.last_status = Some(410);
                    let reason = format!(
                        "the receiver answered 410 Gone at attempt {}; webhook disabled",
                        job.attempts
                    );
                    self.disable(&scope, &reason).await?;
                    return self.dead(&job, reason).await;
                }
                SendOutcome::Answered {
                    status,
                    retry_after,
                } if *status == 408 || *status == 429 || *status >= 500 => {
                    job.last_status = Some(*status);
                    job.last_error = None;
                    *retry_after
                }
                SendOutcome::Answered { status, .. } => {
                    job.last_status = Some(*status);
                    return self
                        .dead(
                            &job,
                            format!(
                                "the receiver answered {status}, a permanent failure, at attempt {}",
                                job.attempts
                            ),
                        )
                        .await;
                }
                SendOutcome::TimedOut => {
                    job.last_error = Some("timed out".into());
                    None
                }
                SendOutcome::ConnectFailed(e) => {
                    job.last_error = Some(format!("connection failed: {e}"));
                    None
                }
            };
            (retry_after, Duration::ZERO)
        };
        match self
            .schedule
            .next_delay(job.attempts, retry_after, (self.jitter)())
        {
            Some(delay) => {
                let delay = delay.max(at_least);
                job.due_at = now + delay.as_secs();
                self.jobs.schedule(&job, hop(delay)).await?;
                Ok(match gate {
                    Gate::Held(_) => JobOutcome::Held { delay },
                    Gate::Open | Gate::Probe(_) => JobOutcome::Retrying { delay },
                })
            }
            None => {
                let last = match (&job.last_status, &job.last_error) {
                    (Some(s), _) => format!("HTTP {s}"),
                    (None, Some(e)) => e.clone(),
                    (None, None) => "unknown".into(),
                };
                self.dead(
                    &job,
                    format!("gave up after {} attempts; last: {last}", job.attempts),
                )
                .await
            }
        }
    }
}

/// The POST of `job` at `now`: its headers (Standard Webhooks, signed with
/// `secrets`) and its body (the event frame). The `webhook-id` is unique per
/// event across the channels that share a tenant default webhook, and the
/// same for every attempt of it.
fn signed(
    job: &WebhookJob,
    secrets: &[crate::webhook::SigningSecret],
    now: u64,
) -> ([(&'static str, String); 4], String) {
    let body = agentwire_protocol::framing::event_frame(&job.event);
    let webhook_id = ChannelKey::new(&job.tenant, &job.event.channel).scoped_id(&job.event.id);
    let headers = [
        ("content-type", "application/json".to_owned()),
        ("webhook-timestamp", now.to_string()),
        (
            "webhook-signature",
            signature_header(secrets, &webhook_id, now, body.as_bytes()),
        ),
        ("webhook-id", webhook_id),
    ];
    (headers, body)
}

/// Whole milliseconds of `d`.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::memory::{MemoryWebhookJobs, MemoryWebhooks, ScriptedSender};
    use crate::ports::WebhookDeadLetterQueue;
    use crate::usecases::webhooks::WebhookAdmin;
    use crate::webhook::SigningSecret;
    use agentwire_protocol::EventFrame;

    struct Fx {
        d: Deliverer,
        store: Arc<MemoryWebhooks>,
        admin: Arc<WebhookAdmin>,
        sender: Arc<ScriptedSender>,
        jobs: Arc<MemoryWebhookJobs>,
        secret: String,
    }

    /// A host that does not resolve (in time) is the receiver's outage:
    /// the job is retried on the schedule, never dead-lettered at once.
    #[tokio::test]
    async fn a_host_that_does_not_resolve_is_retried_not_dead_lettered() {
        let f = fx(vec![]).await;
        // Stored as it was when it resolved; the name has gone since.
        let scope = WebhookScope::Channel(ChannelKey::new("acme", "a"));
        let mut config = f.store.get(&scope).await.unwrap().unwrap();
        config.url = "https://agentwire-hooks.invalid/hook".into();
        f.store.put(&scope, &config).await.unwrap();
        let started = std::time::Instant::now();
        let outcome = f.d.deliver(job()).await.unwrap();
        assert!(
            matches!(outcome, JobOutcome::Retrying { .. }),
            "{outcome:?}"
        );
        assert!(
            started.elapsed() < crate::webhook::url_policy::DNS_TIMEOUT + Duration::from_secs(2)
        );
        assert!(f.sender.sent().is_empty(), "nothing was sent");
        let (j, _) = f.jobs.take_scheduled().pop().unwrap();
        assert!(
            j.last_error
                .as_deref()
                .unwrap_or("")
                .contains("cannot resolve agentwire-hooks.invalid"),
            "{j:?}"
        );
    }

    /// Loopback receivers allowed, as the test's are.
    fn local_policy() -> UrlPolicy {
        UrlPolicy {
            allow_insecure_loopback: true,
            allow_hosts: vec![],
        }
    }

    /// A deliverer over a fixture's store, sender and jobs, its jitter fixed.
    fn deliverer(
        store: &Arc<MemoryWebhooks>,
        sender: &Arc<ScriptedSender>,
        jobs: &Arc<MemoryWebhookJobs>,
        schedule: RetrySchedule,
        clock: Arc<dyn Clock>,
    ) -> Deliverer {
        Deliverer::new(
            store.clone(),
            store.clone(),
            local_policy(),
            sender.clone(),
            jobs.clone(),
            schedule,
            clock,
        )
        .with_jitter(|| 0.5)
    }

    async fn fx(script: Vec<SendOutcome>) -> Fx {
        let store = Arc::new(MemoryWebhooks::default());
        let admin = Arc::new(WebhookAdmin::new(
            store.clone(),
            local_policy(),
            Arc::new(SystemClock),
        ));
        let cfg = admin
            .set(
                &WebhookScope::Channel(ChannelKey::new("acme", "a")),
                "http://127.0.0.1:9/hook",
                WebhookMode::Fallback,
                None,
            )
            .await
            .unwrap();
        let sender = Arc::new(ScriptedSender::new(script));
        let jobs = Arc::new(MemoryWebhookJobs::default());
        let schedule = RetrySchedule::new(vec![
            Duration::ZERO,
            Duration::from_secs(5),
            Duration::from_secs(300),
        ]);
        let d = deliverer(&store, &sender, &jobs, schedule, Arc::new(SystemClock));
        Fx {
            d,
            store,
            admin,
            sender,
            jobs,
            secret: cfg.secret,
        }
    }

    fn job() -> WebhookJob {
        WebhookJob::new(
            "acme",
            EventFrame {
                channel: "a".into(),
                epoch: "e".into(),
                seq: 7,
                id: "run-1/final".into(),
                kind: "final".into(),
                data: serde_json::json!({"text": "done"}).into(),
                ts: "t".into(),
            },
        )
    }

    fn ok(status: u16) -> SendOutcome {
        SendOutcome::Answered {
            status,
            retry_after: None,
        }
    }

    #[tokio::test]
    async fn a_2xx_is_delivered_with_standard_webhooks_headers_that_verify() {
        let f = fx(vec![ok(204)]).await;
        assert_eq!(
            f.d.deliver(job()).await.unwrap(),
            JobOutcome::Delivered { status: 204 }
        );
        let sent = f.sender.sent();
        assert_eq!(sent.len(), 1);
        let (headers, body) = &sent[0];
        let h = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(
            h("webhook-id"),
            ChannelKey::new("acme", "a").scoped_id("run-1/final")
        );
        assert_eq!(h("content-type"), "application/json");
        let ts: u64 = h("webhook-timestamp").parse().unwrap();
        let secret = SigningSecret::parse(&f.secret).unwrap();
        assert!(secret.verify(
            &h("webhook-id"),
            ts,
            body.as_bytes(),
            &h("webhook-signature")
        ));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["seq"].as_u64()),
            (Some("event"), Some(7))
        );
    }

    #[tokio::test]
    async fn retryable_failures_are_rescheduled_on_the_schedule_with_the_same_id() {
        let f = fx(vec![ok(503), SendOutcome::TimedOut, ok(200)]).await;
        let mut j = job();
        assert_eq!(
            f.d.deliver(j.clone()).await.unwrap(),
            JobOutcome::Retrying {
                delay: Duration::from_secs(5)
            }
        );
        j = f.jobs.take_scheduled().pop().unwrap().0;
        assert_eq!((j.attempts, j.last_status), (1, Some(503)));
        // Not due yet: sent on, not attempted.
        assert!(matches!(
            f.d.deliver(j.clone()).await.unwrap(),
            JobOutcome::Deferred { .. }
        ));
        assert_eq!(f.sender.sent().len(), 1);
        j = f.jobs.take_scheduled().pop().unwrap().0;
        j.due_at = 0;
        assert_eq!(
            f.d.deliver(j.clone()).await.unwrap(),
            JobOutcome::Retrying {
                delay: Duration::from_secs(300)
            }
        );
        let (mut j, hop_delay) = f.jobs.take_scheduled().pop().unwrap();
        assert_eq!(hop_delay, Duration::from_secs(300));
        assert_eq!(j.last_error.as_deref(), Some("timed out"));
        j.due_at = 0;
        assert_eq!(
            f.d.deliver(j).await.unwrap(),
            JobOutcome::Delivered { status: 200 }
        );
        let ids: Vec<String> = f
            .sender
            .sent()
            .iter()
            .map(|(h, _)| h.iter().find(|(k, _)| k == "webhook-id").unwrap().1.clone())
            .collect();
        let expected = ChannelKey::new("acme", "a").scoped_id("run-1/final");
        assert_eq!(ids, vec![expected; 3]);
        assert!(f.jobs.dead().is_empty());
    }

    #[tokio::test]
    async fn retry_after_is_honoured() {
        let f = fx(vec![SendOutcome::Answered {
            status: 429,
            retry_after: Some(Duration::from_secs(120)),
        }])
        .await;
        assert_eq!(
            f.d.deliver(job()).await.unwrap(),
            JobOutcome::Retrying {
                delay: Duration::from_secs(120)
            }
        );
    }

    #[tokio::test]
    async fn exhausting_the_schedule_dead_letters_with_the_last_status_and_attempts() {
        let f = fx(vec![ok(500), ok(502), ok(503)]).await;
        let mut j = job();
        for _ in 0..2 {
            f.d.deliver(j).await.unwrap();
            j = f.jobs.take_scheduled().pop().unwrap().0;
            j.due_at = 0;
        }
        let r = f.d.deliver(j).await.unwrap();
        let JobOutcome::DeadLettered { reason } = r else {
            panic!("{r:?}")
        };
        assert!(
            reason.contains("3 attempts") && reason.contains("HTTP 503"),
            "{reason}"
        );
        let dead = f.jobs.dead();
        assert_eq!((dead[0].0.attempts, dead[0].0.last_status), (3, Some(503)));
    }

    #[tokio::test]
    async fn a_4xx_is_permanent_and_410_disables_the_webhook() {
        let f = fx(vec![ok(400)]).await;
        let r = f.d.deliver(job()).await.unwrap();
        assert!(
            matches!(&r, JobOutcome::DeadLettered { reason } if reason.contains("400")),
            "{r:?}"
        );

        let f = fx(vec![ok(410)]).await;
        let r = f.d.deliver(job()).await.unwrap();
        assert!(
            matches!(&r, JobOutcome::DeadLettered { reason } if reason.contains("410")),
            "{r:?}"
        );
        let (_, cfg) = f
            .store
            .effective(&ChannelKey::new("acme", "a"))
            .await
            .unwrap()
            .unwrap();
        assert!(cfg.disabled.as_deref().unwrap().contains("410"));
        // Later jobs are not sent to a disabled webhook; they are kept with the reason.
        let r = f.d.deliver(job()).await.unwrap();
        assert!(
            matches!(&r, JobOutcome::DeadLettered { reason } if reason.contains("disabled")),
            "{r:?}"
        );
        assert_eq!(f.sender.sent().len(), 1);
    }

    #[tokio::test]
    async fn a_job_whose_webhook_is_gone_is_kept_with_the_reason() {
        let f = fx(vec![]).await;
        f.admin
            .remove(&WebhookScope::Channel(ChannelKey::new("acme", "a")))
            .await
            .unwrap();
        let r = f.d.deliver(job()).await.unwrap();
        assert!(
            matches!(&r, JobOutcome::DeadLettered { reason } if reason.contains("no webhook")),
            "{r:?}"
        );
        assert_eq!(f.jobs.dead().len(), 1);
    }

    #[tokio::test]
    async fn a_message_that_is_not_a_job_is_dead_lettered_as_it_came() {
        let f = fx(vec![]).await;
        let r = f.d.handle_message("{\"not\":\"a job\"}").await.unwrap();
        assert!(
            matches!(&r, JobOutcome::DeadLettered { reason } if reason.starts_with("not a webhook job")),
            "{r:?}"
        );
        let dead = f.jobs.list(10, Duration::ZERO).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].body, "{\"not\":\"a job\"}");
        assert!(dead[0].event_id.is_empty() && dead[0].reason.contains("not a webhook job"));
        assert!(f.sender.sent().is_empty());
    }

    /// A receiver that timed out is held: its tenant's next job is not
    /// sent (an attempt counted, rescheduled past the hold), another
    /// tenant's job to the same host is; at the hold's end one job claims
    /// the probe while the others wait, and its answer ends the hold.
    #[tokio::test]
    async fn a_receiver_that_timed_out_is_held_and_probed_by_one_job() {
        use crate::clock::ManualClock;
        use crate::memory::MemoryHolds;
        let f = fx(vec![
            SendOutcome::TimedOut,
            SendOutcome::Answered {
                status: 200,
                retry_after: None,
            },
            SendOutcome::Answered {
                status: 204,
                retry_after: None,
            },
        ])
        .await;
        f.admin
            .set(
                &WebhookScope::Channel(ChannelKey::new("zeta", "a")),
                "http://127.0.0.1:9/hook",
                WebhookMode::Fallback,
                None,
            )
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new());
        let holds = Arc::new(MemoryHolds::default());
        let schedule = RetrySchedule::new(vec![
            Duration::ZERO,
            Duration::from_secs(5),
            Duration::from_secs(5),
            Duration::from_secs(5),
        ]);
        let d = deliverer(&f.store, &f.sender, &f.jobs, schedule, clock.clone()).with_holds(
            holds.clone(),
            Duration::from_secs(30),
            Duration::from_secs(20),
        );
        let r = "acme#127.0.0.1:9";
        let t0 = clock.epoch_ms();

        // The time-out holds acme's receiver for 30 s.
        let out = d.deliver(job()).await.unwrap();
        assert_eq!(
            out,
            JobOutcome::Retrying {
                delay: Duration::from_secs(5)
            }
        );
        assert_eq!(holds.held_until(r).await.unwrap(), Some(t0 + 30_000));

        // acme's next job is not sent, and waits for the hold's end.
        let out = d.deliver(job()).await.unwrap();
        assert_eq!(
            out,
            JobOutcome::Held {
                delay: Duration::from_secs(30)
            }
        );
        assert_eq!(f.sender.sent().len(), 1, "nothing more was sent");
        let (held, delay) = f.jobs.take_scheduled().pop().unwrap();
        assert_eq!((held.attempts, delay), (1, Duration::from_secs(30)));
        assert_eq!(
            held.last_error.as_deref(),
            Some("not sent: the receiver is held after a time-out")
        );

        // Another tenant's job to the same host goes.
        let mut other = job();
        other.tenant = "zeta".into();
        assert_eq!(
            d.deliver(other).await.unwrap(),
            JobOutcome::Delivered { status: 200 }
        );

        // At the end of the hold another instance claimed the probe: wait.
        clock.advance(Duration::from_secs(30));
        let claimed = clock.epoch_ms() + 20_000;
        assert!(holds.hold(r, Some(t0 + 30_000), claimed).await.unwrap());
        let out = d.deliver(job()).await.unwrap();
        assert_eq!(
            out,
            JobOutcome::Held {
                delay: Duration::from_secs(20)
            }
        );
        assert_eq!(f.sender.sent().len(), 2);

        // That probe never answered: after its 20 s this job probes, and
        // its answer ends the hold.
        clock.advance(Duration::from_secs(20));
        assert_eq!(
            d.deliver(job()).await.unwrap(),
            JobOutcome::Delivered { status: 204 }
        );
        assert_eq!(holds.held_until(r).await.unwrap(), None);
        assert_eq!(f.sender.sent().len(), 3);
    }
}
