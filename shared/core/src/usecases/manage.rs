//! The management API's use case: what a tenant admin (a token with the
//! `admin` grant) may do to its own tenant, and nothing to another: its
//! default and per-channel webhooks (the signing secret generated here,
//! shown once, rotated with an overlap), its trusted issuers, its
//! revocations, and a read of its limits and usage.

use std::sync::Arc;
use std::time::Duration;

use agentwire_protocol::ProtocolError;

use crate::auth::trust::{TrustEntry, TrustOwner};
use crate::auth::{AuthError, Verifier};
use crate::clock::Clock;
use crate::model::ChannelKey;
use crate::ports::{Pusher, Revocation, StoreError};
use crate::usecases::identity::{IdentityAdmin, IdentityError, Revoked};
use crate::usecases::quotas::{TenantAdmin, TenantView};
use crate::usecases::webhooks::{WebhookAdmin, WebhookAdminError};
use crate::webhook::{WebhookConfig, WebhookMode, WebhookScope};

/// Why a management request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("the token has no admin grant for its tenant")]
    NotAdmin,
    #[error("{0}")]
    Invalid(ProtocolError),
    #[error(transparent)]
    Webhook(#[from] WebhookAdminError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A webhook as the management API shows it: never the current secret,
/// except right after it was generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookView {
    pub config: WebhookConfig,
    /// The secret, when this call generated it (shown this once).
    pub new_secret: Option<String>,
}

/// The management use case.
pub struct Management {
    verifier: Arc<Verifier>,
    webhooks: WebhookAdmin,
    identity: IdentityAdmin,
    tenants: TenantAdmin,
    closer: Option<Arc<dyn Pusher>>,
    clock: Arc<dyn Clock>,
}

/// How long the secret before a rotation keeps signing, unless the
/// request says otherwise.
pub const DEFAULT_ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

