//! Whose a token is, and whether it still holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{Map, Value};

use super::jwks::{JwksCache, parse_set, select};
use super::trust::{KeySource, TrustEntry, decode_secret};
use super::{AuthError, Claims, Grants, Keyring, LEEWAY_S, MAX_PRINCIPAL};
use crate::clock::Clock;
use crate::ports::{Revocations, TrustStore};
use crate::sync::lock;

/// The longest token read (a header line of API Gateway is at most 10 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Trust entries (and their absence) kept per instance at most this many.
const TRUST_CACHE_ENTRIES: usize = 1024;

/// The JWKS cache key of a deployment-level issuer.
const DEPLOYMENT: &str = "*";

/// Verifies tokens: the deployment's own (no `iss`: HS256 with its
/// [`Keyring`]) and those of the issuers tenants trust (the entry for the
/// token's `iss` names the tenant and where the keys are; nothing in the
/// token does). Then, when revocations are on, refuses a token of a
/// principal revoked after the token was issued.
pub struct Verifier {
    keyring: Keyring,
    clock: Arc<dyn Clock>,
    trust: Option<(Arc<dyn TrustStore>, Arc<JwksCache>)>,
    revocations: Option<Arc<dyn Revocations>>,
    trust_cache_for: Duration,
    entries: Mutex<HashMap<String, CachedEntry>>,
}

/// An issuer's entry (or its absence) and until when it is kept (Unix ms).
type CachedEntry = (Option<Arc<TrustEntry>>, u64);

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keyring", &self.keyring)
            .field("trust", &self.trust.is_some())
            .field("revocations", &self.revocations.is_some())
            .finish()
    }
}

impl Verifier {
    pub fn new(keyring: impl Into<Keyring>, clock: Arc<dyn Clock>) -> Self {
        Self {
            keyring: keyring.into(),
            clock,
            trust: None,
            revocations: None,
            trust_cache_for: Duration::from_secs(10),
            entries: Mutex::default(),
        }
    }

    /// Accepts tokens of the issuers in `store`, keys from `jwks`; an
    /// instance keeps an issuer's entry (or its absence) for `cache_for`.
    pub fn with_trust(
        mut self,
        store: Arc<dyn TrustStore>,
        jwks: Arc<JwksCache>,
        cache_for: Duration,
    ) -> Self {
        self.trust = Some((store, jwks));
        self.trust_cache_for = cache_for;
        self
    }

    /// Refuses tokens of revoked principals.
    pub fn with_revocations(mut self, revocations: Arc<dyn Revocations>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The token's claims at `now_s` (Unix seconds), or why not. Every
    /// refusal is counted by reason.
    pub async fn verify(&self, token: &str, now_s: u64) -> Result<Claims, AuthError> {
        let res = self.verify_token(token.trim(), now_s).await;
        if let Err(e) = &res {
            ::metrics::counter!(crate::metrics::TOKENS_REFUSED, "reason" => e.reason())
                .increment(1);
        }
        res
    }

    /// Refuses `sub`'s token issued at `iat` when the principal was
    /// revoked since (a token without `iat` is refused by any revocation).
    pub async fn check_revoked(
        &self,
        tenant: &str,
        sub: &str,
        iat: Option<u64>,
    ) -> Result<(), AuthError> {
        let Some(revocations) = &self.revocations else {
            return Ok(());
        };
        match revocations.revoked_at(tenant, sub).await? {
            Some(at_ms) if iat.is_none_or(|iat| iat.saturating_mul(1000) <= at_ms) => {
                Err(AuthError::Revoked(at_ms / 1000))
            }
            _ => Ok(()),
        }
    }

    async fn verify_token(&self, token: &str, now_s: u64) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed(format!(
                "longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token).map_err(malformed)?;
        let payload: Map<String, Value> =
            jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(malformed)?;
        let claims = match payload.get("iss") {
            None => self.verify_deployment(token, &header, &payload, now_s)?,
            Some(Value::String(iss)) => self.verify_issued(token, &header, iss, now_s).await?,
            Some(_) => return Err(AuthError::Malformed("iss must be a string".into())),
        };
        Grants::compile(&claims.channels)?;
        Grants::compile(&claims.publish)?;
        self.check_revoked(&claims.tenant, &claims.sub, claims.iat)
            .await?;
        Ok(claims)
    }

    /// A token without `iss`: the deployment's HS256 keys, the tenant from
    /// its `tenant` claim.
    fn verify_deployment(
        &self,
        token: &str,
        header: &Header,
        payload: &Map<String, Value>,
        now_s: u64,
    ) -> Result<Claims, AuthError> {
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::WrongAlgorithm {
                alg: format!("{:?}", header.alg),
                key: "the deployment's HS256 keys (a token without iss)".into(),
            });
        }
        let validation = validation(Algorithm::HS256, &[], None);
        let mut last = AuthError::BadSignature;
        for key in self.keyring.candidates(header.kid.as_deref()) {
            match jsonwebtoken::decode::<Claims>(
                token,
                &DecodingKey::from_secret(key.secret()),
                &validation,
            ) {
                Ok(data) => {
                    let c = data.claims;
                    // Read before the signature was checked; it covers it.
                    let nbf = number(payload, "nbf")?;
                    check_times(c.exp, nbf, c.iat, None, now_s)?;
                    agentwire_protocol::limits::validate_tenant(&c.tenant)
                        .map_err(|e| AuthError::InvalidClaims(e.message))?;
                    check_principal(&c.sub)?;
                    return Ok(c);
                }
                Err(e) => last = decode_error(e),
            }
        }
        Err(last)
    }

