//! The `@connections` management API (PostToConnection, GetConnection,
//! DeleteConnection), answering as API Gateway does, including 410
//! `GoneException` for unknown or closed connections.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::App;
use crate::hub::Outbound;

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new().route(
        "/@connections/{id}",
        post(post_to).get(get_one).delete(delete_one),
    )
}

fn aws_error(status: StatusCode, kind: &'static str, message: String) -> Response {
    (
        status,
        [
            ("x-amzn-errortype", kind),
            ("content-type", "application/json"),
        ],
        serde_json::json!({ "message": message }).to_string(),
    )
        .into_response()
}

fn gone(id: &str) -> Response {
    aws_error(
        StatusCode::GONE,
        "GoneException",
        format!("connection {id} is gone"),
    )
}

async fn post_to(State(app): State<Arc<App>>, Path(id): Path<String>, body: Bytes) -> Response {
    if body.len() > app.options.max_message_bytes {
        return aws_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLargeException",
            format!(
                "message is {} bytes; at most {}",
                body.len(),
                app.options.max_message_bytes
            ),
        );
    }
    let msg = match String::from_utf8(body.to_vec()) {
        Ok(t) => Outbound::Text(t),
        Err(e) => Outbound::Binary(e.into_bytes()),
    };
    if app.hub.send(&id, msg) {
        StatusCode::OK.into_response()
    } else {
        gone(&id)
    }
}

async fn get_one(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let Some(live) = app.hub.get(&id) else {
        return gone(&id);
    };
    let at = humantime::format_rfc3339_millis(live.connected_at).to_string();
    let body = serde_json::json!({
        "ConnectedAt": at,
        "LastActiveAt": at,
        "Identity": { "SourceIp": live.source_ip.ip().to_string(), "UserAgent": live.user_agent },
    });
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn delete_one(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    if app.hub.send(&id, Outbound::Close(1000, String::new())) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        gone(&id)
    }
}
