//! The `@connections` management API (PostToConnection, GetConnection,
//! DeleteConnection), answering as API Gateway does: 410 `GoneException`
//! for unknown or closed connections, 413 over the message limit, 429
//! `LimitExceededException` when the connection's outbound buffer is full.
//! With `connections_latency` set, every call first waits that long (plus
//! up to `connections_jitter`), as a round trip to the real API would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::App;
use crate::hub::PostRefused;

pub(crate) fn routes(latency: Latency) -> Router<Arc<App>> {
    Router::new()
        .route(
            "/@connections/{id}",
            post(post_to).get(get_one).delete(delete_one),
        )
        // API Gateway's own path carries the stage: callers given the
        // endpoint as `https://{api}.execute-api.../{stage}` post here.
        .route(
            "/{stage}/@connections/{id}",
            post(staged_post).get(staged_get).delete(staged_delete),
        )
        .route_layer(middleware::from_fn_with_state(latency, emulate_latency))
        .route_layer(middleware::from_fn(loopback_only))
}

/// `POST /@dev/settings` (loopback only): the dev gateway's emulation
/// knobs, changed while it runs, for a benchmark in another process;
/// `GET /@dev/faults`: the fault rates and what was injected.
pub(crate) fn dev_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/@dev/settings", post(dev_settings))
        .route("/@dev/faults", get(dev_faults))
        .route_layer(middleware::from_fn(loopback_only))
}

async fn dev_faults(State(app): State<Arc<App>>) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        serde_json::json!({
            "settings": app.options.faults.settings(),
            "injected": app.options.faults.injected(),
        })
        .to_string(),
    )
        .into_response()
}

/// What `POST /@dev/settings` may change; absent fields stay as they are.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DevSettings {
    connections_latency_ms: Option<u64>,
    connections_jitter_ms: Option<u64>,
    fanout_threshold: Option<u64>,
    fanout_invocations: Option<usize>,
    /// Replaces every fault rate (see [`crate::faults::FaultSettings`]).
    faults: Option<crate::faults::FaultSettings>,
}

async fn dev_settings(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let s: DevSettings = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "BadRequestException",
                format!("settings: {e}"),
            );
        }
    };
    if s.connections_latency_ms.is_some() || s.connections_jitter_ms.is_some() {
        let (fixed, jitter) = app.latency.current();
        let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
        app.latency.set(
            ms(s.connections_latency_ms, fixed),
            ms(s.connections_jitter_ms, jitter),
        );
    }
    if s.fanout_invocations == Some(0) {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            "settings: fanout_invocations must be at least 1".into(),
        );
    }
    if let Some(faults) = s.faults
        && let Err(e) = app.options.faults.set(faults)
    {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            e.to_string(),
        );
    }
    if let Some(n) = s.fanout_invocations {
        app.fanout_invocations.store(n, Ordering::Relaxed);
    }
    if let Some(t) = s.fanout_threshold {
        app.functions
            .dispatcher
            .dispatcher()
            .set_fanout_threshold(t);
        app.functions.publish.publisher().set_fanout_threshold(t);
    }
    let (fixed, jitter) = app.latency.current();
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        serde_json::json!({
            "connections_latency_ms": fixed.as_millis() as u64,
            "connections_jitter_ms": jitter.as_millis() as u64,
            "fanout_invocations": app.fanout_invocations.load(Ordering::Relaxed),
            "faults": app.options.faults.settings(),
        })
        .to_string(),
    )
        .into_response()
}

/// The emulated round trip of one `@connections` call, shared by the
/// middleware and the gateway's handle, which may change it while running.
#[derive(Debug, Clone, Default)]
pub(crate) struct Latency {
    /// Fixed and jitter, in microseconds.
    micros: Arc<[AtomicU64; 2]>,
}

impl Latency {
    pub(crate) fn new(fixed: Duration, jitter: Duration) -> Self {
        let l = Self::default();
        l.set(fixed, jitter);
        l
    }

    pub(crate) fn set(&self, fixed: Duration, jitter: Duration) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.micros[0].store(us(fixed), Ordering::Relaxed);
        self.micros[1].store(us(jitter), Ordering::Relaxed);
    }

    fn current(&self) -> (Duration, Duration) {
        (
            Duration::from_micros(self.micros[0].load(Ordering::Relaxed)),
            Duration::from_micros(self.micros[1].load(Ordering::Relaxed)),
        )
    }

    /// `fixed` plus a uniform share of `jitter` (`unit` in 0..1).
    fn delay(&self, unit: f64) -> Duration {
        let (fixed, jitter) = self.current();
        fixed + jitter.mul_f64(unit.clamp(0.0, 1.0))
    }
}

