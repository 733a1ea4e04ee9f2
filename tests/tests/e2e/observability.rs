//! What an operator reads off the running gateway: the canary probing it
//! as a client does (directly, and on the dev gateway's timer), and the
//! lifecycle metrics (open connections, their duration, resumes and
//! whether they recovered, delivery latency by path) in `GET /metrics`.
//!
//! The metrics recorder is the test process's (every stack of the run
//! counts into it), so checks are on what this test adds: a counter that
//! went up by at least what the test did, a series that is present.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agentwire_core::auth::TokenKey;
use agentwire_core::ports::ConnectionRegistry;
use agentwire_e2e::{Stack, StackOptions};
use agentwire_fn_canary::{Canary, Stage};
use serde_json::json;

/// The value of the series `name{labels}` (labels as rendered, in
/// order; empty for none) in the gateway's `/metrics`, or `None`.
async fn metric(stack: &Stack, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", stack.gateway.http_url()))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("a body");
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        let s = s.strip_suffix("_total").unwrap_or(s);
        (s == series || s.replace("_total{", "{") == series)
            .then(|| v.parse().ok())
            .flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_connects_publishes_receives_and_resumes_and_says_where_it_failed() {
    let stack = Stack::start().await;
    let canary = stack.canary();
    let ok_before = metric(&stack, r#"canary_runs{outcome="ok"}"#)
        .await
        .unwrap_or(0.0);
    let probe = canary.probe().await.expect("the canary passes");
    assert!(probe.latency > Duration::ZERO && probe.resume > Duration::ZERO);
    assert!(
        metric(&stack, r#"canary_runs{outcome="ok"}"#)
            .await
            .unwrap_or(0.0)
            > ok_before
    );
    assert!(
        metric(&stack, r#"canary_latency_ms{quantile="0.5"}"#)
            .await
            .is_some()
    );
    // Its two events are in the log, once each, in order.
    let stored = stack.stored_events(agentwire_fn_canary::PRINCIPAL).await;
    assert_eq!(stored.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2]);

    // Signed with a key the gateway does not trust: refused at connect.
    let stranger = Canary::new(
        stack.gateway.ws_url(),
        stack.gateway.http_url(),
        TokenKey::hs256(b"not-the-deployment-key-not-the-deployment-key"),
        stack.tenant.clone(),
    )
    .with_step_timeout(Duration::from_secs(5));
    let e = stranger.probe().await.expect_err("a stranger's token");
    assert_eq!(e.stage, Stage::Connect, "{e}");
    assert!(
        metric(&stack, r#"canary_runs{outcome="connect"}"#)
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_gateway_runs_the_canary_on_its_timer() {
    let mut options = StackOptions::default();
    options.gateway.canary_interval = Some(Duration::from_millis(300));
    let stack = Stack::start_with(options).await;
    // Each probe writes two events on the canary's channel of this stack's
    // own tables: three probes have passed once six are there.
    assert!(
        stack
            .eventually(Duration::from_secs(30), || async {
                stack
                    .stored_count_of("agentwire-canary", agentwire_fn_canary::PRINCIPAL)
                    .await
                    >= 6
            })
            .await,
        "the canary did not run three times"
    );
    assert!(
        metric(&stack, r#"canary_runs{outcome="ok"}"#)
            .await
            .unwrap_or(0.0)
            >= 3.0
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_metrics_follow_connections_resumes_and_delivery_paths() {
    let stack = Stack::start().await;
    let registry = agentwire_aws::DynamoRegistry::new(
        stack.ddb(),
        stack.config.tables.clone(),
        stack.clock.clone(),
    );
    let series = |s: &'static str| metric(&stack, s);
    let recovered = series(r#"resumes{recovered="true"}"#).await.unwrap_or(0.0);
    let reset = series(r#"resumes{recovered="false"}"#).await.unwrap_or(0.0);
    let closed = series("connections_closed").await.unwrap_or(0.0);

    let token = stack.token("ana", &["life-*"]);
    let mut a = stack.client(&token).await;
    a.hello().await;
    let joined = a.join(json!(["life-1"])).await;
    let epoch_of = |j: &serde_json::Value| j["channels"][0]["epoch"].as_str().unwrap().to_owned();
    let mut b = stack.client(&token).await;
    b.hello().await;
    assert_eq!(registry.count_open(0).await.unwrap(), 2, "two open");

    // One event over HTTP (direct), one through the queue.
    let publisher = stack.publisher_token("bot", &["life-*"]);
    let (status, _, _) = stack
        .post_event(
            &publisher,
            "life-1",
            &json!({"kind": "k", "data": {"n": 1}}),
        )
        .await;
    assert_eq!(status, 201);
    stack.publish("life-1", "k", json!({"n": 2})).await;
    let events = a.events(2).await;
    let epoch = events[0]["epoch"].as_str().unwrap().to_owned();
    assert!(joined["type"] == "joined" && epoch_of(&joined).is_empty());
    for path in ["direct", "queue"] {
        let q = format!(r#"delivery_latency_ms{{path="{path}",quantile="0.95"}}"#);
        assert!(metric(&stack, &q).await.is_some(), "{q}");
    }

    // b resumes from seq 1 (recovered) and from an epoch that is not the
    // log's (a reset: not recovered).
    let j = b
        .join(json!([{"name": "life-1", "since": {"epoch": epoch, "seq": 1}}]))
        .await;
    assert_eq!(j["channels"][0]["recovered"], true, "{j}");
    assert_eq!(b.events(1).await[0]["seq"], 2, "seq 2 replayed");
    b.send_json(json!({"action": "join", "id": "j2",
        "channels": [{"name": "life-1", "since": {"epoch": "not-the-log", "seq": 1}}]}))
        .await;
    let frames = b
        .frames_until(|f| f.iter().any(|x| x["type"] == "joined"))
        .await;
    let j = frames.iter().find(|x| x["type"] == "joined").unwrap();
    assert_eq!(j["channels"][0]["recovered"], false, "{j}");
    assert!(series(r#"resumes{recovered="true"}"#).await.unwrap_or(0.0) >= recovered + 1.0);
    assert!(series(r#"resumes{recovered="false"}"#).await.unwrap_or(0.0) >= reset + 1.0);

    // Closing a removes it once: the level falls, its duration is recorded.
    a.ws.close(None).await.unwrap();
    assert!(
        stack
            .eventually(Duration::from_secs(10), || async {
                registry.count_open(0).await.unwrap() == 1
            })
            .await,
        "the level follows the disconnect"
    );
    assert!(series("connections_closed").await.unwrap_or(0.0) >= closed + 1.0);
    assert!(
        series(r#"connection_duration_s{quantile="0.5"}"#)
            .await
            .is_some()
    );
    assert!(
        series(r#"connections_open{quantile="0.5"}"#)
            .await
            .is_some(),
        "the level, sampled"
    );
    stack.shutdown().await;
}
