//! Quotas on the local stack: a tenant's publish rate and burst enforced by
//! the real publish function on the DynamoDB token bucket, with typed 429s
//! and every accepted (201) event delivered; a second tenant publishing at the same
//! time is not limited; the tenant's connection maximum refuses the next
//! `$connect` with a typed 429 until one closes; a busy tenant's bucket is
//! leased in chunks, a write per chunk rather than per publish; a tenant's
//! HTTP reads past its read rate get typed 429s while another tenant's
//! reads go on.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use agentwire_core::clock::{Clock, SystemClock};
use agentwire_core::limits::TenantLimits;
use agentwire_core::ports::ConnectionRegistry;
use agentwire_e2e::{Stack, StackOptions};
use serde_json::json;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_burst_gets_typed_429s_and_every_accepted_event_is_delivered() {
    let stack = Stack::start().await;
    stack
        .set_limits(TenantLimits {
            publish_rate: Some(5),
            publish_burst: Some(10),
            ..Default::default()
        })
        .await;
    let mut sub = stack.client(&stack.token("viewer", &["agent-*"])).await;
    sub.hello().await;
    assert_eq!(sub.join(json!(["agent-1"])).await["type"], "joined");

    let limited = stack.publisher_token("bot", &["agent-*"]);
    let other = format!("{}-b", stack.tenant);
    let free = stack.token_of(
        &other,
        "bot",
        &[],
        &["agent-*"],
        SystemClock.epoch_s(),
        Duration::from_secs(3600),
    );
    let burst = async {
        let started = Instant::now();
        let mut answers = vec![];
        for i in 0..50 {
            let body = json!({"kind": "n", "data": {"i": i}});
            answers.push(stack.post_event(&limited, "agent-1", &body).await);
        }
        (answers, started.elapsed())
    };
    let other_tenant = async {
        let mut statuses = vec![];
        for i in 0..50 {
            let body = json!({"kind": "n", "data": {"i": i}});
            statuses.push(stack.post_event(&free, "agent-1", &body).await.0);
        }
        statuses
    };
    let ((answers, took), other_statuses) = tokio::join!(burst, other_tenant);

    assert!(
        other_statuses.iter().all(|s| *s == 201),
        "the other tenant is not limited: {other_statuses:?}"
    );
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert!(
        statuses[..10].iter().all(|s| *s == 201),
        "the burst of 10 is accepted: {statuses:?}"
    );
    let accepted: Vec<String> = answers
        .iter()
        .filter(|a| a.0 == 201)
        .map(|a| a.2["id"].as_str().unwrap().to_owned())
        .collect();
    // Beyond the burst, at most what 5/s refilled while the burst ran.
    let refill = (took.as_secs_f64() * 5.0).ceil() as usize + 1;
    assert!(
        accepted.len() <= 10 + refill,
        "{} accepted in {took:?}: {statuses:?}",
        accepted.len()
    );
    let refused: Vec<_> = answers.iter().filter(|a| a.0 != 201).collect();
    assert!(!refused.is_empty(), "50 at once exceed 5/s: {statuses:?}");
    for (status, retry_after, body) in &refused {
        assert_eq!(*status, 429, "{body}");
        assert_eq!(body["code"], "rate_limited", "{body}");
        assert_eq!(body["scope"], "tenant", "{body}");
        let ms = body["retry_after_ms"].as_u64().unwrap();
        assert!(ms > 0 && ms <= 200, "one 200 ms interval at most: {body}");
        assert_eq!(
            retry_after.as_deref(),
            Some("1"),
            "whole seconds, rounded up"
        );
    }

    // Every accepted event is delivered, once.
    let got = sub.events(accepted.len()).await;
    let ids: BTreeSet<String> = got
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, accepted.iter().cloned().collect::<BTreeSet<_>>());
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_after_the_tenants_maximum_is_refused_with_a_typed_429() {
    let stack = Stack::start().await;
    stack
        .set_limits(TenantLimits {
            max_connections: Some(2),
            ..Default::default()
        })
        .await;
    let token = stack.token("viewer", &["agent-*"]);
    let mut a = stack.client(&token).await;
    a.hello().await;
    let mut b = stack.client(&token).await;
    b.hello().await;
    let refused = stack
        .connect(
            Some(&token),
            &[("sec-websocket-protocol", "agentwire.v1")],
            "",
        )
        .await;
    let Err((status, body)) = refused else {
        panic!("a third connection was accepted at a maximum of 2")
    };
    assert_eq!(status, 429, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "too_many_connections", "{body}");

    // One closes: its $disconnect gives the place back.
    a.ws.close(None).await.unwrap();
    let registry = agentwire_aws::DynamoRegistry::new(
        stack.ddb(),
        stack.config.tables.clone(),
        std::sync::Arc::new(SystemClock),
    );
    assert!(
        stack
            .eventually(Duration::from_secs(10), || async {
                registry.counted_connections(&stack.tenant).await.unwrap() == 1
            })
            .await,
        "the disconnect counted the connection down"
    );
    let mut c = stack.client(&token).await;
    assert_eq!(c.hello().await["type"], "welcome");
    b.ws.close(None).await.unwrap();
    c.ws.close(None).await.unwrap();
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_its_join_rate_gets_a_typed_error_frame() {
    let stack = Stack::start().await;
    stack
        .set_limits(TenantLimits {
            connection_action_rate: Some(1),
            connection_action_burst: Some(2),
            ..Default::default()
        })
        .await;
    let mut c = stack.client(&stack.token("viewer", &["agent-*"])).await;
    c.hello().await;
    assert_eq!(c.join(json!(["agent-1"])).await["type"], "joined");
    assert_eq!(c.join(json!(["agent-2"])).await["type"], "joined");
    let refused = c.join(json!(["agent-3"])).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert_eq!(refused["scope"], "connection", "{refused}");
    let ms = refused["retry_after_ms"].as_u64().unwrap();
    assert!(ms > 0 && ms <= 1000, "{refused}");
    assert!(
        stack.subscription_ids("agent-3").await.is_empty(),
        "a refused join joins nothing"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_tenants_bucket_costs_one_write_per_leased_chunk() {
    let stack = Stack::start_with(StackOptions {
        count_dynamodb_calls: true,
        ..StackOptions::default()
    })
    .await;
    // 1000/s: the publish function leases 50 tokens a write.
    stack
        .set_limits(TenantLimits {
            publish_rate: Some(1000),
            ..Default::default()
        })
        .await;
    let token = stack.publisher_token("bot", &["agent-*"]);
    let body = json!({"kind": "n", "data": {}});
    stack.calls.reset();
    let started = Instant::now();
    for _ in 0..200 {
        let (status, _, answer) = stack.post_event(&token, "agent-1", &body).await;
        assert_eq!(status, 201, "{answer}");
    }
    let took = started.elapsed();
    // The bucket writes only (the publish function also moves the head of
    // the channel it commits to).
    let writes = stack
        .calls
        .by_table()
        .get("publish:UpdateItem:agentwire-limits")
        .copied()
        .unwrap_or(0);
    // Four chunks of 50, and at most one more for each second a lease
    // could have expired with tokens left.
    let most = 4 + took.as_secs() + 1;
    assert!(
        (4..=most).contains(&writes),
        "{writes} bucket writes for 200 publishes in {took:?} (expected 4..={most})"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_read_rate_gets_typed_429s_and_another_tenant_reads_on() {
    let stack = Stack::start().await;
    stack
        .set_limits(TenantLimits {
            read_rate: Some(2),
            read_burst: Some(4),
            ..Default::default()
        })
        .await;
    let reader = stack.token("ui", &["agent-*"]);
    let other = stack.token_of(
        &format!("{}-b", stack.tenant),
        "ui",
        &["agent-*"],
        &[],
        SystemClock.epoch_s(),
        Duration::from_secs(3600),
    );
    let paths = [
        "/v1/channels/agent-1/events?after=0",
        "/v1/channels/agent-1/presence",
        "/v1/channels/agent-1",
    ];
    let limited = async {
        let mut answers = vec![];
        for i in 0..30 {
            let path = paths[i % paths.len()];
            answers.push(
                stack
                    .http(reqwest::Method::GET, path, Some(&reader), None)
                    .await,
            );
        }
        answers
    };
    let free = async {
        let mut statuses = vec![];
        for i in 0..30 {
            statuses.push(stack.http_get(&other, paths[i % paths.len()]).await.0);
        }
        statuses
    };
    let (answers, other_statuses) = tokio::join!(limited, free);
    assert!(
        other_statuses.iter().all(|s| *s == 200),
        "the other tenant reads on: {other_statuses:?}"
    );
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert!(
        statuses[..4].iter().all(|s| *s == 200),
        "the burst of 4 is read: {statuses:?}"
    );
    let refused: Vec<_> = answers.iter().filter(|a| a.0 != 200).collect();
    assert!(
        !refused.is_empty(),
        "30 reads at once exceed 2/s: {statuses:?}"
    );
    for (status, retry_after, body) in &refused {
        assert_eq!(*status, 429, "{body}");
        assert_eq!(body["code"], "rate_limited", "{body}");
        assert_eq!(body["scope"], "read", "{body}");
        let ms = body["retry_after_ms"].as_u64().unwrap();
        assert!(ms > 0 && ms <= 500, "one 500 ms interval at most: {body}");
        assert!(retry_after.is_some(), "Retry-After is set: {body}");
    }
    stack.shutdown().await;
}
