//! `agentwire channel`: a channel's head, epoch and retention.

use std::time::Duration;

use agentwire_core::adapters::DynamoLog;
use agentwire_core::config::Config;
use agentwire_core::model::ChannelKey;
use agentwire_core::ports::ChannelLog;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    channel: String,
    /// Keep this channel's events this long (like 24h), instead of the deployment's retention.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "default_retention")]
    retention: Option<Duration>,
    /// Go back to the deployment's retention.
    #[arg(long)]
    default_retention: bool,
    /// AWS endpoint override, e.g. http://127.0.0.1:4566 for the local stack.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: Option<String>,
}

pub async fn run(args: Args) -> Result<(), String> {
    agentwire_protocol::limits::validate_tenant(&args.tenant).map_err(|e| e.message)?;
    agentwire_protocol::limits::validate_channel(&args.channel).map_err(|e| e.message)?;
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let sdk = crate::publish::sdk_config(args.endpoint.as_deref()).await;
    let log = DynamoLog::new(aws_sdk_dynamodb::Client::new(&sdk), config.tables);
    let key = ChannelKey::new(&args.tenant, &args.channel);
    let state = if args.retention.is_some() || args.default_retention {
        log.set_retention(&key, args.retention).await
    } else {
        log.ensure_channel(&key).await
    }
    .map_err(|e| e.to_string())?;
    let out = serde_json::json!({
        "tenant": args.tenant,
        "channel": args.channel,
        "epoch": state.epoch,
        "head": state.head,
        "retention_s": state.retention_s.unwrap_or(config.retention.as_secs()),
        "retention_is_channel_own": state.retention_s.is_some(),
    });
    println!("{out}");
    Ok(())
}
