//! `agentwire publish`: validate an envelope and put it on the events queue.

use agentwire_core::adapters::SqsEventQueue;
use agentwire_core::clock::rfc3339;
use agentwire_core::model::Envelope;
use agentwire_core::ports::EventQueue;
use aws_config::BehaviorVersion;
use aws_sdk_sqs::config::Credentials;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    channel: String,
    /// The event kind, e.g. status or final.
    #[arg(long)]
    kind: String,
    /// The event data, as JSON.
    #[arg(long, default_value = "null")]
    data: String,
    /// Idempotency key: publishing the same id twice makes one event. Default: a new UUID.
    #[arg(long)]
    id: Option<String>,
    /// The events queue: a name or a URL.
    #[arg(
        long,
        env = "AGENTWIRE_EVENTS_QUEUE",
        default_value = "agentwire-events.fifo"
    )]
    queue: String,
    /// AWS endpoint override, e.g. http://127.0.0.1:4566 for the local stack.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: Option<String>,
}

pub async fn run(args: Args) -> Result<(), String> {
    let data: serde_json::Value =
        serde_json::from_str(&args.data).map_err(|e| format!("--data is not valid JSON: {e}"))?;
    let envelope = Envelope {
        tenant: args.tenant,
        channel: args.channel,
        id: args.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        kind: args.kind,
        data,
        ts: rfc3339(std::time::SystemTime::now()),
    };
    envelope.validate().map_err(|e| e.to_string())?;
    let sqs = aws_sdk_sqs::Client::new(&sdk_config(args.endpoint.as_deref()).await);
    let url = queue_url(&sqs, &args.queue).await?;
    SqsEventQueue::new(sqs, url)
        .send(&envelope)
        .await
        .map_err(|e| e.to_string())?;
    println!("{}", envelope.id);
    Ok(())
}

/// The SDK's settings, with `endpoint` if given. A loopback endpoint with no
/// credentials in the environment gets the local stack's dummy key.
pub async fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(ep) = endpoint {
        loader = loader.endpoint_url(ep);
        let loopback =
            ep.contains("://127.") || ep.contains("://localhost") || ep.contains("://[::1]");
        if loopback && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            loader = loader.credentials_provider(Credentials::new(
                "test",
                "test",
                None,
                None,
                "local-stack",
            ));
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            loader = loader.region(aws_config::Region::new("us-east-1"));
        }
    }
    loader.load().await
}

pub(crate) async fn queue_url(sqs: &aws_sdk_sqs::Client, queue: &str) -> Result<String, String> {
    agentwire_core::adapters::sqs::resolve_queue_url(sqs, queue)
        .await
        .map_err(|e| format!("cannot find queue {queue:?}: {e}"))
}
