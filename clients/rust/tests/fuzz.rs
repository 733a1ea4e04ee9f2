//! Property tests (proptest, bounded cases): no frame ends the client, and
//! the reassembly of chunk events stays within its bounds whatever arrives.
//!
//! The client test runs a scripted gateway that sends arbitrary and
//! adversarial frames (random JSON, deep nesting, text that is not JSON,
//! events and batches with wrong types, chunk events with huge ids, many
//! messages left in progress, absurd seqs and gaps) on one channel, then
//! one event on a second channel: the client must deliver it, with no
//! fatal error before it.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::result_large_err)]

use std::time::Duration;

use agentwire_client::{Backoff, Client, ClientEvent, Options, Since};
use agentwire_protocol::chunks::{Assembled, MAX_RECEIVED_ID_BYTES, Reassembler};
use futures::{SinkExt, StreamExt};
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

const WAIT: Duration = Duration::from_secs(10);

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn deep(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn chunk_data(id: String, index: Value, count: Value, encoding: Value, part: Value) -> Value {
    json!({"$chunk": {"message": id, "index": index, "count": count, "encoding": encoding, "bytes": 10},
           "part": part})
}

/// One frame the gateway sends, as text.
fn frame() -> impl Strategy<Value = String> {
    let seq = prop_oneof![0u64..8, any::<u64>()];
    let id = prop_oneof![
        "[a-c]{1,2}".boxed(),
        (129usize..4000).prop_map(|n| "x".repeat(n)).boxed(),
        (0u32..500).prop_map(|n| format!("m{n}")).boxed(),
    ];
    let encoding = prop_oneof![
        Just(json!("json")),
        Just(json!("utf8")),
        Just(json!("base64")),
        json_value()
    ];
    let num = prop_oneof![(0u64..4).prop_map(|n| json!(n)), json_value()];
    let part = prop_oneof![
        ".{0,16}".prop_map(Value::String),
        (1usize..50_000).prop_map(|n| Value::String(deep(n))),
        json_value()
    ];
    let chunk = (id, num.clone(), num, encoding, part)
        .prop_map(|(i, x, c, e, p)| chunk_data(i, x, c, e, p));
    let data = prop_oneof![json_value(), chunk];
    let event = (
        seq.clone(),
        data,
        prop_oneof![Just(json!("e1")), json_value()],
    )
        .prop_map(|(seq, data, epoch)| {
            json!({"type": "event", "channel": "agent-1", "epoch": epoch, "seq": seq, "id": "i",
                   "kind": "k", "data": data, "ts": "2026-01-01T00:00:00Z"})
        });
    prop_oneof![
        event.clone().prop_map(|e| e.to_string()),
        prop::collection::vec(event, 0..40)
            .prop_map(|es| json!({"type": "batch", "events": es}).to_string()),
        (seq.clone(), seq.clone()).prop_map(|(from, to)| json!({"type": "gap", "channel": "agent-1",
            "from": from, "to": to})
        .to_string()),
        (seq.clone(), seq, json_value()).prop_map(|(head, replayed, epoch)| json!({"type": "joined",
            "channels": [{"name": "agent-1", "epoch": epoch, "head": head, "replayed": replayed,
                          "recovered": true}]})
        .to_string()),
        (json_value(), ".{0,10}")
            .prop_map(|(v, t)| json!({"type": t, "channel": "agent-1", "data": v}).to_string()),
        json_value().prop_map(|v| v.to_string()),
        ".{0,64}",
        (1usize..100_000).prop_map(deep),
        (1usize..20_000).prop_map(|n| format!(
            r#"{{"type":"event","channel":"agent-1","epoch":"e1","seq":1,"id":"i","kind":"k","ts":"t","data":{}}}"#,
            deep(n)
        )),
    ]
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn next_text(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(_)) => {}
            _ => panic!("the client went away"),
        }
    }
}

