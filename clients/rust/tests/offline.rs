//! The connection loop against tiny loopback responders and closed ports:
//! backoff timing (paused tokio time), refusals that must not be retried,
//! and the builder's checks. The full behaviour against the real gateway is
//! in the e2e tests (`tests/tests/client.rs`).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agentwire_client::{Backoff, Client, ClientError, ClientEvent, Options};
use agentwire_protocol::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Answers every upgrade with `status` and `body`; counts the requests.
async fn refusing_server(status: &'static str, body: &'static str) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", l.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    (url, seen)
}

async fn drain(mut client: Client) -> Vec<ClientEvent> {
    let mut out = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(30), client.next())
        .await
        .expect("the client stops by itself")
    {
        out.push(ev);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn reconnect_delays_follow_the_backoff_and_the_cap_ends_it() {
    let port = closed_port().await;
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(4)).with_max_attempts(5);
    let mut client = Client::builder()
        .url(format!("ws://127.0.0.1:{port}"))
        .token("t")
        .options(Options {
            backoff,
            ..Options::default()
        })
        .connect()
        .unwrap();
    let mut last: Option<(tokio::time::Instant, Duration)> = None;
    let mut attempts = Vec::new();
    loop {
        let ev = client.next().await.expect("ends with an error");
        let now = tokio::time::Instant::now();
        match ev {
            ClientEvent::Reconnecting { attempt, delay, .. } => {
                let ceiling = Duration::from_secs(1 << (attempt - 1)).min(Duration::from_secs(4));
                assert!(
                    delay <= ceiling,
                    "attempt {attempt}: {delay:?} > {ceiling:?}"
                );
                if let Some((at, d)) = last {
                    assert!(
                        now - at >= d,
                        "slept {:?}, less than the {d:?} announced",
                        now - at
                    );
                }
                last = Some((now, delay));
                attempts.push(attempt);
            }
            ClientEvent::Error(ClientError::Exhausted { attempts: n, last }) => {
                assert_eq!(n, 5);
                assert!(!last.is_empty());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(attempts, vec![1, 2, 3, 4, 5]);
    assert!(
        client.next().await.is_none(),
        "the stream ends after a fatal error"
    );
}

#[tokio::test]
async fn a_fixed_token_refused_with_401_stops_at_once() {
    let (url, seen) = refusing_server(
        "401 Unauthorized",
        r#"{"type":"error","code":"token_expired","message":"token expired"}"#,
    )
    .await;
    let client = Client::builder().url(url).token("old").connect().unwrap();
    let events = drain(client).await;
    assert!(
        matches!(
            events.as_slice(),
            [ClientEvent::Error(ClientError::Unauthorized {
                code: ErrorCode::TokenExpired,
                ..
            })]
        ),
        "{events:?}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1, "no second attempt");
}

#[tokio::test]
async fn a_provider_gets_one_more_chance_after_a_401_then_the_client_stops() {
    let (url, seen) = refusing_server(
        "401 Unauthorized",
        r#"{"type":"error","code":"unauthorized","message":"bad signature"}"#,
    )
    .await;
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let client = Client::builder()
        .url(url)
        .token_provider(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, String>(format!("token-{n}")) }
        })
        .connect()
        .unwrap();
    let events = drain(client).await;
    assert_eq!(
        asked.load(Ordering::SeqCst),
        2,
        "one fresh token, not a loop"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    assert!(matches!(
        events.last(),
        Some(ClientEvent::Error(ClientError::Unauthorized {
            code: ErrorCode::Unauthorized,
            ..
        }))
    ));
}

#[tokio::test]
async fn version_unsupported_at_the_upgrade_is_fatal() {
    let (url, seen) = refusing_server(
        "400 Bad Request",
        r#"{"type":"error","code":"version_unsupported","message":"no common version","supported":{"min":1,"max":1}}"#,
    )
    .await;
    let client = Client::builder().url(url).token("t").connect().unwrap();
    let events = drain(client).await;
    match events.as_slice() {
        [ClientEvent::Error(ClientError::VersionUnsupported { supported, .. })] => {
            assert_eq!(supported.map(|s| s.max), Some(1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_builder_refuses_what_cannot_work() {
    let err = |b: agentwire_client::ClientBuilder| b.connect().err().expect("refused");
    assert!(
        matches!(err(Client::builder().token("t")), ClientError::Config(m) if m.contains("url"))
    );
    assert!(
        matches!(err(Client::builder().url("ws://127.0.0.1:1")), ClientError::Config(m) if m.contains("token"))
    );
    assert!(matches!(
        err(Client::builder()
            .url("ws://127.0.0.1:1")
            .token("t")
            .channel("bad channel!")),
        ClientError::InvalidChannel(_)
    ));
    assert!(matches!(
        err(Client::builder().url("not a url").token("t")),
        ClientError::Config(_)
    ));
}

#[test]
fn connect_outside_a_runtime_is_an_error_not_a_panic() {
    let r = Client::builder()
        .url("ws://127.0.0.1:1")
        .token("t")
        .connect();
    assert!(matches!(r, Err(ClientError::Config(m)) if m.contains("tokio")));
}
