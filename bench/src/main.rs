//! `agentwire-bench`: publish-to-receive latency and fan-out rate on the
//! local stack (the endpoint from `localstack/up`, the dev gateway
//! in-process, real WebSocket clients). Prints Markdown tables for
//! `docs/benchmarks.md`.

// A benchmark that sees a lost or misordered event must stop loudly.
#![allow(clippy::panic)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use agentwire_e2e::{Stack, WsClient};
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
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(msg) = agentwire_e2e::check_endpoint(&agentwire_e2e::endpoint()).await {
        eprintln!("agentwire-bench: {msg}");
        return ExitCode::FAILURE;
    }
    latency(args.events).await;
    println!();
    println!(
        "| subscribers | events | deliveries | elapsed | deliveries/s | publish→all received p50 | p95 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for n in args.fanout {
        fanout(n, args.fanout_events).await;
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
