//! `agentwire webhooks set|get|rotate|rm`: a channel's webhook (or the
//! tenant default), as durable state; prints the configuration as JSON,
//! including the `whsec_` secret the receiver verifies with.

use std::sync::Arc;
use std::time::Duration;

use agentwire_core::adapters::DynamoWebhooks;
use agentwire_core::clock::SystemClock;
use agentwire_core::config::Config;
use agentwire_core::model::ChannelKey;
use agentwire_core::usecases::WebhookAdmin;
use agentwire_core::webhook::{WebhookConfig, WebhookMode, WebhookScope};

/// Which webhook.
#[derive(Debug, clap::Args)]
pub struct Target {
    #[arg(long)]
    tenant: String,
    /// The channel; without it, the tenant's default webhook.
    #[arg(long)]
    channel: Option<String>,
    /// AWS endpoint override, e.g. http://127.0.0.1:4566 for the local stack.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Set the URL and mode (a new URL gets a new secret).
    Set {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        url: String,
        /// fallback (only when nobody is connected), always, or off.
        #[arg(long, default_value = "fallback")]
        mode: WebhookMode,
        /// Remove it after this long (like 30d); default: never.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// Show it, with why it is not called if it is disabled or expired.
    Get {
        #[command(flatten)]
        target: Target,
    },
    /// Issue a new secret; the old one keeps signing for the grace period.
    Rotate {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        grace: Duration,
    },
    /// Remove it.
    Rm {
        #[command(flatten)]
        target: Target,
    },
}

async fn admin(target: &Target) -> Result<(WebhookAdmin, WebhookScope), String> {
    agentwire_protocol::limits::validate_tenant(&target.tenant).map_err(|e| e.message)?;
    let scope = match &target.channel {
        Some(ch) => {
            agentwire_protocol::limits::validate_channel(ch).map_err(|e| e.message)?;
            WebhookScope::Channel(ChannelKey::new(&target.tenant, ch))
        }
        None => WebhookScope::TenantDefault(target.tenant.clone()),
    };
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let sdk = crate::publish::sdk_config(target.endpoint.as_deref()).await;
    let store = DynamoWebhooks::new(aws_sdk_dynamodb::Client::new(&sdk), config.tables);
    Ok((
        WebhookAdmin::new(Arc::new(store), config.webhook_urls, Arc::new(SystemClock)),
        scope,
    ))
}

fn print(c: &WebhookConfig) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string_pretty(c).map_err(|e| e.to_string())?
    );
    Ok(())
}

pub async fn run(cmd: Command) -> Result<(), String> {
    match cmd {
        Command::Set {
            target,
            url,
            mode,
            expires_in,
        } => {
            let (a, scope) = admin(&target).await?;
            print(
                &a.set(&scope, &url, mode, expires_in)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        }
        Command::Get { target } => {
            let (a, scope) = admin(&target).await?;
            print(&a.get(&scope).await.map_err(|e| e.to_string())?)
        }
        Command::Rotate { target, grace } => {
            let (a, scope) = admin(&target).await?;
            print(&a.rotate(&scope, grace).await.map_err(|e| e.to_string())?)
        }
        Command::Rm { target } => {
            let (a, scope) = admin(&target).await?;
            a.remove(&scope).await.map_err(|e| e.to_string())?;
            eprintln!("agentwire: webhook removed");
            Ok(())
        }
    }
}
