//! An identity provider for the tests: keys generated in the test (ES256,
//! RS256), a JWKS served over real HTTP on loopback (its keys and
//! `Cache-Control` changeable while it runs, its requests counted), and
//! tokens signed as the provider would sign them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

/// A signing key and its public JWK.
pub enum IdpKey {
    Es256 { kid: String, pair: EcdsaKeyPair },
    Rs256 { kid: String, pair: RsaKeyPair },
    EdDsa { kid: String, pair: Ed25519KeyPair },
}

impl IdpKey {
    pub fn es256(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key");
        IdpKey::Es256 {
            kid: kid.into(),
            pair,
        }
    }

    pub fn rs256(kid: &str) -> Self {
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA key");
        IdpKey::Rs256 {
            kid: kid.into(),
            pair,
        }
    }

    pub fn ed25519(kid: &str) -> Self {
        let pair = Ed25519KeyPair::generate().expect("Ed25519 key");
        IdpKey::EdDsa {
            kid: kid.into(),
            pair,
        }
    }

    pub fn kid(&self) -> &str {
        match self {
            IdpKey::Es256 { kid, .. } | IdpKey::Rs256 { kid, .. } | IdpKey::EdDsa { kid, .. } => {
                kid
            }
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        match self {
            IdpKey::Es256 { kid, pair } => {
                let point = pair.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                       "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])})
            }
            IdpKey::EdDsa { kid, pair } => {
                json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA",
                       "x": B64.encode(pair.public_key().as_ref())})
            }
            IdpKey::Rs256 { kid, pair } => {
                let public = pair.public_key();
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                       "n": B64.encode(public.modulus().big_endian_without_leading_zero()),
                       "e": B64.encode(public.exponent().big_endian_without_leading_zero())})
            }
        }
    }

    /// The RSA modulus (what an algorithm-confusion attacker uses as an
    /// HMAC secret).
    pub fn public_bytes(&self) -> Vec<u8> {
        match self {
            IdpKey::Es256 { pair, .. } => pair.public_key().as_ref().to_vec(),
            IdpKey::EdDsa { pair, .. } => pair.public_key().as_ref().to_vec(),
            IdpKey::Rs256 { pair, .. } => pair
                .public_key()
                .modulus()
                .big_endian_without_leading_zero()
                .to_vec(),
        }
    }

    /// A token with these claims, signed with this key (its `kid` in the
    /// header unless `kid` overrides it).
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(claims, Some(self.kid()))
    }

    pub fn sign_as(&self, claims: &Value, kid: Option<&str>) -> String {
        let alg = match self {
            IdpKey::Es256 { .. } => "ES256",
            IdpKey::Rs256 { .. } => "RS256",
            IdpKey::EdDsa { .. } => "EdDSA",
        };
        let mut header = json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let sig = match self {
            IdpKey::Es256 { pair, .. } => pair
                .sign(&rng, input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec(),
            IdpKey::EdDsa { pair, .. } => pair.sign(input.as_bytes()).as_ref().to_vec(),
            IdpKey::Rs256 { pair, .. } => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .expect("sign");
                sig
            }
        };
        format!("{input}.{}", B64.encode(sig))
    }
}

/// An HS256 token over any header and claims (forgeries included).
pub fn hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    use hmac::{KeyInit, Mac};
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("hmac key");
    mac.update(input.as_bytes());
    format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
}

#[derive(Default)]
struct Served {
    /// path -> (JWKS document, Cache-Control)
    sets: Mutex<std::collections::HashMap<String, (Value, String)>>,
    requests: AtomicUsize,
}

/// JWKS documents served over HTTP on loopback.
pub struct JwksServer {
    pub addr: SocketAddr,
    served: Arc<Served>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start() -> Self {
        use axum::extract::{Path, State};
        use axum::http::{StatusCode, header};
        use axum::response::IntoResponse;
        let served = Arc::new(Served::default());
        let app = axum::Router::new()
            .route(
                "/{set}/jwks.json",
                axum::routing::get(
                    |State(s): State<Arc<Served>>, Path(set): Path<String>| async move {
                        s.requests.fetch_add(1, Ordering::SeqCst);
                        let found = s.sets.lock().expect("lock").get(&set).cloned();
                        match found {
                            Some((doc, cache)) => (
                                StatusCode::OK,
                                [
                                    (header::CONTENT_TYPE, "application/json".to_owned()),
                                    (header::CACHE_CONTROL, cache),
                                ],
                                doc.to_string(),
                            )
                                .into_response(),
                            None => StatusCode::NOT_FOUND.into_response(),
                        }
                    },
                ),
            )
            .with_state(served.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, served, task }
    }

    /// Serves `keys` as the set `name`, kept as `cache_control` says.
    pub fn set(&self, name: &str, keys: &[&IdpKey], cache_control: &str) {
        let doc = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
        self.served
            .sets
            .lock()
            .expect("lock")
            .insert(name.to_owned(), (doc, cache_control.to_owned()));
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}/jwks.json", self.addr)
    }

    /// Requests served so far.
    pub fn requests(&self) -> usize {
        self.served.requests.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
