//! Tokens and channel grants.
//!
//! - [`Verifier`] decides whose a token is: tokens without `iss` are the
//!   deployment's own HS256 tokens ([`Keyring`], `kid` picks the key);
//!   a token with `iss` is checked against the one trust entry registered
//!   for that issuer ([`trust`]), with keys from the entry only (a JWKS URL,
//!   inline public keys or a stored HS256 secret), never from the token.
//! - [`jwks`]: the JWKS cache, keyed by tenant, URL and `kid`.
//! - [`Grants`]: compiled glob patterns of channels.

pub mod jwks;
pub mod trust;
mod verifier;

pub use verifier::Verifier;

use std::time::Duration;

use agentwire_protocol::ErrorCode;
use globset::{Glob, GlobSet, GlobSetBuilder};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::ports::StoreError;

/// What a verified token says: who (`tenant`, `sub`), what it may do
/// (`channels`, `publish`, `admin`) and for how long (`exp`, `iat`).
/// The deployment's own tokens carry exactly these claims; a token from a
/// tenant's identity provider is mapped onto them by its trust entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The principal.
    pub sub: String,
    pub tenant: String,
    /// Glob patterns of channels the principal may join.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Glob patterns of channels the principal may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Whether the principal may manage its tenant (the management API).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
    /// Expiry, Unix seconds.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// Why a token was refused. [`AuthError::reason`] is the stable sub-code
/// sent to the client beside the error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token: send `Authorization: Bearer <token>` or the `token` query parameter")]
    Missing,
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf or iat in the future)")]
    NotYetValid,
    #[error("token lives {lifetime_s} s, longer than its issuer's maximum of {max_s} s")]
    TooLongLived { lifetime_s: u64, max_s: u64 },
    #[error("the token names issuer {0:?}, which no tenant trusts")]
    UnknownIssuer(String),
    #[error("the issuer has no key {0:?} (after refetching its keys)")]
    UnknownKid(String),
    #[error("algorithm {alg} does not fit the issuer's key ({key})")]
    WrongAlgorithm { alg: String, key: String },
    #[error("the token's audience is not one its issuer accepts")]
    WrongAudience,
    #[error("the token was revoked: its principal's tokens issued before {0} are refused")]
    Revoked(u64),
    #[error("the issuer's keys cannot be fetched now: {0}")]
    KeysUnavailable(String),
    #[error("the issuer's keys are malformed: {0}")]
    KeysMalformed(String),
    #[error("token grants nothing usable: {0}")]
    InvalidClaims(String),
    #[error("token grants nothing usable: {0}")]
    Grant(#[from] GrantError),
    #[error("token could not be signed: {0}")]
    Signing(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AuthError {
    /// The stable sub-code of the refusal (the `reason` of the error frame
    /// or body).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::TooLongLived { .. } => "too_long_lived",
            AuthError::UnknownIssuer(_) => "unknown_issuer",
            AuthError::UnknownKid(_) => "unknown_kid",
            AuthError::WrongAlgorithm { .. } => "wrong_algorithm",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::Revoked(_) => "revoked",
            AuthError::KeysUnavailable(_) | AuthError::Store(_) => "unavailable",
            AuthError::KeysMalformed(_) => "keys_malformed",
            AuthError::InvalidClaims(_) | AuthError::Grant(_) => "invalid_claims",
            AuthError::Signing(_) => "signing",
        }
    }

    /// The wire error code: `token_expired`, `token_revoked`, `internal`
    /// for what a retry may fix (keys or store unavailable), else
    /// `unauthorized`.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::Revoked(_) => ErrorCode::TokenRevoked,
            AuthError::KeysUnavailable(_) | AuthError::Store(_) | AuthError::Signing(_) => {
                ErrorCode::Internal
            }
            _ => ErrorCode::Unauthorized,
        }
    }

    /// Whether the same token may pass later (the keys or the store were
    /// unavailable): answered like an unavailable store, never as a
    /// refusal of the token.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AuthError::KeysUnavailable(_))
            || matches!(self, AuthError::Store(StoreError::Unavailable { .. }))
    }

    /// The store error a retry may fix (the keys or the store unavailable),
    /// to be answered as one; `None` for a refusal of the token itself.
    pub fn unavailable(&self) -> Option<StoreError> {
        match self {
            AuthError::Store(s) => Some(s.clone()),
            e if e.is_retryable() => Some(StoreError::Unavailable {
                op: "verify token",
                reason: e.to_string(),
            }),
            _ => None,
        }
    }

    /// The message a client may read: the error's text, except for what a
    /// retry may fix, whose cause stays in the log.
    pub fn client_message(&self) -> String {
        match self.code() {
            ErrorCode::Internal => {
                "the gateway could not check the token now; retry shortly".to_owned()
            }
            _ => self.to_string(),
        }
    }

    /// The typed error for the client.
    pub fn protocol_error(&self) -> agentwire_protocol::ProtocolError {
        agentwire_protocol::ProtocolError::new(self.code(), self.client_message())
            .with_reason(self.reason())
    }
}

