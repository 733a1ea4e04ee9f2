//! `--only streams`: streams and large outputs end to end on the local
//! stack (publisher → SQS → dispatcher → WebSocket → Rust client):
//!
//! - terminal output written at a target rate (1 MB/s by default) for some
//!   seconds, coalesced by `core::stream::Coalescer` and published through
//!   the library path (what is pending sent as one batch): the rate the
//!   subscriber received, events/s, and the lag from the moment the
//!   coalescer let an event go to its delivery;
//! - a token stream (50 tokens/s) coalesced vs one event per token: events
//!   published for the same text;
//! - one 10 MB binary output as chunk events: publish to whole message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentwire_client::{Backoff, Client, ClientEvent, Options};
use agentwire_core::clock::SystemClock;
use agentwire_core::stream::{Coalescer, DEFAULT_MAX_BYTES, DEFAULT_WINDOW};
use agentwire_core::usecases::{Publication, Publisher};
use agentwire_e2e::Stack;
use agentwire_protocol::chunks::Payload;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{ms, pct};

fn publisher(stack: &Stack) -> Arc<Publisher> {
    Arc::new(Publisher::new(
        Arc::new(agentwire_aws::SqsEventQueue::new(
            stack.sqs(),
            &stack.queue_url,
        )),
        Arc::new(SystemClock),
    ))
}

async fn subscriber(stack: &Stack, channel: &str) -> Client {
    let mut c = Client::builder()
        .url(stack.gateway.ws_url())
        .token(stack.token("bench", &["*"]))
        .channel(channel)
        .options(Options {
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
            ..Options::default()
        })
        .connect()
        .unwrap_or_else(|e| panic!("client: {e}"));
    loop {
        match tokio::time::timeout(Duration::from_secs(10), c.next()).await {
            Ok(Some(ClientEvent::Joined { .. })) => return c,
            Ok(Some(_)) => {}
            other => panic!("not joined: {other:?}"),
        }
    }
}

fn publication(stack: &Stack, channel: &str, id: String, data: Value) -> Publication {
    Publication {
        tenant: stack.tenant.clone(),
        channel: channel.into(),
        kind: "output".into(),
        data,
        id: Some(id),
    }
}

pub async fn streams(rate_bps: usize, seconds: u64) {
    let stack = Stack::start().await;
    println!("Streams and large outputs through the local stack (release build):");
    println!();
    println!(
        "| run | bytes | events | elapsed | received | events/s | flush → delivered p50 | p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    terminal(&stack, rate_bps, seconds).await;
    big(&stack, 10 * 1024 * 1024).await;
    println!();
    tokens(&stack).await;
    stack.shutdown().await;
}

/// Output written at `rate_bps` for `seconds`, coalesced, published as it
/// comes (a publishing task behind an unbounded queue, so a publisher that
/// falls behind shows as lag, not as a slower writer).
async fn terminal(stack: &Stack, rate_bps: usize, seconds: u64) {
    let channel = "bench-terminal";
    let mut sub = subscriber(stack, channel).await;
    let publisher = publisher(stack);
    let flushed: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    // Sends what is pending as one batch (as `agentwire publish --stream`).
    let sender = {
        let (tenant, publisher) = (stack.tenant.clone(), publisher.clone());
        tokio::spawn(async move {
            let mut events = 0usize;
            while let Some(first) = rx.recv().await {
                let mut pending = vec![first];
                while pending.len() < 10 {
                    match rx.try_recv() {
                        Ok(data) => pending.push(data),
                        Err(_) => break,
                    }
                }
                events += pending.len();
                let publications = pending
                    .into_iter()
                    .map(|data| Publication {
                        tenant: tenant.clone(),
                        channel: channel.into(),
                        kind: "output".into(),
                        id: Some(format!("term:{}", data["index"])),
                        data,
                    })
                    .collect();
                publisher
                    .publish_many(publications)
                    .await
                    .unwrap_or_else(|e| panic!("publish: {e}"));
            }
            events
        })
    };
    // Times an event from when the coalescer let it go.
    let emit = |data: Value| {
        if let (Some(index), Ok(mut f)) = (data["index"].as_u64(), flushed.lock()) {
            f.insert(index, Instant::now());
        }
        let _ = tx.send(data);
    };
    // The subscriber reads as it goes (a delivery is timed when it arrives,
    // not when the writer is done).
    let receiver = {
        let flushed = flushed.clone();
        tokio::spawn(async move {
            let mut received = 0usize;
            let mut lags = vec![];
            loop {
                let ev = tokio::time::timeout(Duration::from_secs(60), sub.next())
                    .await
                    .unwrap_or_else(|_| panic!("the stream stalled after {received} bytes"));
                let Some(ev) = ev else { panic!("client ended") };
                if let ClientEvent::Event(e) = ev {
                    let now = Instant::now();
                    let index = e.data["index"].as_u64().unwrap_or(0);
                    if let Some(t) = flushed.lock().ok().and_then(|f| f.get(&index).copied()) {
                        lags.push(now.duration_since(t));
                    }
                    if e.data["end"] == true {
                        return (received, lags, now);
                    }
                    received += e.data["text"].as_str().map_or(0, str::len);
                }
            }
        })
    };
    // 100-byte lines, a tick's worth every 10 ms.
    let tick = Duration::from_millis(10);
    let per_tick = rate_bps / 100;
    let lines_per_tick = (per_tick / 100).max(1);
    let started = Instant::now();
    let mut coalescer = Coalescer::new("term", DEFAULT_WINDOW, DEFAULT_MAX_BYTES);
    let mut written = 0usize;
    let mut n = 0u64;
    let mut next = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        for _ in 0..lines_per_tick {
            let line = format!("{n:>10} {:.<88}\n", "compiling");
            written += line.len();
            n += 1;
            for data in coalescer.push(&line, Instant::now()) {
                emit(data);
            }
        }
        if coalescer.deadline().is_some_and(|d| d <= Instant::now())
            && let Some(data) = coalescer.flush()
        {
            emit(data);
        }
        next += tick;
        tokio::time::sleep_until(next).await;
    }
    for data in coalescer.finish() {
        emit(data);
    }
    drop(tx);
    let (received, mut lags, last) = receiver.await.unwrap_or_else(|e| panic!("{e}"));
    let events = sender.await.unwrap_or(0);
    assert_eq!(received, written, "every byte, once");
    lags.sort();
    let elapsed = last.duration_since(started);
    println!(
        "| terminal output at {:.1} MB/s for {seconds} s (coalesced, {} ms / {} KiB) | {} | {} | {} | {:.2} MB/s | {:.0} | {} | {} |",
        rate_bps as f64 / 1e6,
        DEFAULT_WINDOW.as_millis(),
        DEFAULT_MAX_BYTES / 1024,
        written,
        events,
        ms(elapsed),
        received as f64 / 1e6 / elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        ms(pct(&lags, 0.5)),
        ms(pct(&lags, 0.99)),
    );
}

