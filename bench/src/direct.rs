//! `--only direct`: HTTP publishes committed by the publish function (the
//! direct path) beside the same publishes through the events queue and the
//! dispatcher (the path before it), on one dev gateway, in one run:
//!
//! 1. HTTP publish → client receive latency, the two paths interleaved
//!    event by event (p50, p95, p99), and POST → answer;
//! 2. DynamoDB write and read units per event (from each request's items,
//!    [`agentwire_e2e::capacity_units`]) at 1 and 100 subscribers: the
//!    queue path as it was (no settings cache), the queue path now, and the
//!    direct path without and with an idempotency key; and what they come
//!    to per million events at list prices;
//! 3. one hot channel over the direct path: events/s sustained by 4
//!    publishers at once, with 1 subscriber and with `--direct-crowd`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentwire_e2e::{Stack, StackOptions, WsClient};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::pct;

/// How the gateway takes an HTTP publish for one measurement.
#[derive(Clone, Copy)]
struct Mode {
    name: &'static str,
    direct: bool,
    /// The settings cache's time to live (zero: none, as before it).
    ttl: Duration,
    keyed: bool,
}

const BEFORE: Mode = Mode {
    name: "queue path, before (no settings cache)",
    direct: false,
    ttl: Duration::ZERO,
    keyed: false,
};
const QUEUE: Mode = Mode {
    name: "queue path, now (settings cached 10 s)",
    direct: false,
    ttl: Duration::from_secs(10),
    keyed: false,
};
const DIRECT: Mode = Mode {
    name: "direct path, no key",
    direct: true,
    ttl: Duration::from_secs(10),
    keyed: false,
};
const DIRECT_KEYED: Mode = Mode {
    name: "direct path, Idempotency-Key",
    direct: true,
    ttl: Duration::from_secs(10),
    keyed: true,
};

fn set(stack: &Stack, mode: Mode) {
    stack.gateway.set_direct_publish(mode.direct);
    stack.gateway.set_settings_ttl(mode.ttl);
}

/// A client joined to `channel`.
async fn joined(stack: &Stack, channel: &str) -> WsClient {
    let mut c = stack.client(&stack.token("viewer", &[channel])).await;
    c.hello().await;
    let j = c.join(json!([channel])).await;
    assert_eq!(j["type"], "joined", "{j}");
    c
}

/// Reads and drops whatever reaches `c` until its socket closes.
fn drain(mut c: WsClient) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while let Some(Ok(_)) = c.ws.next().await {} })
}

/// One HTTP publish; the answer's status and id.
async fn post(
    stack: &Stack,
    token: &str,
    channel: &str,
    n: u64,
    key: Option<String>,
) -> (u16, String) {
    let body = json!({"kind": "status", "data": {"n": n, "text": "working on step 3 of 7"}});
    let headers: Vec<(&str, &str)> = key
        .as_deref()
        .map(|k| ("idempotency-key", k))
        .into_iter()
        .collect();
    let (status, _, answer) = stack
        .http_with(
            reqwest::Method::POST,
            &format!("/v1/channels/{channel}/events"),
            Some(token),
            Some(&body),
            &headers,
        )
        .await;
    (status, answer["id"].as_str().unwrap_or_default().to_owned())
}

/// Waits until `c` has the event `id`.
async fn received(c: &mut WsClient, id: &str) {
    c.frames_until(|f| f.iter().any(|e| e["id"] == id)).await;
}

pub async fn direct(events: usize, crowd: usize) {
    let stack = Stack::start_with(StackOptions {
        count_dynamodb_calls: true,
        ..StackOptions::default()
    })
    .await;
    let token = stack.publisher_token("bench", &["*"]);
    latency(&stack, &token, events).await;
    units(&stack, &token).await;
    throughput(&stack, &token, crowd).await;
    set(&stack, DIRECT);
    stack.shutdown().await;
}

