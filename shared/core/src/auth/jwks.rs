//! Issuers' public keys: parsing a JWKS, which algorithm fits which key,
//! and the cache.
//!
//! The cache is keyed by tenant and URL, and a key is found in its set by
//! `kid`: one tenant's token is never verified with a key fetched for
//! another tenant, even where two issuers publish the same `kid`. A set is
//! kept for its `Cache-Control: max-age` within a floor and a ceiling; an
//! unknown `kid` refetches it at once (one fetch at a time per set, and not
//! again within the cooldown), so a rotated-in key is accepted without
//! waiting, and a removed key is refused once its set is refetched, at the
//! latest after the ceiling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use serde_json::Value;

use super::AuthError;
use crate::clock::Clock;
use crate::ports::{JwksError, JwksFetcher};
use crate::sync::lock;

/// The most keys one set may hold.
pub const MAX_KEYS: usize = 64;

/// A parsed JWKS: its usable public signing keys.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
}

/// Parses a JWKS document (`{"keys": [...]}`), keeping the public signing
/// keys agentwire can use: symmetric (`oct`) keys, encryption keys and keys
/// of unknown types are left out.
pub fn parse_set(doc: &Value) -> Result<KeySet, String> {
    let Some(Value::Array(keys)) = doc.get("keys") else {
        return Err("a JWKS is an object with a \"keys\" array".into());
    };
    if keys.len() > MAX_KEYS {
        return Err(format!("a JWKS holds at most {MAX_KEYS} keys here"));
    }
    let keys = keys
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter(|k| {
            !matches!(
                k.algorithm,
                AlgorithmParameters::OctetKey(_) | AlgorithmParameters::Other(_)
            ) && !matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption))
        })
        .collect();
    Ok(KeySet { keys })
}

/// What a key is, for messages.
pub fn key_type(jwk: &Jwk) -> String {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => "RSA".into(),
        AlgorithmParameters::EllipticCurve(p) => format!("EC {:?}", p.curve),
        AlgorithmParameters::OctetKeyPair(p) => format!("OKP {:?}", p.curve),
        AlgorithmParameters::OctetKey(_) => "oct".into(),
        _ => "unknown".into(),
    }
}

/// Whether a token signed with `alg` may be verified with `jwk`: the
/// algorithm must fit the key's type and curve, and the key's own `alg`
/// when it names one.
pub fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    use Algorithm::*;
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::EllipticCurve(p) => matches!(
            (&p.curve, alg),
            (EllipticCurve::P256, ES256) | (EllipticCurve::P384, ES384)
        ),
        AlgorithmParameters::OctetKeyPair(p) => p.curve == EllipticCurve::Ed25519 && alg == EdDSA,
        _ => false,
    };
    let by_alg = match jwk.common.key_algorithm {
        None => true,
        Some(ka) => key_algorithm(alg) == Some(ka),
    };
    by_type && by_alg
}

fn key_algorithm(alg: Algorithm) -> Option<KeyAlgorithm> {
    Some(match alg {
        Algorithm::RS256 => KeyAlgorithm::RS256,
        Algorithm::RS384 => KeyAlgorithm::RS384,
        Algorithm::RS512 => KeyAlgorithm::RS512,
        Algorithm::PS256 => KeyAlgorithm::PS256,
        Algorithm::PS384 => KeyAlgorithm::PS384,
        Algorithm::PS512 => KeyAlgorithm::PS512,
        Algorithm::ES256 => KeyAlgorithm::ES256,
        Algorithm::ES384 => KeyAlgorithm::ES384,
        Algorithm::EdDSA => KeyAlgorithm::EdDSA,
        Algorithm::HS256 => KeyAlgorithm::HS256,
        Algorithm::HS384 => KeyAlgorithm::HS384,
        Algorithm::HS512 => KeyAlgorithm::HS512,
        _ => return None,
    })
}

/// The key of `set` a token with this `kid` and `alg` is verified with:
/// the one with that `kid` (which must fit `alg`), or, for a token without
/// `kid`, the only key that fits.
pub fn select(set: &KeySet, kid: Option<&str>, alg: Algorithm) -> Result<Option<Jwk>, AuthError> {
    match kid {
        Some(kid) => match set
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))
        {
            None => Ok(None),
            Some(k) if fits(k, alg) => Ok(Some(k.clone())),
            Some(k) => Err(AuthError::WrongAlgorithm {
                alg: format!("{alg:?}"),
                key: key_type(k),
            }),
        },
        None => {
            let mut fitting = set.keys.iter().filter(|k| fits(k, alg));
            match (fitting.next(), fitting.next()) {
                (Some(k), None) => Ok(Some(k.clone())),
                (None, _) if !set.keys.is_empty() => Err(AuthError::WrongAlgorithm {
                    alg: format!("{alg:?}"),
                    key: key_type(&set.keys[0]),
                }),
                _ => Ok(None),
            }
        }
    }
}

