//! `agentwire-bench`: publish-to-receive latency and fan-out rate on the
//! local stack (the endpoint from `localstack/up`, the dev gateway
//! in-process, real WebSocket clients). Prints Markdown tables for
//! `docs/benchmarks.md`.

// A benchmark that sees a lost or misordered event must stop loudly.
#![allow(clippy::panic)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use agentwire_e2e::{Stack, StackOptions, WsClient};
use clap::Parser;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
#[command(name = "agentwire-bench")]
struct Args {
    /// Events for the latency run (one subscriber, one event in flight at a time).
    #[arg(long, default_value_t = 1000)]
    events: usize,
    /// Subscriber counts for the fan-out runs.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    fanout: Vec<usize>,
    /// Events per fan-out run.
    #[arg(long, default_value_t = 20)]
    fanout_events: usize,
    /// Retained events replayed to a reconnecting client.
    #[arg(long, default_value_t = 10_000)]
    replay: u64,
    /// Events published for the DynamoDB calls-per-event count.
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Sections to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "latency,fanout,replay,calls"
    )]
    only: Vec<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(msg) = agentwire_e2e::check_endpoint(&agentwire_e2e::endpoint()).await {
        eprintln!("agentwire-bench: {msg}");
        return ExitCode::FAILURE;
    }
    let run = |name: &str| args.only.iter().any(|o| o == name);
    if run("latency") {
        latency(args.events).await;
        println!();
    }
    if run("fanout") {
        println!(
            "| subscribers | events | deliveries | elapsed | deliveries/s | publish→all received p50 | p95 |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for n in &args.fanout {
            fanout(*n, args.fanout_events).await;
        }
        println!();
    }
    if run("replay") {
        replay(args.replay).await;
        println!();
    }
    if run("calls") {
        calls(args.calls).await;
    }
    ExitCode::SUCCESS
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn subscriber(stack: &Stack, channel: &str) -> WsClient {
    let mut c = stack.client(&stack.token("bench", &["*"])).await;
    c.hello().await;
    let j = c.join(json!([channel])).await;
    assert_eq!(j["type"], "joined", "{j}");
    c
}

async fn latency(n: usize) {
    eprintln!("latency: {n} events, one at a time, one subscriber");
    let stack = Stack::start().await;
    let mut c = subscriber(&stack, "lat").await;
    let mut total = Vec::with_capacity(n);
    let mut send = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        stack.publish("lat", "status", json!({ "i": i })).await;
        send.push(t0.elapsed());
        let got = c.events(1).await;
        total.push(t0.elapsed());
        assert_eq!(got[0]["seq"], i as u64 + 1);
        if (i + 1) % 200 == 0 {
            eprintln!("  {}/{n}", i + 1);
        }
    }
    let rest: Vec<Duration> = total
        .iter()
        .zip(&send)
        .map(|(t, s)| t.saturating_sub(*s))
        .collect();
    let mut rows = [
        ("publish → receive (total)", total),
        ("SQS SendMessage (endpoint)", send),
        ("queue → dispatcher → client", rest),
    ];
    println!("Publish-to-receive latency, {n} events, 1 subscriber, one event in flight:");
    println!();
    println!("| span | p50 | p95 | p99 | max |");
    println!("|---|---:|---:|---:|---:|");
    for (name, v) in rows.iter_mut() {
        v.sort();
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(pct(v, 0.5)),
            ms(pct(v, 0.95)),
            ms(pct(v, 0.99)),
            ms(*v.last().unwrap_or(&Duration::ZERO))
        );
    }
    stack.shutdown().await;
}

async fn fanout(n: usize, events: usize) {
    eprintln!("fan-out: {n} subscribers, {events} events");
    let stack = Stack::start().await;
    let t = Instant::now();
    let clients: Vec<WsClient> = futures::stream::iter(0..n)
        .map(|_| subscriber(&stack, "fan"))
        .buffer_unordered(16)
        .collect()
        .await;
    eprintln!(
        "  {n} subscribers connected and joined in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = 0;
                while got < events {
                    for e in c.events(1).await {
                        got += 1;
                        let _ = tx.send(e["seq"].as_u64().unwrap_or(0));
                    }
                }
                c
            })
        })
        .collect();
    drop(tx);
    let start = Instant::now();
    let mut to_all = Vec::with_capacity(events);
    for i in 0..events {
        let t0 = Instant::now();
        stack.publish("fan", "status", json!({ "i": i })).await;
        let mut seen = 0;
        while seen < n {
            match rx.recv().await {
                Some(seq) if seq == i as u64 + 1 => seen += 1,
                Some(seq) => panic!("event {seq} arrived while waiting for {}", i + 1),
                None => panic!("readers ended early"),
            }
        }
        to_all.push(t0.elapsed());
    }
    let elapsed = start.elapsed();
    let mut open = Vec::new();
    for r in readers {
        if let Ok(c) = r.await {
            open.push(c);
        }
    }
    drop(open);
    to_all.sort();
    let deliveries = n * events;
    println!(
        "| {n} | {events} | {deliveries} | {:.2} s | {:.0} | {} | {} |",
        elapsed.as_secs_f64(),
        deliveries as f64 / elapsed.as_secs_f64(),
        ms(pct(&to_all, 0.5)),
        ms(pct(&to_all, 0.95))
    );
    stack.shutdown().await;
}

