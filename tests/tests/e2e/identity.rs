//! Tokens from a tenant's own identity provider, on the local stack: a JWKS
//! served over real HTTP by the test, ES256 and RS256 keys generated here,
//! trust entries saved through the operator's use case, connections through
//! the dev gateway. Shows: whose a token is comes from the trust entry, never
//! the token (cross-tenant keys, algorithm confusion, SSRF by `iss`); keys
//! rotate in and out; a connection refreshes its token in band past the
//! first token's `exp`; a revocation closes live connections at once.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use agentwire_aws::ApiGatewayPusher;
use agentwire_core::auth::trust::{KeySource, Preset, TrustEntry, TrustOwner};
use agentwire_core::clock::{Clock, ManualClock};
use agentwire_core::usecases::IdentityAdmin;
use agentwire_e2e::idp::{IdpKey, JwksServer, hs256};
use agentwire_e2e::{Stack, StackOptions, WsClient};
use serde_json::{Value, json};

const AUD: &str = "agentwire-e2e";
const PROTOCOL: [(&str, &str); 1] = [("sec-websocket-protocol", "agentwire.v1")];

async fn stack_on(clock: &Arc<ManualClock>) -> Stack {
    Stack::start_with(StackOptions {
        clock: Some(clock.clone()),
        ..StackOptions::default()
    })
    .await
}

fn admin(stack: &Stack) -> IdentityAdmin {
    stack.deps().identity_admin()
}

fn entry(issuer: &str, tenant: &str, url: &str) -> TrustEntry {
    TrustEntry {
        issuer: issuer.into(),
        owner: TrustOwner::Tenant(tenant.into()),
        keys: KeySource::Jwks { url: url.into() },
        audiences: vec![AUD.into()],
        principal_claim: None,
        grants_claim: Some("agentwire".into()),
        channels: vec!["inbox-{sub}".into()],
        publish: vec![],
        max_lifetime_s: Some(3600),
        preset: None,
    }
}

/// Claims as the provider issues them, valid 10 min from the stack's now.
fn claims(stack: &Stack, iss: &str, sub: &str, extra: Value) -> Value {
    let now = stack.clock.epoch_s();
    let mut c = json!({"iss": iss, "sub": sub, "aud": AUD, "iat": now, "exp": now + 600});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c
}

/// The refusal's body (JSON) of a connect that must fail.
async fn refused(stack: &Stack, token: &str) -> (u16, Value) {
    match stack.connect(Some(token), &PROTOCOL, "").await {
        Ok(_) => panic!("the connect was accepted"),
        Err((status, body)) => (status, serde_json::from_str(&body).expect("JSON body")),
    }
}

