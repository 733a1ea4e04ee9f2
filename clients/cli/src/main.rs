//! `agentwire`: mint tokens, publish events, tail channels, and the
//! operator's commands (channels, webhooks, tenants' limits).

mod channel;
mod error;
mod identity;
mod publish;
mod run;
mod stats;
mod tail;
mod tenant;
mod webhooks;

use std::process::ExitCode;
use std::time::Duration;

use agentwire_core::auth::TokenKey;
use agentwire_core::clock::{Clock, SystemClock};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "agentwire",
    version,
    about = "agentwire: real-time push gateway for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a signed token (HS256 JWT) for a principal.
    Token {
        #[arg(long)]
        tenant: String,
        /// The principal (`sub`).
        #[arg(long)]
        sub: String,
        /// Channel patterns the principal may join (comma-separated globs, e.g. 'agent-*').
        #[arg(long, value_delimiter = ',', default_value = "")]
        channels: Vec<String>,
        /// Channel patterns the principal may publish to.
        #[arg(long, value_delimiter = ',', default_value = "")]
        publish: Vec<String>,
        /// Lifetime, like 1h or 30m.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Grant the tenant's management (the `admin` claim).
        #[arg(long)]
        admin: bool,
        /// The `kid` of the signing key (one of AGENTWIRE_JWT_KEYS).
        #[arg(long)]
        kid: Option<String>,
        /// The signing key (the gateway's AGENTWIRE_JWT_SECRET).
        #[arg(
            long,
            env = "AGENTWIRE_JWT_SECRET",
            default_value = "agentwire-local-dev-secret-never-deploy-it",
            hide_env_values = true
        )]
        secret: String,
    },
    /// Put an event on the events queue.
    Publish(publish::Args),
    /// Run a command as an AG-UI run on a channel: RUN_STARTED, its
    /// stdout and stderr as output streams, progress, RUN_FINISHED or
    /// RUN_ERROR; exits with the command's status.
    Run(run::Args),
    /// Follow channels (reconnecting, resuming); events as JSON lines on stdout.
    Tail(tail::Args),
    /// Show a channel's log state; set or clear its own retention.
    Channel(channel::Args),
    /// Configure the webhook of a channel, or a tenant's default.
    #[command(subcommand)]
    Webhooks(webhooks::Command),
    /// Metrics as a table (connections, resumes, events/s, latency, the canary, errors): the dev gateway's, or a deployed stack's from CloudWatch (`--stack`).
    Stats(stats::Args),
    /// A tenant's quotas and rate limits.
    #[command(subcommand)]
    Tenant(tenant::Command),
}

#[tokio::main]
async fn main() -> ExitCode {
    agentwire_aws::telemetry::init_text();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => {
            return run::run(args).await.unwrap_or_else(|e| {
                eprintln!("{}", error::report(&e));
                ExitCode::FAILURE
            });
        }
        Command::Token {
            tenant,
            sub,
            channels,
            publish,
            ttl,
            admin,
            kid,
            secret,
        } => token(
            &tenant,
            &sub,
            (channels, publish, admin),
            ttl,
            kid.as_deref(),
            &secret,
        ),
        Command::Publish(args) => publish::run(args).await,
        Command::Tail(args) => tail::run(args).await,
        Command::Channel(args) => channel::run(args).await,
        Command::Webhooks(cmd) => webhooks::run(cmd).await,
        Command::Tenant(cmd) => tenant::run(cmd).await,
        Command::Stats(args) => stats::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", error::report(&e));
            ExitCode::FAILURE
        }
    }
}

fn token(
    tenant: &str,
    sub: &str,
    (channels, publish, admin): (Vec<String>, Vec<String>, bool),
    ttl: Duration,
    kid: Option<&str>,
    secret: &str,
) -> Result<(), error::CliError> {
    agentwire_protocol::limits::validate_tenant(tenant)?;
    if sub.is_empty() {
        return Err("--sub must not be empty".into());
    }
    let nonempty = |v: Vec<String>| v.into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>();
    let (channels, publish) = (nonempty(channels), nonempty(publish));
    if channels.is_empty() && publish.is_empty() && !admin {
        eprintln!("agentwire: note: the token grants no channel (--channels, --publish)");
    }
    agentwire_core::auth::Grants::compile(&channels)?;
    agentwire_core::auth::Grants::compile(&publish)?;
    let mut key = TokenKey::hs256(secret.as_bytes());
    if let Some(kid) = kid {
        key = key.with_kid(kid);
    }
    let mut claims = TokenKey::claims(tenant, sub, channels, publish, SystemClock.epoch_s(), ttl);
    claims.admin = admin;
    println!("{}", key.sign(&claims)?);
    Ok(())
}
