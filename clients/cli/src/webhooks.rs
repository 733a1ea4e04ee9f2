//! `agentwire webhooks set|get|rotate|rm`: a channel's webhook (or the
//! tenant default), as durable state; prints the configuration as JSON,
//! including the `whsec_` secret the receiver verifies with.

use std::sync::Arc;
use std::time::Duration;

use agentwire_aws::{DynamoWebhooks, SqsWebhookJobs};
use agentwire_core::clock::SystemClock;
use agentwire_core::config::Config;
use agentwire_core::model::ChannelKey;
use agentwire_core::usecases::{DeadWebhooks, WebhookAdmin};

use crate::error::CliError;
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
    /// What could not be delivered, and sending it back.
    #[command(subcommand)]
    Dlq(Dlq),
}

/// The webhook queues.
#[derive(Debug, clap::Args)]
pub struct Queues {
    /// The webhook job queue: a name or a URL.
    #[arg(
        long,
        env = "AGENTWIRE_WEBHOOK_QUEUE",
        default_value = "agentwire-webhooks"
    )]
    queue: String,
    /// The webhook dead-letter queue: a name or a URL.
    #[arg(
        long,
        env = "AGENTWIRE_WEBHOOK_DLQ",
        default_value = "agentwire-webhooks-dlq"
    )]
    dlq: String,
    /// AWS endpoint override, e.g. http://127.0.0.1:4566 for the local stack.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Dlq {
    /// One JSON line per failed job: event id, channel, reason, attempts, last status.
    List {
        #[command(flatten)]
        queues: Queues,
        /// Most jobs to show.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Send failed jobs back for delivery with a fresh schedule (all, or one event id).
    Redrive {
        #[command(flatten)]
        queues: Queues,
        /// Only the job of this event id.
        #[arg(long)]
        id: Option<String>,
        /// Most jobs to look at.
        #[arg(long, default_value_t = 1000)]
        max: usize,
    },
}

async fn dead_webhooks(q: &Queues) -> Result<DeadWebhooks, CliError> {
    let sdk = crate::publish::sdk_config(q.endpoint.as_deref()).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = crate::publish::queue_url(&sqs, &q.queue).await?;
    let dlq = crate::publish::queue_url(&sqs, &q.dlq).await?;
    let jobs = Arc::new(SqsWebhookJobs::new(sqs, queue, dlq));
    Ok(DeadWebhooks::new(jobs.clone(), jobs))
}

async fn dlq(cmd: Dlq) -> Result<(), CliError> {
    // Jobs looked at are hidden this long, then reappear unless redriven.
    let hold = Duration::from_secs(30);
    match cmd {
        Dlq::List { queues, max } => {
            let dead = dead_webhooks(&queues).await?.list(max, hold).await?;
            for d in &dead {
                println!("{}", serde_json::to_string(d)?);
            }
            eprintln!("agentwire: {} failed webhook job(s)", dead.len());
            Ok(())
        }
        Dlq::Redrive { queues, id, max } => {
            let jobs = dead_webhooks(&queues).await?;
            let dead = jobs.list(max, hold).await?;
            let mut sent = 0;
            for d in dead
                .iter()
                .filter(|d| id.as_ref().is_none_or(|i| *i == d.event_id))
            {
                jobs.redrive(d).await?;
                sent += 1;
            }
            if sent == 0 && id.is_some() {
                return Err(CliError::Usage(format!(
                    "no failed job for event {:?}",
                    id.unwrap_or_default()
                )));
            }
            eprintln!("agentwire: {sent} job(s) sent back for delivery");
            Ok(())
        }
    }
}

async fn admin(target: &Target) -> Result<(WebhookAdmin, WebhookScope), CliError> {
    agentwire_protocol::limits::validate_tenant(&target.tenant)?;
    let scope = match &target.channel {
        Some(ch) => {
            agentwire_protocol::limits::validate_channel(ch)?;
            WebhookScope::Channel(ChannelKey::new(&target.tenant, ch))
        }
        None => WebhookScope::TenantDefault(target.tenant.clone()),
    };
    let config = Config::from_env()?;
    let sdk = crate::publish::sdk_config(target.endpoint.as_deref()).await;
    let store = DynamoWebhooks::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        config.tables,
        Arc::new(SystemClock),
    )
    .with_secrets();
    Ok((
        WebhookAdmin::new(Arc::new(store), config.webhook_urls, Arc::new(SystemClock)),
        scope,
    ))
}

fn print(c: &WebhookConfig) -> Result<(), CliError> {
    println!("{}", serde_json::to_string_pretty(c)?);
    Ok(())
}

pub async fn run(cmd: Command) -> Result<(), CliError> {
    match cmd {
        Command::Set {
            target,
            url,
            mode,
            expires_in,
        } => {
            let (a, scope) = admin(&target).await?;
            print(&a.set(&scope, &url, mode, expires_in).await?)
        }
        Command::Get { target } => {
            let (a, scope) = admin(&target).await?;
            print(&a.get(&scope).await?)
        }
        Command::Rotate { target, grace } => {
            let (a, scope) = admin(&target).await?;
            print(&a.rotate(&scope, grace).await?)
        }
        Command::Dlq(cmd) => dlq(cmd).await,
        Command::Rm { target } => {
            let (a, scope) = admin(&target).await?;
            a.remove(&scope).await?;
            eprintln!("agentwire: webhook removed");
            Ok(())
        }
    }
}
