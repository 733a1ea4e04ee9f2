//! `agentwire-local`: the dev gateway on a local AWS endpoint.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use agentwire_core::config::{Config, Tables};
use agentwire_local::{Gateway, GatewayOptions};
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::Credentials;
use clap::Parser;

/// One process runs every function, the WebSocket server and
/// `@connections` for thousands of connections on a few cores: glibc's
/// allocator spent about a third of its CPU in malloc, free and arena
/// locks at 10,000 subscribers (docs/benchmarks.md, issue 14); mimalloc's
/// per-thread heaps do not contend. (The Lambda functions keep the system
/// allocator: one invocation at a time per instance.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// agentwire's dev gateway: API Gateway WebSocket + @connections + the SQS
/// event source, running the function handlers in-process.
#[derive(Debug, Parser)]
#[command(name = "agentwire-local", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "AGENTWIRE_LOCAL_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port for WebSockets and @connections.
    #[arg(long, env = "AGENTWIRE_LOCAL_PORT", default_value_t = 8080)]
    port: u16,
    /// The local AWS endpoint.
    #[arg(
        long,
        env = "AWS_ENDPOINT_URL",
        default_value = "http://127.0.0.1:4566"
    )]
    endpoint: String,
    /// AWS region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// Events queue: a name or a URL.
    #[arg(
        long,
        env = "AGENTWIRE_EVENTS_QUEUE",
        default_value = "agentwire-events.fifo"
    )]
    events_queue: String,
    /// Dead-letter queue for envelopes that can never be committed: a name or a URL.
    #[arg(
        long,
        env = "AGENTWIRE_EVENTS_DLQ",
        default_value = "agentwire-events-dlq.fifo"
    )]
    events_dlq: String,
    /// Webhook job queue: a name or a URL; empty to call no webhooks.
    #[arg(
        long,
        env = "AGENTWIRE_WEBHOOK_QUEUE",
        default_value = "agentwire-webhooks"
    )]
    webhook_queue: String,
    /// Fan-out queue (big channels' deliveries, by shard): a name or a URL;
    /// empty to fan out every channel inline.
    #[arg(
        long,
        env = "AGENTWIRE_FANOUT_QUEUE",
        default_value = "agentwire-fanout"
    )]
    fanout_queue: String,
    /// Fan-out invocations (one job each) run at once.
    #[arg(long, env = "AGENTWIRE_LOCAL_FANOUT_POLLERS", default_value_t = 4)]
    fanout_pollers: usize,
    /// Webhook invocations (two jobs each) run at once (the template's
    /// `WebhookMaxConcurrency`).
    #[arg(long, env = "AGENTWIRE_LOCAL_WEBHOOK_POLLERS", default_value_t = 5)]
    webhook_pollers: usize,
    /// The built browser console to serve at /console/ (default:
    /// clients/console/dist of the source tree this was built from).
    #[arg(long, env = "AGENTWIRE_CONSOLE_DIR")]
    console_dir: Option<std::path::PathBuf>,
    /// Run the canary (connect, publish over HTTP, receive, reconnect and
    /// resume, as the deployed stack's scheduled function does) against
    /// this gateway this often, like `60s`; off when absent, empty or `off`.
    #[arg(long, env = "AGENTWIRE_LOCAL_CANARY_INTERVAL", value_parser = interval_or_off)]
    canary_interval: Option<Duration>,
    /// Webhook dead-letter queue: a name or a URL.
    #[arg(
        long,
        env = "AGENTWIRE_WEBHOOK_DLQ",
        default_value = "agentwire-webhooks-dlq"
    )]
    webhook_dlq: String,
    /// Connections table.
    #[arg(
        long,
        env = "AGENTWIRE_CONNECTIONS_TABLE",
        default_value = "agentwire-connections"
    )]
    connections_table: String,
    /// Subscriptions table.
    #[arg(
        long,
        env = "AGENTWIRE_SUBSCRIPTIONS_TABLE",
        default_value = "agentwire-subscriptions"
    )]
    subscriptions_table: String,
    /// Channels table.
    #[arg(
        long,
        env = "AGENTWIRE_CHANNELS_TABLE",
        default_value = "agentwire-channels"
    )]
    channels_table: String,
    /// Events table.
    #[arg(
        long,
        env = "AGENTWIRE_EVENTS_TABLE",
        default_value = "agentwire-events"
    )]
    events_table: String,
    /// Cursors table.
    #[arg(
        long,
        env = "AGENTWIRE_CURSORS_TABLE",
        default_value = "agentwire-cursors"
    )]
    cursors_table: String,
    /// Limits table (tenants' limits and token buckets).
    #[arg(
        long,
        env = "AGENTWIRE_LIMITS_TABLE",
        default_value = "agentwire-limits"
    )]
    limits_table: String,
    /// HS256 key for tokens (use the same with `agentwire token`).
    #[arg(
        long,
        env = "AGENTWIRE_JWT_SECRET",
        default_value = DEFAULT_DEV_SECRET,
        hide_env_values = true
    )]
    jwt_secret: String,
    /// Largest message in either direction, in bytes (API Gateway: 131072).
    #[arg(long, env = "AGENTWIRE_LOCAL_MAX_MESSAGE", default_value_t = agentwire_protocol::limits::MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Idle timeout (API Gateway: 10m).
    #[arg(long, env = "AGENTWIRE_LOCAL_IDLE_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Maximum connection duration (API Gateway: 2h).
    #[arg(long, env = "AGENTWIRE_LOCAL_MAX_CONNECTION", default_value = "2h", value_parser = humantime::parse_duration)]
    max_connection: Duration,
    /// Bytes posted to one connection and not yet written to its socket past
    /// which `@connections` answers 429 LimitExceededException.
    #[arg(long, env = "AGENTWIRE_LOCAL_OUTBOUND_BUFFER", default_value_t = 1024 * 1024)]
    outbound_buffer_bytes: usize,
    /// Emulated round trip of every `@connections` call, like 20ms (API
    /// Gateway's Management API from a Lambda: about 20-50 ms); 0 answers
    /// at once.
    #[arg(long, env = "AGENTWIRE_LOCAL_CONNECTIONS_LATENCY", default_value = "0ms", value_parser = humantime::parse_duration)]
    connections_latency: Duration,
    /// Uniform random extra on top of --connections-latency, 0 to this.
    #[arg(long, env = "AGENTWIRE_LOCAL_CONNECTIONS_JITTER", default_value = "0ms", value_parser = humantime::parse_duration)]
    connections_jitter: Duration,
    /// Faults to inject, JSON: rates (0 to 1) per AWS operation of the
    /// functions and for `@connections` posts, e.g.
    /// '{"aws": {"dynamodb:*": {"throttle": 0.1, "5xx": 0.02, "timeout": 0.01}},
    /// "connections": {"429": 0.05, "500": 0.01, "410": 0.001}}'. Change
    /// them while running with POST /@dev/settings {"faults": ...}; GET
    /// /@dev/faults counts what was injected.
    #[arg(long, env = "AGENTWIRE_LOCAL_FAULTS", value_parser = parse_faults)]
    faults: Option<agentwire_local::faults::FaultSettings>,
}

