//! `agentwire tenant trust|revoke` against the local stack: the real
//! binary writes trust entries and revocations where the dev gateway reads
//! them, and a revocation closes a live connection through it.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use agentwire_core::auth::TokenKey;
use agentwire_e2e::Stack;
use serde_json::{Value, json};

/// Runs `agentwire` with the stack's tables and endpoint.
fn agentwire(stack: &Stack, args: &[&str]) -> (bool, String, String) {
    let t = &stack.config.tables;
    let out = Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(args)
        .env("AGENTWIRE_LIMITS_TABLE", &t.limits)
        .env("AGENTWIRE_CONNECTIONS_TABLE", &t.connections)
        .env("AGENTWIRE_SUBSCRIPTIONS_TABLE", &t.subscriptions)
        .env("AGENTWIRE_CHANNELS_TABLE", &t.channels)
        .env_remove("AGENTWIRE_CONNECTIONS_ENDPOINT")
        .output()
        .expect("agentwire runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_an_hs256_key_list_it_revoke_a_principal_and_remove_it() {
    let stack = Stack::start().await;
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into());
    let tenant = stack.tenant.clone();
    let iss = format!("{tenant}-backend");
    let secret = format!("{tenant}-0123456789abcdef0123456789abcdef");
    let file = std::env::temp_dir().join(format!("{tenant}.key"));
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let (ok, out, err) = agentwire(
        &stack,
        &[
            "tenant",
            "trust",
            &tenant,
            "--issuer",
            &iss,
            "--hs256-secret-file",
            file.to_str().unwrap(),
            "--kid",
            "k1",
            "--audience",
            "app",
            "--channels",
            "inbox-{sub}",
            "--max-lifetime",
            "1h",
            "--endpoint",
            &endpoint,
        ],
    );
    std::fs::remove_file(&file).unwrap();
    assert!(ok, "{err}");
    let saved: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(saved["keys"]["secret_b64"], "<stored>");
    assert!(
        !out.contains(&secret) && !err.contains(&secret),
        "the secret is never printed"
    );

    let (ok, out, err) = agentwire(
        &stack,
        &[
            "tenant",
            "trust",
            &tenant,
            "--list",
            "--endpoint",
            &endpoint,
        ],
    );
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["issuer"], json!(iss));

    // A token signed with the tenant's own key connects as that tenant.
    let now = stack.clock.epoch_s();
    let token = TokenKey::hs256(secret.as_bytes())
        .with_kid("k1")
        .sign_json(&json!({"iss": iss, "sub": "u1", "aud": "app", "iat": now, "exp": now + 600}))
        .unwrap();
    let mut ws = stack.client(&token).await;
    ws.hello().await;
    assert_eq!(ws.join(json!(["inbox-u1"])).await["type"], "joined");

    // Revoked: the live connection is told and closed.
    let (ok, _, err) = agentwire(
        &stack,
        &[
            "tenant",
            "revoke",
            &tenant,
            "--sub",
            "u1",
            "--endpoint",
            &endpoint,
        ],
    );
    assert!(!ok && err.contains("--connections-endpoint"), "{err}");
    let connections = stack.config.connections_endpoint.clone().unwrap();
    let (ok, out, err) = agentwire(
        &stack,
        &[
            "tenant",
            "revoke",
            &tenant,
            "--sub",
            "u1",
            "--connections-endpoint",
            &connections,
            "--endpoint",
            &endpoint,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["closed"], 1);
    assert_eq!(ws.recv().await["code"], "token_revoked");
    let (ok, out, _) = agentwire(
        &stack,
        &[
            "tenant",
            "revoke",
            &tenant,
            "--list",
            "--endpoint",
            &endpoint,
        ],
    );
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()[0]["sub"], "u1");

    // Refusals: a metadata address, another tenant's claim on the issuer.
    let (ok, _, err) = agentwire(
        &stack,
        &[
            "tenant",
            "trust",
            &tenant,
            "--issuer",
            "https://x.example/",
            "--jwks-url",
            "https://169.254.169.254/jwks",
            "--endpoint",
            &endpoint,
        ],
    );
    assert!(!ok && err.contains("169.254.169.254"), "{err}");
    let (ok, _, err) = agentwire(
        &stack,
        &[
            "tenant",
            "trust",
            &format!("{tenant}x"),
            "--issuer",
            &iss,
            "--jwks-url",
            "https://8.8.8.8/jwks",
            "--endpoint",
            &endpoint,
        ],
    );
    assert!(!ok, "{err}");

    let (ok, _, err) = agentwire(
        &stack,
        &[
            "tenant",
            "trust",
            &tenant,
            "--remove",
            &iss,
            "--endpoint",
            &endpoint,
        ],
    );
    assert!(ok && err.contains("no longer trusts"), "{err}");
    let (_, out, _) = agentwire(
        &stack,
        &[
            "tenant",
            "trust",
            &tenant,
            "--list",
            "--endpoint",
            &endpoint,
        ],
    );
    assert_eq!(out, "[]");
    stack.shutdown().await;
}
