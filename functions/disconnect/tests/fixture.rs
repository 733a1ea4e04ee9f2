//! The function fed API Gateway's recorded `$disconnect` event
//! (`aws_lambda_events` JSON), on in-memory ports.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use agentwire_core::memory::{MemoryRegistry, connection};
use agentwire_core::model::ChannelKey;
use agentwire_core::ports::ConnectionRegistry;
use agentwire_core::usecases::Disconnect;
use agentwire_fn_disconnect::DisconnectFunction;
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;

const EVENT: &[u8] = include_bytes!("fixtures/disconnect.json");

#[tokio::test]
async fn a_recorded_disconnect_removes_the_connection_and_its_subscriptions() {
    let registry = Arc::new(MemoryRegistry::default());
    let conn = connection("Y1QxFdTcoAMCJ4g=", "acme", "ana", &["*"]);
    registry.put_connection(&conn).await.unwrap();
    let key = ChannelKey::new("acme", "agent-7");
    assert!(registry.subscribe(&conn, &key, u64::MAX).await.unwrap());
    let f = DisconnectFunction::with(Disconnect::new(
        registry.clone(),
        Arc::new(agentwire_core::clock::SystemClock),
    ));
    let event: ApiGatewayWebsocketProxyRequest = serde_json::from_slice(EVENT).unwrap();
    let resp = f.handle(event.clone()).await.unwrap();
    assert_eq!(resp.status_code, 200);
    assert!(registry.is_empty());
    assert!(registry.subscribers(&key).await.unwrap().is_empty());
    // A second delivery of the same event is harmless.
    assert_eq!(f.handle(event).await.unwrap().status_code, 200);
}