/// The longest principal (`sub`, or the claim a trust entry names) accepted.
pub const MAX_PRINCIPAL: usize = 256;

/// One of the deployment's own HS256 keys, with its `kid` when several are
/// active.
#[derive(Clone)]
pub struct TokenKey {
    kid: Option<String>,
    secret: Vec<u8>,
    encoding: EncodingKey,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey(kid {:?}, ..)", self.kid)
    }
}

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_S: u64 = 5;

impl TokenKey {
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            kid: None,
            secret: secret.to_vec(),
            encoding: EncodingKey::from_secret(secret),
        }
    }

    /// The key known by `kid` (written in the header of what it signs).
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub(crate) fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// A signed token for these claims.
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        self.sign_json(claims)
    }

    /// A signed token for any claims (an issuer's own shape: `iss`, `aud`,
    /// ...), with this key's `kid`.
    pub fn sign_json<T: Serialize>(&self, claims: &T) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| AuthError::Signing(e.to_string()))
    }

    /// Claims for `sub` in `tenant`, valid `ttl` from `now_s`.
    pub fn claims(
        tenant: &str,
        sub: &str,
        channels: Vec<String>,
        publish: Vec<String>,
        now_s: u64,
        ttl: Duration,
    ) -> Claims {
        Claims {
            sub: sub.to_owned(),
            tenant: tenant.to_owned(),
            channels,
            publish,
            admin: false,
            exp: now_s + ttl.as_secs(),
            iat: Some(now_s),
        }
    }
}

/// The deployment's active HS256 keys: the first signs, all verify (a
/// token's `kid` picks one; a token without `kid` is tried on each), so a
/// key rotates without a flag day.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<TokenKey>,
}

impl Keyring {
    pub fn new(keys: Vec<TokenKey>) -> Self {
        Self { keys }
    }

    /// The key new tokens are signed with.
    pub fn signer(&self) -> Option<&TokenKey> {
        self.keys.first()
    }

    /// The keys a token with this `kid` may have been signed with.
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a TokenKey> + 'a {
        self.keys
            .iter()
            .filter(move |k| kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl From<TokenKey> for Keyring {
    fn from(k: TokenKey) -> Self {
        Keyring::new(vec![k])
    }
}

/// Compiled channel patterns: `*` matches any run of characters (including
/// `/`), `?` one character, `[abc]` a class.
#[derive(Debug, Clone)]
pub struct Grants {
    set: GlobSet,
}

/// A grant pattern that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("grant pattern {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error("grant patterns: {0}")]
    Set(#[source] globset::Error),
}

impl Grants {
    pub fn compile(patterns: &[String]) -> Result<Self, GrantError> {
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            b.add(Glob::new(p).map_err(|source| GrantError::Pattern {
                pattern: p.clone(),
                source,
            })?);
        }
        let set = b.build().map_err(GrantError::Set)?;
        Ok(Self { set })
    }

    pub fn allows(&self, channel: &str) -> bool {
        self.set.is_match(channel)
    }
}

/// The token in `Authorization: Bearer …` if present, else the `token` query
/// parameter.
pub fn token_from(authorization: Option<&str>, query_token: Option<&str>) -> Option<String> {
    let bearer = authorization.and_then(|h| {
        let (scheme, rest) = h.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim().to_owned())
    });
    bearer
        .or_else(|| query_token.map(str::to_owned))
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_globs() {
        let g = Grants::compile(&["agent-*".into(), "fleet/eu/?".into()]).unwrap();
        assert!(g.allows("agent-42"));
        assert!(g.allows("fleet/eu/a"));
        assert!(!g.allows("fleet/eu/ab"));
        assert!(!g.allows("ops"));
        assert!(!Grants::compile(&[]).unwrap().allows("agent-1"));
        let err = Grants::compile(&["a[".into()]).unwrap_err();
        assert!(
            matches!(&err, GrantError::Pattern { pattern, .. } if pattern == "a["),
            "{err}"
        );
    }

    #[test]
    fn token_comes_from_header_then_query() {
        assert_eq!(
            token_from(Some("Bearer abc"), Some("q")),
            Some("abc".into())
        );
        assert_eq!(token_from(Some("bearer  abc "), None), Some("abc".into()));
        assert_eq!(token_from(Some("Basic abc"), Some("q")), Some("q".into()));
        assert_eq!(token_from(None, Some("")), None);
        assert_eq!(token_from(None, None), None);
    }
}