    /// A token with `iss`: the one entry registered for it says whose it
    /// is and where its keys are.
    async fn verify_issued(
        &self,
        token: &str,
        header: &Header,
        iss: &str,
        now_s: u64,
    ) -> Result<Claims, AuthError> {
        let entry = self
            .entry(iss)
            .await?
            .ok_or_else(|| AuthError::UnknownIssuer(truncate(iss)))?;
        let alg = header.alg;
        let kid = header.kid.as_deref();
        let key = match &entry.keys {
            KeySource::Hs256 {
                kid: entry_kid,
                secret_b64,
            } => {
                if alg != Algorithm::HS256 {
                    return Err(wrong_alg(alg, "an HS256 secret"));
                }
                if let (Some(want), Some(got)) = (entry_kid.as_deref(), kid)
                    && want != got
                {
                    return Err(AuthError::UnknownKid(got.to_owned()));
                }
                let secret = decode_secret(secret_b64)
                    .map_err(|_| AuthError::KeysMalformed("stored HS256 secret".into()))?;
                DecodingKey::from_secret(&secret)
            }
            KeySource::Jwks { url } => {
                if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                    return Err(wrong_alg(alg, "public keys (a JWKS)"));
                }
                let Some((_, jwks)) = &self.trust else {
                    return Err(AuthError::UnknownIssuer(truncate(iss)));
                };
                let tenant = entry.tenant().unwrap_or(DEPLOYMENT);
                let jwk = jwks.key(tenant, url, kid, alg).await?;
                DecodingKey::from_jwk(&jwk).map_err(|e| AuthError::KeysMalformed(e.to_string()))?
            }
            KeySource::Inline { jwks } => {
                if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                    return Err(wrong_alg(alg, "public keys (inline)"));
                }
                let set = parse_set(jwks).map_err(AuthError::KeysMalformed)?;
                let jwk = select(&set, kid, alg)?
                    .ok_or_else(|| AuthError::UnknownKid(kid.unwrap_or("(none)").to_owned()))?;
                DecodingKey::from_jwk(&jwk).map_err(|e| AuthError::KeysMalformed(e.to_string()))?
            }
        };
        if key.family() != alg.family() {
            return Err(wrong_alg(alg, "the issuer's key"));
        }
        let audiences = entry.effective_audiences();
        let validation = validation(alg, &audiences, Some(iss));
        let payload = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(decode_error)?
            .claims;
        let exp = number(&payload, "exp")?.ok_or_else(|| {
            AuthError::InvalidClaims("the token has no exp: a token must expire".into())
        })?;
        let iat = number(&payload, "iat")?;
        let nbf = number(&payload, "nbf")?;
        check_times(exp, nbf, iat, entry.max_lifetime_s, now_s)?;
        entry.map_claims(&payload, exp, iat)
    }

    /// The issuer's entry, from the instance's cache or the store.
    async fn entry(&self, iss: &str) -> Result<Option<Arc<TrustEntry>>, AuthError> {
        let Some((store, _)) = &self.trust else {
            return Ok(None);
        };
        let now = self.clock.epoch_ms();
        if let Some((e, until)) = lock(&self.entries).get(iss)
            && now < *until
        {
            return Ok(e.clone());
        }
        let found = store.issuer(iss).await?.map(Arc::new);
        let mut cache = lock(&self.entries);
        if cache.len() >= TRUST_CACHE_ENTRIES {
            cache.retain(|_, (_, until)| now < *until);
            if cache.len() >= TRUST_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(
            iss.to_owned(),
            (found.clone(), now + self.trust_cache_for.as_millis() as u64),
        );
        Ok(found)
    }
}