fn counted() -> StackOptions {
    StackOptions {
        count_dynamodb_calls: true,
        ..StackOptions::default()
    }
}

/// A client that was away while `n` events were committed joins from seq 0.
async fn replay(n: u64) {
    use agentwire_core::adapters::DynamoLog;
    use agentwire_core::model::ChannelKey;
    eprintln!("replay: seeding {n} events");
    let stack = Stack::start_with(counted()).await;
    let log = DynamoLog::new(stack.ddb(), stack.config.tables.clone());
    let key = ChannelKey::new(&stack.tenant, "history");
    let data =
        json!({"text": "a status line of an agent run, about eighty bytes long ............"});
    let t = Instant::now();
    let epoch = seed(&stack, &log, &key, n, &data).await;
    eprintln!("  seeded in {:.1} s", t.elapsed().as_secs_f64());
    let mut c = stack.client(&stack.token("bench", &["*"])).await;
    c.hello().await;
    stack.calls.reset();
    let t0 = Instant::now();
    c.send_json(
        json!({"action":"join","channels":[{"name":"history","since":{"epoch":epoch,"seq":0}}]}),
    )
    .await;
    let mut frames = 0usize;
    let mut got = 0u64;
    let mut first = None;
    while got < n {
        let v = c.recv().await;
        frames += 1;
        match v["type"].as_str() {
            Some("event") => got += 1,
            Some("batch") => got += v["events"].as_array().map(|a| a.len() as u64).unwrap_or(0),
            Some("joined") => first = Some(t0.elapsed()),
            _ => panic!("unexpected frame during replay: {v}"),
        }
    }
    let elapsed = t0.elapsed();
    let queries = stack.calls.snapshot().get("Query").copied().unwrap_or(0);
    println!("Replay of {n} retained events to a reconnecting client (join since seq 0):");
    println!();
    println!(
        "| events | joined after | last event after | events/s | frames | DynamoDB calls (Query) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {} | {} | {:.0} | {frames} | {} ({queries}) |",
        ms(first.unwrap_or_default()),
        ms(elapsed),
        n as f64 / elapsed.as_secs_f64(),
        stack.calls.total()
    );
    stack.shutdown().await;
}

/// DynamoDB calls per published event in the steady state: a channel with
/// one live subscriber, events one at a time, then a burst.
async fn calls(n: usize) {
    eprintln!("calls: {n} events one at a time, then {n} in a burst");
    let stack = Stack::start_with(counted()).await;
    let mut c = subscriber(&stack, "steady").await;
    // Warm: the channel exists and the subscriber is in place.
    stack.publish("steady", "status", json!({})).await;
    c.events(1).await;
    println!("DynamoDB calls per published event (one live subscriber):");
    println!();
    println!("| publishing | events | calls by operation | calls per event |");
    println!("|---|---:|---|---:|");
    for burst in [false, true] {
        stack.calls.reset();
        if burst {
            for i in 0..n {
                stack.publish("steady", "status", json!({ "i": i })).await;
            }
            let mut got = 0;
            while got < n {
                got += c.events(1).await.len();
            }
        } else {
            for i in 0..n {
                stack.publish("steady", "status", json!({ "i": i })).await;
                c.events(1).await;
            }
        }
        let snap = stack.calls.snapshot();
        let by_op: Vec<String> = snap.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "| {} | {n} | {} | {:.2} |",
            if burst {
                "burst (batched by SQS)"
            } else {
                "one at a time"
            },
            by_op.join(", "),
            stack.calls.total() as f64 / n as f64
        );
    }
    stack.shutdown().await;
}

/// Writes `n` events straight into the events table with `BatchWriteItem`
/// and sets the head. Bench set-up only: committing them one transaction at
/// a time would measure moto (which copies the table per transaction item),
/// not the replay. The items have the layout `DynamoLog` writes.
async fn seed(
    stack: &Stack,
    log: &agentwire_core::adapters::DynamoLog,
    key: &agentwire_core::model::ChannelKey,
    n: u64,
    data: &serde_json::Value,
) -> String {
    use agentwire_core::ports::ChannelLog;
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    let state = log
        .ensure_channel(key)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ddb = stack.ddb();
    let s = |v: String| AttributeValue::S(v);
    let num = |v: u64| AttributeValue::N(v.to_string());
    let mut seq = 0;
    while seq < n {
        let mut writes = Vec::new();
        for i in seq + 1..=(seq + 25).min(n) {
            let put = PutRequest::builder()
                .item("pk", s(key.pk()))
                .item("sk", num(i))
                .item("id", s(format!("h{i}")))
                .item("kind", s("status".into()))
                .item("data", s(data.to_string()))
                .item("ts", s("2026-11-23T00:00:00.000Z".into()))
                .item("epoch", s(state.epoch.clone()))
                .item("expires_at", num(4_000_000_000))
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
            writes.push(WriteRequest::builder().put_request(put).build());
        }
        seq += writes.len() as u64;
        ddb.batch_write_item()
            .request_items(&stack.config.tables.events, writes)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    ddb.update_item()
        .table_name(&stack.config.tables.channels)
        .key("pk", s(key.pk()))
        .update_expression("SET head = :n")
        .expression_attribute_values(":n", num(n))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    state.epoch
}
