//! The function fed a recorded HTTP API request (`aws_lambda_events` JSON,
//! payload 2.0, base64 body), on an in-memory queue; and each refusal's
//! status.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use agentwire_core::auth::{AuthError, TokenKey};
use agentwire_core::clock::ManualClock;
use agentwire_core::memory::MemoryEventQueue;
use agentwire_core::ports::StoreError;
use agentwire_core::usecases::{PublishError, Publisher};
use agentwire_fn_publish::{PublishFunction, http_status};
use agentwire_protocol::{ErrorCode, ProtocolError};
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::encodings::Body;

const EVENT: &[u8] = include_bytes!("fixtures/http-publish.json");
/// The key the fixture's token is signed with; its `exp` is 1795000000.
const SECRET: &[u8] = b"fixture-secret-of-at-least-32-bytes!!";

#[tokio::test]
async fn a_recorded_publish_request_is_accepted_and_enqueued() {
    let clock = Arc::new(ManualClock::at(
        UNIX_EPOCH + Duration::from_secs(1_794_995_000),
    ));
    let queue = Arc::new(MemoryEventQueue::default());
    let f = PublishFunction::with(
        Publisher::new(queue.clone(), clock),
        std::sync::Arc::new(agentwire_core::auth::Verifier::new(
            TokenKey::hs256(SECRET),
            std::sync::Arc::new(agentwire_core::clock::SystemClock),
        )),
    );
    let event: ApiGatewayV2httpRequest = serde_json::from_slice(EVENT).unwrap();
    let resp = f.handle(event).await.unwrap();
    assert_eq!(resp.status_code, 202);
    let Some(Body::Text(body)) = resp.body else {
        panic!("no body")
    };
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = body["id"].as_str().unwrap();
    assert!(
        id.ends_with("~run-1/final"),
        "the id is the idempotency key behind the publisher's tag: {id}"
    );
    let sent = queue.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].id, id);
    assert_eq!(
        (
            sent[0].tenant.as_str(),
            sent[0].channel.as_str(),
            sent[0].kind.as_str()
        ),
        ("acme", "agent-7", "status")
    );
    assert_eq!(sent[0].data.value()["state"], "done");
}

#[test]
fn each_refusal_maps_to_its_status() {
    let cases = [
        (PublishError::Unauthorized(AuthError::Missing), 401),
        (PublishError::Forbidden("ops".into()), 403),
        (
            PublishError::Invalid(ProtocolError::new(ErrorCode::InvalidChannel, "bad")),
            400,
        ),
        (
            PublishError::TooLarge {
                what: "the event data",
                size: 2,
                max: 1,
            },
            413,
        ),
        (
            PublishError::Queue(StoreError::Unavailable {
                op: "send",
                reason: "throttled".into(),
            }),
            503,
        ),
        (
            PublishError::Queue(StoreError::failed("send", "no queue")),
            500,
        ),
    ];
    for (e, status) in cases {
        assert_eq!(http_status(&e), status, "{e}");
    }
}