fn validation(alg: Algorithm, audiences: &[String], iss: Option<&str>) -> Validation {
    let mut v = Validation::new(alg);
    // Time claims are checked against the caller's clock in
    // `check_times`, not the library's reading of the system time.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.set_required_spec_claims(&["exp"]);
    if audiences.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(audiences);
    }
    if let Some(iss) = iss {
        v.set_issuer(&[iss]);
    }
    v
}

/// `exp` required and not passed, `nbf` and `iat` not in the future (all
/// with [`LEEWAY_S`]), and the lifetime within the issuer's maximum.
fn check_times(
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    max_lifetime_s: Option<u64>,
    now_s: u64,
) -> Result<(), AuthError> {
    // `exp` 0 would mean "no expiry known" to `token_expired`: a token
    // must carry a real one.
    if exp == 0 || crate::model::token_expired(exp, now_s) {
        return Err(AuthError::Expired);
    }
    let future = |t: Option<u64>| t.is_some_and(|t| t > now_s.saturating_add(LEEWAY_S));
    if future(nbf) || future(iat) {
        return Err(AuthError::NotYetValid);
    }
    if let Some(max_s) = max_lifetime_s {
        let Some(start) = iat.or(nbf) else {
            return Err(AuthError::InvalidClaims(
                "the issuer limits token lifetimes: the token must carry iat".into(),
            ));
        };
        let lifetime_s = exp.saturating_sub(start);
        if lifetime_s > max_s {
            return Err(AuthError::TooLongLived { lifetime_s, max_s });
        }
    }
    Ok(())
}

fn check_principal(sub: &str) -> Result<(), AuthError> {
    if sub.trim().is_empty() {
        return Err(AuthError::InvalidClaims("sub is empty".into()));
    }
    if sub.len() > MAX_PRINCIPAL {
        return Err(AuthError::InvalidClaims(format!(
            "sub is longer than {MAX_PRINCIPAL} characters"
        )));
    }
    Ok(())
}

fn number(payload: &Map<String, Value>, name: &str) -> Result<Option<u64>, AuthError> {
    match payload.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or_else(|| AuthError::InvalidClaims(format!("{name} must be a number"))),
    }
}

fn wrong_alg(alg: Algorithm, key: &str) -> AuthError {
    AuthError::WrongAlgorithm {
        alg: format!("{alg:?}"),
        key: key.to_owned(),
    }
}

fn malformed(e: jsonwebtoken::errors::Error) -> AuthError {
    AuthError::Malformed(format!("{:?}", e.kind()))
}

fn decode_error(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::WrongAlgorithm {
                alg: "the token's".into(),
                key: "the issuer's key".into(),
            }
        }
        ErrorKind::InvalidIssuer => AuthError::UnknownIssuer("(does not match)".into()),
        ErrorKind::MissingRequiredClaim(c) => {
            AuthError::InvalidClaims(format!("the token has no {c}"))
        }
        other => AuthError::Malformed(format!("{other:?}")),
    }
}

