//! `$connect`: verify the token, pick the subprotocol, record the connection.

use std::sync::Arc;
use std::time::Duration;

use agentwire_protocol::{
    ErrorCode, ProtocolError, ServerFrame, subprotocol_name, supported, version_of_subprotocol,
};

use crate::auth::{AuthError, Verifier};
use crate::clock::Clock;
use crate::limits::Scope;
use crate::model::Connection;
use crate::ports::{ConnectionRegistry, StoreError};
use crate::usecases::quotas::Quotas;

/// What `$connect` carries that matters.
#[derive(Debug, Clone, Default)]
pub struct ConnectRequest {
    pub connection_id: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `token` query parameter.
    pub query_token: Option<String>,
    /// The `Sec-WebSocket-Protocol` header (comma-separated offers).
    pub subprotocols: Option<String>,
}

/// An accepted connection and the subprotocol to echo, if the client offered one.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub subprotocol: Option<String>,
    pub connection: Connection,
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no offered subprotocol is supported: {offered}")]
    VersionUnsupported { offered: String },
    #[error("the tenant has {max} connections open, its limit; retry later")]
    TooManyConnections { max: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ConnectError {
    /// The typed error body sent with the refusal.
    pub fn frame(&self) -> ServerFrame {
        let code = match self {
            ConnectError::Auth(e) => return e.protocol_error().into(),
            ConnectError::VersionUnsupported { .. } => ErrorCode::VersionUnsupported,
            ConnectError::TooManyConnections { .. } => ErrorCode::TooManyConnections,
            ConnectError::Store(_) => ErrorCode::Internal,
        };
        // The conversion adds the supported range to `version_unsupported`.
        ProtocolError::new(code, self.to_string()).into()
    }
}

/// The `$connect` use case.
pub struct Connect {
    registry: Arc<dyn ConnectionRegistry>,
    verifier: Arc<Verifier>,
    clock: Arc<dyn Clock>,
    max_connection: Duration,
    quotas: Option<Arc<Quotas>>,
}

/// Kept a little longer than API Gateway keeps a connection, so a live
/// connection never loses its record.
const RECORD_MARGIN: Duration = Duration::from_secs(600);

impl Connect {
    pub fn new(
        registry: Arc<dyn ConnectionRegistry>,
        verifier: Arc<Verifier>,
        clock: Arc<dyn Clock>,
        max_connection: Duration,
    ) -> Self {
        Self {
            registry,
            verifier,
            clock,
            max_connection,
            quotas: None,
        }
    }

    /// Counts connections against their tenant's `max_connections`.
    pub fn with_quotas(mut self, quotas: Arc<Quotas>) -> Self {
        self.quotas = Some(quotas);
        self
    }

    pub async fn connect(&self, req: &ConnectRequest) -> Result<Accepted, ConnectError> {
        let token =
            crate::auth::token_from(req.authorization.as_deref(), req.query_token.as_deref())
                .ok_or(AuthError::Missing)?;
        let now = self.clock.epoch_s();
        let claims = self.verifier.verify(&token, now).await?;
        let (subprotocol, protocol) = pick_subprotocol(req.subprotocols.as_deref())?;
        let conn = Connection {
            id: req.connection_id.clone(),
            tenant: claims.tenant,
            principal: claims.sub,
            grants: claims.channels,
            publish: claims.publish,
            protocol,
            connected_at: now,
            expires_at: now + (self.max_connection + RECORD_MARGIN).as_secs(),
            channels: Vec::new(),
            token_exp: claims.exp,
            token_iat: claims.iat,
            counted: false,
            gzip: false,
        };
        self.record(&conn).await?;
        super::lifecycle::opened(self.registry.as_ref()).await;
        Ok(Accepted {
            subprotocol,
            connection: conn,
        })
    }
}

impl Connect {
    /// Records the connection, counted when its tenant has a maximum.
    async fn record(&self, conn: &Connection) -> Result<(), ConnectError> {
        let Some(quotas) = &self.quotas else {
            return Ok(self.registry.put_connection(conn).await?);
        };
        let limits = quotas.limits(&conn.tenant).await;
        let Some(max) = limits.max_connections.map(u64::from) else {
            return Ok(self.registry.put_connection(conn).await?);
        };
        if self.registry.put_counted_connection(conn, max).await? {
            return Ok(());
        }
        match quotas.over_quota(&limits, &conn.tenant, Scope::Connections) {
            // Dry run: admitted, not counted.
            Ok(()) => Ok(self.registry.put_connection(conn).await?),
            Err(_) => Err(ConnectError::TooManyConnections { max }),
        }
    }
}

/// The highest `agentwire.vN` offered that we speak. Offers of other
/// subprotocols are ignored; offering only unsupported agentwire versions is
/// refused, so a browser gets a clear failure rather than a silent mismatch.
fn pick_subprotocol(header: Option<&str>) -> Result<(Option<String>, Option<u32>), ConnectError> {
    let Some(header) = header else {
        return Ok((None, None));
    };
    let ours = supported();
    let offered: Vec<u32> = header
        .split(',')
        .filter_map(version_of_subprotocol)
        .collect();
    if offered.is_empty() {
        return Ok((None, None));
    }
    match offered
        .iter()
        .copied()
        .filter(|v| (ours.min..=ours.max).contains(v))
        .max()
    {
        Some(v) => Ok((Some(subprotocol_name(v)), Some(v))),
        None => Err(ConnectError::VersionUnsupported {
            offered: header.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::memory::MemoryRegistry;

    use crate::auth::TokenKey;

    fn setup() -> (Connect, Arc<MemoryRegistry>, TokenKey) {
        let reg = Arc::new(MemoryRegistry::default());
        let key = TokenKey::hs256(b"secret");
        let c = Connect::new(
            reg.clone(),
            Arc::new(Verifier::new(key.clone(), Arc::new(SystemClock))),
            Arc::new(SystemClock),
            Duration::from_secs(7200),
        );
        (c, reg, key)
    }

    fn token(key: &TokenKey, ttl_from_now: i64) -> String {
        let now = SystemClock.epoch_s() as i64;
        let mut claims = TokenKey::claims(
            "acme",
            "ana",
            vec!["agent-*".into()],
            vec![],
            0,
            Duration::ZERO,
        );
        claims.exp = (now + ttl_from_now) as u64;
        key.sign(&claims).unwrap()
    }

    #[tokio::test]
    async fn the_connection_after_the_tenants_maximum_is_refused_until_one_closes() {
        let (c, reg, key) = setup();
        let limits = Arc::new(crate::memory::MemoryLimits::default());
        use crate::ports::LimitSettings;
        limits
            .put(
                "acme",
                &crate::limits::TenantLimits {
                    max_connections: Some(2),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let c = c.with_quotas(Arc::new(Quotas::new(
            limits.clone(),
            limits,
            Default::default(),
            Arc::new(SystemClock),
        )));
        let req = |id: &str| ConnectRequest {
            connection_id: id.into(),
            authorization: Some(format!("Bearer {}", token(&key, 60))),
            ..Default::default()
        };
        c.connect(&req("c1")).await.unwrap();
        c.connect(&req("c2")).await.unwrap();
        let e = c.connect(&req("c3")).await.unwrap_err();
        assert!(matches!(e, ConnectError::TooManyConnections { max: 2 }));
        let ServerFrame::Error(f) = e.frame() else {
            panic!("not an error frame")
        };
        assert_eq!(f.code, ErrorCode::TooManyConnections);
        assert!(reg.get_connection("c3").await.unwrap().is_none());
        assert!(reg.remove_connection("c1").await.unwrap().is_some());
        c.connect(&req("c3")).await.unwrap();
    }

    #[tokio::test]
    async fn accepts_bearer_and_echoes_subprotocol() {
        let (c, reg, key) = setup();
        let req = ConnectRequest {
            connection_id: "c1".into(),
            authorization: Some(format!("Bearer {}", token(&key, 60))),
            subprotocols: Some("chat, agentwire.v1".into()),
            ..Default::default()
        };
        let a = c.connect(&req).await.unwrap();
        assert_eq!(a.subprotocol.as_deref(), Some("agentwire.v1"));
        let stored = reg.get_connection("c1").await.unwrap().unwrap();
        assert_eq!(stored.principal, "ana");
        assert_eq!(stored.tenant, "acme");
        assert_eq!(stored.protocol, Some(1));
    }

    #[tokio::test]
    async fn refuses_missing_bad_and_expired_tokens_and_records_nothing() {
        let (c, reg, key) = setup();
        let other = TokenKey::hs256(b"other");
        let cases = [
            (None, ErrorCode::Unauthorized),
            (Some("garbage".to_string()), ErrorCode::Unauthorized),
            (Some(token(&other, 60)), ErrorCode::Unauthorized),
            (Some(token(&key, -3600)), ErrorCode::TokenExpired),
        ];
        for (i, (tok, code)) in cases.into_iter().enumerate() {
            let req = ConnectRequest {
                connection_id: format!("c{i}"),
                query_token: tok,
                ..Default::default()
            };
            let err = c.connect(&req).await.unwrap_err();
            assert!(matches!(err, ConnectError::Auth(_)), "{err}");
            let ServerFrame::Error(f) = err.frame() else {
                panic!()
            };
            assert_eq!(f.code, code);
        }
        assert_eq!(reg.len(), 0);
    }

    #[tokio::test]
    async fn refuses_only_unsupported_agentwire_versions() {
        let (c, _reg, key) = setup();
        let req = ConnectRequest {
            connection_id: "c1".into(),
            query_token: Some(token(&key, 60)),
            subprotocols: Some("agentwire.v7".into()),
            ..Default::default()
        };
        let err = c.connect(&req).await.unwrap_err();
        assert!(
            matches!(err, ConnectError::VersionUnsupported { .. }),
            "{err}"
        );
        let ServerFrame::Error(f) = err.frame() else {
            panic!()
        };
        assert_eq!(f.code, ErrorCode::VersionUnsupported);
        assert_eq!(f.supported, Some(supported()));
    }
}
