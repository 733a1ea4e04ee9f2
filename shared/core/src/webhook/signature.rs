//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256
//! of "{id}.{timestamp}.{body}">`, keyed by the bytes of a `whsec_` secret.
//! During a rotation the header carries one `v1,` entry per secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "whsec_";
/// Shortest key accepted (the spec's secrets are 24 to 64 bytes).
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;
/// Length of generated keys.
const NEW_KEY_BYTES: usize = 32;

/// Why a secret or a signature could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookSignError {
    #[error("a signing secret starts with `whsec_` followed by base64")]
    NotASecret,
    #[error("the signing secret is not valid base64 after `whsec_`")]
    BadBase64,
    #[error("the signing secret is {0} bytes; 24 to 64 are accepted")]
    BadLength(usize),
    #[error("no randomness for a new secret: {0}")]
    NoRandomness(String),
}

/// A `whsec_…` signing secret, with its keyed HMAC ready.
#[derive(Clone)]
pub struct SigningSecret {
    text: String,
    keyed: HmacSha256,
}

impl PartialEq for SigningSecret {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for SigningSecret {}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(whsec_…)")
    }
}

impl SigningSecret {
    pub fn parse(text: &str) -> Result<Self, WebhookSignError> {
        let b64 = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(WebhookSignError::NotASecret)?;
        let key = B64.decode(b64).map_err(|_| WebhookSignError::BadBase64)?;
        Self::from_key(text.trim().to_owned(), &key)
    }

    fn from_key(text: String, key: &[u8]) -> Result<Self, WebhookSignError> {
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(WebhookSignError::BadLength(key.len()));
        }
        let keyed = <HmacSha256 as KeyInit>::new_from_slice(key)
            .map_err(|_| WebhookSignError::BadLength(key.len()))?;
        Ok(Self { text, keyed })
    }

    /// A new random 32-byte secret.
    pub fn generate() -> Result<Self, WebhookSignError> {
        let mut key = vec![0u8; NEW_KEY_BYTES];
        getrandom::fill(&mut key).map_err(|e| WebhookSignError::NoRandomness(e.to_string()))?;
        Self::from_key(format!("{PREFIX}{}", B64.encode(&key)), &key)
    }

    /// The `whsec_…` text, as given to the receiver.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn mac(&self, id: &str, timestamp: u64, body: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// `v1,<base64 signature>`.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        format!(
            "v1,{}",
            B64.encode(self.mac(id, timestamp, body).finalize().into_bytes())
        )
    }

    /// Whether any `v1,` entry of a `webhook-signature` header is this
    /// secret's signature (compared in constant time).
    pub fn verify(&self, id: &str, timestamp: u64, body: &[u8], header: &str) -> bool {
        header.split_whitespace().any(|entry| {
            entry
                .strip_prefix("v1,")
                .and_then(|sig| B64.decode(sig).ok())
                .is_some_and(|sig| self.mac(id, timestamp, body).verify_slice(&sig).is_ok())
        })
    }
}

/// The `webhook-signature` header for all current secrets, space-separated.
pub fn signature_header(
    secrets: &[SigningSecret],
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks reference vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: u64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn matches_the_standard_webhooks_vector() {
        let s = SigningSecret::parse(SECRET).unwrap();
        assert_eq!(s.sign(ID, TS, BODY), EXPECTED);
        assert!(s.verify(ID, TS, BODY, EXPECTED));
    }

    #[test]
    fn verification_fails_on_any_change() {
        let s = SigningSecret::parse(SECRET).unwrap();
        assert!(!s.verify(ID, TS + 1, BODY, EXPECTED));
        assert!(!s.verify("msg_other", TS, BODY, EXPECTED));
        assert!(!s.verify(ID, TS, br#"{"test": 2432232315}"#, EXPECTED));
        assert!(!s.verify(ID, TS, BODY, "v1,bm90IGEgc2lnbmF0dXJl"));
        assert!(!s.verify(
            ID,
            TS,
            BODY,
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        ));
    }

    #[test]
    fn a_rotation_header_carries_both_secrets() {
        let old = SigningSecret::parse(SECRET).unwrap();
        let new = SigningSecret::generate().unwrap();
        let header = signature_header(&[new.clone(), old.clone()], ID, TS, BODY);
        assert_eq!(header.split(' ').count(), 2);
        assert!(old.verify(ID, TS, BODY, &header));
        assert!(new.verify(ID, TS, BODY, &header));
    }

    #[test]
    fn generated_secrets_are_distinct_and_round_trip() {
        let a = SigningSecret::generate().unwrap();
        let b = SigningSecret::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(SigningSecret::parse(a.as_str()).unwrap(), a);
        assert!(a.as_str().starts_with("whsec_"));
    }

    #[test]
    fn bad_secrets_are_refused_with_reasons() {
        assert_eq!(
            SigningSecret::parse("MfKQ9r8G"),
            Err(WebhookSignError::NotASecret)
        );
        assert_eq!(
            SigningSecret::parse("whsec_***"),
            Err(WebhookSignError::BadBase64)
        );
        assert_eq!(
            SigningSecret::parse("whsec_c2hvcnQ="),
            Err(WebhookSignError::BadLength(5))
        );
    }
}