async fn emulate_latency(State(latency): State<Latency>, request: Request, next: Next) -> Response {
    let delay = latency.delay(agentwire_core::clock::random_unit());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    next.run(request).await
}

/// `@connections` is the functions' API, not the clients': it answers only
/// callers on this machine, whatever address the gateway listens on (API
/// Gateway requires IAM-signed requests instead).
async fn loopback_only(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if peer.ip().is_loopback() {
        return next.run(request).await;
    }
    aws_error(
        StatusCode::FORBIDDEN,
        "AccessDeniedException",
        "@connections answers only on loopback".into(),
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
    let payload = String::from_utf8(body.to_vec()).map_err(|e| e.into_bytes());
    match app
        .hub
        .post(&id, payload, app.options.outbound_buffer_bytes)
    {
        Ok(()) => StatusCode::OK.into_response(),
        Err(PostRefused::Gone) => gone(&id),
        Err(PostRefused::BufferFull { buffered }) => aws_error(
            StatusCode::TOO_MANY_REQUESTS,
            "LimitExceededException",
            format!(
                "connection {id} has {buffered} bytes waiting to be written; its outbound buffer holds {}",
                app.options.outbound_buffer_bytes
            ),
        ),
        Err(PostRefused::Injected) => aws_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerErrorException",
            "injected failure (Hub::fail_next_posts, or the faults' 500 rate)".into(),
        ),
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

async fn staged_post(
    state: State<Arc<App>>,
    Path((_stage, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    post_to(state, Path(id), body).await
}

async fn staged_get(
    state: State<Arc<App>>,
    Path((_stage, id)): Path<(String, String)>,
) -> Response {
    get_one(state, Path(id)).await
}

async fn staged_delete(
    state: State<Arc<App>>,
    Path((_stage, id)): Path<(String, String)>,
) -> Response {
    delete_one(state, Path(id)).await
}

async fn delete_one(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    if app.hub.close(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        gone(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use tower::ServiceExt;

    async fn status_from(peer: &str) -> StatusCode {
        let app = Router::new()
            .route("/@connections/{id}", post(|| async { StatusCode::OK }))
            .route_layer(middleware::from_fn(loopback_only))
            .layer(MockConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let req = axum::http::Request::post("/@connections/c1")
            .body(Body::empty())
            .unwrap();
        app.oneshot(req).await.unwrap().status()
    }

    /// On tokio's paused clock (virtual time: it jumps to the next timer
    /// when all tasks wait), the answer comes exactly the emulated latency
    /// after the call.
    #[tokio::test(start_paused = true)]
    async fn every_call_waits_the_emulated_latency() {
        for (fixed, want) in [(Duration::from_millis(20), 20), (Duration::ZERO, 0)] {
            let latency = Latency::new(fixed, Duration::ZERO);
            let app = Router::new()
                .route("/@connections/{id}", post(|| async { StatusCode::OK }))
                .route_layer(middleware::from_fn_with_state(latency, emulate_latency));
            let req = axum::http::Request::post("/@connections/c1")
                .body(Body::empty())
                .unwrap();
            let start = tokio::time::Instant::now();
            let resp = app.oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(start.elapsed(), Duration::from_millis(want));
        }
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let l = Latency::new(Duration::from_millis(20), Duration::from_millis(10));
        assert_eq!(l.delay(0.0), Duration::from_millis(20));
        assert_eq!(l.delay(1.0), Duration::from_millis(30));
        assert_eq!(l.delay(7.0), Duration::from_millis(30));
        assert_eq!(l.delay(0.5), Duration::from_millis(25));
        l.set(Duration::from_millis(5), Duration::ZERO);
        assert_eq!(
            l.delay(1.0),
            Duration::from_millis(5),
            "changed while running"
        );
    }

    #[tokio::test]
    async fn connections_answers_only_loopback_callers() {
        assert_eq!(status_from("127.0.0.1:40000").await, StatusCode::OK);
        assert_eq!(status_from("[::1]:40000").await, StatusCode::OK);
        assert_eq!(status_from("192.0.2.7:40000").await, StatusCode::FORBIDDEN);
        assert_eq!(
            status_from("[2001:db8::7]:40000").await,
            StatusCode::FORBIDDEN
        );
    }
}
