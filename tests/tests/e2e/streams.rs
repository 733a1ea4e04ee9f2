//! Streams and outputs of any size through the local stack: a 10 MB
//! binary output published as chunk events arrives at a Rust client as one
//! message, complete and in order, within a bound on what the client holds;
//! a stream of small pieces is coalesced into few events that a subscriber
//! joins back into the text that was written; real terminal output is
//! stored and sent gzip-compressed to the clients that announce it, and
//! as text to everyone else.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentwire_client::{Backoff, Client, ClientEvent, Options};
use agentwire_core::clock::SystemClock;
use agentwire_core::stream::{Coalescer, DEFAULT_MAX_BYTES, DEFAULT_WINDOW};
use agentwire_core::usecases::{Publication, Publisher};
use agentwire_e2e::Stack;
use agentwire_protocol::chunks::Payload;
use serde_json::{Value, json};

fn subscriber(stack: &Stack, channel: &str, options: Options) -> Client {
    Client::builder()
        .url(stack.gateway.ws_url())
        .token(stack.token("viewer", &["build-*"]))
        .channel(channel)
        .options(options)
        .connect()
        .unwrap()
}

fn publisher(stack: &Stack) -> Publisher {
    Publisher::new(
        Arc::new(agentwire_aws::SqsEventQueue::new(
            stack.sqs(),
            &stack.queue_url,
        )),
        Arc::new(SystemClock),
    )
}

async fn joined(client: &mut Client) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), client.next()).await {
            Ok(Some(ClientEvent::Joined { .. })) => return,
            Ok(Some(ClientEvent::Error(e))) if e.is_fatal() => panic!("{e}"),
            Ok(Some(_)) => {}
            other => panic!("no joined: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_output_arrives_whole_and_in_order_within_the_clients_bound() {
    let stack = Stack::start().await;
    let size = 10 * 1024 * 1024;
    let options = Options {
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
        // Held at most: the message plus one part; more would lose it.
        max_message_bytes: size as u64,
        max_held_message_bytes: size as u64 * 4 / 3 + 128 * 1024,
        ..Options::default()
    };
    let mut sub = subscriber(&stack, "build-1", options);
    joined(&mut sub).await;
    // Bytes that are not text (base64 on the wire), with a pattern that
    // shows any reordering or loss.
    let output: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let started = Instant::now();
    let sent = publisher(&stack)
        .publish_payload(
            Publication {
                tenant: stack.tenant.clone(),
                channel: "build-1".into(),
                kind: "output".into(),
                data: Value::Null,
                id: Some("build-1-log".into()),
            },
            &Payload::Bytes(output.clone()),
        )
        .await
        .unwrap();
    assert!(sent.len() >= 160, "{} chunks", sent.len());
    // A plain event after it: the message comes before it, whole.
    stack.publish("build-1", "done", json!({})).await;
    let mut message = None;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(120), sub.next())
            .await
            .expect("the output arrives")
            .expect("the client runs");
        match ev {
            ClientEvent::Message(m) => message = Some(m),
            ClientEvent::MessageLost { id, reason, .. } => {
                panic!("message {id} lost: {}", reason.as_str())
            }
            ClientEvent::Event(e) if e.kind == "done" => break,
            ClientEvent::Event(e) => panic!("a chunk surfaced as an event: seq {}", e.seq),
            ClientEvent::Gap { from, to, .. } => panic!("gap {from}..={to}"),
            _ => {}
        }
    }
    let took = started.elapsed();
    let m = message.expect("the message before the marker");
    assert_eq!((m.id.as_str(), m.kind.as_str()), ("build-1-log", "output"));
    let Payload::Bytes(got) = m.payload else {
        panic!("not bytes")
    };
    assert_eq!(got.len(), output.len());
    assert!(got == output, "the bytes differ");
    eprintln!(
        "10 MB in {} chunk events: {took:?} publish to delivery",
        sent.len()
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_small_pieces_is_coalesced_and_joined_back_in_order() {
    let stack = Stack::start().await;
    let mut sub = subscriber(&stack, "build-2", Options::default());
    joined(&mut sub).await;
    let publisher = publisher(&stack);
    let mut coalescer = Coalescer::new("s-1", DEFAULT_WINDOW, DEFAULT_MAX_BYTES);
    let mut written = String::new();
    let mut events = vec![];
    // 2,000 lines written as fast as they come: the size bound cuts them.
    for i in 0..2000 {
        let line = format!("step {i}: compiling crate number {i}\n");
        written.push_str(&line);
        events.extend(coalescer.push(&line, Instant::now()));
    }
    events.extend(coalescer.finish());
    assert!(events.len() < 10, "{} events for 2,000 lines", events.len());
    for data in &events {
        publisher
            .publish(Publication {
                tenant: stack.tenant.clone(),
                channel: "build-2".into(),
                kind: "output".into(),
                id: Some(format!("s-1:{}", data["index"])),
                data: data.clone(),
            })
            .await
            .unwrap();
    }
    let mut text = String::new();
    let mut indexes = vec![];
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("the stream arrives")
            .expect("the client runs");
        if let ClientEvent::Event(e) = ev {
            indexes.push(e.data["index"].as_u64().unwrap());
            if e.data["end"] == true {
                break;
            }
            text.push_str(e.data["text"].as_str().unwrap());
        }
    }
    assert_eq!(indexes, (0..events.len() as u64).collect::<Vec<_>>());
    assert_eq!(text, written);
    stack.shutdown().await;
}

