//! The function fed a recorded `hello` message event (`aws_lambda_events`
//! JSON), on in-memory ports.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use agentwire_core::clock::ManualClock;
use agentwire_core::memory::{MemoryCursors, MemoryLog, MemoryPusher, MemoryRegistry, connection};
use agentwire_core::ports::ConnectionRegistry;
use agentwire_core::usecases::Session;
use agentwire_fn_session::SessionFunction;
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::encodings::Body;

const EVENT: &[u8] = include_bytes!("fixtures/hello.json");

#[tokio::test]
async fn a_recorded_hello_is_answered_with_welcome_in_the_route_response() {
    let clock = Arc::new(ManualClock::new());
    let registry = Arc::new(MemoryRegistry::with_clock(clock.clone()));
    registry
        .put_connection(&connection("Y1QxFdTcoAMCJ4g=", "acme", "ana", &["agent-*"]))
        .await
        .unwrap();
    let session = Session::new(
        registry.clone(),
        Arc::new(MemoryLog::with_clock(clock.clone())),
        Arc::new(MemoryCursors::with_clock(clock.clone())),
        Arc::new(MemoryPusher::default()),
        clock,
        30,
    );
    let f = SessionFunction::with(session);
    let event: ApiGatewayWebsocketProxyRequest = serde_json::from_slice(EVENT).unwrap();
    let resp = f.handle(event).await.unwrap();
    assert_eq!(resp.status_code, 200);
    let Some(Body::Text(body)) = resp.body else {
        panic!("no route response")
    };
    let frame: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(frame["type"], "welcome", "{frame}");
    assert_eq!(frame["protocol"], 1, "{frame}");
    let conn = registry
        .get_connection("Y1QxFdTcoAMCJ4g=")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conn.protocol, Some(1), "the negotiated version is recorded");
}