impl Management {
    pub fn new(
        verifier: Arc<Verifier>,
        webhooks: WebhookAdmin,
        identity: IdentityAdmin,
        tenants: TenantAdmin,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            verifier,
            webhooks,
            identity,
            tenants,
            closer: None,
            clock,
        }
    }

    /// Closes a revoked principal's live connections through `closer`.
    pub fn with_closer(mut self, closer: Arc<dyn Pusher>) -> Self {
        self.closer = Some(closer);
        self
    }

    /// The tenant the token administers: a verified token with the
    /// `admin` grant.
    pub async fn authorize(&self, token: Option<&str>) -> Result<String, ManageError> {
        let claims = self
            .verifier
            .verify(token.ok_or(AuthError::Missing)?, self.clock.epoch_s())
            .await
            .map_err(|e| match e.unavailable() {
                // Keys or a store unavailable: ours, retryable (503).
                Some(s) => ManageError::Store(s),
                None => ManageError::Unauthorized(e),
            })?;
        if !claims.admin {
            return Err(ManageError::NotAdmin);
        }
        Ok(claims.tenant)
    }

    fn scope(tenant: &str, channel: Option<&str>) -> Result<WebhookScope, ManageError> {
        match channel {
            None => Ok(WebhookScope::TenantDefault(tenant.to_owned())),
            Some(c) => {
                agentwire_protocol::limits::validate_channel(c).map_err(ManageError::Invalid)?;
                Ok(WebhookScope::Channel(ChannelKey::new(tenant, c)))
            }
        }
    }

    /// The tenant's limits, what applies, and its counted connections.
    pub async fn limits(&self, tenant: &str) -> Result<TenantView, ManageError> {
        Ok(self.tenants.get(tenant).await?)
    }

    pub async fn webhook(
        &self,
        tenant: &str,
        channel: Option<&str>,
    ) -> Result<WebhookConfig, ManageError> {
        Ok(self.webhooks.get(&Self::scope(tenant, channel)?).await?)
    }

    /// Sets the webhook; a new URL gets a new secret, shown in the answer.
    pub async fn set_webhook(
        &self,
        tenant: &str,
        channel: Option<&str>,
        url: &str,
        mode: WebhookMode,
        ttl: Option<Duration>,
    ) -> Result<WebhookView, ManageError> {
        let scope = Self::scope(tenant, channel)?;
        let before = match self.webhooks.get(&scope).await {
            Ok(c) => Some(c.secret),
            Err(WebhookAdminError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let config = self.webhooks.set(&scope, url, mode, ttl).await?;
        let new_secret =
            (before.as_deref() != Some(config.secret.as_str())).then(|| config.secret.clone());
        Ok(WebhookView { config, new_secret })
    }

    /// A new secret, shown in the answer; the previous one keeps signing
    /// for `overlap`.
    pub async fn rotate_webhook(
        &self,
        tenant: &str,
        channel: Option<&str>,
        overlap: Duration,
    ) -> Result<WebhookView, ManageError> {
        let config = self
            .webhooks
            .rotate(&Self::scope(tenant, channel)?, overlap)
            .await?;
        Ok(WebhookView {
            new_secret: Some(config.secret.clone()),
            config,
        })
    }

    pub async fn clear_webhook(
        &self,
        tenant: &str,
        channel: Option<&str>,
    ) -> Result<(), ManageError> {
        Ok(self.webhooks.remove(&Self::scope(tenant, channel)?).await?)
    }

    /// The tenant's trusted issuers (HS256 secrets never shown).
    pub async fn issuers(&self, tenant: &str) -> Result<Vec<TrustEntry>, ManageError> {
        Ok(self.identity.issuers(Some(tenant)).await?)
    }

    /// Trusts an issuer for the tenant (the entry's owner is the tenant,
    /// whatever the request said).
    pub async fn trust(
        &self,
        tenant: &str,
        mut entry: TrustEntry,
    ) -> Result<TrustEntry, ManageError> {
        entry.owner = TrustOwner::Tenant(tenant.to_owned());
        self.identity.trust(&entry).await?;
        Ok(entry.redacted())
    }

    /// `false` when the tenant did not trust `iss`.
    pub async fn untrust(&self, tenant: &str, iss: &str) -> Result<bool, ManageError> {
        Ok(self.identity.remove_issuer(Some(tenant), iss).await?)
    }

    pub async fn revocations(&self, tenant: &str) -> Result<Vec<Revocation>, ManageError> {
        Ok(self.identity.revocations(tenant).await?)
    }

    /// Revokes `sub` in the tenant and closes its live connections.
    pub async fn revoke(&self, tenant: &str, sub: &str) -> Result<Revoked, ManageError> {
        if sub.trim().is_empty() || sub.len() > crate::auth::MAX_PRINCIPAL {
            return Err(ManageError::Invalid(ProtocolError::new(
                agentwire_protocol::ErrorCode::InvalidRequest,
                format!("sub must be 1 to {} characters", crate::auth::MAX_PRINCIPAL),
            )));
        }
        let closer: Arc<dyn Pusher> = match &self.closer {
            Some(c) => c.clone(),
            None => Arc::new(NoCloser),
        };
        Ok(self.identity.revoke(tenant, sub, closer.as_ref()).await?)
    }
}

/// Without a closer, live connections are left to be refused at their
/// next join, ack or refresh.
struct NoCloser;

#[async_trait::async_trait]
impl Pusher for NoCloser {
    async fn post(&self, _: &str, _: &str) -> Result<(), crate::ports::PushError> {
        Ok(())
    }

    async fn close(&self, _: &str) -> Result<(), crate::ports::PushError> {
        Err(crate::ports::PushError::Refused {
            status: None,
            reason: "no connections endpoint configured".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Claims, TokenKey};
    use crate::clock::SystemClock;
    use crate::memory::{
        MemoryLimits, MemoryRegistry, MemoryRevocations, MemoryTrust, MemoryWebhooks,
    };
    use crate::webhook::UrlPolicy;

    fn management() -> (Management, TokenKey) {
        let key = TokenKey::hs256(b"k");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let registry = Arc::new(MemoryRegistry::default());
        let limits = Arc::new(MemoryLimits::default());
        let policy = UrlPolicy {
            allow_insecure_loopback: true,
            ..Default::default()
        };
        let m = Management::new(
            Arc::new(Verifier::new(key.clone(), clock.clone())),
            WebhookAdmin::new(
                Arc::new(MemoryWebhooks::default()),
                policy.clone(),
                clock.clone(),
            ),
            IdentityAdmin::new(
                Arc::new(MemoryTrust::default()),
                Arc::new(MemoryRevocations::default()),
                registry.clone(),
                policy,
                clock.clone(),
            ),
            TenantAdmin::new(limits, registry, Default::default()),
            clock,
        );
        (m, key)
    }

    fn token(key: &TokenKey, tenant: &str, admin: bool) -> String {
        let mut c: Claims = TokenKey::claims(
            tenant,
            "ops",
            vec![],
            vec![],
            SystemClock.epoch_s(),
            Duration::from_secs(60),
        );
        c.admin = admin;
        key.sign(&c).unwrap()
    }

    #[tokio::test]
    async fn only_admin_tokens_manage_and_only_their_own_tenant() {
        let (m, key) = management();
        assert!(matches!(
            m.authorize(Some(&token(&key, "acme", false))).await,
            Err(ManageError::NotAdmin)
        ));
        let tenant = m.authorize(Some(&token(&key, "acme", true))).await.unwrap();
        assert_eq!(tenant, "acme");
        let set = m
            .set_webhook(
                &tenant,
                Some("agent-1"),
                "http://127.0.0.1:9/hook",
                WebhookMode::Fallback,
                None,
            )
            .await
            .unwrap();
        let secret = set
            .new_secret
            .expect("a new webhook's secret is shown once");
        let again = m
            .set_webhook(
                &tenant,
                Some("agent-1"),
                "http://127.0.0.1:9/hook",
                WebhookMode::Always,
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            again.new_secret, None,
            "the same URL keeps its secret, not shown again"
        );
        let rotated = m
            .rotate_webhook(&tenant, Some("agent-1"), DEFAULT_ROTATION_OVERLAP)
            .await
            .unwrap();
        assert_eq!(
            rotated.config.previous_secret.as_deref(),
            Some(secret.as_str())
        );
        assert!(
            m.webhook("beta", Some("agent-1")).await.is_err(),
            "another tenant sees nothing"
        );
    }
}