/// The events' data, and the bytes of the frames they came in.
async fn datas(ws: &mut agentwire_e2e::WsClient, n: usize) -> (Vec<Value>, usize) {
    let mut out = vec![];
    let mut bytes = 0;
    while out.len() < n {
        let v = ws.recv().await;
        bytes += v.to_string().len();
        match v["type"].as_str() {
            Some("event") => out.push(v["data"].clone()),
            Some("batch") => out.extend(
                v["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["data"].clone()),
            ),
            _ => panic!("expected events, got {v}"),
        }
    }
    (out, bytes)
}

/// A real `cargo build -vv` log (313 KB, ANSI colours) streamed over HTTP:
/// the log stores it gzip-compressed; a connection that announced gzip
/// gets the compressed form (fewer bytes by about the ratio), one that did
/// not gets the text, the history gets the text, and the Rust client
/// (which announces gzip) hands its application the text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_output_is_stored_and_sent_compressed_to_clients_that_announce_gzip() {
    let stack = Stack::start().await;
    let output = include_str!("../../../bench/data/cargo-build-vv.log");
    let events = agentwire_e2e::stream_events("build", output);
    let token = stack.token("viewer", &["build-*"]);

    let mut zipped = stack.client(&token).await;
    zipped
        .send_json(json!({"action":"hello","protocol":{"min":1,"max":1},"features":["gzip"]}))
        .await;
    let welcome = zipped.expect("welcome").await;
    assert!(
        welcome["features"]
            .as_array()
            .unwrap()
            .contains(&json!("gzip")),
        "{welcome}"
    );
    let mut plain = stack.client(&token).await;
    let welcome = plain.hello().await;
    assert!(!welcome.to_string().contains("gzip"), "{welcome}");
    for ws in [&mut zipped, &mut plain] {
        assert_eq!(ws.join(json!(["build-gz"])).await["type"], "joined");
    }
    let mut rust = subscriber(&stack, "build-gz", Options::default());
    joined(&mut rust).await;

    let publisher = stack.publisher_token("agent", &["build-*"]);
    for data in &events {
        let (status, _, body) = stack
            .post_event(
                &publisher,
                "build-gz",
                &json!({"kind": "output", "data": data}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    // Stored compressed: the texts' events are several times smaller.
    let stored = stack.stored_data("build-gz").await;
    assert_eq!(stored.len(), events.len());
    let stored_bytes: usize = stored.iter().map(|(_, d)| d.len()).sum();
    let published_bytes: usize = events.iter().map(|d| d.to_string().len()).sum();
    assert!(
        stored_bytes * 4 < published_bytes,
        "stored {stored_bytes} bytes for {published_bytes} published"
    );

    let (compressed, zipped_bytes) = datas(&mut zipped, events.len()).await;
    let (texts, plain_bytes) = datas(&mut plain, events.len()).await;
    assert_eq!(
        texts, events,
        "a client that did not announce gzip gets the texts"
    );
    assert!(compressed[0]["gz"].is_string(), "{}", compressed[0]);
    let expanded: Vec<Value> = compressed
        .iter()
        .map(|d| {
            agentwire_protocol::gzip::expand(d, 1 << 20)
                .unwrap()
                .unwrap_or(d.clone())
        })
        .collect();
    assert_eq!(
        expanded, events,
        "the compressed form expands to what was published"
    );
    assert!(
        zipped_bytes * 4 < plain_bytes,
        "frames: {zipped_bytes} bytes compressed, {plain_bytes} as text"
    );
    eprintln!(
        "{} bytes of output, {} events: stored {stored_bytes} bytes for {published_bytes}; frames {zipped_bytes} bytes with gzip, {plain_bytes} without",
        output.len(),
        events.len()
    );

    let mut received = String::new();
    while received.len() < output.len() {
        match tokio::time::timeout(Duration::from_secs(30), rust.next()).await {
            Ok(Some(ClientEvent::Event(e))) => {
                assert!(e.data.get("gz").is_none(), "decoded before the application");
                received.push_str(e.data["text"].as_str().unwrap_or_default());
            }
            Ok(Some(_)) => {}
            other => panic!("the Rust client stopped: {other:?}"),
        }
    }
    assert_eq!(received, output);

    let (status, history) = stack
        .http_get(&token, "/v1/channels/build-gz/events?limit=100")
        .await;
    assert_eq!(status, 200, "{history}");
    let history: Vec<Value> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].clone())
        .collect();
    assert_eq!(history, events, "the history gets the texts");
    stack.shutdown().await;
}