/// How long sets are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksPolicy {
    /// The shortest time a set is kept, whatever its `max-age` says.
    pub floor: Duration,
    /// The longest: a key removed from the set is refused after this at
    /// the latest.
    pub ceiling: Duration,
    /// How long a set without `max-age` is kept.
    pub default_max_age: Duration,
    /// After a fetch, an unknown `kid` does not fetch again within this.
    pub cooldown: Duration,
}

impl Default for JwksPolicy {
    /// Kept 1 min to 1 h (10 min without `max-age`); refetched for an
    /// unknown `kid` at most every 30 s.
    fn default() -> Self {
        Self {
            floor: Duration::from_secs(60),
            ceiling: Duration::from_secs(3600),
            default_max_age: Duration::from_secs(600),
            cooldown: Duration::from_secs(30),
        }
    }
}

struct Cached {
    set: Arc<KeySet>,
    fetched_ms: u64,
    fresh_until_ms: u64,
}

type SetKey = (String, String);

/// The JWKS cache of one function instance.
pub struct JwksCache {
    fetcher: Arc<dyn JwksFetcher>,
    clock: Arc<dyn Clock>,
    policy: JwksPolicy,
    sets: Mutex<HashMap<SetKey, Cached>>,
    flights: Mutex<HashMap<SetKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl JwksCache {
    pub fn new(fetcher: Arc<dyn JwksFetcher>, clock: Arc<dyn Clock>, policy: JwksPolicy) -> Self {
        Self {
            fetcher,
            clock,
            policy,
            sets: Mutex::default(),
            flights: Mutex::default(),
        }
    }

    /// The key of `tenant`'s issuer at `url` for a token with `kid` and
    /// `alg`, fetching the set when it is not cached, stale, or lacks the
    /// `kid` (outside the cooldown).
    pub async fn key(
        &self,
        tenant: &str,
        url: &str,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Jwk, AuthError> {
        let id = (tenant.to_owned(), url.to_owned());
        let now = self.clock.epoch_ms();
        let seen = self.cached(&id);
        if let Some((set, fetched, fresh_until)) = &seen
            && now < *fresh_until
        {
            if let Some(k) = select(set, kid, alg)? {
                return Ok(k);
            }
            if now < fetched + self.policy.cooldown.as_millis() as u64 {
                return Err(unknown(kid));
            }
        }
        let set = self.refetch(&id, seen.map(|s| s.1)).await?;
        select(&set, kid, alg)?.ok_or_else(|| unknown(kid))
    }

    fn cached(&self, id: &SetKey) -> Option<(Arc<KeySet>, u64, u64)> {
        lock(&self.sets)
            .get(id)
            .map(|c| (c.set.clone(), c.fetched_ms, c.fresh_until_ms))
    }

    /// Fetches the set once for every caller waiting on it: a caller that
    /// finds a fetch newer than the one it saw takes that one.
    async fn refetch(&self, id: &SetKey, seen: Option<u64>) -> Result<Arc<KeySet>, AuthError> {
        let flight = lock(&self.flights).entry(id.clone()).or_default().clone();
        let _one = flight.lock().await;
        if let Some((set, fetched, _)) = self.cached(id)
            && seen.is_none_or(|s| fetched > s)
        {
            return Ok(set);
        }
        let now = self.clock.epoch_ms();
        match self.fetcher.fetch(&id.1).await {
            Ok(fetched) => {
                let set = Arc::new(parse_set(&fetched.doc).map_err(AuthError::KeysMalformed)?);
                let keep = fetched
                    .max_age
                    .unwrap_or(self.policy.default_max_age)
                    .clamp(self.policy.floor, self.policy.ceiling);
                lock(&self.sets).insert(
                    id.clone(),
                    Cached {
                        set: set.clone(),
                        fetched_ms: now,
                        fresh_until_ms: now + keep.as_millis() as u64,
                    },
                );
                ::metrics::counter!(crate::metrics::JWKS_FETCHES, "outcome" => "ok").increment(1);
                Ok(set)
            }
            Err(e) => {
                ::metrics::counter!(crate::metrics::JWKS_FETCHES, "outcome" => "failed")
                    .increment(1);
                // A set fetched within the ceiling still serves while its
                // issuer cannot be reached.
                if let Some((set, fetched, _)) = self.cached(id)
                    && now < fetched + self.policy.ceiling.as_millis() as u64
                    && matches!(e, JwksError::Unavailable(_))
                {
                    tracing::warn!(tenant = %id.0, url = %id.1, error = %e, "JWKS refetch failed; serving the cached set");
                    return Ok(set);
                }
                Err(match e {
                    JwksError::Unavailable(m) => AuthError::KeysUnavailable(m),
                    JwksError::Malformed(m) => AuthError::KeysMalformed(m),
                    JwksError::Refused(m) => AuthError::KeysMalformed(m),
                })
            }
        }
    }
}

fn unknown(kid: Option<&str>) -> AuthError {
    AuthError::UnknownKid(kid.unwrap_or("(none)").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::ports::FetchedJwks;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ec_key(kid: &str) -> Value {
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
               "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
               "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})
    }

    struct Fake {
        doc: Mutex<Value>,
        calls: AtomicUsize,
        fail: Mutex<bool>,
    }

    #[async_trait::async_trait]
    impl JwksFetcher for Fake {
        async fn fetch(&self, _url: &str) -> Result<FetchedJwks, JwksError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            if *lock(&self.fail) {
                return Err(JwksError::Unavailable("down".into()));
            }
            Ok(FetchedJwks {
                doc: lock(&self.doc).clone(),
                max_age: Some(Duration::from_secs(120)),
            })
        }
    }

    fn setup(keys: Vec<Value>) -> (Arc<Fake>, Arc<ManualClock>, JwksCache) {
        let fake = Arc::new(Fake {
            doc: Mutex::new(json!({ "keys": keys })),
            calls: AtomicUsize::new(0),
            fail: Mutex::new(false),
        });
        let clock = Arc::new(ManualClock::new());
        let cache = JwksCache::new(fake.clone(), clock.clone(), JwksPolicy::default());
        (fake, clock, cache)
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_once_and_then_waits_out_the_cooldown() {
        let (fake, clock, cache) = setup(vec![ec_key("k1")]);
        cache
            .key("acme", "https://i/jwks", Some("k1"), Algorithm::ES256)
            .await
            .unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        // Rotated in: the unknown kid refetches after the cooldown only.
        *lock(&fake.doc) = json!({"keys": [ec_key("k1"), ec_key("k2")]});
        assert!(matches!(
            cache
                .key("acme", "https://i/jwks", Some("k2"), Algorithm::ES256)
                .await,
            Err(AuthError::UnknownKid(_))
        ));
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "within the cooldown");
        clock.advance(Duration::from_secs(31));
        cache
            .key("acme", "https://i/jwks", Some("k2"), Algorithm::ES256)
            .await
            .unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_misses_fetch_once() {
        let (fake, _clock, cache) = setup(vec![ec_key("k1")]);
        let cache = Arc::new(cache);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let c = cache.clone();
                tokio::spawn(async move {
                    c.key("acme", "https://i/jwks", Some("k1"), Algorithm::ES256)
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn sets_are_kept_per_tenant_even_for_the_same_kid() {
        let (fake, _clock, cache) = setup(vec![ec_key("k1")]);
        cache
            .key("acme", "https://i/jwks", Some("k1"), Algorithm::ES256)
            .await
            .unwrap();
        cache
            .key("beta", "https://i/jwks", Some("k1"), Algorithm::ES256)
            .await
            .unwrap();
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            2,
            "another tenant's cached key is never used"
        );
    }

    #[tokio::test]
    async fn a_removed_key_is_refused_once_the_set_expires_and_outages_serve_within_the_ceiling() {
        let (fake, clock, cache) = setup(vec![ec_key("k1")]);
        cache
            .key("acme", "https://i/jwks", Some("k1"), Algorithm::ES256)
            .await
            .unwrap();
        *lock(&fake.fail) = true;
        clock.advance(Duration::from_secs(121));
        cache
            .key("acme", "https://i/jwks", Some("k1"), Algorithm::ES256)
            .await
            .expect("stale but within the ceiling while the issuer is down");
        clock.advance(Duration::from_secs(3600));
        assert!(matches!(
            cache
                .key("acme", "https://i/jwks", Some("k1"), Algorithm::ES256)
                .await,
            Err(AuthError::KeysUnavailable(_))
        ));
        *lock(&fake.fail) = false;
        *lock(&fake.doc) = json!({"keys": [ec_key("k2")]});
        assert!(matches!(
            cache
                .key("acme", "https://i/jwks", Some("k1"), Algorithm::ES256)
                .await,
            Err(AuthError::UnknownKid(_))
        ));
    }

    #[test]
    fn algorithms_must_fit_the_key() {
        let set = parse_set(&json!({"keys": [ec_key("k1"),
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}))
        .unwrap();
        assert_eq!(
            set.keys.len(),
            1,
            "symmetric keys are never taken from a JWKS"
        );
        assert!(
            select(&set, Some("k1"), Algorithm::ES256)
                .unwrap()
                .is_some()
        );
        for alg in [Algorithm::HS256, Algorithm::RS256, Algorithm::ES384] {
            assert!(matches!(
                select(&set, Some("k1"), alg),
                Err(AuthError::WrongAlgorithm { .. })
            ));
        }
        assert!(select(&set, None, Algorithm::ES256).unwrap().is_some());
        assert!(parse_set(&json!([1])).is_err());
    }
}
