//! What an operator reads, after a scripted run on the local stack:
//! `GET /metrics` on the dev gateway shows exactly the counts the run
//! produced, and no log line of the whole run (every handler, at debug
//! level, as JSON) holds a token or the signing secret.
//!
//! A binary of its own: the metrics recorder and the log subscriber are
//! the process's, so no other test may add to what is counted here.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentwire_core::clock::Clock;
use agentwire_core::limits::TenantLimits;
use agentwire_e2e::Stack;
use serde_json::json;

/// Every log line of the process, kept for the secret check.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The value of one sample line `name{labels} value` (labels as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(stack: &Stack) -> String {
    reqwest::get(format!("{}/metrics", stack.gateway.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_run_and_no_log_line_holds_a_secret() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            "debug,aws=info,hyper=info,h2=info,rustls=info,tungstenite=info,tokio_tungstenite=info",
        )
        .with_writer(move || writer.clone())
        .init();

    let stack = Stack::start().await;
    stack
        .set_limits(TenantLimits {
            publish_rate: Some(1),
            publish_burst: Some(3),
            ..Default::default()
        })
        .await;

    // Two subscribers join one channel each.
    let viewer = stack.token("viewer", &["agent-*"]);
    let mut a = stack.client(&viewer).await;
    a.hello().await;
    assert_eq!(a.join(json!(["agent-1"])).await["type"], "joined");
    let mut b = stack.client(&viewer).await;
    b.hello().await;
    assert_eq!(b.join(json!(["agent-1"])).await["type"], "joined");

    // Five over HTTP at a burst of 3: 3 accepted, 2 limited; 2 more
    // through the queue (the library path, no quota).
    let bot = stack.publisher_token("bot", &["agent-*"]);
    let mut statuses = vec![];
    for i in 0..5 {
        let body = json!({"kind": "n", "data": {"i": i}});
        statuses.push(stack.post_event(&bot, "agent-1", &body).await.0);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        3,
        "{statuses:?}"
    );
    // A refused token, logged as a refusal.
    let forged = format!("{bot}x");
    let (status, _, _) = stack
        .post_event(&forged, "agent-1", &json!({"kind": "n"}))
        .await;
    assert_eq!(status, 401);
    stack.publish("agent-1", "n", json!({"i": 5})).await;
    stack.publish("agent-1", "n", json!({"i": 6})).await;
    assert_eq!(a.events(5).await.len(), 5);
    assert_eq!(b.events(5).await.len(), 5);

    // One subscriber leaves; the marker of its $disconnect is the count.
    a.ws.close(None).await.unwrap();
    let closed = stack
        .eventually(Duration::from_secs(10), || async {
            sample(&scrape(&stack).await, "connections_closed") == Some(1.0)
        })
        .await;
    let text = scrape(&stack).await;
    assert!(closed, "one close counted:\n{text}");

    for (series, want) in [
        ("connections_opened", 2.0),
        ("joins", 2.0),
        ("events_published{path=\"http\"}", 3.0),
        ("rate_limited{scope=\"tenant\"}", 2.0),
        ("events_committed", 5.0),
        ("replayed_events_count", 2.0),
        // By the path that committed them: 3 over HTTP, 2 through the queue.
        ("delivery_latency_ms_count{path=\"direct\"}", 3.0),
        ("delivery_latency_ms_count{path=\"queue\"}", 2.0),
        // The level sampled at each change: two opens and one removal.
        ("connections_open_count", 3.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    // Each event reached both subscribers, in however many frames.
    let frames = sample(&text, "frames_posted").unwrap();
    assert!((2.0..=10.0).contains(&frames), "frames_posted {frames}");
    assert_eq!(sample(&text, "posts_failed"), Some(0.0));
    assert!(
        sample(
            &text,
            "delivery_latency_ms{path=\"direct\",quantile=\"0.99\"}"
        )
        .is_some()
    );

    // Identity: a tenant's own HS256 key, a token of it refreshed in band
    // (one refusal, one success), a webhook whose secret the management
    // API shows once.
    let tenant_secret = format!("{}-tenant-key-0123456789abcdef0123456789", stack.tenant);
    let iss = format!("{}-backend", stack.tenant);
    let admin = stack.deps().identity_admin();
    admin
        .trust(&agentwire_core::auth::trust::TrustEntry {
            issuer: iss.clone(),
            owner: agentwire_core::auth::trust::TrustOwner::Tenant(stack.tenant.clone()),
            keys: agentwire_core::auth::trust::KeySource::Hs256 {
                kid: None,
                secret_b64: agentwire_core::auth::trust::encode_secret(tenant_secret.as_bytes()),
            },
            audiences: vec![],
            principal_claim: None,
            grants_claim: None,
            channels: vec!["agent-*".into()],
            publish: vec![],
            max_lifetime_s: None,
            preset: None,
        })
        .await
        .unwrap();
    let now = agentwire_core::clock::SystemClock.epoch_s();
    let own = |exp: u64| {
        agentwire_core::auth::TokenKey::hs256(tenant_secret.as_bytes())
            .sign_json(&json!({"iss": iss, "sub": "u1", "iat": now, "exp": exp}))
            .unwrap()
    };
    let (first, second) = (own(now + 600), own(now + 1200));
    let mut c = stack.client(&first).await;
    c.hello().await;
    c.send_json(json!({"action": "refresh", "id": "r1", "token": format!("{second}x")}))
        .await;
    assert_eq!(c.expect("error").await["reason"], "bad_signature");
    c.send_json(json!({"action": "refresh", "id": "r2", "token": second}))
        .await;
    assert_eq!(c.expect("refreshed").await["id"], "r2");
    let admin_token = stack.admin_token_of(&stack.tenant, "ops");
    let receiver = agentwire_e2e::receiver::Receiver::start().await;
    let (status, _, hook) = stack
        .http(
            reqwest::Method::PUT,
            "/v1/admin/channels/agent-1/webhook",
            Some(&admin_token),
            Some(&json!({"url": receiver.url})),
        )
        .await;
    assert_eq!(status, 200, "{hook}");
    let webhook_secret = hook["secret"].as_str().unwrap().to_owned();
    let text = scrape(&stack).await;
    assert_eq!(sample(&text, "tokens_refreshed"), Some(1.0), "{text}");
    assert!(
        sample(&text, "tokens_refused{reason=\"bad_signature\"}").is_some_and(|n| n >= 2.0),
        "the forged publish and the forged refresh, by reason:\n{text}"
    );

    b.ws.close(None).await.unwrap();
    let secret = String::from_utf8(stack.config.jwt_secret.clone().unwrap()).unwrap();
    stack.shutdown().await;

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.lines().count() > 20,
        "the run was logged: {} lines",
        logs.lines().count()
    );
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for (what, s) in [
            ("the viewer's token", viewer.as_str()),
            ("the publisher's token", bot.as_str()),
            ("the forged token", forged.as_str()),
            ("the signing secret", secret.as_str()),
            ("the tenant's token", first.as_str()),
            ("the refreshed token", second.as_str()),
            ("the admin token", admin_token.as_str()),
            ("the tenant's HS256 key", tenant_secret.as_str()),
            ("the webhook secret", webhook_secret.as_str()),
        ] {
            assert!(!line.contains(s), "{what} in a log line: {line}");
        }
        // No token's signature part either (a JWT split for printing).
        let sig = bot.rsplit('.').next().unwrap();
        assert!(!line.contains(sig), "a token signature in: {line}");
    }
}
