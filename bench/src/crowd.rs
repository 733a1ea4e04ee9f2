//! Big channels and crowds (issue 14): connect+join of a crowd to one
//! channel, fan-out inline vs sharded at 0 and 20 ms of emulated
//! `@connections` latency on the same connected crowd, a hot channel's
//! sustained rate, DynamoDB items read per event on a stable channel, and
//! (from 10,000 connections on) the dev gateway's memory per connection.
//!
//! Up to 1,000 clients the gateway runs in this process (its DynamoDB
//! calls are counted). Above that it runs as its own process
//! (`target/release/agentwire-local` on the tables and queues of
//! `localstack/up`), so that its memory is its own and the two sides of
//! 10,000 sockets do not share one process's file limit; the knobs are
//! turned through its `POST /@dev/settings`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agentwire_core::usecases::FanoutPolicy;
use agentwire_e2e::{Stack, StackOptions, WsClient};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::{ms, pct};

/// A threshold no channel reaches: every fan-out inline.
const INLINE: u64 = u64::MAX / 2;
/// Sharded from the first subscriber.
const SHARDED: u64 = 1;

/// Where the crowd connects and how its knobs are turned (one per run).
#[allow(clippy::large_enum_variant)]
pub enum Target {
    InProcess(Stack),
    Process {
        child: tokio::process::Child,
        port: u16,
        queue_url: String,
        sqs: aws_sdk_sqs::Client,
        tenant: String,
    },
}

impl Target {
    /// The in-process stack, if the gateway runs here.
    pub fn stack(&self) -> Option<&Stack> {
        match self {
            Target::InProcess(s) => Some(s),
            Target::Process { .. } => None,
        }
    }

    fn ws_url(&self) -> String {
        match self {
            Target::InProcess(s) => s.gateway.ws_url(),
            Target::Process { port, .. } => format!("ws://127.0.0.1:{port}"),
        }
    }

    fn token(&self, channels: &[&str]) -> String {
        match self {
            Target::InProcess(s) => s.token("crowd", channels),
            Target::Process { tenant, .. } => {
                crate::dev_token(tenant, "crowd", channels, Duration::from_secs(6 * 3600))
                    .unwrap_or_else(|e| panic!("sign: {e}"))
            }
        }
    }

    pub async fn settings(&self, latency_ms: u64, threshold: u64) {
        match self {
            Target::InProcess(s) => {
                s.gateway
                    .set_connections_latency(Duration::from_millis(latency_ms), Duration::ZERO);
                s.gateway.set_fanout_threshold(threshold);
            }
            Target::Process { port, .. } => {
                let body =
                    json!({"connections_latency_ms": latency_ms, "fanout_threshold": threshold});
                let resp = reqwest::Client::new()
                    .post(format!("http://127.0.0.1:{port}/@dev/settings"))
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("settings: {e}"));
                assert!(resp.status().is_success(), "settings: {}", resp.status());
            }
        }
    }

    /// How many fan-out invocations run at once (the template's
    /// `FanoutMaxConcurrency`).
    pub async fn invocations(&self, n: usize) {
        match self {
            Target::InProcess(s) => s.gateway.set_fanout_invocations(n),
            Target::Process { port, .. } => {
                let resp = reqwest::Client::new()
                    .post(format!("http://127.0.0.1:{port}/@dev/settings"))
                    .body(json!({ "fanout_invocations": n }).to_string())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("settings: {e}"));
                assert!(resp.status().is_success(), "settings: {}", resp.status());
            }
        }
    }

    async fn publish(&self, channel: &str, data: Value) {
        match self {
            Target::InProcess(s) => {
                s.publish(channel, "tick", data).await;
            }
            Target::Process {
                queue_url,
                sqs,
                tenant,
                ..
            } => {
                use agentwire_core::ports::EventQueue;
                let env = agentwire_core::model::Envelope {
                    tenant: tenant.clone(),
                    channel: channel.into(),
                    id: uuid::Uuid::new_v4().to_string(),
                    kind: "tick".into(),
                    data: data.into(),
                    ts: "2026-11-24T09:00:00.000Z".into(),
                };
                agentwire_aws::SqsEventQueue::new(sqs.clone(), queue_url)
                    .send(&env)
                    .await
                    .unwrap_or_else(|e| panic!("publish: {e}"));
            }
        }
    }

    /// The gateway process's resident memory, in bytes.
    fn rss(&self) -> Option<u64> {
        let Target::Process { child, .. } = self else {
            return None;
        };
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()?)).ok()?;
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    async fn stop(self) {
        match self {
            Target::InProcess(s) => s.shutdown().await,
            Target::Process { mut child, .. } => {
                let _ = child.kill().await;
            }
        }
    }
}