async fn latency(stack: &Stack, token: &str, events: usize) {
    // One channel per path (a channel written over both at once would
    // make the direct path's cached head stale at every queued commit),
    // one subscriber on both.
    let mut sub = stack.client(&stack.token("viewer", &["lat-*"])).await;
    sub.hello().await;
    let j = sub.join(json!(["lat-queue", "lat-direct"])).await;
    assert_eq!(j["type"], "joined", "{j}");
    let modes = [(QUEUE, "lat-queue"), (DIRECT, "lat-direct")];
    let mut receive: Vec<Vec<Duration>> = vec![Vec::new(); modes.len()];
    let mut answer: Vec<Vec<Duration>> = vec![Vec::new(); modes.len()];
    // Warm both paths (channels created, caches and connections warm).
    for (i, (m, ch)) in modes.iter().enumerate() {
        set(stack, *m);
        let (_, id) = post(stack, token, ch, i as u64, None).await;
        received(&mut sub, &id).await;
    }
    for n in 0..events {
        for (i, (m, ch)) in modes.iter().enumerate() {
            set(stack, *m);
            let t0 = Instant::now();
            let (status, id) = post(stack, token, ch, n as u64, None).await;
            answer[i].push(t0.elapsed());
            assert!(status == 201 || status == 202, "{status}");
            received(&mut sub, &id).await;
            receive[i].push(t0.elapsed());
        }
    }
    println!(
        "HTTP publish → client receive, {events} events per path, interleaved (one subscriber, local stack):"
    );
    println!();
    println!("| path | POST → answer p50 | p95 | publish → receive p50 | p95 | p99 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, (m, _)) in modes.iter().enumerate() {
        answer[i].sort();
        receive[i].sort();
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {} ({}) | {} | {} | {} | {} | {} |",
            if m.direct { "direct" } else { "queue" },
            if m.direct { "201" } else { "202" },
            ms(pct(&answer[i], 0.5)),
            ms(pct(&answer[i], 0.95)),
            ms(pct(&receive[i], 0.5)),
            ms(pct(&receive[i], 0.95)),
            ms(pct(&receive[i], 0.99)),
        );
    }
    println!();
}

/// List prices (us-east-1, on-demand): DynamoDB per write and read unit.
const WRU: f64 = 0.625;
const RRU: f64 = 0.125;

async fn units(stack: &Stack, token: &str) {
    const N: u64 = 40;
    println!(
        "DynamoDB units per event ({N} events per row, each published once the last was received; the publish function's and the dispatcher's requests):"
    );
    println!();
    println!(
        "| path | subscribers | write units | read units | calls (function:operation:table per event) | DynamoDB $ per million events |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for subscribers in [1usize, 100] {
        let channel = format!("units-{subscribers}");
        let mut first = joined(stack, &channel).await;
        let mut rest = Vec::new();
        for _ in 1..subscribers {
            rest.push(drain(joined(stack, &channel).await));
        }
        for mode in [BEFORE, QUEUE, DIRECT, DIRECT_KEYED] {
            set(stack, mode);
            // One event first: the channel exists and caches are as warm as
            // this mode lets them be.
            let (_, id) = post(stack, token, &channel, 0, None).await;
            received(&mut first, &id).await;
            stack.calls.reset();
            for n in 0..N {
                let key = mode
                    .keyed
                    .then(|| format!("k-{}-{n}", uuid::Uuid::new_v4()));
                let (status, id) = post(stack, token, &channel, n, key).await;
                assert!(status == 201 || status == 202, "{status}");
                received(&mut first, &id).await;
            }
            let (mut w, mut r) = (0.0, 0.0);
            for f in ["publish", "dispatcher"] {
                let (fw, fr) = stack.calls.units(Some(f));
                w += fw;
                r += fr;
            }
            let by_op: Vec<(String, u64)> = stack
                .calls
                .by_table()
                .into_iter()
                .filter(|(k, _)| k.starts_with("publish:") || k.starts_with("dispatcher:"))
                .collect();
            let calls: u64 = by_op.iter().map(|(_, v)| v).sum();
            let detail: Vec<String> = by_op
                .iter()
                .map(|(k, v)| {
                    let k = k.replace("agentwire-", "");
                    format!("{k} {:.2}", *v as f64 / N as f64)
                })
                .collect();
            let (w, r) = (w / N as f64, r / N as f64);
            println!(
                "| {} | {subscribers} | {w:.2} | {r:.2} | {:.2} ({}) | ${:.2} |",
                mode.name,
                calls as f64 / N as f64,
                detail.join(", "),
                w * WRU + r * RRU,
            );
        }
        // The queue path at its best: a back end publishing in batches of
        // ten (one SendMessageBatch, one receive, one run committed in one
        // transaction).
        set(stack, QUEUE);
        let publisher = agentwire_core::usecases::Publisher::new(
            Arc::new(agentwire_aws::SqsEventQueue::new(
                stack.sqs(),
                &stack.queue_url,
            )),
            Arc::new(agentwire_core::clock::SystemClock),
        );
        stack.calls.reset();
        for b in 0..N / 10 {
            let batch: Vec<agentwire_core::usecases::Publication> = (0..10)
                .map(|i| agentwire_core::usecases::Publication {
                    tenant: stack.tenant.clone(),
                    channel: channel.clone(),
                    kind: "status".into(),
                    data: json!({"n": b * 10 + i, "text": "working on step 3 of 7"}),
                    id: None,
                })
                .collect();
            let sent = publisher
                .publish_many(batch)
                .await
                .unwrap_or_else(|e| panic!("the queue did not take a batch: {e}"));
            let last = sent.last().map(|e| e.id.clone()).unwrap_or_default();
            received(&mut first, &last).await;
        }
        let (w, r) = stack.calls.units(Some("dispatcher"));
        let calls: u64 = stack
            .calls
            .by_table()
            .iter()
            .filter(|(k, _)| k.starts_with("dispatcher:"))
            .map(|(_, v)| v)
            .sum();
        let (w, r) = (w / N as f64, r / N as f64);
        println!(
            "| queue path, a back end's batches of 10 | {subscribers} | {w:.2} | {r:.2} | {:.2} | ${:.2} |",
            calls as f64 / N as f64,
            w * WRU + r * RRU,
        );
        first.ws.close(None).await.ok();
        for r in rest {
            r.abort();
        }
    }
    println!();
}

