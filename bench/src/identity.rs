//! `--only identity`: what verifying a token costs, side by side in one
//! run. In process: one `Verifier::verify` for the deployment's HS256 key,
//! a tenant's own HS256 key (trust entry cached), and RS256 and ES256
//! tokens of a trusted issuer whose JWKS is cached (served by a real HTTP
//! server, fetched once). On the local stack: the WebSocket connect
//! (upgrade → `welcome`) with an HS256 token vs an ES256 token of a trusted
//! issuer, and the DynamoDB calls of a join, the revocation check among
//! them.

use std::sync::Arc;
use std::time::Duration;

use agentwire_core::auth::jwks::{JwksCache, JwksPolicy};
use agentwire_core::auth::trust::{KeySource, TrustEntry, TrustOwner, encode_secret};
use agentwire_core::auth::{TokenKey, Verifier};
use agentwire_core::clock::{Clock, SystemClock};
use agentwire_core::memory::{MemoryRevocations, MemoryTrust};
use agentwire_core::ports::TrustStore;
use agentwire_e2e::Stack;
use agentwire_e2e::idp::{IdpKey, JwksServer};
use serde_json::json;
use tokio::time::Instant;

use crate::{counted, ms, pct};

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn entry(iss: &str, keys: KeySource) -> TrustEntry {
    TrustEntry {
        issuer: iss.into(),
        owner: TrustOwner::Tenant("bench".into()),
        keys,
        audiences: vec!["app".into()],
        principal_claim: None,
        grants_claim: None,
        channels: vec!["inbox-{sub}".into()],
        publish: vec![],
        max_lifetime_s: None,
        preset: None,
    }
}

pub async fn identity(n: usize) {
    eprintln!("identity: {n} verifications per kind, then connects and joins on the local stack");
    verification(n).await;
    println!();
    on_the_stack(n.min(200)).await;
}

async fn verification(n: usize) {
    let idp = JwksServer::start().await;
    let (rs, es) = (IdpKey::rs256("r1"), IdpKey::es256("e1"));
    idp.set("set", &[&rs, &es], "max-age=3600");
    let trust = Arc::new(MemoryTrust::default());
    let tenant_secret = [7u8; 48];
    for e in [
        entry(
            "https://idp.bench/",
            KeySource::Jwks {
                url: idp.url("set"),
            },
        ),
        entry(
            "bench-backend",
            KeySource::Hs256 {
                kid: Some("t1".into()),
                secret_b64: encode_secret(&tenant_secret),
            },
        ),
    ] {
        if let Err(e) = trust.put_issuer(&e).await {
            eprintln!("identity: {e}");
            return;
        }
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let policy = agentwire_core::webhook::UrlPolicy {
        allow_insecure_loopback: true,
        ..Default::default()
    };
    let jwks = Arc::new(JwksCache::new(
        Arc::new(agentwire_aws::ReqwestJwks::new(
            policy,
            Duration::from_secs(5),
        )),
        clock.clone(),
        JwksPolicy::default(),
    ));
    let deployment = TokenKey::hs256(&[9u8; 48]);
    let verifier = Verifier::new(deployment.clone(), clock.clone())
        .with_trust(trust, jwks, Duration::from_secs(60))
        .with_revocations(Arc::new(MemoryRevocations::default()));
    let now = clock.epoch_s();
    let claims =
        |iss: &str| json!({"iss": iss, "sub": "u1", "aud": "app", "iat": now, "exp": now + 3600});
    let tokens = [
        (
            "HS256, the deployment's key",
            deployment
                .sign(&TokenKey::claims(
                    "bench",
                    "u1",
                    vec!["inbox-u1".into()],
                    vec![],
                    now,
                    Duration::from_secs(3600),
                ))
                .unwrap_or_default(),
        ),
        (
            "HS256, the tenant's own key (entry cached)",
            TokenKey::hs256(&tenant_secret)
                .with_kid("t1")
                .sign_json(&claims("bench-backend"))
                .unwrap_or_default(),
        ),
        (
            "RS256 (2048), JWKS cached",
            rs.sign(&claims("https://idp.bench/")),
        ),
        (
            "ES256 (P-256), JWKS cached",
            es.sign(&claims("https://idp.bench/")),
        ),
    ];
    // The first ES256 verification fetches the set: timed on its own.
    let t0 = Instant::now();
    if let Err(e) = verifier.verify(&tokens[3].1, now).await {
        eprintln!("identity: {e}");
        return;
    }
    let first = t0.elapsed();
    println!("Verifying a token in process ({n} each; revocation check on an in-memory store):");
    println!();
    println!("| token | p50 | p95 | verifications/s (one core) |");
    println!("|---|---:|---:|---:|");
    for (name, token) in &tokens {
        let mut took = Vec::with_capacity(n);
        let all = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            if let Err(e) = verifier.verify(token, now).await {
                eprintln!("identity: {name}: {e}");
                return;
            }
            took.push(t.elapsed());
        }
        let rate = n as f64 / all.elapsed().as_secs_f64();
        took.sort();
        println!(
            "| {name} | {} | {} | {rate:.0} |",
            us(pct(&took, 0.5)),
            us(pct(&took, 0.95))
        );
    }
    println!();
    println!(
        "The first ES256 token of the issuer, fetching its JWKS over loopback HTTP: {}.",
        ms(first)
    );
}

