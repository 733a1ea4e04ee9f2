//! Trust entries: which issuers a tenant trusts, where their keys come
//! from, and how their claims map onto agentwire's principal and grants.
//!
//! An issuer (`iss`) is trusted by one tenant only; the entry, never the
//! token, says which tenant a token belongs to and where its keys are. A
//! deployment-level entry (registered by the operator) serves many tenants
//! and names the claim that carries the tenant.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{AuthError, Claims, MAX_PRINCIPAL};
use crate::webhook::{UrlPolicy, UrlRefusal};

/// The longest issuer accepted.
pub const MAX_ISSUER: usize = 512;

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KeySource {
    /// A JWKS fetched over HTTPS from the URL registered here.
    Jwks { url: String },
    /// Public keys given inline (a JWKS document's `keys`).
    Inline { jwks: Value },
    /// An HS256 secret agentwire stores (base64), known by `kid` when given.
    Hs256 {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kid: Option<String>,
        secret_b64: String,
    },
}

/// Checks that the providers' own token shapes need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Preset {
    /// Supabase Auth: `aud` `authenticated` (unless the entry names its
    /// own), and `role` `service_role` refused unless allowed.
    Supabase {
        #[serde(default)]
        allow_service_role: bool,
    },
    /// Amazon Cognito user pools: access tokens (`token_use` `access`) are
    /// checked on `client_id`, ID tokens (`token_use` `id`) on `aud`; both
    /// against `client_ids`.
    Cognito { client_ids: Vec<String> },
}

/// Whose tokens an entry's issuer signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustOwner {
    /// One tenant's: every token of this issuer is that tenant's.
    Tenant(String),
    /// A deployment-level issuer: the tenant is the value of this claim.
    TenantClaim(String),
}

/// One trusted issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustEntry {
    pub issuer: String,
    pub owner: TrustOwner,
    pub keys: KeySource,
    /// Accepted `aud` values; empty: `aud` is not checked (Cognito access
    /// tokens have none; their preset checks `client_id`).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The claim naming the principal (default `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_claim: Option<String>,
    /// A claim holding `{"channels":[..],"publish":[..],"admin":bool}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants_claim: Option<String>,
    /// Channel patterns granted for joining, `{sub}` standing for the
    /// principal (escaped: a principal never widens a pattern).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Channel patterns granted for publishing, `{sub}` as above.
    #[serde(default)]
    pub publish: Vec<String>,
    /// The longest lifetime (`exp - iat`) accepted, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
}

/// Why a trust entry cannot be saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("invalid trust entry: {0}")]
    Invalid(String),
    #[error("the JWKS URL is refused: {0}")]
    Url(#[from] UrlRefusal),
    #[error("issuer {issuer:?} is already trusted by another tenant")]
    IssuerTaken { issuer: String },
}

impl TrustEntry {
    /// The tenant the entry belongs to (`None`: deployment-level).
    pub fn tenant(&self) -> Option<&str> {
        match &self.owner {
            TrustOwner::Tenant(t) => Some(t),
            TrustOwner::TenantClaim(_) => None,
        }
    }

    /// The checks made before an entry is saved: shape, patterns, keys,
    /// and the JWKS URL against the same address policy as webhook URLs
    /// (resolved: a private or metadata address is refused).
    pub async fn validate(&self, urls: &UrlPolicy) -> Result<(), TrustError> {
        let bad = |m: &str| Err(TrustError::Invalid(m.to_owned()));
        if self.issuer.trim().is_empty() || self.issuer.len() > MAX_ISSUER {
            return bad("the issuer must be 1 to 512 characters");
        }
        if let TrustOwner::Tenant(t) = &self.owner {
            agentwire_protocol::limits::validate_tenant(t)
                .map_err(|e| TrustError::Invalid(e.message))?;
        }
        for p in self.channels.iter().chain(&self.publish) {
            super::Grants::compile(&[p.replace("{sub}", "x")])
                .map_err(|e| TrustError::Invalid(e.to_string()))?;
        }
        match &self.keys {
            KeySource::Jwks { url } => {
                urls.check(url).await?;
            }
            KeySource::Inline { jwks } => {
                let set = super::jwks::parse_set(jwks)
                    .map_err(|e| TrustError::Invalid(format!("inline keys: {e}")))?;
                if set.keys.is_empty() {
                    return bad("the inline keys hold no usable public key");
                }
            }
            KeySource::Hs256 { secret_b64, .. } => {
                let secret = decode_secret(secret_b64)
                    .map_err(|_| TrustError::Invalid("the HS256 secret is not base64".into()))?;
                if secret.len() < crate::config::MIN_JWT_SECRET_BYTES {
                    return Err(TrustError::Invalid(format!(
                        "an HS256 secret must be at least {} bytes",
                        crate::config::MIN_JWT_SECRET_BYTES
                    )));
                }
            }
        }
        if let Some(Preset::Cognito { client_ids }) = &self.preset
            && client_ids.is_empty()
        {
            return bad("the cognito preset needs at least one app client id");
        }
        Ok(())
    }

