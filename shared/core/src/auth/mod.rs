//! Tokens (HS256 JWTs) and channel grants.

use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claims agentwire reads from a token.
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
    /// Expiry, Unix seconds.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// Why a token was refused.
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
    #[error("token grants nothing usable: {0}")]
    InvalidClaims(String),
    #[error("token grants nothing usable: {0}")]
    Grant(#[from] GrantError),
    #[error("token could not be signed: {0}")]
    Signing(String),
}

/// Signs and verifies HS256 tokens with one shared key.
#[derive(Clone)]
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// Clock skew tolerated on `exp`.
pub const LEEWAY_S: u64 = 5;

impl TokenKey {
    pub fn hs256(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // `exp` is required, and checked against the caller's clock in
        // `verify`, not the library's reading of the system time.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The verified claims at `now_s` (Unix seconds, from the caller's
    /// [`Clock`](crate::clock::Clock)), or why not: `exp` may be passed by
    /// at most [`LEEWAY_S`]. Also checks that the tenant is a valid name and
    /// every grant compiles.
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Claims, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token.trim(), &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            other => AuthError::Malformed(format!("{other:?}")),
        })?;
        let claims = data.claims;
        // `exp` 0 would mean "no expiry known" to `token_expired`: a token
        // must carry a real one.
        if claims.exp == 0 || crate::model::token_expired(claims.exp, now_s) {
            return Err(AuthError::Expired);
        }
        agentwire_protocol::limits::validate_tenant(&claims.tenant)
            .map_err(|e| AuthError::InvalidClaims(e.message))?;
        if claims.sub.is_empty() {
            return Err(AuthError::InvalidClaims("sub is empty".into()));
        }
        Grants::compile(&claims.channels)?;
        Grants::compile(&claims.publish)?;
        Ok(claims)
    }

    /// A signed token for these claims.
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
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
            exp: now_s + ttl.as_secs(),
            iat: Some(now_s),
        }
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

    fn now() -> u64 {
        crate::clock::epoch_s(std::time::SystemTime::now())
    }

    #[test]
    fn signs_and_verifies() {
        let key = TokenKey::hs256(b"k1");
        let c = TokenKey::claims(
            "acme",
            "ana",
            vec!["agent-*".into()],
            vec![],
            now(),
            Duration::from_secs(60),
        );
        let t = key.sign(&c).unwrap();
        assert_eq!(key.verify(&t, now()).unwrap(), c);
    }

    #[test]
    fn refuses_bad_tokens_with_reasons() {
        let key = TokenKey::hs256(b"k1");
        let other = TokenKey::hs256(b"k2");
        let c = TokenKey::claims(
            "acme",
            "ana",
            vec![],
            vec![],
            now(),
            Duration::from_secs(60),
        );
        assert_eq!(
            key.verify(&other.sign(&c).unwrap(), now()),
            Err(AuthError::BadSignature)
        );
        assert!(matches!(
            key.verify("not-a-jwt", now()),
            Err(AuthError::Malformed(_))
        ));
        let old = TokenKey::claims(
            "acme",
            "ana",
            vec![],
            vec![],
            now() - 3600,
            Duration::from_secs(60),
        );
        assert_eq!(
            key.verify(&key.sign(&old).unwrap(), now()),
            Err(AuthError::Expired)
        );
        // Expiry is read at the caller's time, with the leeway.
        let t = key.sign(&c).unwrap();
        assert!(key.verify(&t, c.exp + LEEWAY_S).is_ok());
        assert_eq!(
            key.verify(&t, c.exp + LEEWAY_S + 1),
            Err(AuthError::Expired)
        );
        let zero = Claims {
            exp: 0,
            ..c.clone()
        };
        assert_eq!(
            key.verify(&key.sign(&zero).unwrap(), now()),
            Err(AuthError::Expired),
            "exp 0 is no expiry at all: refused"
        );
        let bad_tenant = TokenKey::claims(
            "ac#me",
            "ana",
            vec![],
            vec![],
            now(),
            Duration::from_secs(60),
        );
        assert!(matches!(
            key.verify(&key.sign(&bad_tenant).unwrap(), now()),
            Err(AuthError::InvalidClaims(_))
        ));
    }

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
