//! `--only gzip`: stream and chunk texts stored and sent gzip-compressed,
//! measured on real terminal output kept in `bench/data/` (a `cargo build
//! -vv` and an `npm ci` of the console, both with their ANSI colours), cut
//! into stream events by the product's [`Coalescer`] (64 KiB of JSON text
//! each) and compressed by the product's own
//! [`agentwire_protocol::gzip::compress_raw`], each event on its own (a
//! subscriber resuming from any seq decodes it without the ones before).
//!
//! 1. Offline, per log: the sizes, the ratio, and what compressing and
//!    expanding cost a function (MB of text a second, one core).
//! 2. On the dev gateway, compression off and on in one run: each log
//!    streamed over HTTP, committed by the publish function (the direct
//!    path) or through the events queue and the dispatcher, to a channel
//!    with a client that announced gzip and one that did not. The DynamoDB
//!    write units are counted from the two functions' requests (per MB of
//!    output: the WCU/s of a 1 MB/s stream, against one partition's
//!    1,000), and the
//!    `@connections` units (32 KB each) from the frames each client
//!    received.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentwire_e2e::{Stack, StackOptions, WsClient};
use agentwire_protocol::RawData;
use agentwire_protocol::gzip::{compress_raw, expand_raw};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The logs of `dir`, in name order.
fn logs(dir: &Path) -> Result<Vec<(String, String)>, String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(format!("no *.log in {}", dir.display()));
    }
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((name, String::from_utf8_lossy(&bytes).into_owned()))
        })
        .collect()
}

/// `text` as a fast stream's events.
fn stream_events(text: &str) -> Vec<Value> {
    agentwire_e2e::stream_events("s1", text)
}

/// How many times `f` runs in about 300 ms, and how long each took.
fn timed(mut f: impl FnMut()) -> Duration {
    let started = Instant::now();
    let mut n = 0u32;
    while n < 3 || started.elapsed() < Duration::from_millis(300) {
        f();
        n += 1;
    }
    started.elapsed() / n
}

pub async fn gzip(dir: &Path) -> Result<(), String> {
    let logs = logs(dir)?;
    offline(&logs);
    live(&logs).await
}

fn offline(logs: &[(String, String)]) {
    println!(
        "Terminal output as stream events of up to 64 KiB (the coalescer's), each compressed on its own by the gateway's code (`gzip::compress_raw`):"
    );
    println!();
    println!(
        "| log | bytes | events | data as JSON | stored compressed | ratio | compress, MB/s | expand, MB/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, text) in logs {
        let plain: Vec<RawData> = stream_events(text).iter().map(RawData::from).collect();
        let packed: Vec<RawData> = plain
            .iter()
            .map(|d| compress_raw(d).unwrap_or_else(|| d.clone()))
            .collect();
        let json: usize = plain.iter().map(RawData::len).sum();
        let stored: usize = packed.iter().map(RawData::len).sum();
        let compress = timed(|| {
            for d in &plain {
                std::hint::black_box(compress_raw(d));
            }
        });
        let expand = timed(|| {
            for d in &packed {
                let _ = std::hint::black_box(expand_raw(d));
            }
        });
        let mb = text.len() as f64 / 1e6;
        println!(
            "| {name} | {} | {} | {json} | {stored} | {:.1}× | {:.0} | {:.0} |",
            text.len(),
            plain.len(),
            json as f64 / stored as f64,
            mb / compress.as_secs_f64(),
            mb / expand.as_secs_f64(),
        );
    }
    println!();
}

/// A client joined to `channel` after a `hello` with these features.
async fn joined(stack: &Stack, channel: &str, features: &[&str]) -> WsClient {
    let mut c = stack.client(&stack.token("viewer", &[channel])).await;
    c.send_json(json!({"action": "hello", "protocol": {"min": 1, "max": 1}, "features": features}))
        .await;
    c.expect("welcome").await;
    let j = c.join(json!([channel])).await;
    assert_eq!(j["type"], "joined", "{j}");
    c
}

/// Reads `c`'s frames until it has `n` events: their `@connections` units
/// (32 KB of frame each) and bytes.
async fn frames(c: &mut WsClient, n: usize) -> (u64, usize) {
    let (mut units, mut bytes, mut events) = (0u64, 0usize, 0usize);
    while events < n {
        let next = tokio::time::timeout(Duration::from_secs(30), c.ws.next()).await;
        let Ok(Some(Ok(Message::Text(t)))) = next else {
            panic!("the events did not arrive: {next:?}");
        };
        let v: Value = serde_json::from_str(&t).unwrap_or_default();
        events += match v["type"].as_str() {
            Some("event") => 1,
            Some("batch") => v["events"].as_array().map_or(0, Vec::len),
            _ => 0,
        };
        units += t.len().div_ceil(32 * 1024) as u64;
        bytes += t.len();
    }
    (units, bytes)
}

async fn live(logs: &[(String, String)]) -> Result<(), String> {
    let stack = Stack::start_with(StackOptions {
        count_dynamodb_calls: true,
        ..StackOptions::default()
    })
    .await;
    let token = stack.publisher_token("bench", &["*"]);
    println!(
        "Each log streamed over HTTP on the dev gateway (no key), committed directly or through the queue, stored as published and then compressed; write units counted from the publish function's and the dispatcher's DynamoDB requests, `@connections` units from the frames each client received:"
    );
    println!();
    println!(
        "| log | path | stored | WCU per MB (= WCU/s at 1 MB/s) | @connections units per MB, client with gzip | client without | frame bytes per MB, with gzip | without |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    for (name, text) in logs {
        let events = stream_events(text);
        let mb = text.len() as f64 / 1_048_576.0;
        for (direct, on) in [(true, false), (true, true), (false, false), (false, true)] {
            stack.gateway.set_direct_publish(direct);
            stack.gateway.set_compression(on);
            let path = if direct { "direct" } else { "queue" };
            let channel = format!("gzip-{}-{path}-{on}", name.replace('.', "-"));
            let mut zipped = joined(&stack, &channel, &["gzip"]).await;
            let mut plain = joined(&stack, &channel, &[]).await;
            stack.calls.reset();
            for data in &events {
                let (status, _, answer) = stack
                    .post_event(&token, &channel, &json!({"kind": "output", "data": data}))
                    .await;
                if status != 201 && status != 202 {
                    return Err(format!("publish answered {status}: {answer}"));
                }
            }
            let (zu, zb) = frames(&mut zipped, events.len()).await;
            let (pu, pb) = frames(&mut plain, events.len()).await;
            let w = stack.calls.units(Some("publish")).0 + stack.calls.units(Some("dispatcher")).0;
            println!(
                "| {name} | {path} | {} | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} |",
                if on { "compressed" } else { "as published" },
                w / mb,
                zu as f64 / mb,
                pu as f64 / mb,
                zb as f64 / mb,
                pb as f64 / mb,
            );
            zipped.ws.close(None).await.ok();
            plain.ws.close(None).await.ok();
        }
    }
    println!();
    stack.gateway.set_compression(true);
    stack.gateway.set_direct_publish(true);
    stack.shutdown().await;
    Ok(())
}