    /// The entry as a tenant admin may read it: an HS256 secret is never
    /// shown again.
    pub fn redacted(&self) -> TrustEntry {
        let mut e = self.clone();
        if let KeySource::Hs256 { secret_b64, .. } = &mut e.keys {
            *secret_b64 = "<stored>".into();
        }
        e
    }

    /// The audiences checked: the entry's own, else the preset's.
    pub(crate) fn effective_audiences(&self) -> Vec<String> {
        if !self.audiences.is_empty() {
            return self.audiences.clone();
        }
        match &self.preset {
            Some(Preset::Supabase { .. }) => vec!["authenticated".into()],
            _ => Vec::new(),
        }
    }

    /// Maps a verified token's claims onto agentwire's, `exp` and `iat`
    /// already read.
    pub(crate) fn map_claims(
        &self,
        payload: &Map<String, Value>,
        exp: u64,
        iat: Option<u64>,
    ) -> Result<Claims, AuthError> {
        self.check_preset(payload)?;
        let tenant = match &self.owner {
            TrustOwner::Tenant(t) => t.clone(),
            TrustOwner::TenantClaim(c) => {
                let t = string_claim(payload, c)?;
                agentwire_protocol::limits::validate_tenant(&t)
                    .map_err(|e| AuthError::InvalidClaims(format!("claim {c:?}: {}", e.message)))?;
                t
            }
        };
        let principal_claim = self.principal_claim.as_deref().unwrap_or("sub");
        let sub = string_claim(payload, principal_claim)?;
        if sub.len() > MAX_PRINCIPAL {
            return Err(AuthError::InvalidClaims(format!(
                "claim {principal_claim:?} is longer than {MAX_PRINCIPAL} characters"
            )));
        }
        let escaped = globset::escape(&sub);
        let fill = |ps: &[String]| -> Vec<String> {
            ps.iter().map(|p| p.replace("{sub}", &escaped)).collect()
        };
        let mut claims = Claims {
            channels: fill(&self.channels),
            publish: fill(&self.publish),
            sub,
            tenant,
            admin: false,
            exp,
            iat,
        };
        if let Some(name) = &self.grants_claim {
            let g = grants_claim(payload, name)?;
            claims.channels.extend(g.channels);
            claims.publish.extend(g.publish);
            claims.admin = g.admin;
        }
        Ok(claims)
    }

    fn check_preset(&self, payload: &Map<String, Value>) -> Result<(), AuthError> {
        match &self.preset {
            None => Ok(()),
            Some(Preset::Supabase { allow_service_role }) => {
                let role = payload.get("role").and_then(Value::as_str);
                if role == Some("service_role") && !allow_service_role {
                    return Err(AuthError::InvalidClaims(
                        "a Supabase service_role token is refused (the trust entry does not allow it)"
                            .into(),
                    ));
                }
                Ok(())
            }
            Some(Preset::Cognito { client_ids }) => {
                let token_use = payload.get("token_use").and_then(Value::as_str);
                let client = match token_use {
                    Some("access") => payload.get("client_id").and_then(Value::as_str),
                    // The audience was checked against the entry's own
                    // list when it has one; an ID token's `aud` is its
                    // app client.
                    Some("id") => payload.get("aud").and_then(Value::as_str),
                    _ => {
                        return Err(AuthError::InvalidClaims(
                            "a Cognito token must have token_use \"access\" or \"id\"".into(),
                        ));
                    }
                };
                match client {
                    Some(c) if client_ids.iter().any(|id| id == c) => Ok(()),
                    _ => Err(AuthError::WrongAudience),
                }
            }
        }
    }
}

/// The grants a token's claim object gives.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsClaim {
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    admin: bool,
}

fn grants_claim(payload: &Map<String, Value>, name: &str) -> Result<GrantsClaim, AuthError> {
    match payload.get(name) {
        None | Some(Value::Null) => Ok(GrantsClaim::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            AuthError::InvalidClaims(format!(
                "claim {name:?} must be {{\"channels\":[..],\"publish\":[..],\"admin\":bool}}: {e}"
            ))
        }),
    }
}

fn string_claim(payload: &Map<String, Value>, name: &str) -> Result<String, AuthError> {
    match payload.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(AuthError::InvalidClaims(format!("claim {name:?} is empty"))),
        Some(_) => Err(AuthError::InvalidClaims(format!(
            "claim {name:?} must be a string"
        ))),
        None => Err(AuthError::InvalidClaims(format!(
            "the token has no {name:?} claim"
        ))),
    }
}

/// An HS256 secret as stored (standard base64).
pub fn decode_secret(b64: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(b64.trim())
}

