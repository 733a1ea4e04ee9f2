//! A tenant's identity settings: the issuers it trusts and the principals
//! it revoked (the operator's `agentwire tenant trust|revoke`, and the
//! management API).

use std::sync::Arc;

use agentwire_protocol::{ErrorCode, ErrorFrame, ServerFrame};

use crate::auth::trust::{TrustEntry, TrustError};
use crate::clock::Clock;
use crate::ports::{
    ConnectionRegistry, PushError, Pusher, Revocation, Revocations, StoreError, TrustStore,
};
use crate::webhook::UrlPolicy;

/// Why an identity setting was not changed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Tokens issued before this (Unix milliseconds) are refused.
    pub at_ms: u64,
    /// Live connections closed.
    pub closed: usize,
    /// Live connections that could not be closed now (each still refused
    /// at its next join, ack and refresh).
    pub failed: usize,
}

/// Trust entries and revocations.
pub struct IdentityAdmin {
    trust: Arc<dyn TrustStore>,
    revocations: Arc<dyn Revocations>,
    registry: Arc<dyn ConnectionRegistry>,
    urls: UrlPolicy,
    clock: Arc<dyn Clock>,
}

impl IdentityAdmin {
    pub fn new(
        trust: Arc<dyn TrustStore>,
        revocations: Arc<dyn Revocations>,
        registry: Arc<dyn ConnectionRegistry>,
        urls: UrlPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            trust,
            revocations,
            registry,
            urls,
            clock,
        }
    }

    /// Saves a trust entry after its checks (the JWKS URL resolved against
    /// the address policy); refused when another tenant owns the issuer.
    pub async fn trust(&self, entry: &TrustEntry) -> Result<(), IdentityError> {
        entry.validate(&self.urls).await?;
        if !self.trust.put_issuer(entry).await? {
            return Err(TrustError::IssuerTaken {
                issuer: entry.issuer.clone(),
            }
            .into());
        }
        Ok(())
    }

    /// The tenant's entries (`None`: the deployment-level ones), secrets
    /// redacted.
    pub async fn issuers(&self, tenant: Option<&str>) -> Result<Vec<TrustEntry>, StoreError> {
        Ok(self
            .trust
            .issuers_of(tenant)
            .await?
            .iter()
            .map(TrustEntry::redacted)
            .collect())
    }

    /// Removes one of the tenant's entries; `false` when it had none.
    pub async fn remove_issuer(&self, tenant: Option<&str>, iss: &str) -> Result<bool, StoreError> {
        self.trust.remove_issuer(tenant, iss).await
    }

    /// Refuses every token of `sub` in `tenant` issued before now, and
    /// closes its live connections through `closer` (each told why first,
    /// with a `token_revoked` error frame).
    pub async fn revoke(
        &self,
        tenant: &str,
        sub: &str,
        closer: &dyn Pusher,
    ) -> Result<Revoked, StoreError> {
        let at_ms = self.clock.epoch_ms();
        self.revocations.revoke(tenant, sub, at_ms).await?;
        let frame = ServerFrame::Error(ErrorFrame {
            code: ErrorCode::TokenRevoked,
            message: "this principal's tokens were revoked; the connection is closed".into(),
            ..Default::default()
        })
        .to_json();
        let (mut closed, mut failed) = (0, 0);
        for conn in self.registry.connections_of(tenant, sub).await? {
            // Best effort: the close is what matters.
            let _ = closer.post(&conn.id, &frame).await;
            match closer.close(&conn.id).await {
                Ok(()) | Err(PushError::Gone) => closed += 1,
                Err(e) => {
                    tracing::warn!(connection_id = %conn.id, error = %e, "could not close a revoked connection");
                    failed += 1;
                }
            }
        }
        ::metrics::counter!(crate::metrics::CONNECTIONS_REVOKED).increment(closed as u64);
        Ok(Revoked {
            at_ms,
            closed,
            failed,
        })
    }

    /// The tenant's revocations.
    pub async fn revocations(&self, tenant: &str) -> Result<Vec<Revocation>, StoreError> {
        self.revocations.revocations(tenant).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::memory::{MemoryPusher, MemoryRegistry, MemoryRevocations, MemoryTrust, connection};

    #[tokio::test]
    async fn revoking_closes_only_that_principals_connections_in_that_tenant() {
        let reg = Arc::new(MemoryRegistry::default());
        for (id, tenant, sub) in [
            ("c1", "acme", "ana"),
            ("c2", "acme", "ana"),
            ("c3", "acme", "bo"),
            ("c4", "beta", "ana"),
        ] {
            reg.put_connection(&connection(id, tenant, sub, &["*"]))
                .await
                .unwrap();
        }
        let admin = IdentityAdmin::new(
            Arc::new(MemoryTrust::default()),
            Arc::new(MemoryRevocations::default()),
            reg,
            UrlPolicy::default(),
            Arc::new(SystemClock),
        );
        let pusher = MemoryPusher::default();
        let r = admin.revoke("acme", "ana", &pusher).await.unwrap();
        assert_eq!((r.closed, r.failed), (2, 0));
        assert_eq!(pusher.post("c1", "x").await, Err(PushError::Gone));
        assert_eq!(pusher.post("c2", "x").await, Err(PushError::Gone));
        pusher.post("c3", "x").await.unwrap();
        pusher.post("c4", "x").await.unwrap();
        assert!(
            pusher
                .posts("c1")
                .iter()
                .any(|f| f.contains("token_revoked"))
        );
        assert_eq!(admin.revocations("acme").await.unwrap().len(), 1);
        assert!(admin.revocations("beta").await.unwrap().is_empty());
    }
}
