//! `agentwire publish`: validate an event and put it on the events queue
//! (SQS, with AWS credentials) or post it to the HTTP publish API (`--url`,
//! with a token).

use crate::error::CliError;
use std::sync::Arc;

use agentwire_aws::SqsEventQueue;
use agentwire_core::clock::SystemClock;
use agentwire_core::usecases::{Publication, Publisher};
use aws_config::BehaviorVersion;
use aws_sdk_sqs::config::Credentials;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The tenant (SQS mode; over HTTP it comes from the token).
    #[arg(long, required_unless_present = "url")]
    tenant: Option<String>,
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
    /// Publish over HTTP to this publish API (the stack's PublishUrl base,
    /// e.g. https://abc.execute-api.eu-west-1.amazonaws.com, or
    /// http://127.0.0.1:8080 for the dev gateway) instead of SQS.
    #[arg(long, env = "AGENTWIRE_PUBLISH_URL")]
    url: Option<String>,
    /// A token with a `publish` grant for the channel (HTTP mode).
    #[arg(
        long,
        env = "AGENTWIRE_TOKEN",
        hide_env_values = true,
        requires = "url"
    )]
    token: Option<String>,
    /// The events queue: a name or a URL (SQS mode).
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

pub async fn run(args: Args) -> Result<(), CliError> {
    let data: serde_json::Value = serde_json::from_str(&args.data)
        .map_err(|e| CliError::Usage(format!("--data is not valid JSON: {e}")))?;
    let id = match (&args.url, args.tenant.clone()) {
        (Some(url), _) => publish_http(url, &args, data).await?,
        (None, Some(tenant)) => {
            let sqs = aws_sdk_sqs::Client::new(&sdk_config(args.endpoint.as_deref()).await);
            let url = queue_url(&sqs, &args.queue).await?;
            let publisher = Publisher::new(
                Arc::new(SqsEventQueue::new(sqs, url)),
                Arc::new(SystemClock),
            );
            let envelope = publisher
                .publish(Publication {
                    tenant,
                    channel: args.channel.clone(),
                    kind: args.kind.clone(),
                    data,
                    id: args.id.clone(),
                })
                .await?;
            envelope.id
        }
        (None, None) => return Err("give --tenant (SQS) or --url (HTTP)".into()),
    };
    println!("{id}");
    Ok(())
}

/// `POST {url}/v1/channels/{channel}/events`; the event id on 202.
async fn publish_http(url: &str, args: &Args, data: serde_json::Value) -> Result<String, CliError> {
    let token = args
        .token
        .as_deref()
        .ok_or("--url needs --token (a token with a publish grant)")?;
    let endpoint = format!(
        "{}/v1/channels/{}/events",
        url.trim_end_matches('/'),
        args.channel
    );
    let mut req = reqwest::Client::new()
        .post(&endpoint)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(serde_json::json!({"kind": args.kind, "data": data}).to_string());
    if let Some(id) = &args.id {
        req = req.header("idempotency-key", id);
    }
    let resp = req.send().await.map_err(|source| CliError::Http {
        endpoint: endpoint.clone(),
        source,
    })?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if status.as_u16() == 202 {
        return json["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| CliError::Refused {
                status: 202,
                message: format!("an answer without an id: {body}"),
            });
    }
    let message = match (json["code"].as_str(), json["message"].as_str()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        _ => body.chars().take(300).collect::<String>(),
    };
    Err(CliError::Refused {
        status: status.as_u16(),
        message,
    })
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

pub(crate) async fn queue_url(sqs: &aws_sdk_sqs::Client, queue: &str) -> Result<String, CliError> {
    agentwire_aws::sqs::resolve_queue_url(sqs, queue)
        .await
        .map_err(|source| CliError::Queue {
            queue: queue.to_owned(),
            source,
        })
}
