//! `agentwire channel`: a channel's head, epoch and retention.

use std::time::Duration;

use std::sync::Arc;

use agentwire_aws::DynamoLog;
use agentwire_core::clock::SystemClock;
use agentwire_core::config::Config;
use agentwire_core::model::ChannelKey;
use agentwire_core::ports::ChannelLog;
use agentwire_core::usecases::ChannelAdmin;

use crate::error::CliError;

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

pub async fn run(args: Args) -> Result<(), CliError> {
    agentwire_protocol::limits::validate_tenant(&args.tenant)?;
    agentwire_protocol::limits::validate_channel(&args.channel)?;
    let config = Config::from_env()?;
    let sdk = crate::publish::sdk_config(args.endpoint.as_deref()).await;
    let log = Arc::new(DynamoLog::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        config.tables.clone(),
        Arc::new(SystemClock),
    ));
    let key = ChannelKey::new(&args.tenant, &args.channel);
    let state = if args.retention.is_some() || args.default_retention {
        ChannelAdmin::new(log, config.min_retention)
            .set_retention(&key, args.retention)
            .await?
    } else {
        log.ensure_channel(&key).await?
    };
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
