//! The HTTP API of a deployment, locally: each route (publish, batch
//! publish, history, presence, a channel's state; `docs/openapi.yaml`)
//! becomes an HTTP API (payload 2.0) event for the publish function, with
//! its `routeKey`, path parameter and query string, and its answer goes
//! back as the HTTP response, as API Gateway would do.

use std::collections::HashMap;
use std::sync::Arc;

use agentwire_fn_publish::{
    ROUTE_BATCH, ROUTE_CHANNEL, ROUTE_HISTORY, ROUTE_PRESENCE, ROUTE_PUBLISH,
};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::query_map::QueryMap;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use crate::App;
use crate::function;

/// API Gateway's HTTP API payload limit.
const HTTP_API_MAX_BODY: usize = 10 * 1024 * 1024;

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/channels/{channel}/events", post(publish).get(history))
        .route("/v1/channels/{channel}/events:batch", post(batch))
        .route("/v1/channels/{channel}/presence", get(presence))
        .route("/v1/channels/{channel}", get(channel))
        .route("/v1/admin/{*rest}", any(admin))
        .layer(DefaultBodyLimit::max(HTTP_API_MAX_BODY))
}

/// `/v1/admin/…`: the admin function's routes, matched on the method and
/// path as API Gateway matches its route keys (`{channel}` a path parameter).
async fn admin(
    State(app): State<Arc<App>>,
    method: axum::http::Method,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/admin/{rest}");
    let mut params = HashMap::new();
    // A channel name may hold `/` (sent as %2F, decoded here): its webhook
    // path ends in `/webhook` or `/webhook:rotate`.
    let template = match rest
        .strip_prefix("channels/")
        .and_then(|r| r.rsplit_once('/'))
    {
        Some((channel, tail)) => {
            params.insert("channel".to_owned(), channel.to_owned());
            format!("/v1/admin/channels/{{channel}}/{tail}")
        }
        None => path.clone(),
    };
    let route = format!("{method} {template}");
    let mut req = ApiGatewayV2httpRequest::default();
    req.route_key = Some(route);
    req.raw_path = Some(path);
    req.headers = headers;
    req.path_parameters = params;
    req.query_string_parameters = QueryMap::from(query);
    req.body = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
    req.request_context.request_id = Some(uuid::Uuid::new_v4().to_string());
    answer(function::scope("admin", app.functions.admin.handle(req)).await)
}

async fn publish(
    State(app): State<Arc<App>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    forward(
        &app,
        ROUTE_PUBLISH,
        "/events",
        channel,
        headers,
        HashMap::new(),
        Some(body),
    )
    .await
}

async fn batch(
    State(app): State<Arc<App>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    forward(
        &app,
        ROUTE_BATCH,
        "/events:batch",
        channel,
        headers,
        HashMap::new(),
        Some(body),
    )
    .await
}

async fn history(
    State(app): State<Arc<App>>,
    Path(channel): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    forward(
        &app,
        ROUTE_HISTORY,
        "/events",
        channel,
        headers,
        query,
        None,
    )
    .await
}

async fn presence(
    State(app): State<Arc<App>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Response {
    forward(
        &app,
        ROUTE_PRESENCE,
        "/presence",
        channel,
        headers,
        HashMap::new(),
        None,
    )
    .await
}

async fn channel(
    State(app): State<Arc<App>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Response {
    forward(
        &app,
        ROUTE_CHANNEL,
        "",
        channel,
        headers,
        HashMap::new(),
        None,
    )
    .await
}

/// The request as an HTTP API (payload 2.0) event for the publish
/// function, and its answer as the HTTP response.
async fn forward(
    app: &App,
    route: &str,
    suffix: &str,
    channel: String,
    headers: HeaderMap,
    query: HashMap<String, String>,
    body: Option<Bytes>,
) -> Response {
    let mut req = ApiGatewayV2httpRequest::default();
    req.route_key = Some(route.into());
    req.raw_path = Some(format!("/v1/channels/{channel}{suffix}"));
    req.headers = headers;
    req.path_parameters = HashMap::from([("channel".to_owned(), channel)]);
    req.query_string_parameters = QueryMap::from(query);
    req.body = body.map(|b| String::from_utf8_lossy(&b).into_owned());
    req.is_base64_encoded = false;
    req.request_context.request_id = Some(uuid::Uuid::new_v4().to_string());
    answer(function::scope("publish", app.functions.publish.handle(req)).await)
}

/// A function's answer as the HTTP response (a failed function: 500, as
/// API Gateway answers it).
fn answer(
    res: Result<ApiGatewayV2httpResponse, Box<dyn std::error::Error + Send + Sync>>,
) -> Response {
    match res {
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
            tracing::error!(error = %e, "function failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [("content-type", "application/json")],
                serde_json::json!({"message": "Internal Server Error"}).to_string(),
            )
                .into_response()
        }
    }
}