async fn serve(frames: Vec<String>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let cb = |_: &Request, mut r: Response| {
            r.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("agentwire.v1"),
            );
            Ok(r)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, cb).await.unwrap();
        assert_eq!(next_text(&mut ws).await["action"], "hello");
        let welcome = json!({"type": "welcome", "protocol": 1, "connection_id": "c1", "server": "fuzz",
            "heartbeat_s": 300, "limits": {"max_frame_bytes": 32768, "max_channels_per_join": 50,
            "max_channel_name": 128}});
        ws.send(Message::text(welcome.to_string())).await.unwrap();
        let join = next_text(&mut ws).await;
        assert_eq!(join["action"], "join");
        let joined = json!({"type": "joined", "id": join["id"], "channels": [
            {"name": "agent-1", "epoch": "e1", "head": 0, "replayed": 0, "recovered": true},
            {"name": "probe", "epoch": "p", "head": 0, "replayed": 0, "recovered": true}]});
        ws.send(Message::text(joined.to_string())).await.unwrap();
        for f in frames {
            ws.send(Message::text(f)).await.unwrap();
        }
        let probe = json!({"type": "event", "channel": "probe", "epoch": "p", "seq": 1, "id": "probe",
            "kind": "k", "data": {"alive": true}, "ts": "2026-01-01T00:00:00Z"});
        ws.send(Message::text(probe.to_string())).await.unwrap();
        // Keep the connection open (reading what the client sends) until it goes.
        while let Some(Ok(_)) = ws.next().await {}
    });
    (url, task)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_frame_stops_the_client(frames in prop::collection::vec(frame(), 1..25)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let (url, server) = serve(frames).await;
            let options = Options {
                backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(10)).with_max_attempts(1),
                max_connection_age: None,
                ack_debounce: None,
                hole_grace: Duration::from_millis(20),
                max_message_bytes: 1 << 20,
                max_held_message_bytes: 4 << 20,
                ..Options::default()
            };
            let mut client = Client::builder()
                .url(url)
                .token("t")
                .channel_since("agent-1", Since::Position { epoch: "e1".into(), seq: 0 })
                .channel_since("probe", Since::Position { epoch: "p".into(), seq: 0 })
                .options(options)
                .connect()
                .unwrap();
            let alive = tokio::time::timeout(WAIT, async {
                while let Some(ev) = client.next().await {
                    match ev {
                        ClientEvent::Event(e) if e.channel == "probe" => return true,
                        ClientEvent::Error(e) if e.is_fatal() => panic!("fatal: {e}"),
                        ClientEvent::Disconnected { reason } => panic!("disconnected: {reason}"),
                        ClientEvent::MessageLost { id, .. } => assert!(id.len() <= MAX_RECEIVED_ID_BYTES),
                        _ => {}
                    }
                }
                false
            })
            .await;
            assert_eq!(alive, Ok(true), "the client delivers the event that follows the fuzzed frames");
            client.close().await;
            server.abort();
        });
    }

    #[test]
    fn the_reassembly_stays_within_its_bounds(
        chunks in prop::collection::vec((
            prop_oneof![(0u32..200).prop_map(|n| format!("m{n}")), (129usize..600).prop_map(|n| "y".repeat(n))],
            0u32..3, 1u32..4,
            prop_oneof![Just("utf8"), Just("json"), Just("base64")],
            prop_oneof![".{0,64}".prop_map(Value::String), (1usize..3000).prop_map(|n| Value::String(deep(n)))],
            0u64..300,
        ), 1..400)
    ) {
        let (max_msg, max_held, max_partial) = (4_000u64, 16_000u64, 8usize);
        let mut r = Reassembler::new(max_msg, max_held).with_max_partial(max_partial);
        for (seq, (id, index, count, encoding, part, bytes)) in chunks.into_iter().enumerate() {
            let data = json!({"$chunk": {"message": id, "index": index, "count": count,
                "encoding": encoding, "bytes": bytes}, "part": part});
            let got = r.accept("ch", seq as u64, "k", &data);
            for a in r.take_evicted().into_iter().chain([got]) {
                if let Assembled::Lost { message, .. } = a {
                    prop_assert!(message.len() <= MAX_RECEIVED_ID_BYTES);
                }
            }
            prop_assert!(r.partial() <= max_partial);
            prop_assert!(r.held() <= max_held);
        }
    }
}
