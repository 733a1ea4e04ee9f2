//! The HTTP API of a deployment, locally: `POST /v1/channels/{channel}/events`
//! becomes an HTTP API (payload 2.0) event for the publish function, and its
//! answer goes back as the HTTP response, as API Gateway would do.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::encodings::Body;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::App;
use crate::function;

/// API Gateway's HTTP API payload limit.
const HTTP_API_MAX_BODY: usize = 10 * 1024 * 1024;

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/channels/{channel}/events", post(publish))
        .layer(DefaultBodyLimit::max(HTTP_API_MAX_BODY))
}

async fn publish(
    State(app): State<Arc<App>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut req = ApiGatewayV2httpRequest::default();
    req.route_key = Some("POST /v1/channels/{channel}/events".into());
    req.raw_path = Some(format!("/v1/channels/{channel}/events"));
    req.headers = headers;
    req.path_parameters = HashMap::from([("channel".to_owned(), channel)]);
    req.body = Some(String::from_utf8_lossy(&body).into_owned());
    req.is_base64_encoded = false;
    req.request_context.request_id = Some(uuid::Uuid::new_v4().to_string());
    match function::scope("publish", app.functions.publish.handle(req)).await {
        Ok(resp) => {
            let status = u16::try_from(resp.status_code)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = match resp.body {
                Some(Body::Text(t)) => t.into_bytes(),
                Some(Body::Binary(b)) => b,
                _ => Vec::new(),
            };
            (status, resp.headers, body).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "publish function failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [("content-type", "application/json")],
                serde_json::json!({"message": "Internal Server Error"}).to_string(),
            )
                .into_response()
        }
    }
}