/// An HS256 secret for storing.
pub fn encode_secret(secret: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry() -> TrustEntry {
        TrustEntry {
            issuer: "https://idp.example".into(),
            owner: TrustOwner::Tenant("acme".into()),
            keys: KeySource::Jwks {
                url: "https://idp.example/jwks".into(),
            },
            audiences: vec![],
            principal_claim: None,
            grants_claim: None,
            channels: vec!["inbox-{sub}".into(), "agent-{sub}-*".into()],
            publish: vec!["inbox-{sub}".into()],
            max_lifetime_s: None,
            preset: None,
        }
    }

    fn payload(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn patterns_are_filled_with_the_escaped_principal() {
        let c = entry()
            .map_claims(
                &payload(json!({"sub": "u1", "tenant": "evil"})),
                10,
                Some(1),
            )
            .unwrap();
        assert_eq!(
            c.tenant, "acme",
            "the entry names the tenant, not the token"
        );
        assert_eq!(c.channels, vec!["inbox-u1", "agent-u1-*"]);
        assert_eq!(c.publish, vec!["inbox-u1"]);
        let star = entry()
            .map_claims(&payload(json!({"sub": "*"})), 10, None)
            .unwrap();
        let g = super::super::Grants::compile(&star.channels).unwrap();
        assert!(g.allows("inbox-*"));
        assert!(
            !g.allows("inbox-someone-else"),
            "a principal `*` must not widen the pattern"
        );
    }

    #[test]
    fn a_grants_claim_of_the_wrong_shape_is_refused() {
        let mut e = entry();
        e.grants_claim = Some("agentwire".into());
        let ok = e
            .map_claims(
                &payload(json!({"sub": "u1", "agentwire": {"channels": ["x-*"], "admin": true}})),
                10,
                None,
            )
            .unwrap();
        assert!(ok.admin);
        assert!(ok.channels.contains(&"x-*".to_string()));
        for bad in [
            json!({"sub": "u1", "agentwire": ["x"]}),
            json!({"sub": "u1", "agentwire": {"channels": "x"}}),
            json!({"sub": "u1", "agentwire": {"tenant": "other"}}),
        ] {
            assert!(
                matches!(
                    e.map_claims(&payload(bad.clone()), 10, None),
                    Err(AuthError::InvalidClaims(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn principals_empty_missing_or_too_long_are_refused() {
        for bad in [
            json!({"sub": ""}),
            json!({}),
            json!({"sub": 7}),
            json!({"sub": "x".repeat(MAX_PRINCIPAL + 1)}),
        ] {
            assert!(matches!(
                entry().map_claims(&payload(bad), 10, None),
                Err(AuthError::InvalidClaims(_))
            ));
        }
    }

    #[test]
    fn presets_check_supabase_roles_and_cognito_clients() {
        let mut s = entry();
        s.preset = Some(Preset::Supabase {
            allow_service_role: false,
        });
        assert_eq!(s.effective_audiences(), vec!["authenticated"]);
        assert!(
            s.map_claims(
                &payload(json!({"sub": "u", "role": "authenticated"})),
                1,
                None
            )
            .is_ok()
        );
        assert!(
            s.map_claims(
                &payload(json!({"sub": "u", "role": "service_role"})),
                1,
                None
            )
            .is_err()
        );
        let mut c = entry();
        c.preset = Some(Preset::Cognito {
            client_ids: vec!["app1".into()],
        });
        let access = json!({"sub": "u", "token_use": "access", "client_id": "app1"});
        assert!(c.map_claims(&payload(access), 1, None).is_ok());
        let other = json!({"sub": "u", "token_use": "access", "client_id": "app2"});
        assert_eq!(
            c.map_claims(&payload(other), 1, None),
            Err(AuthError::WrongAudience)
        );
        let id = json!({"sub": "u", "token_use": "id", "aud": "app1"});
        assert!(c.map_claims(&payload(id), 1, None).is_ok());
        let neither = json!({"sub": "u", "token_use": "refresh"});
        assert!(c.map_claims(&payload(neither), 1, None).is_err());
    }

    #[test]
    fn a_deployment_level_entry_reads_the_tenant_from_its_claim() {
        let mut e = entry();
        e.owner = TrustOwner::TenantClaim("org".into());
        let c = e
            .map_claims(&payload(json!({"sub": "u", "org": "beta"})), 1, None)
            .unwrap();
        assert_eq!(c.tenant, "beta");
        assert!(
            e.map_claims(&payload(json!({"sub": "u", "org": "a#b"})), 1, None)
                .is_err()
        );
        assert!(
            e.map_claims(&payload(json!({"sub": "u"})), 1, None)
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_jwks_url_at_a_private_or_metadata_address_is_refused_when_saved() {
        let policy = UrlPolicy::default();
        for url in [
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.8/jwks",
            "https://127.0.0.1/jwks",
            "http://idp.example/jwks",
        ] {
            let mut e = entry();
            e.keys = KeySource::Jwks { url: url.into() };
            assert!(e.validate(&policy).await.is_err(), "{url}");
        }
    }
}