async fn connected(stack: &Stack, token: &str) -> (WsClient, Value) {
    let mut ws = stack
        .connect(Some(token), &PROTOCOL, "")
        .await
        .unwrap_or_else(|(s, b)| panic!("connect refused: {s} {b}"));
    let welcome = ws.hello().await;
    (ws, welcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_issuer_keys_its_tokens_and_nothing_in_the_token_picks_the_tenant_or_the_keys() {
    let clock = Arc::new(ManualClock::new());
    let stack = stack_on(&clock).await;
    let idp = JwksServer::start().await;
    let (es, rs, ed) = (
        IdpKey::es256("k1"),
        IdpKey::rs256("k-rsa"),
        IdpKey::ed25519("k-ed"),
    );
    idp.set("acme", &[&es, &rs, &ed], "public, max-age=86400");
    // Another tenant's provider publishes a key under the same kid.
    let other_key = IdpKey::es256("k1");
    idp.set("beta", &[&other_key], "max-age=300");
    let admin = admin(&stack);
    let iss = format!("https://idp-{}.example/acme", stack.tenant);
    let other_tenant = format!("{}b", stack.tenant);
    let other_iss = format!("https://idp-{}.example/beta", stack.tenant);
    admin
        .trust(&entry(&iss, &stack.tenant, &idp.url("acme")))
        .await
        .unwrap();
    admin
        .trust(&entry(&other_iss, &other_tenant, &idp.url("beta")))
        .await
        .unwrap();
    assert!(
        admin
            .trust(&entry(&iss, &other_tenant, &idp.url("beta")))
            .await
            .is_err(),
        "an issuer is trusted by one tenant only"
    );

    // ES256 and RS256 tokens of the issuer connect as the issuer's tenant,
    // whatever their own `tenant` claim says.
    let token = es.sign(&claims(&stack, &iss, "u1", json!({"tenant": other_tenant})));
    let (mut ws, welcome) = connected(&stack, &token).await;
    assert_eq!(welcome["features"], json!(["refresh"]));
    assert!(welcome["token_exp"].as_u64().is_some());
    let joined = ws.join(json!(["inbox-u1"])).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    stack.publish("inbox-u1", "note", json!({"n": 1})).await;
    assert_eq!(ws.events(1).await[0]["data"], json!({"n": 1}));
    let (mut ws_rs, _) = connected(&stack, &rs.sign(&claims(&stack, &iss, "u2", json!({})))).await;
    // EdDSA (Ed25519) as well.
    connected(&stack, &ed.sign(&claims(&stack, &iss, "u3", json!({})))).await;
    assert_eq!(ws_rs.join(json!(["inbox-u1"])).await["code"], "forbidden");

    // The other tenant's key, under the same kid, does not verify this
    // tenant's tokens (the cache is keyed by tenant, URL and kid).
    let (status, body) = refused(
        &stack,
        &other_key.sign(&claims(&stack, &iss, "u1", json!({}))),
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (401, Some("bad_signature"))
    );

    // Algorithm confusion: HS256 "signed" with the RSA public key.
    let forged = hs256(
        &rs.public_bytes(),
        &json!({"alg": "HS256", "kid": "k-rsa"}),
        &claims(&stack, &iss, "u1", json!({})),
    );
    let (status, body) = refused(&stack, &forged).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (401, Some("wrong_algorithm"))
    );

    // An unregistered `iss` naming a URL is never fetched (no SSRF by iss).
    let before = idp.requests();
    let stray = format!("http://{}/beta", idp.addr);
    let (_, body) = refused(&stack, &es.sign(&claims(&stack, &stray, "u1", json!({})))).await;
    assert_eq!(body["reason"], "unknown_issuer");
    assert_eq!(idp.requests(), before, "no request for a token's own iss");
    // A JWKS URL at a metadata or private address is refused when saved.
    for url in ["https://169.254.169.254/jwks", "https://10.1.2.3/jwks"] {
        let mut e = entry(&format!("{iss}/x"), &stack.tenant, url);
        e.issuer = format!("{iss}/{url}");
        assert!(admin.trust(&e).await.is_err(), "{url}");
    }

    // Wrong audience, too long-lived, not yet valid, grants of the wrong shape.
    let now = clock.epoch_s();
    for (extra, reason) in [
        (json!({"aud": "someone-else"}), "wrong_audience"),
        (json!({"exp": now + 7200}), "too_long_lived"),
        (json!({"nbf": now + 60}), "not_yet_valid"),
        (json!({"agentwire": ["inbox-*"]}), "invalid_claims"),
        (json!({"sub": ""}), "invalid_claims"),
    ] {
        let (status, body) =
            refused(&stack, &es.sign(&claims(&stack, &iss, "u1", extra.clone()))).await;
        assert_eq!(
            (status, body["reason"].as_str()),
            (401, Some(reason)),
            "{extra}"
        );
    }

    // Rotation: a new kid is accepted once the set is refetched (after the
    // 30 s cooldown); a removed key is refused once the set expires (the
    // ceiling, 1 h, here below the provider's max-age).
    let es2 = IdpKey::es256("k2");
    idp.set("acme", &[&es, &es2, &rs, &ed], "public, max-age=86400");
    let t2 = es2.sign(&claims(&stack, &iss, "u1", json!({})));
    assert_eq!(refused(&stack, &t2).await.1["reason"], "unknown_kid");
    clock.advance(Duration::from_secs(31));
    let t2 = es2.sign(&claims(&stack, &iss, "u1", json!({})));
    connected(&stack, &t2).await;
    idp.set("acme", &[&es2], "public, max-age=86400");
    let t1 = es.sign(&claims(&stack, &iss, "u1", json!({})));
    connected(&stack, &t1).await;
    clock.advance(Duration::from_secs(3601));
    let t1 = es.sign(&claims(&stack, &iss, "u1", json!({})));
    assert_eq!(refused(&stack, &t1).await.1["reason"], "unknown_kid");
    drop(ws_rs);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_refreshes_past_its_first_tokens_exp_and_a_revocation_closes_it() {
    let clock = Arc::new(ManualClock::new());
    let stack = stack_on(&clock).await;
    let idp = JwksServer::start().await;
    let key = IdpKey::es256("k1");
    idp.set("app", &[&key], "max-age=600");
    let iss = format!("https://idp-{}.example/app", stack.tenant);
    let mut e = entry(&iss, &stack.tenant, &idp.url("app"));
    e.preset = Some(Preset::Supabase {
        allow_service_role: false,
    });
    e.audiences = vec![];
    admin(&stack).trust(&e).await.unwrap();
    // Shaped like a Supabase access token.
    let supabase = |extra: Value| {
        let now = clock.epoch_s();
        let mut c = json!({"iss": iss, "sub": "8f2c1b7e-user", "aud": "authenticated",
            "role": "authenticated", "email": "ana@example.com", "session_id": "s1",
            "iat": now, "exp": now + 60, "agentwire": {"channels": ["extra-8f2c1b7e-user"]}});
        if let (Some(c), Some(x)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(x.clone());
        }
        key.sign(&c)
    };
    let service = supabase(json!({"role": "service_role"}));
    assert_eq!(
        refused(&stack, &service).await.1["reason"],
        "invalid_claims"
    );
    let (mut ws, welcome) = connected(&stack, &supabase(json!({}))).await;
    let first_exp = welcome["token_exp"].as_u64().unwrap();
    let joined = ws
        .join(json!(["inbox-8f2c1b7e-user", "extra-8f2c1b7e-user"]))
        .await;
    assert_eq!(joined["type"], "joined", "{joined}");

    // Past the first token's exp (and its leeway), a refreshed token keeps
    // the same connection; the channel the new token no longer grants is
    // left, named in a forbidden error before `refreshed`.
    clock.advance(Duration::from_secs(50));
    let narrower = supabase(json!({"agentwire": null}));
    ws.send_json(json!({"action": "refresh", "id": "r1", "token": narrower}))
        .await;
    let left = ws.expect("error").await;
    assert_eq!(left["code"], "forbidden");
    assert_eq!(left["channels"], json!(["extra-8f2c1b7e-user"]));
    let refreshed = ws.expect("refreshed").await;
    assert_eq!(refreshed["id"], "r1");
    assert!(refreshed["exp"].as_u64().unwrap() > first_exp);
    clock.advance(Duration::from_secs(30));
    assert!(
        clock.epoch_s() > first_exp + 5,
        "past the first token's exp and leeway"
    );
    stack
        .publish("extra-8f2c1b7e-user", "note", json!({"n": 0}))
        .await;
    stack
        .publish("inbox-8f2c1b7e-user", "note", json!({"n": 1}))
        .await;
    let got = ws.events(1).await;
    assert_eq!(
        (got[0]["channel"].as_str(), &got[0]["data"]),
        (Some("inbox-8f2c1b7e-user"), &json!({"n": 1}))
    );

    // A refresh naming another principal is refused; the connection stays.
    let other = key.sign(
        &json!({"iss": iss, "sub": "someone-else", "aud": "authenticated",
        "iat": clock.epoch_s(), "exp": clock.epoch_s() + 60}),
    );
    ws.send_json(json!({"action": "refresh", "id": "r2", "token": other}))
        .await;
    let e = ws.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["reason"].as_str(), e["id"].as_str()),
        (Some("unauthorized"), Some("other_principal"), Some("r2"))
    );

    // Revoked: the live connection is told and closed at once, the old
    // token refused, a token issued after the revocation accepted.
    let token_before = supabase(json!({}));
    let closer = ApiGatewayPusher::new(
        &stack.sdk,
        stack
            .config
            .connections_endpoint
            .as_deref()
            .expect("endpoint"),
    );
    let r = admin(&stack)
        .revoke(&stack.tenant, "8f2c1b7e-user", &closer)
        .await
        .unwrap();
    assert_eq!((r.closed, r.failed), (1, 0));
    let told = ws.recv().await;
    assert_eq!(told["code"], "token_revoked", "{told}");
    let closed = ws.recv().await;
    assert!(closed["_close"].is_number(), "closed: {closed}");
    let (status, body) = refused(&stack, &token_before).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("token_revoked"))
    );
    clock.advance(Duration::from_secs(2));
    connected(&stack, &supabase(json!({}))).await;
    stack.shutdown().await;
}

