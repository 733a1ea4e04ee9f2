//! The whole path on the local stack: connect, join, publish, dispatch, receive.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use agentwire_core::auth::TokenKey;
use agentwire_core::clock::{Clock, SystemClock};
use agentwire_core::memory::connection;
use agentwire_core::model::ChannelKey;
use agentwire_core::ports::ConnectionRegistry;
use agentwire_e2e::{Stack, check_endpoint};
use serde_json::json;

fn seqs(events: &[serde_json::Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_get_every_event_in_order_forbidden_is_refused_and_dead_connections_go() {
    let stack = Stack::start().await;
    let mut a = stack.client(&stack.token("ana", &["agent-*"])).await;
    assert_eq!(
        a.subprotocol.as_deref(),
        Some("agentwire.v1"),
        "$connect echoes the subprotocol"
    );
    // The second client passes its token in the query string, as browsers do.
    let token_b = stack.token("bo", &["agent-42"]);
    let mut b = stack
        .connect(
            None,
            &[("sec-websocket-protocol", "agentwire.v1")],
            &format!("?token={token_b}"),
        )
        .await
        .unwrap();
    for c in [&mut a, &mut b] {
        let w = c.hello().await;
        assert_eq!(w["protocol"], 1);
        let j = c.join(json!(["agent-42"])).await;
        assert_eq!(j["type"], "joined", "{j}");
        assert_eq!(j["channels"][0]["name"], "agent-42");
        assert_eq!(j["channels"][0]["head"], 0);
    }

    // A third principal whose token does not grant the channel.
    let mut c = stack.client(&stack.token("cy", &["ops-*"])).await;
    c.hello().await;
    let e = c.join(json!(["agent-42"])).await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "forbidden");
    assert_eq!(e["id"], "j");
    assert_eq!(
        stack.subscription_ids("agent-42").await.len(),
        2,
        "the refused join wrote nothing"
    );

    for n in 1..=3 {
        stack.publish("agent-42", "status", json!({"n": n})).await;
    }
    for client in [&mut a, &mut b] {
        let events = client.events(3).await;
        assert_eq!(seqs(&events), vec![1, 2, 3]);
        assert_eq!(events[0]["data"]["n"], 1);
        assert_eq!(events[2]["kind"], "status");
        assert_eq!(events[0]["epoch"], events[2]["epoch"]);
    }
    // c's join was refused: none of them reached it, the next frame it
    // gets is the answer to a ping.
    c.send_json(json!({"action":"ping"})).await;
    c.expect("pong").await;

    // a vanishes without a close frame; the next event still reaches b, and
    // a's connection and subscription are gone from the tables.
    let a_id = a.connection_id.clone().unwrap();
    assert!(stack.connection_recorded(&a_id).await);
    a.drop_abruptly();
    stack
        .publish("agent-42", "final", json!({"text": "done"}))
        .await;
    let events = b.events(1).await;
    assert_eq!(seqs(&events), vec![4]);
    assert_eq!(events[0]["kind"], "final");
    let gone = stack
        .eventually(Duration::from_secs(10), || async {
            !stack.connection_recorded(&a_id).await
        })
        .await;
    assert!(
        gone,
        "the dropped connection is removed from the connections table"
    );
    assert!(!stack.subscription_ids("agent-42").await.contains(&a_id));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_connection_answering_gone_is_pruned_by_the_dispatcher() {
    let stack = Stack::start().await;
    let mut live = stack.client(&stack.token("ana", &["*"])).await;
    live.hello().await;
    live.join(json!(["room"])).await;
    // A registry record whose socket no longer exists (its $disconnect was
    // lost): the gateway answers 410 GoneException for it.
    let registry = agentwire_aws::DynamoRegistry::new(
        stack.ddb(),
        stack.config.tables.clone(),
        stack.clock.clone(),
    );
    let mut stale = connection("stale0000000001", &stack.tenant, "ghost", &["*"]);
    stale.expires_at = SystemClock.epoch_s() + 3600;
    registry.put_connection(&stale).await.unwrap();
    assert!(
        registry
            .subscribe(
                &stale,
                &ChannelKey::new(&stack.tenant, "room"),
                stale.expires_at
            )
            .await
            .unwrap()
    );
    assert_eq!(stack.subscription_ids("room").await.len(), 2);

    stack.publish("room", "status", json!({})).await;
    assert_eq!(seqs(&live.events(1).await), vec![1]);
    let pruned = stack
        .eventually(Duration::from_secs(10), || async {
            !stack.connection_recorded("stale0000000001").await
        })
        .await;
    assert!(pruned, "GoneException removes the stale connection");
    assert_eq!(
        stack.subscription_ids("room").await,
        vec![live.connection_id.clone().unwrap()]
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mistakes_get_typed_errors_not_silence() {
    let stack = Stack::start().await;
    let mut c = stack.client(&stack.token("ana", &["agent-*"])).await;
    c.hello().await;

    c.send_text("{this is not json").await;
    let e = c.expect("error").await;
    assert_eq!(e["code"], "bad_json", "{e}");

    c.send_json(json!({"action": "subscribe", "id": "q1"}))
        .await;
    let e = c.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("unknown_action"), Some("q1"))
    );

    c.send_json(json!({"action": "join", "id": "q2", "channels": ["has space"]}))
        .await;
    assert_eq!(c.expect("error").await["code"], "invalid_channel");

    c.send_json(json!({"action": "hello", "protocol": {"min": 2, "max": 9}}))
        .await;
    let e = c.expect("error").await;
    assert_eq!(e["code"], "version_unsupported");
    assert_eq!(e["supported"], json!({"min": 1, "max": 1}));

    // Over the protocol's 32 KiB frame limit, under API Gateway's message limit.
    let big = json!({"action": "join", "channels": ["agent-1"], "pad": "x".repeat(40_000)});
    c.send_json(big).await;
    assert_eq!(c.expect("error").await["code"], "frame_too_large");

    c.ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        vec![1, 2, 3].into(),
    ))
    .await
    .unwrap();
    assert_eq!(c.expect("error").await["code"], "binary_unsupported");

    c.send_json(json!({"action": "ping"})).await;
    c.expect("pong").await;

    // Over API Gateway's 128 KiB message limit: a typed error, then a close
    // with 1009 and a reason.
    c.send_text("y".repeat(200_000)).await;
    assert_eq!(c.expect("error").await["code"], "message_too_large");
    let close = c.recv().await;
    assert_eq!(close["_close"], 1009, "{close}");
    stack.shutdown().await;
}

