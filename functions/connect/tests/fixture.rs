//! The function fed API Gateway's `$connect` event as recorded
//! (`aws_lambda_events` JSON), on in-memory ports.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use agentwire_core::auth::TokenKey;
use agentwire_core::clock::ManualClock;
use agentwire_core::memory::MemoryRegistry;
use agentwire_core::ports::ConnectionRegistry;
use agentwire_core::usecases::Connect;
use agentwire_fn_connect::ConnectFunction;
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::encodings::Body;

const EVENT: &[u8] = include_bytes!("fixtures/connect.json");
/// The key the fixture's token is signed with; its `exp` is 1795000000.
const SECRET: &[u8] = b"fixture-secret-of-at-least-32-bytes!!";

fn function(now_s: u64) -> (ConnectFunction, Arc<MemoryRegistry>) {
    let clock = Arc::new(ManualClock::at(UNIX_EPOCH + Duration::from_secs(now_s)));
    let registry = Arc::new(MemoryRegistry::with_clock(clock.clone()));
    let connect = Connect::new(
        registry.clone(),
        std::sync::Arc::new(agentwire_core::auth::Verifier::new(
            TokenKey::hs256(SECRET),
            std::sync::Arc::new(agentwire_core::clock::SystemClock),
        )),
        clock,
        Duration::from_secs(7200),
    );
    (ConnectFunction::with(connect), registry)
}

fn event() -> ApiGatewayWebsocketProxyRequest {
    serde_json::from_slice(EVENT).unwrap()
}

#[tokio::test]
async fn a_recorded_connect_event_is_accepted_with_the_agentwire_subprotocol() {
    let (f, registry) = function(1_794_995_000);
    let resp = f.handle(event()).await.unwrap();
    assert_eq!(resp.status_code, 200);
    assert_eq!(resp.headers["sec-websocket-protocol"], "agentwire.v1");
    let conn = registry
        .get_connection("Y1QxFdTcoAMCJ4g=")
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(
        (conn.tenant.as_str(), conn.principal.as_str()),
        ("acme", "ana")
    );
    assert_eq!((conn.protocol, conn.token_exp), (Some(1), 1_795_000_000));
}

#[tokio::test]
async fn refusals_carry_their_status_and_a_typed_body() {
    // The same event after the token's expiry: 401 token_expired.
    let (f, registry) = function(1_795_000_000 + 60);
    let resp = f.handle(event()).await.unwrap();
    assert_eq!(resp.status_code, 401);
    let Some(Body::Text(body)) = resp.body else {
        panic!("no body")
    };
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "token_expired", "{body}");
    assert!(registry.is_empty());

    // Only unsupported agentwire versions offered: 400 version_unsupported.
    let (f, _) = function(1_794_995_000);
    let mut e = event();
    e.headers
        .insert("sec-websocket-protocol", "agentwire.v9".parse().unwrap());
    let resp = f.handle(e).await.unwrap();
    assert_eq!(resp.status_code, 400);
    let Some(Body::Text(body)) = resp.body else {
        panic!("no body")
    };
    assert!(body.contains("version_unsupported"), "{body}");
}