/// One binary output of `size` bytes as chunk events.
async fn big(stack: &Stack, size: usize) {
    let channel = "bench-big";
    let mut sub = subscriber(stack, channel).await;
    let output: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let started = Instant::now();
    let sent = publisher(stack)
        .publish_payload(
            publication(stack, channel, "big-1".into(), Value::Null),
            &Payload::Bytes(output.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
    let published = started.elapsed();
    let message = loop {
        match tokio::time::timeout(Duration::from_secs(120), sub.next()).await {
            Ok(Some(ClientEvent::Message(m))) => break m,
            Ok(Some(ClientEvent::MessageLost { reason, .. })) => {
                panic!("lost: {}", reason.as_str())
            }
            Ok(Some(_)) => {}
            other => panic!("no message: {other:?}"),
        }
    };
    let elapsed = started.elapsed();
    assert!(
        message.payload == Payload::Bytes(output),
        "the bytes arrive whole and in order"
    );
    println!(
        "| one {} MB binary output (chunk events, base64; published in {}) | {size} | {} | {} | {:.2} MB/s | {:.0} | — | — |",
        size / (1024 * 1024),
        ms(published),
        sent.len(),
        ms(elapsed),
        size as f64 / 1e6 / elapsed.as_secs_f64(),
        sent.len() as f64 / elapsed.as_secs_f64(),
    );
}

/// A 50-tokens-a-second answer for 4 s: events coalesced vs one per token
/// (counted, not published twice: the coalescer's output is what goes).
async fn tokens(stack: &Stack) {
    let channel = "bench-tokens";
    let mut sub = subscriber(stack, channel).await;
    let publisher = publisher(stack);
    let mut coalescer = Coalescer::new("answer", DEFAULT_WINDOW, DEFAULT_MAX_BYTES);
    let tick = Duration::from_millis(20);
    let mut next = tokio::time::Instant::now();
    let (mut tokens, mut events) = (0usize, 0usize);
    let send = |data: Value| {
        let p = publisher.clone();
        let publication = publication(stack, channel, format!("answer:{}", data["index"]), data);
        async move { p.publish(publication).await.map(|_| ()) }
    };
    for i in 0..200 {
        tokens += 1;
        let now = Instant::now();
        let mut due = coalescer.push(&format!("tok{i} "), now);
        if coalescer.deadline().is_some_and(|d| d <= now) {
            due.extend(coalescer.flush());
        }
        for data in due {
            send(data).await.unwrap_or_else(|e| panic!("{e}"));
            events += 1;
        }
        next += tick;
        tokio::time::sleep_until(next).await;
    }
    for data in coalescer.finish() {
        send(data).await.unwrap_or_else(|e| panic!("{e}"));
        events += 1;
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
            Ok(Some(ClientEvent::Event(e))) if e.data["end"] == true => break,
            Ok(Some(_)) => {}
            other => panic!("the answer stalled: {other:?}"),
        }
    }
    println!(
        "A token stream, 50 tokens/s for 4 s (window {} ms):",
        DEFAULT_WINDOW.as_millis()
    );
    println!();
    println!("| publishing | events for {tokens} tokens | events/s |");
    println!("|---|---:|---:|");
    println!("| one event per token | {tokens} | 50 |");
    println!(
        "| coalesced (`Coalescer`) | {events} | {:.1} |",
        events as f64 / 4.0
    );
}
