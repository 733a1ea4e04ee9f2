//! Logging and metrics set-up shared by the functions and the tools.

/// JSON logs to stdout (what CloudWatch reads), filtered by `RUST_LOG`
/// (default `info`). Safe to call more than once.
pub fn init_json() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        // The runtime's invocation span: every line carries its requestId.
        .with_current_span(true)
        .with_span_list(false)
        .without_time()
        .try_init();
}

/// Human-readable logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_text() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The collector of the function's metrics in CloudWatch Embedded Metric
/// Format: namespace `AGENTWIRE_METRICS_NAMESPACE` (default `agentwire`),
/// dimension `function`, the Lambda request id as a property. Installed as
/// the global `metrics` recorder; [`run_with_metrics`] flushes one EMF
/// document per label set to stdout after every invocation.
pub fn emf(function: &'static str) -> Result<&'static Collector, TelemetryError> {
    let namespace =
        std::env::var("AGENTWIRE_METRICS_NAMESPACE").unwrap_or_else(|_| "agentwire".to_owned());
    let collector = emf_builder(&namespace, function)
        .with_lambda_request_id("request_id")
        .init()
        .map_err(|e| TelemetryError(e.to_string()))?;
    agentwire_core::metrics::describe();
    Ok(collector)
}

/// The EMF builder every function uses (tests build their collector with it).
pub fn emf_builder(
    namespace: &str,
    function: &'static str,
) -> metrics_cloudwatch_embedded::Builder {
    metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(namespace.to_owned())
        .with_dimension("function", function)
}

pub use metrics_cloudwatch_embedded::Collector;
/// Runs the Lambda runtime with `handler`, flushing the metrics after each
/// invocation.
pub use metrics_cloudwatch_embedded::lambda::handler::run as run_with_metrics;

/// The metrics recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the metrics recorder: {0}")]
pub struct TelemetryError(String);
