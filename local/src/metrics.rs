//! `GET /metrics`: the metrics every handler emits (the same names as the
//! Lambda functions' EMF, see `agentwire_core::metrics`) in Prometheus text
//! format. The recorder is the process's global one, installed by the
//! first gateway of the process; the dev gateway runs every function in
//! one process, so there is no `function` label here. Histograms are
//! summaries (quantiles 0.5, 0.9, 0.95, 0.99 over a sliding window).

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::App;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use; `None` when
/// another recorder was installed first (then `/metrics` says so).
pub fn prometheus() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_quantiles(&[0.5, 0.9, 0.95, 0.99])
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    agentwire_core::metrics::describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "another metrics recorder is installed; GET /metrics is unavailable");
                    None
                }
            }
        })
        .clone()
}

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new().route("/metrics", get(render))
}

async fn render() -> Response {
    match prometheus() {
        Some(h) => {
            h.run_upkeep();
            (
                StatusCode::OK,
                [("content-type", "text/plain; version=0.0.4")],
                h.render(),
            )
                .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "application/json")],
            agentwire_protocol::ServerFrame::error(
                agentwire_protocol::ErrorCode::Internal,
                "this process has another metrics recorder; /metrics is unavailable",
                None,
            )
            .to_json(),
        )
            .into_response(),
    }
}
