//! The operator's use cases: webhooks (set with the URL checked against the
//! deployment's policy, show, rotate the secret with a grace period,
//! remove), the webhook dead-letter queue (list, redrive) and channel
//! settings (retention).

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::model::{ChannelKey, ChannelState, DeadWebhookJob, WebhookJob};
use crate::ports::{
    ChannelSettings, StoreError, WebhookDeadLetterQueue, WebhookJobs, WebhookStore,
};
use crate::webhook::{
    UrlPolicy, UrlRefusal, WebhookConfig, WebhookMode, WebhookScope, WebhookSignError,
};

/// Why a webhook change was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookAdminError {
    #[error("refused URL: {0}")]
    Url(#[from] UrlRefusal),
    #[error("no webhook is configured for {0}")]
    NotFound(String),
    #[error(transparent)]
    Secret(#[from] WebhookSignError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The webhook administration use case.
pub struct WebhookAdmin {
    store: Arc<dyn WebhookStore>,
    policy: UrlPolicy,
    clock: Arc<dyn Clock>,
}

fn describe(scope: &WebhookScope) -> String {
    match scope {
        WebhookScope::Channel(k) => format!("channel {k}"),
        WebhookScope::TenantDefault(t) => format!("the default of tenant {t}"),
    }
}

impl WebhookAdmin {
    pub fn new(store: Arc<dyn WebhookStore>, policy: UrlPolicy, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            policy,
            clock,
        }
    }

    /// Sets the webhook of a scope. A new URL gets a new secret; setting the
    /// same URL again keeps the secret (and clears a `disabled` mark).
    pub async fn set(
        &self,
        scope: &WebhookScope,
        url: &str,
        mode: WebhookMode,
        ttl: Option<Duration>,
    ) -> Result<WebhookConfig, WebhookAdminError> {
        let (url, _) = self.policy.check(url).await?;
        let now = self.clock.epoch_s();
        let expires_at = ttl.map(|t| now.saturating_add(t.as_secs()));
        let config = match self.store.get(scope).await? {
            Some(mut old) if old.url == url.as_str() => {
                old.mode = mode;
                old.expires_at = expires_at;
                old.disabled = None;
                old.updated_at = now;
                old
            }
            _ => WebhookConfig::new(url.as_str(), mode, expires_at, now)?,
        };
        self.store.put(scope, &config).await?;
        Ok(config)
    }

    /// The scope's webhook as stored (including an expired or disabled one,
    /// so the operator sees why it is not called).
    pub async fn get(&self, scope: &WebhookScope) -> Result<WebhookConfig, WebhookAdminError> {
        self.store
            .get(scope)
            .await?
            .ok_or_else(|| WebhookAdminError::NotFound(describe(scope)))
    }

    /// A new secret; the previous one keeps signing for `grace`.
    pub async fn rotate(
        &self,
        scope: &WebhookScope,
        grace: Duration,
    ) -> Result<WebhookConfig, WebhookAdminError> {
        let mut config = self.get(scope).await?;
        config.rotate(grace, self.clock.epoch_s())?;
        self.store.put(scope, &config).await?;
        Ok(config)
    }

    pub async fn remove(&self, scope: &WebhookScope) -> Result<(), WebhookAdminError> {
        if self.store.remove(scope).await? {
            Ok(())
        } else {
            Err(WebhookAdminError::NotFound(describe(scope)))
        }
    }
}

/// The webhook dead-letter queue, as the operator works it: look, then send
/// back for delivery.
pub struct DeadWebhooks {
    queue: Arc<dyn WebhookDeadLetterQueue>,
    jobs: Arc<dyn WebhookJobs>,
}

/// Why a dead-lettered message could not be sent back.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("not a webhook job, so it cannot be delivered: {0}")]
    NotAJob(#[source] serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DeadWebhooks {
    pub fn new(queue: Arc<dyn WebhookDeadLetterQueue>, jobs: Arc<dyn WebhookJobs>) -> Self {
        Self { queue, jobs }
    }

    /// Up to `max` dead-lettered messages, hidden from other readers for
    /// `hold` (they reappear afterwards unless redriven).
    pub async fn list(
        &self,
        max: usize,
        hold: Duration,
    ) -> Result<Vec<DeadWebhookJob>, StoreError> {
        self.queue.list(max, hold).await
    }

    /// Sends a dead-lettered job back for delivery with a fresh schedule,
    /// then removes it from the dead-letter queue (a failure in between
    /// leaves it in both: delivered twice at worst, never lost).
    pub async fn redrive(&self, dead: &DeadWebhookJob) -> Result<(), RedriveError> {
        let mut job: WebhookJob =
            serde_json::from_str(&dead.body).map_err(RedriveError::NotAJob)?;
        job.attempts = 0;
        job.due_at = 0;
        job.last_status = None;
        job.last_error = None;
        self.jobs.schedule(&job, Duration::ZERO).await?;
        self.queue.delete(dead).await?;
        Ok(())
    }
}

/// A channel's settings, as the operator changes them.
pub struct ChannelAdmin {
    settings: Arc<dyn ChannelSettings>,
    min_retention: Duration,
}

/// Why a channel's retention was not set.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(
        "a retention of {} is shorter than the floor of {}: {}",
        humantime::format_duration(*asked),
        humantime::format_duration(*floor),
        crate::config::RETENTION_FLOOR_WHY
    )]
    BelowFloor { asked: Duration, floor: Duration },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ChannelAdmin {
    /// Channel retentions of at least `min_retention` (the deployment's
    /// `Config::min_retention`).
    pub fn new(settings: Arc<dyn ChannelSettings>, min_retention: Duration) -> Self {
        Self {
            settings,
            min_retention,
        }
    }

    /// Sets (or, with `None`, removes) the channel's own retention, at least
    /// the floor; events committed from now on keep it.
    pub async fn set_retention(
        &self,
        key: &ChannelKey,
        retention: Option<Duration>,
    ) -> Result<ChannelState, RetentionError> {
        if let Some(asked) = retention
            && asked < self.min_retention
        {
            return Err(RetentionError::BelowFloor {
                asked,
                floor: self.min_retention,
            });
        }
        Ok(self.settings.set_retention(key, retention).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::memory::MemoryWebhooks;
    use crate::model::ChannelKey;

    fn admin() -> WebhookAdmin {
        let policy = UrlPolicy {
            allow_insecure_loopback: true,
            allow_hosts: vec![],
        };
        WebhookAdmin::new(
            Arc::new(MemoryWebhooks::default()),
            policy,
            Arc::new(SystemClock),
        )
    }

    #[tokio::test]
    async fn set_get_rotate_remove() {
        let a = admin();
        let scope = WebhookScope::Channel(ChannelKey::new("acme", "a"));
        let c = a
            .set(&scope, "http://127.0.0.1:9/h", WebhookMode::Fallback, None)
            .await
            .unwrap();
        assert!(c.secret.starts_with("whsec_"));
        assert_eq!(a.get(&scope).await.unwrap(), c);
        let again = a
            .set(&scope, "http://127.0.0.1:9/h", WebhookMode::Always, None)
            .await
            .unwrap();
        assert_eq!(again.secret, c.secret, "same URL keeps its secret");
        let r = a.rotate(&scope, Duration::from_secs(60)).await.unwrap();
        assert_eq!(r.previous_secret.as_deref(), Some(c.secret.as_str()));
        a.remove(&scope).await.unwrap();
        assert!(matches!(
            a.get(&scope).await,
            Err(WebhookAdminError::NotFound(_))
        ));
        assert!(matches!(
            a.remove(&scope).await,
            Err(WebhookAdminError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn private_addresses_are_refused_and_nothing_is_stored() {
        let a = admin();
        let scope = WebhookScope::TenantDefault("acme".into());
        let err = a
            .set(&scope, "https://10.1.2.3/h", WebhookMode::Always, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, WebhookAdminError::Url(UrlRefusal::Forbidden { .. })),
            "{err}"
        );
        assert!(matches!(
            a.get(&scope).await,
            Err(WebhookAdminError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_redriven_job_starts_afresh_and_leaves_the_dead_letter_queue() {
        use crate::memory::MemoryWebhookJobs;
        let jobs = Arc::new(MemoryWebhookJobs::default());
        let dead = DeadWebhooks::new(jobs.clone(), jobs.clone());
        let mut job = WebhookJob::new(
            "acme",
            agentwire_protocol::EventFrame {
                channel: "a".into(),
                epoch: "e".into(),
                seq: 1,
                id: "i1".into(),
                kind: "k".into(),
                data: serde_json::json!(1).into(),
                ts: "t".into(),
            },
        );
        job.attempts = 5;
        job.last_status = Some(400);
        jobs.dead_letter(&job, "the receiver answered 400")
            .await
            .unwrap();
        jobs.dead_letter_raw("junk", "not a webhook job")
            .await
            .unwrap();
        let listed = dead.list(10, Duration::from_secs(1)).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            (
                listed[0].event_id.as_str(),
                listed[0].channel.as_str(),
                listed[0].attempts,
                listed[0].last_status
            ),
            ("i1", "acme#a", 5, Some(400))
        );
        assert!(matches!(
            dead.redrive(&listed[1]).await,
            Err(RedriveError::NotAJob(_))
        ));
        dead.redrive(&listed[0]).await.unwrap();
        let scheduled = jobs.take_scheduled();
        assert_eq!(scheduled.len(), 1);
        assert_eq!(
            (scheduled[0].0.attempts, scheduled[0].0.last_status),
            (0, None)
        );
        let left = dead.list(10, Duration::from_secs(1)).await.unwrap();
        assert_eq!(left.len(), 1, "only the one that is not a job is left");
        assert_eq!(left[0].body, "junk");
    }
}