use futures::SinkExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_401_and_nothing_is_recorded() {
    let stack = Stack::start().await;
    let now = SystemClock.epoch_s();
    let expired = stack.token_with("eve", &["*"], now - 7200, Duration::from_secs(60));
    let forged = TokenKey::hs256(b"not-the-key")
        .sign(&TokenKey::claims(
            &stack.tenant,
            "eve",
            vec!["*".into()],
            vec![],
            now,
            Duration::from_secs(60),
        ))
        .unwrap();
    let cases: [(Option<&str>, u16, &str); 4] = [
        (None, 401, "unauthorized"),
        (Some("not.a.jwt"), 401, "unauthorized"),
        (Some(&forged), 401, "unauthorized"),
        (Some(&expired), 401, "token_expired"),
    ];
    for (token, status, code) in cases {
        let Err((got, body)) = stack.connect(token, &[], "").await else {
            panic!("{token:?} was accepted");
        };
        assert_eq!(got, status, "{token:?}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], code, "{body}");
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    let good = stack.token("eve", &["*"]);
    let Err((got, body)) = stack
        .connect(
            Some(&good),
            &[("sec-websocket-protocol", "agentwire.v9")],
            "",
        )
        .await
    else {
        panic!("an unsupported subprotocol was accepted");
    };
    assert_eq!(got, 400);
    assert!(body.contains("version_unsupported"), "{body}");
    assert_eq!(
        stack.connections_of("eve").await,
        0,
        "refused connections leave no record"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_envelope_is_dead_lettered_with_its_reason_and_does_not_block_its_channel() {
    let stack = Stack::start().await;
    let mut c = stack.client(&stack.token("ana", &["*"])).await;
    c.hello().await;
    c.join(json!(["jobs"])).await;
    let group = format!("{}#jobs", stack.tenant);
    stack
        .send_raw(r#"{"tenant":"nope"}"#, &group, "bad-1")
        .await;
    stack
        .send_raw(
            &stack.envelope("jobs", "good-1", "status", json!({"ok": true})),
            &group,
            "good-1",
        )
        .await;
    let events = c.events(1).await;
    assert_eq!(events[0]["id"], "good-1");
    assert_eq!(events[0]["seq"], 1, "the bad message took no seq");

    let out = stack
        .sqs()
        .receive_message()
        .queue_url(&stack.dlq_url)
        .message_attribute_names("All")
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap();
    let msgs = out.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].body(), Some(r#"{"tenant":"nope"}"#));
    let reason = msgs[0].message_attributes().unwrap()["reason"]
        .string_value()
        .unwrap()
        .to_owned();
    assert!(reason.contains("invalid_event"), "{reason}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_message_keeps_its_seq() {
    let stack = Stack::start().await;
    let mut c = stack.client(&stack.token("ana", &["*"])).await;
    c.hello().await;
    c.join(json!(["runs"])).await;
    let group = format!("{}#runs", stack.tenant);
    let body = stack.envelope("runs", "run-7/step-1", "status", json!({"step": 1}));
    // The same message body twice, as after a visibility timeout: SQS's own
    // deduplication does not see it, the log's does.
    stack.send_raw(&body, &group, "delivery-1").await;
    let first = c.events(1).await;
    stack.send_raw(&body, &group, "delivery-2").await;
    stack
        .send_raw(
            &stack.envelope("runs", "run-7/step-2", "status", json!({"step": 2})),
            &group,
            "s2",
        )
        .await;
    let mut later = c.events(2).await;
    later.sort_by_key(|e| e["seq"].as_u64());
    assert_eq!(first[0]["seq"], 1);
    assert_eq!(
        seqs(&later),
        vec![1, 2],
        "the redelivery is re-sent with its original seq, the next event gets 2"
    );
    assert_eq!(later[0]["id"], "run-7/step-1");
    assert_eq!(later[1]["id"], "run-7/step-2");
    stack.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_naming_the_command_that_starts_it() {
    let msg = check_endpoint("http://127.0.0.1:9").await.unwrap_err();
    assert!(msg.contains("localstack/up"), "{msg}");
}

/// After `leave`, a channel's events no longer reach the connection: a
/// marker on a channel still joined arrives, the left one's event never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_left_channel_gets_nothing_more() {
    let stack = Stack::start().await;
    let mut ws = stack.client(&stack.token("ana", &["room-*"])).await;
    ws.hello().await;
    assert_eq!(ws.join(json!(["room-a", "room-b"])).await["type"], "joined");
    ws.send_json(json!({"action":"leave","id":"l1","channels":["room-a"]}))
        .await;
    let left = ws.expect("left").await;
    assert_eq!(left["channels"], json!(["room-a"]), "{left}");
    assert!(stack.subscription_ids("room-a").await.is_empty());
    stack.publish("room-a", "status", json!({"n": 1})).await;
    stack.publish("room-b", "marker", json!({})).await;
    let frames = ws
        .frames_until(|f| f.iter().any(|v| v["channel"] == "room-b"))
        .await;
    assert!(
        frames.iter().all(|v| v["channel"] != "room-a"),
        "{frames:?}"
    );
    stack.shutdown().await;
}

/// `ping` is API Gateway's MOCK route: its `pong` does not wait for the
/// function handling an earlier message. A join whose replay posts through
/// a slow `@connections` (1.5 s per call, emulated) is still running when
/// the `pong` arrives, so a client's liveness check never times out behind
/// a long join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_is_answered_while_a_slow_join_is_still_replaying() {
    let stack = Stack::start().await;
    let ch = "agent-slow-join";
    let mut c = stack.client(&stack.token("ana", &[ch])).await;
    c.hello().await;
    let joined = c.join(json!([{ "name": ch, "since": "head" }])).await;
    let epoch = joined["channels"][0]["epoch"].as_str().unwrap().to_owned();
    for i in 0..3 {
        stack.publish(ch, "tick", json!({ "i": i })).await;
    }
    assert_eq!(seqs(&c.events(3).await), [1, 2, 3]);

    stack
        .gateway
        .set_connections_latency(Duration::from_millis(1500), Duration::ZERO);
    c.send_json(json!({
        "action": "join", "id": "again",
        "channels": [{ "name": ch, "since": { "epoch": epoch, "seq": 0 } }]
    }))
    .await;
    c.send_json(json!({ "action": "ping" })).await;
    let frames = c
        .frames_until(|f| {
            f.iter().any(|x| x["type"] == "pong")
                && f.iter().filter(|x| x["type"] == "event").count() >= 3
        })
        .await;
    let kinds: Vec<&str> = frames
        .iter()
        .map(|f| f["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        kinds.first(),
        Some(&"pong"),
        "the pong came before the join's answers: {kinds:?}"
    );
    assert!(kinds.contains(&"joined"), "{kinds:?}");
    stack
        .gateway
        .set_connections_latency(Duration::ZERO, Duration::ZERO);
    stack.shutdown().await;
}