async fn on_the_stack(n: usize) {
    let stack = Stack::start_with(counted()).await;
    let idp = JwksServer::start().await;
    let es = IdpKey::es256("e1");
    idp.set("set", &[&es], "max-age=3600");
    let iss = format!("https://idp-{}.bench/", stack.tenant);
    let mut e = entry(
        &iss,
        KeySource::Jwks {
            url: idp.url("set"),
        },
    );
    e.owner = TrustOwner::Tenant(stack.tenant.clone());
    let admin = stack.deps().identity_admin();
    if let Err(e) = admin.trust(&e).await {
        eprintln!("identity: {e}");
        return;
    }
    let now = stack.clock.epoch_s();
    let hs = stack.token("u1", &["inbox-u1"]);
    let ec =
        es.sign(&json!({"iss": iss, "sub": "u1", "aud": "app", "iat": now, "exp": now + 3600}));
    // Warm: the issuer's entry and set cached in the gateway.
    stack.client(&ec).await.hello().await;
    let mut took = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for _ in 0..n {
        for (i, token) in [&hs, &ec].into_iter().enumerate() {
            let t = Instant::now();
            let mut ws = stack.client(token).await;
            ws.hello().await;
            took[i].push(t.elapsed());
        }
    }
    stack.calls.reset();
    let joins = n.min(50);
    for _ in 0..joins {
        let mut ws = stack.client(&hs).await;
        ws.hello().await;
        ws.join(json!(["inbox-u1"])).await;
    }
    let calls = stack.calls.by_function();
    let session: Vec<String> = calls
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("session:")
                .map(|op| format!("{op} {:.2}", *v as f64 / joins as f64))
        })
        .collect();
    println!("On the local stack (moto; {n} connects each, interleaved):");
    println!();
    println!("| token | connect → welcome p50 | p95 |");
    println!("|---|---:|---:|");
    let names = [
        "HS256, the deployment's key",
        "ES256 of a trusted issuer (cached)",
    ];
    for (name, t) in names.iter().zip(took.iter_mut()) {
        t.sort();
        println!("| {name} | {} | {} |", ms(pct(t, 0.5)), ms(pct(t, 0.95)));
    }
    println!();
    println!(
        "A join's DynamoDB calls in the session function, per join ({joins} joins of one channel; the revocation check is one GetItem on the limits table): {}",
        session.join(", ")
    );
    stack.shutdown().await;
}
