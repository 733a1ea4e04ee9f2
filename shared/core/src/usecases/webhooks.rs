//! Managing webhooks: set (URL checked against the deployment's policy),
//! show, rotate the secret with a grace period, remove.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::ports::{StoreError, WebhookStore};
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
        let expires_at = ttl.map(|t| now + t.as_secs());
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

    /// The webhook an event of this channel goes to: the channel's own, else
    /// the tenant default; `None` when neither exists or it has expired.
    pub async fn effective(
        &self,
        key: &crate::model::ChannelKey,
    ) -> Result<Option<WebhookConfig>, StoreError> {
        Ok(self.effective_scoped(key).await?.map(|(_, c)| c))
    }

    /// Like [`WebhookAdmin::effective`], with the scope it was found in.
    pub async fn effective_scoped(
        &self,
        key: &crate::model::ChannelKey,
    ) -> Result<Option<(WebhookScope, WebhookConfig)>, StoreError> {
        let now = self.clock.epoch_s();
        for scope in [
            WebhookScope::Channel(key.clone()),
            WebhookScope::TenantDefault(key.tenant.clone()),
        ] {
            if let Some(c) = self.store.get(&scope).await?
                && !c.expired(now)
            {
                return Ok(Some((scope, c)));
            }
        }
        Ok(None)
    }

    /// Stops deliveries to a scope's webhook, keeping it (and the reason) for
    /// the operator to see with `webhooks get`.
    pub async fn disable(&self, scope: &WebhookScope, reason: &str) -> Result<(), StoreError> {
        if let Some(mut c) = self.store.get(scope).await? {
            c.disabled = Some(reason.to_owned());
            c.updated_at = self.clock.epoch_s();
            self.store.put(scope, &c).await?;
        }
        Ok(())
    }

    /// The deployment's URL rules.
    pub fn policy(&self) -> &UrlPolicy {
        &self.policy
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
    async fn the_channel_overrides_the_tenant_default_and_expiry_removes_it() {
        let a = admin();
        let key = ChannelKey::new("acme", "a");
        let tenant = WebhookScope::TenantDefault("acme".into());
        a.set(&tenant, "http://127.0.0.1:1/t", WebhookMode::Fallback, None)
            .await
            .unwrap();
        assert_eq!(
            a.effective(&key).await.unwrap().unwrap().url,
            "http://127.0.0.1:1/t"
        );
        let own = WebhookScope::Channel(key.clone());
        a.set(&own, "http://127.0.0.1:2/c", WebhookMode::Always, None)
            .await
            .unwrap();
        assert_eq!(
            a.effective(&key).await.unwrap().unwrap().url,
            "http://127.0.0.1:2/c"
        );
        a.set(
            &own,
            "http://127.0.0.1:2/c",
            WebhookMode::Always,
            Some(Duration::ZERO),
        )
        .await
        .unwrap();
        assert_eq!(
            a.effective(&key).await.unwrap().unwrap().url,
            "http://127.0.0.1:1/t",
            "expired: back to the default"
        );
    }
}