fn parse_faults(s: &str) -> Result<agentwire_local::faults::FaultSettings, String> {
    agentwire_local::faults::FaultSettings::parse(s).map_err(|e| e.to_string())
}

/// The signing key `--jwt-secret` defaults to: fine on loopback, refused
/// anywhere else (anyone could mint tokens with it).
const DEFAULT_DEV_SECRET: &str = "agentwire-local-dev-secret-never-deploy-it";

/// A duration like `60s`, or nothing at all (empty, `off`: zero).
fn interval_or_off(s: &str) -> Result<Duration, humantime::DurationError> {
    match s.trim() {
        "" | "off" => Ok(Duration::ZERO),
        d => humantime::parse_duration(d),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    agentwire_aws::telemetry::init_text();
    let args = Args::parse();
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentwire-local: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), String> {
    if !args.host.is_loopback() && args.jwt_secret == DEFAULT_DEV_SECRET {
        return Err(format!(
            "--host {} listens beyond this machine, and the token key is the well-known default: \
             set AGENTWIRE_JWT_SECRET (or --jwt-secret) to a secret of at least 32 bytes",
            args.host
        ));
    }
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(args.region.clone()))
        .endpoint_url(&args.endpoint);
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        // The local endpoint accepts any key; don't go looking for real ones.
        loader = loader.credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "agentwire-local",
        ));
    }
    let sdk = loader.load().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let events_queue_url = queue_url(&sqs, &args.events_queue, &args.endpoint).await?;
    let events_dlq_url = queue_url(&sqs, &args.events_dlq, &args.endpoint).await?;
    let mut config = Config::from_env().map_err(|e| e.to_string())?;
    config.events_queue_url = Some(events_queue_url.clone());
    config.events_dlq_url = Some(events_dlq_url);
    if !args.webhook_queue.is_empty() {
        config.webhook_queue_url =
            Some(queue_url(&sqs, &args.webhook_queue, &args.endpoint).await?);
        config.webhook_dlq_url = Some(queue_url(&sqs, &args.webhook_dlq, &args.endpoint).await?);
    }
    if !args.fanout_queue.is_empty() {
        config.fanout_queue_url = Some(queue_url(&sqs, &args.fanout_queue, &args.endpoint).await?);
    }
    config.tables = Tables {
        connections: args.connections_table,
        subscriptions: args.subscriptions_table,
        channels: args.channels_table,
        events: args.events_table,
        cursors: args.cursors_table,
        limits: args.limits_table,
    };
    config.jwt_secret = Some(args.jwt_secret.into_bytes());
    config.max_connection = args.max_connection;
    let options = GatewayOptions {
        bind: SocketAddr::new(args.host, args.port),
        max_message_bytes: args.max_message_bytes,
        idle_timeout: args.idle_timeout,
        max_duration: args.max_connection,
        outbound_buffer_bytes: args.outbound_buffer_bytes,
        connections_latency: args.connections_latency,
        connections_jitter: args.connections_jitter,
        fanout_pollers: args.fanout_pollers,
        webhook_pollers: args.webhook_pollers,
        canary_interval: args.canary_interval.filter(|d| !d.is_zero()),
        console_dir: args
            .console_dir
            .unwrap_or_else(agentwire_local::console_dir),
        faults: std::sync::Arc::new(agentwire_local::faults::Faults::new(
            args.faults.unwrap_or_default(),
        )),
        ..GatewayOptions::default()
    };
    let mut gateway = Gateway::start(&sdk, config, options)
        .await
        .map_err(|e| e.to_string())?;
    let url = gateway.ws_url();
    eprintln!(
        "\nagentwire dev gateway is up\n  WebSocket:     {url}\n  publish (HTTP): {http}/v1/channels/{{channel}}/events\n  @connections:  {}/@connections/{{id}}\n  events queue:  {events_queue_url}\n\n\
         Try it (in another terminal):\n  \
         TOKEN=$(cargo run -q -p agentwire-cli -- token --tenant demo --sub me --channels 'agent-*')\n  \
         cargo run -q -p agentwire-cli -- tail --url {url} --token \"$TOKEN\" --channel agent-1\n  \
         cargo run -q -p agentwire-cli -- publish --endpoint {endpoint} --tenant demo --channel agent-1 --kind status --data '{{\"text\":\"hello\"}}'\n  \
         AGENT=$(cargo run -q -p agentwire-cli -- token --tenant demo --sub bot --publish 'agent-*')\n  \
         cargo run -q -p agentwire-cli -- publish --url {http} --token \"$AGENT\" --channel agent-1 --kind status --data '{{\"text\":\"over HTTP\"}}'\n  \
         cargo run -q -p agentwire-cli -- run --url {http} --token \"$AGENT\" --channel agent-1 -- cargo build\n  \
         console (after npm ci && npm run build in clients/console): {http}/console/?url={url}&channels=agent-1&token=$TOKEN\n\n\
         Ctrl-C stops it.",
        gateway.connections_endpoint(),
        endpoint = args.endpoint,
        http = gateway.http_url(),
    );
    stopped().await?;
    eprintln!("agentwire-local: stopping");
    gateway.shutdown().await;
    Ok(())
}

/// Ctrl-C or SIGTERM (what `kill` and process managers send): either
/// stops the gateway cleanly.
async fn stopped() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot wait for SIGTERM: {e}"))?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(|e| format!("cannot wait for Ctrl-C: {e}")),
        _ = term.recv() => Ok(()),
    }
}

/// A queue URL as given, or the URL of a queue name, with the command to
/// run when it is missing.
async fn queue_url(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    endpoint: &str,
) -> Result<String, String> {
    agentwire_aws::sqs::resolve_queue_url(sqs, queue)
        .await
        .map_err(|e| {
            format!(
                "queue {queue:?} not found on {endpoint}: {e}\n  start the local endpoint and create the resources with `localstack/up`"
            )
        })
}