/// An issuer as echoed in a message: bounded.
fn truncate(s: &str) -> String {
    s.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenKey;
    use crate::auth::trust::{TrustOwner, encode_secret};
    use crate::clock::{ManualClock, SystemClock};
    use crate::memory::MemoryTrust;
    use serde_json::json;

    fn now() -> u64 {
        SystemClock.epoch_s()
    }

    fn claims(tenant: &str, ttl: u64) -> Claims {
        TokenKey::claims(
            tenant,
            "ana",
            vec!["agent-*".into()],
            vec![],
            now(),
            Duration::from_secs(ttl),
        )
    }

    #[tokio::test]
    async fn deployment_tokens_verify_with_any_active_key_by_kid() {
        let old = TokenKey::hs256(b"k1").with_kid("2026-11");
        let new = TokenKey::hs256(b"k2").with_kid("2026-12");
        let v = Verifier::new(
            Keyring::new(vec![new.clone(), old.clone()]),
            Arc::new(SystemClock),
        );
        let c = claims("acme", 60);
        assert_eq!(v.verify(&old.sign(&c).unwrap(), now()).await.unwrap(), c);
        assert_eq!(v.verify(&new.sign(&c).unwrap(), now()).await.unwrap(), c);
        let stray = TokenKey::hs256(b"k3");
        assert_eq!(
            v.verify(&stray.sign(&c).unwrap(), now()).await,
            Err(AuthError::BadSignature)
        );
    }

    #[tokio::test]
    async fn refuses_bad_tokens_with_reasons() {
        let key = TokenKey::hs256(b"k1");
        let v = Verifier::new(key.clone(), Arc::new(SystemClock));
        let c = claims("acme", 60);
        assert!(matches!(
            v.verify("not-a-jwt", now()).await,
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
            v.verify(&key.sign(&old).unwrap(), now()).await,
            Err(AuthError::Expired)
        );
        // Expiry is read at the caller's time, with the leeway.
        let t = key.sign(&c).unwrap();
        assert!(v.verify(&t, c.exp + LEEWAY_S).await.is_ok());
        assert_eq!(
            v.verify(&t, c.exp + LEEWAY_S + 1).await,
            Err(AuthError::Expired)
        );
        let zero = Claims {
            exp: 0,
            ..c.clone()
        };
        assert_eq!(
            v.verify(&key.sign(&zero).unwrap(), now()).await,
            Err(AuthError::Expired),
            "exp 0 is no expiry at all: refused"
        );
        let bad_tenant = claims("ac#me", 60);
        assert!(matches!(
            v.verify(&key.sign(&bad_tenant).unwrap(), now()).await,
            Err(AuthError::InvalidClaims(_))
        ));
        let empty_sub = Claims {
            sub: " ".into(),
            ..c.clone()
        };
        assert!(matches!(
            v.verify(&key.sign(&empty_sub).unwrap(), now()).await,
            Err(AuthError::InvalidClaims(_))
        ));
        let long_sub = Claims {
            sub: "s".repeat(MAX_PRINCIPAL + 1),
            ..c.clone()
        };
        assert!(matches!(
            v.verify(&key.sign(&long_sub).unwrap(), now()).await,
            Err(AuthError::InvalidClaims(_))
        ));
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            v.verify(&huge, now()).await,
            Err(AuthError::Malformed(_))
        ));
    }

    fn tenant_entry(issuer: &str, tenant: &str, secret: &[u8]) -> TrustEntry {
        TrustEntry {
            issuer: issuer.into(),
            owner: TrustOwner::Tenant(tenant.into()),
            keys: KeySource::Hs256 {
                kid: Some("t1".into()),
                secret_b64: encode_secret(secret),
            },
            audiences: vec!["agentwire".into()],
            principal_claim: None,
            grants_claim: None,
            channels: vec!["inbox-{sub}".into()],
            publish: vec![],
            max_lifetime_s: Some(3600),
            preset: None,
        }
    }

    fn with_trust(store: Arc<MemoryTrust>, clock: Arc<dyn Clock>) -> Verifier {
        let jwks = Arc::new(JwksCache::new(
            Arc::new(crate::memory::NoJwks),
            clock.clone(),
            Default::default(),
        ));
        Verifier::new(TokenKey::hs256(b"deployment-key"), clock).with_trust(
            store,
            jwks,
            Duration::from_secs(10),
        )
    }

    #[tokio::test]
    async fn a_tenant_hs256_key_signs_only_for_its_tenant_and_checks_aud_and_lifetime() {
        let store = Arc::new(MemoryTrust::default());
        let secret = b"acme-secret-acme-secret-acme-secret!";
        store
            .put_issuer(&tenant_entry("acme-backend", "acme", secret))
            .await
            .unwrap();
        let v = with_trust(store, Arc::new(SystemClock));
        let key = TokenKey::hs256(secret).with_kid("t1");
        let t = now();
        let token = |body: Value| key.sign_json(&body).unwrap();
        let ok = v
            .verify(
                &token(
                    json!({"iss": "acme-backend", "sub": "u1", "aud": "agentwire",
                               "tenant": "beta", "exp": t + 60, "iat": t}),
                ),
                t,
            )
            .await
            .unwrap();
        assert_eq!(
            ok.tenant, "acme",
            "the issuer's tenant, whatever the token says"
        );
        assert_eq!(ok.channels, vec!["inbox-u1"]);
        let cases = [
            (
                json!({"iss": "acme-backend", "sub": "u1", "aud": "other", "exp": t + 60, "iat": t}),
                "wrong_audience",
            ),
            (
                json!({"iss": "acme-backend", "sub": "u1", "aud": "agentwire", "exp": t + 7200, "iat": t}),
                "too_long_lived",
            ),
            (
                json!({"iss": "acme-backend", "sub": "u1", "aud": "agentwire", "exp": t + 60, "iat": t, "nbf": t + 30}),
                "not_yet_valid",
            ),
            (
                json!({"iss": "acme-backend", "sub": "u1", "aud": "agentwire", "iat": t}),
                "invalid_claims",
            ),
            (
                json!({"iss": "nobody", "sub": "u1", "aud": "agentwire", "exp": t + 60}),
                "unknown_issuer",
            ),
            (json!({"iss": 7, "sub": "u1", "exp": t + 60}), "malformed"),
        ];
        for (body, reason) in cases {
            let e = v.verify(&token(body.clone()), t).await.unwrap_err();
            assert_eq!(e.reason(), reason, "{body}: {e}");
        }
        // The deployment's key does not sign for the tenant's issuer.
        let forged = TokenKey::hs256(b"deployment-key").with_kid("t1").sign_json(
            &json!({"iss": "acme-backend", "sub": "u1", "aud": "agentwire", "exp": t + 60, "iat": t}),
        );
        assert_eq!(
            v.verify(&forged.unwrap(), t).await,
            Err(AuthError::BadSignature)
        );
    }

    #[tokio::test]
    async fn an_issuer_is_trusted_by_one_tenant_only() {
        let store = MemoryTrust::default();
        assert!(
            store
                .put_issuer(&tenant_entry("shared-idp", "acme", &[7; 32]))
                .await
                .unwrap()
        );
        assert!(
            !store
                .put_issuer(&tenant_entry("shared-idp", "beta", &[8; 32]))
                .await
                .unwrap(),
            "a second tenant's claim on an issuer is refused"
        );
        assert!(
            store
                .put_issuer(&tenant_entry("shared-idp", "acme", &[9; 32]))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn revoked_principals_tokens_issued_before_are_refused() {
        let clock = Arc::new(ManualClock::new());
        let key = TokenKey::hs256(b"k1");
        let revs = Arc::new(crate::memory::MemoryRevocations::default());
        let v = Verifier::new(key.clone(), clock.clone()).with_revocations(revs.clone());
        let t = clock.epoch_s();
        let c = TokenKey::claims("acme", "ana", vec![], vec![], t, Duration::from_secs(600));
        let token = key.sign(&c).unwrap();
        v.verify(&token, t).await.unwrap();
        revs.revoke("acme", "ana", clock.epoch_ms()).await.unwrap();
        assert!(matches!(
            v.verify(&token, t).await,
            Err(AuthError::Revoked(_))
        ));
        let other_tenant =
            TokenKey::claims("beta", "ana", vec![], vec![], t, Duration::from_secs(600));
        v.verify(&key.sign(&other_tenant).unwrap(), t)
            .await
            .expect("revocation is scoped to its tenant");
        let later = TokenKey::claims(
            "acme",
            "ana",
            vec![],
            vec![],
            t + 1,
            Duration::from_secs(600),
        );
        v.verify(&key.sign(&later).unwrap(), t + 1)
            .await
            .expect("a token issued after the revocation is accepted");
        assert_eq!(
            AuthError::Revoked(1).code(),
            agentwire_protocol::ErrorCode::TokenRevoked
        );
    }
}
