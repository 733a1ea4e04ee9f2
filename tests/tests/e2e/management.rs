//! The management API on the local stack, as a tenant admin runs it with an
//! admin token over HTTP (the admin function behind the dev gateway): its
//! webhooks (the secret generated, shown once, rotated with an overlap in
//! which both sign; verified at a real receiver), its trusted issuers, its
//! revocations (a live connection closed), its limits and usage; nothing
//! reaches another tenant, every refusal typed.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agentwire_core::webhook::SigningSecret;
use agentwire_e2e::receiver::{Received, Receiver};
use agentwire_e2e::{Stack, StackOptions};
use reqwest::Method;
use serde_json::{Value, json};

fn verifies(secret: &str, r: &Received) -> bool {
    let s = SigningSecret::parse(secret).expect("a whsec_ secret");
    let ts: u64 = r.header("webhook-timestamp").parse().expect("timestamp");
    s.verify(
        r.header("webhook-id"),
        ts,
        r.body.as_bytes(),
        r.header("webhook-signature"),
    )
}

async fn call(
    stack: &Stack,
    m: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, _, v) = stack.http(m, path, Some(token), body.as_ref()).await;
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_manages_its_webhooks_issuers_and_revocations_and_nothing_else() {
    let stack = Stack::start_with(StackOptions::default()).await;
    let admin = stack.admin_token_of(&stack.tenant, "ops");
    let other_tenant = format!("{}x", stack.tenant);
    let other_admin = stack.admin_token_of(&other_tenant, "ops");

    // Typed refusals: no token, no admin grant.
    let (status, _, e) = stack
        .http(Method::GET, "/v1/admin/limits", None, None)
        .await;
    assert_eq!((status, e["code"].as_str()), (401, Some("unauthorized")));
    let plain = stack.token("ana", &["agent-*"]);
    let (status, e) = call(&stack, Method::GET, "/v1/admin/limits", &plain, None).await;
    assert_eq!((status, e["code"].as_str()), (403, Some("forbidden")));

    // A channel's webhook: the secret comes once, in the answer that made it.
    let receiver = Receiver::start().await;
    let path = "/v1/admin/channels/agent-1/webhook";
    let (status, set) = call(
        &stack,
        Method::PUT,
        path,
        &admin,
        Some(json!({"url": receiver.url, "mode": "fallback"})),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    let secret = set["secret"].as_str().expect("the new secret").to_owned();
    let (status, shown) = call(&stack, Method::GET, path, &admin, None).await;
    assert_eq!(
        (status, shown["url"].as_str()),
        (200, Some(receiver.url.as_str()))
    );
    assert!(shown.get("secret").is_none(), "never shown again: {shown}");
    let (status, _) = call(&stack, Method::GET, path, &other_admin, None).await;
    assert_eq!(status, 404, "another tenant's admin sees nothing");

    // Nobody is connected: the event goes to the webhook, signed with it.
    stack.publish("agent-1", "note", json!({"n": 1})).await;
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert!(verifies(&secret, &got[0]), "signed with the secret shown");

    // Rotated: a new secret, and both sign during the overlap.
    let (status, rotated) = call(
        &stack,
        Method::POST,
        &format!("{path}:rotate"),
        &admin,
        Some(json!({"overlap_s": 3600})),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"]
        .as_str()
        .expect("the new secret")
        .to_owned();
    assert_ne!(new_secret, secret);
    assert!(rotated["previous_until"].as_u64().is_some());
    stack.publish("agent-1", "note", json!({"n": 2})).await;
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert!(
        verifies(&new_secret, &got[1]) && verifies(&secret, &got[1]),
        "both sign in the overlap"
    );

    // The tenant's default webhook: set, cleared, gone.
    let (status, d) = call(
        &stack,
        Method::PUT,
        "/v1/admin/webhook",
        &admin,
        Some(json!({"url": receiver.url, "mode": "always", "ttl_s": 600})),
    )
    .await;
    assert_eq!((status, d["scope"].as_str()), (200, Some("tenant")));
    let (status, _) = call(&stack, Method::DELETE, "/v1/admin/webhook", &admin, None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&stack, Method::GET, "/v1/admin/webhook", &admin, None).await;
    assert_eq!(status, 404);
    // Bad bodies and URLs: typed 400s.
    let (status, e) = call(
        &stack,
        Method::PUT,
        "/v1/admin/webhook",
        &admin,
        Some(json!({})),
    )
    .await;
    assert_eq!((status, e["code"].as_str()), (400, Some("invalid_request")));
    let (status, e) = call(
        &stack,
        Method::PUT,
        "/v1/admin/webhook",
        &admin,
        Some(json!({"url": "https://169.254.169.254/x"})),
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("invalid_request")),
        "{e}"
    );

    // Issuers: a metadata address refused; inline keys trusted, listed, removed.
    let iss = format!("https://idp-{}.example", stack.tenant);
    let (status, e) = call(
        &stack,
        Method::PUT,
        "/v1/admin/issuers",
        &admin,
        Some(json!({"issuer": iss, "jwks_url": "https://169.254.169.254/jwks"})),
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("invalid_request")),
        "{e}"
    );
    let key = agentwire_e2e::idp::IdpKey::es256("k1");
    let (status, e) = call(&stack, Method::PUT, "/v1/admin/issuers", &admin, Some(json!({"issuer": iss, "jwks": {"keys": [key.jwk()]}, "audiences": ["app"], "channels": ["inbox-{sub}"]}))).await;
    assert_eq!(status, 200, "{e}");
    let (status, e) = call(
        &stack,
        Method::PUT,
        "/v1/admin/issuers",
        &other_admin,
        Some(json!({"issuer": iss, "jwks": {"keys": [key.jwk()]}})),
    )
    .await;
    assert_eq!(status, 409, "another tenant cannot take the issuer: {e}");
    let (_, list) = call(&stack, Method::GET, "/v1/admin/issuers", &admin, None).await;
    assert_eq!(list["issuers"][0]["issuer"], json!(iss));
    let (_, list) = call(&stack, Method::GET, "/v1/admin/issuers", &other_admin, None).await;
    assert_eq!(list["issuers"], json!([]));
    let del = format!(
        "/v1/admin/issuers?iss={}",
        iss.replace(':', "%3A").replace('/', "%2F")
    );
    assert_eq!(
        call(&stack, Method::DELETE, &del, &admin, None).await.0,
        204
    );
    assert_eq!(
        call(&stack, Method::DELETE, &del, &admin, None).await.0,
        404
    );

    // Revocation: a live connection of the principal is closed.
    let u9_publisher = stack.publisher_token("u9", &["agent-*"]);
    let mut ws = stack.client(&stack.token("u9", &["agent-*"])).await;
    ws.hello().await;
    let (status, r) = call(
        &stack,
        Method::POST,
        "/v1/admin/revocations",
        &admin,
        Some(json!({"sub": "u9"})),
    )
    .await;
    assert_eq!((status, r["closed"].as_u64()), (200, Some(1)), "{r}");
    assert_eq!(ws.recv().await["code"], "token_revoked");
    let (status, _, e) = stack
        .post_event(&u9_publisher, "agent-1", &json!({"kind": "note"}))
        .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (401, Some("token_revoked")),
        "the HTTP API refuses it too"
    );
    assert!(ws.recv().await["_close"].is_number());
    let (_, list) = call(&stack, Method::GET, "/v1/admin/revocations", &admin, None).await;
    assert_eq!(list["revocations"][0]["sub"], "u9");
    let (_, list) = call(
        &stack,
        Method::GET,
        "/v1/admin/revocations",
        &other_admin,
        None,
    )
    .await;
    assert_eq!(list["revocations"], json!([]));

    // Limits and usage.
    let (status, l) = call(&stack, Method::GET, "/v1/admin/limits", &admin, None).await;
    assert_eq!(
        (status, l["tenant"].as_str()),
        (200, Some(stack.tenant.as_str()))
    );
    assert!(l["usage"]["connections"].is_number(), "{l}");
    stack.shutdown().await;
}