async fn spawn_gateway(bin_dir: &std::path::Path) -> Result<Target, String> {
    let (child, port) = crate::start_local(
        bin_dir,
        &["--fanout-pollers", "4"],
        &[("AGENTWIRE_FANOUT_THRESHOLD", INLINE.to_string())],
    )
    .await?;
    let sdk = agentwire_e2e::local_sdk(&agentwire_e2e::endpoint()).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = agentwire_aws::resolve_queue_url(&sqs, "agentwire-events.fifo")
        .await
        .map_err(|e| format!("{e} (run localstack/up)"))?;
    Ok(Target::Process {
        child,
        port,
        queue_url,
        sqs,
        tenant: format!("crowd{}", std::process::id()),
    })
}

/// A raw client: connected, `hello`, joined to `channels`.
async fn joined(url: &str, token: &str, channels: &[&str]) -> WsClient {
    let mut req = url.into_client_request().unwrap_or_else(|e| panic!("{e}"));
    let h = |v: &str| HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}"));
    req.headers_mut()
        .insert("authorization", h(&format!("Bearer {token}")));
    req.headers_mut()
        .insert("sec-websocket-protocol", h("agentwire.v1"));
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let mut c = WsClient {
        ws,
        subprotocol: None,
        connection_id: None,
    };
    c.hello().await;
    let j = c.join(json!(channels)).await;
    assert_eq!(j["type"], "joined", "{j}");
    c
}

/// The receipt key of an event: its seq, tagged with its channel when it
/// is not the crowd's (`c100`, or the chat sample's frames).
pub fn receipt_key(channel: &str, seq: u64) -> u64 {
    match channel {
        "c100" => seq | 1 << 40,
        "sample" => seq | 1 << 41,
        _ => seq,
    }
}

/// Reads every client's frames and reports each event's receipt key (a
/// batch's events one by one) until the socket closes.
fn readers(clients: Vec<WsClient>) -> mpsc::UnboundedReceiver<u64> {
    let (tx, rx) = mpsc::unbounded_channel();
    for mut c in clients {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = c.ws.next().await {
                let Message::Text(t) = m else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&t) else {
                    continue;
                };
                let key = |e: &Value| {
                    receipt_key(
                        e["channel"].as_str().unwrap_or(""),
                        e["seq"].as_u64().unwrap_or(0),
                    )
                };
                match v["type"].as_str() {
                    Some("event") => {
                        let _ = tx.send(key(&v));
                    }
                    Some("batch") => {
                        for e in v["events"].as_array().into_iter().flatten() {
                            let _ = tx.send(key(e));
                        }
                    }
                    _ => {}
                }
            }
        });
    }
    rx
}

/// Receipts counted per key, waited for.
pub struct Receipts {
    rx: mpsc::UnboundedReceiver<u64>,
    counts: HashMap<u64, usize>,
}