/// Tokens shaped like Cognito's (an access token checked on `token_use`
/// and `client_id`, an ID token on `aud`), and a deployment-level issuer
/// whose tenant claim picks the tenant (one platform IdP, many tenants).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cognito_tokens_and_a_deployment_level_issuer_connect_as_their_entries_say() {
    let clock = Arc::new(ManualClock::new());
    let stack = stack_on(&clock).await;
    let idp = JwksServer::start().await;
    let key = IdpKey::rs256("cognito-k1");
    idp.set("pool", &[&key], "max-age=3600");
    let pool = format!(
        "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_{}",
        stack.tenant
    );
    let mut e = entry(&pool, &stack.tenant, &idp.url("pool"));
    e.audiences = vec![];
    e.preset = Some(Preset::Cognito {
        client_ids: vec!["3n4b5urk1ft4fl3mg5e62d9ado".into()],
    });
    e.channels = vec!["agent-{sub}-*".into()];
    admin(&stack).trust(&e).await.unwrap();
    let now = clock.epoch_s();
    let sub = "4a3f2e1d-cognito-user";
    let access = |client: &str| {
        key.sign(
            &json!({"sub": sub, "iss": pool, "client_id": client, "origin_jti": "o1",
            "event_id": "e1", "token_use": "access", "scope": "aws.cognito.signin.user.admin",
            "auth_time": now, "exp": now + 600, "iat": now, "jti": "j1", "username": sub}),
        )
    };
    let (mut ws, _) = connected(&stack, &access("3n4b5urk1ft4fl3mg5e62d9ado")).await;
    let joined = ws.join(json!([format!("agent-{sub}-1")])).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let (_, body) = refused(&stack, &access("another-app-client")).await;
    assert_eq!(body["reason"], "wrong_audience");
    let id_token = key.sign(
        &json!({"sub": sub, "iss": pool, "aud": "3n4b5urk1ft4fl3mg5e62d9ado",
        "token_use": "id", "email": "ana@example.com", "email_verified": true,
        "cognito:username": sub, "auth_time": now, "exp": now + 600, "iat": now}),
    );
    connected(&stack, &id_token).await;
    let refresh_token_use = key.sign(&json!({"sub": sub, "iss": pool,
        "client_id": "3n4b5urk1ft4fl3mg5e62d9ado", "token_use": "refresh", "exp": now + 600, "iat": now}));
    assert_eq!(
        refused(&stack, &refresh_token_use).await.1["reason"],
        "invalid_claims"
    );

    // A deployment-level issuer: the `org` claim names the tenant.
    let platform = IdpKey::es256("p1");
    idp.set("platform", &[&platform], "max-age=3600");
    let piss = format!("https://login-{}.platform.example/", stack.tenant);
    let mut d = entry(&piss, "unused", &idp.url("platform"));
    d.owner = TrustOwner::TenantClaim("org".into());
    admin(&stack).trust(&d).await.unwrap();
    let token = platform.sign(&claims(&stack, &piss, "u5", json!({"org": stack.tenant})));
    let (mut ws, _) = connected(&stack, &token).await;
    assert_eq!(ws.join(json!(["inbox-u5"])).await["type"], "joined");
    stack.publish("inbox-u5", "note", json!({"n": 5})).await;
    assert_eq!(
        ws.events(1).await[0]["data"],
        json!({"n": 5}),
        "joined in the claimed tenant"
    );
    let bad = platform.sign(&claims(&stack, &piss, "u5", json!({"org": "no#such"})));
    assert_eq!(refused(&stack, &bad).await.1["reason"], "invalid_claims");
    stack.shutdown().await;
}