async fn throughput(stack: &Stack, token: &str, crowd: usize) {
    const PUBLISHERS: usize = 4;
    const SECONDS: u64 = 5;
    set(stack, DIRECT);
    println!(
        "One hot channel over the direct path: {PUBLISHERS} publishers at once for {SECONDS} s (each waits for its answer):"
    );
    println!();
    println!(
        "| subscribers | events committed | events/s | 503 (retryable) | events one subscriber has, and when after the last answer |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for subscribers in [1usize, crowd] {
        let channel = format!("hot-{subscribers}");
        let first = joined(stack, &channel).await;
        let mut rest = Vec::new();
        for _ in 1..subscribers {
            rest.push(drain(joined(stack, &channel).await));
        }
        let seen = Arc::new(AtomicU64::new(0));
        let counter = {
            let seen = seen.clone();
            let mut first = first;
            tokio::spawn(async move {
                while let Some(Ok(m)) = first.ws.next().await {
                    if let Ok(v) = serde_json::from_str::<Value>(m.to_text().unwrap_or_default()) {
                        let n = match v["type"].as_str() {
                            Some("event") => 1,
                            Some("batch") => v["events"].as_array().map_or(0, Vec::len) as u64,
                            _ => 0,
                        };
                        seen.fetch_add(n, Ordering::Relaxed);
                    }
                }
            })
        };
        let (_, warm) = post(stack, token, &channel, 0, None).await;
        assert!(!warm.is_empty());
        let committed = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(SECONDS);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for p in 0..PUBLISHERS {
            let (committed, refused) = (committed.clone(), refused.clone());
            let (url, token, channel) =
                (stack.gateway.http_url(), token.to_owned(), channel.clone());
            tasks.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let status = http
                        .post(format!("{url}/v1/channels/{channel}/events"))
                        .bearer_auth(&token)
                        .body(json!({"kind": "tick", "data": {"p": p, "n": n}}).to_string())
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    match status {
                        201 => committed.fetch_add(1, Ordering::Relaxed),
                        _ => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let elapsed = started.elapsed();
        let done = committed.load(Ordering::Relaxed);
        // How long one subscriber took to have them all (the warm-up event
        // too) after the last answer.
        let last_answer = Instant::now();
        while seen.load(Ordering::Relaxed) < done + 1
            && last_answer.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "| {subscribers} | {done} | {:.0} | {} | {} after {:.1} s |",
            done as f64 / elapsed.as_secs_f64(),
            refused.load(Ordering::Relaxed),
            seen.load(Ordering::Relaxed),
            last_answer.elapsed().as_secs_f64(),
        );
        counter.abort();
        for r in rest {
            r.abort();
        }
    }
    println!();
}