impl Receipts {
    /// Waits until `n` receipts of every seq in `seqs` arrived.
    pub async fn wait(&mut self, seqs: std::ops::RangeInclusive<u64>, n: usize) {
        let done = |counts: &HashMap<u64, usize>| {
            seqs.clone()
                .all(|s| counts.get(&s).copied().unwrap_or(0) >= n)
        };
        while !done(&self.counts) {
            match tokio::time::timeout(Duration::from_secs(120), self.rx.recv()).await {
                Ok(Some(seq)) => *self.counts.entry(seq).or_default() += 1,
                Ok(None) => panic!("every reader ended"),
                Err(_) => panic!(
                    "no delivery within 120 s waiting for {seqs:?} x{n}: {:?}",
                    seqs.clone()
                        .map(|s| self.counts.get(&s).copied().unwrap_or(0))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }
}

/// Connects and joins `n` clients, 16 at a time; prints the rate and
/// returns the clients.
async fn connect_crowd(target: &Target, n: usize, channels: &[&str]) -> (Vec<WsClient>, String) {
    let url = target.ws_url();
    let token = target.token(channels);
    let few = channels.len() > 1;
    let start = Instant::now();
    let mut done_at: Vec<Duration> = Vec::with_capacity(n);
    let mut clients: Vec<(usize, WsClient)> = Vec::with_capacity(n);
    let mut stream = futures::stream::iter(0..n)
        .map(|i| {
            let (url, token) = (url.clone(), token.clone());
            let chans: Vec<&str> = if few && i >= 100 {
                channels[1..].to_vec()
            } else {
                channels.to_vec()
            };
            async move { (i, joined(&url, &token, &chans).await) }
        })
        .buffer_unordered(16);
    while let Some(c) = stream.next().await {
        done_at.push(start.elapsed());
        clients.push(c);
        if clients.len().is_multiple_of(1000) {
            eprintln!(
                "  {}/{n} joined ({:.0} s)",
                clients.len(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    let total = start.elapsed();
    // In the order they were started: the first 100 joined every channel.
    clients.sort_by_key(|(i, _)| *i);
    let clients: Vec<WsClient> = clients.into_iter().map(|(_, c)| c).collect();
    let k = 1000.min(n);
    let first = k as f64 / done_at[k - 1].as_secs_f64();
    let last = k as f64 / (done_at[n - 1] - done_at[n - k]).as_secs_f64().max(1e-9);
    let row = format!(
        "| {n} | {:.1} s | {:.1} | {first:.1} | {last:.1} | {:+.0}% |",
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        (last / first - 1.0) * 100.0
    );
    (clients, row)
}

/// Publishes `events` one at a time; each waits until all `n` have it.
pub async fn to_all(
    target: &Target,
    receipts: &mut Receipts,
    channel: &str,
    next_seq: &mut u64,
    n: usize,
    events: usize,
) -> (Duration, Duration) {
    let mut v = Vec::with_capacity(events);
    for _ in 0..events {
        *next_seq += 1;
        let t0 = Instant::now();
        target.publish(channel, json!({"seq": *next_seq})).await;
        let key = receipt_key(channel, *next_seq);
        receipts.wait(key..=key, n).await;
        v.push(t0.elapsed());
    }
    v.sort();
    (pct(&v, 0.5), pct(&v, 0.95))
}

/// The crowd section: `sizes` subscribers on one channel each.
pub async fn crowd(
    sizes: &[usize],
    events: usize,
    bin_dir: &std::path::Path,
    chat_sample: Option<&std::path::Path>,
) -> Result<(), String> {
    let mut join_rows = Vec::new();
    let mut fan_rows = Vec::new();
    let mut other = Vec::new();
    for &n in sizes {
        eprintln!("crowd: {n} clients on one channel");
        let in_process = n <= 1000;
        let target = if in_process {
            Target::InProcess(
                Stack::start_with(StackOptions {
                    count_dynamodb_calls: true,
                    fanout: Some(FanoutPolicy {
                        threshold: INLINE,
                        ..FanoutPolicy::default()
                    }),
                    gateway: agentwire_local::GatewayOptions {
                        bind: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
                        poll_wait: Duration::from_secs(1),
                        fanout_pollers: 4,
                        ..agentwire_local::GatewayOptions::default()
                    },
                    ..StackOptions::default()
                })
                .await,
            )
        } else {
            spawn_gateway(bin_dir).await?
        };
        // Calls of one connect+hello+join, counted on a few clients first.
        if let Target::InProcess(s) = &target {
            s.calls.reset();
            let probe = connect_crowd(&target, 20, &["probe"]).await.0;
            let calls = s.calls.snapshot();
            let per: Vec<String> = calls
                .iter()
                .map(|(op, c)| format!("{op} {:.1}", *c as f64 / 20.0))
                .collect();
            other.push(format!(
                "DynamoDB calls per connect+hello+join (20 clients, a new channel): {}",
                per.join(", ")
            ));
            drop(probe);
        }
        let rss_before = target.rss();
        let channels: &[&str] = if chat_sample.is_some() && in_process {
            &["c100", "crowd"]
        } else {
            &["crowd"]
        };
        let (clients, row) = connect_crowd(&target, n, channels).await;
        join_rows.push(row);
        if let (Some(before), Some(after)) = (rss_before, target.rss()) {
            other.push(format!(
                "Dev gateway resident memory: {:.1} MiB before, {:.1} MiB with {n} connections joined: {:.1} KiB per connection",
                before as f64 / 1048576.0,
                after as f64 / 1048576.0,
                (after.saturating_sub(before)) as f64 / 1024.0 / n as f64
            ));
        }
        let ids: Vec<String> = clients
            .iter()
            .filter_map(|c| c.connection_id.clone())
            .collect();
        let mut receipts = Receipts {
            rx: readers(clients),
            counts: HashMap::new(),
        };
        let mut seq = 0;

        // Items read per event on a stable channel: the first run lists
        // the subscribers (what every run did before the reuse), the later
        // ones read the membership item.
        if let Target::InProcess(s) = &target {
            target.settings(0, INLINE).await;
            s.calls.reset();
            to_all(&target, &mut receipts, "crowd", &mut seq, n, 1).await;
            let first = s.calls.items_by_function();
            s.calls.reset();
            to_all(&target, &mut receipts, "crowd", &mut seq, n, events).await;
            let later = s.calls.items_by_function();
            let items = |m: &std::collections::BTreeMap<String, u64>, per: usize| {
                let q = m.get("dispatcher:Query").copied().unwrap_or(0) as f64 / per as f64;
                let g = m.get("dispatcher:GetItem").copied().unwrap_or(0) as f64 / per as f64;
                format!("{q:.0} by Query + {g:.1} by GetItem")
            };
            other.push(format!(
                "DynamoDB items the dispatcher read per event, {n} stable subscribers: first event (the subscriber listing every event made before) {}; each of the next {events} {}",
                items(&first, 1),
                items(&later, events)
            ));
        }

        // The last row: what a deployment whose API Gateway quota was
        // raised would run (8 invocations x 64 posts in flight is 25,600
        // posts/s at 20 ms, over the default 10,000 requests/s).
        for (latency, mode, threshold, invocations) in [
            (0, "inline", INLINE, 4),
            (0, "sharded", SHARDED, 4),
            (20, "inline", INLINE, 4),
            (20, "sharded", SHARDED, 4),
            (20, "sharded, 8 invocations", SHARDED, 8),
        ] {
            target.settings(latency, threshold).await;
            target.invocations(invocations).await;
            // One event to settle (a listing, the pollers' first receive).
            to_all(&target, &mut receipts, "crowd", &mut seq, n, 1).await;
            let (p50, p95) = to_all(&target, &mut receipts, "crowd", &mut seq, n, events).await;
            eprintln!("  {mode} at {latency} ms: p50 {}", ms(p50));
            fan_rows.push(format!(
                "| {n} | {latency} ms | {mode} | {events} | {} | {} |",
                ms(p50),
                ms(p95)
            ));
        }

        // A hot channel: a burst published ten at a time, every subscriber
        // receiving every event.
        if in_process {
            target.settings(0, FanoutPolicy::default().threshold).await;
            target.invocations(4).await;
            let burst = 400;
            let t0 = Instant::now();
            let from = seq + 1;
            futures::stream::iter(0..burst)
                .map(|i| target.publish("crowd", json!({"hot": i})))
                .buffer_unordered(10)
                .collect::<Vec<()>>()
                .await;
            seq += burst as u64;
            receipts.wait(from..=seq, n).await;
            let el = t0.elapsed();
            other.push(format!(
                "Hot channel, {n} subscribers (default threshold: sharded): {burst} events published 10 at a time, all {} deliveries in {:.2} s: {:.0} events/s, {:.0} deliveries/s",
                burst * n,
                el.as_secs_f64(),
                burst as f64 / el.as_secs_f64(),
                (burst * n) as f64 / el.as_secs_f64()
            ));
            if let Some(sample) = chat_sample {
                let rows =
                    crate::chatsample::compare(&target, sample, &ids, &mut receipts, &mut seq)
                        .await?;
                other.extend(rows);
            }
        }
        drop(receipts);
        target.stop().await;
    }
    println!("Connect+hello+join of a crowd to one channel (16 at a time):");
    println!();
    println!(
        "| clients | total | joins/s | joins/s, first 1,000 | joins/s, last 1,000 | last vs first |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in &join_rows {
        println!("{r}");
    }
    println!();
    println!(
        "Publish → last delivery, one event at a time (API Gateway latency emulated by the dev gateway):"
    );
    println!();
    println!("| subscribers | @connections latency | fan-out | events | p50 | p95 |");
    println!("|---:|---:|---|---:|---:|---:|");
    for r in &fan_rows {
        println!("{r}");
    }
    println!();
    for o in &other {
        println!("- {o}");
    }
    Ok(())
}