/// A provider whose JWKS cannot be fetched makes its tokens wait, not
/// fail: the upgrade is answered 503 `internal` (retryable, as an
/// unavailable store), with no URL or cause in the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_jwks_is_answered_as_retryable() {
    let clock = Arc::new(ManualClock::new());
    let stack = stack_on(&clock).await;
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    let iss = format!("https://down-{}.example/", stack.tenant);
    admin(&stack)
        .trust(&entry(&iss, &stack.tenant, &url))
        .await
        .unwrap();
    let key = IdpKey::es256("k1");
    // A JWKS URL that answers 404: malformed keys, refused for good (401).
    let idp = JwksServer::start().await;
    let gone = format!("https://gone-{}.example/", stack.tenant);
    admin(&stack)
        .trust(&entry(&gone, &stack.tenant, &idp.url("missing")))
        .await
        .unwrap();
    let (status, body) = refused(&stack, &key.sign(&claims(&stack, &gone, "u1", json!({})))).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (401, Some("keys_malformed")),
        "{body}"
    );
    let (status, body) = refused(&stack, &key.sign(&claims(&stack, &iss, "u1", json!({})))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("internal")),
        "{body}"
    );
    assert!(
        !body.to_string().contains(&port.to_string()),
        "no internal detail: {body}"
    );
    stack.shutdown().await;
}
