//! `agentwire tenant`: a tenant's quotas and rate limits (set field by
//! field over the deployment's defaults, shown with what applies, cleared).

use agentwire_aws::Deps;
use agentwire_core::config::Config;
use agentwire_core::limits::TenantLimits;
use agentwire_core::usecases::TenantView;

use crate::error::CliError;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Set some of a tenant's limits; the fields not given keep their values.
    Set(SetArgs),
    /// Show a tenant's own limits, what applies, and its counted connections.
    Get(TenantArg),
    /// Remove a tenant's own limits (the deployment's defaults apply) and
    /// reset its connection count.
    Clear(TenantArg),
    /// Trust an identity provider's tokens for a tenant (or list, remove).
    Trust(Box<crate::identity::TrustArgs>),
    /// Refuse every token of a principal issued before now and close its
    /// live connections (or list the revocations).
    Revoke(crate::identity::RevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct TenantArg {
    tenant: String,
    /// AWS endpoint override, e.g. http://127.0.0.1:4566 for the local stack.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    #[command(flatten)]
    tenant: TenantArg,
    /// Events a second the tenant may publish over HTTP (0: no limit).
    #[arg(long)]
    publish_rate: Option<u32>,
    /// Events it may publish at once (default: the rate).
    #[arg(long)]
    publish_burst: Option<u32>,
    /// Events a second one channel of the tenant may take (0: no limit).
    #[arg(long)]
    channel_publish_rate: Option<u32>,
    /// Events one channel may take at once (default: its rate).
    #[arg(long)]
    channel_publish_burst: Option<u32>,
    /// Connections the tenant may hold open at once (0 refuses every new one).
    #[arg(long)]
    max_connections: Option<u32>,
    /// Channels one connection may have joined.
    #[arg(long)]
    max_channels: Option<u32>,
    /// Joins and acks a second one connection may send (0: no limit).
    #[arg(long)]
    connection_action_rate: Option<u32>,
    /// Joins and acks one connection may send at once (default: its rate).
    #[arg(long)]
    connection_action_burst: Option<u32>,
    /// HTTP reads a second of the whole tenant: history pages, presence,
    /// channel state (0: no limit).
    #[arg(long)]
    read_rate: Option<u32>,
    /// HTTP reads the tenant may make at once (default: the rate).
    #[arg(long)]
    read_burst: Option<u32>,
    /// Count and log what would be refused, refuse nothing.
    #[arg(long)]
    dry_run: Option<bool>,
}

pub async fn run(cmd: Command) -> Result<(), CliError> {
    let (tenant, view) = match cmd {
        Command::Trust(a) => return crate::identity::trust(*a).await,
        Command::Revoke(a) => return crate::identity::revoke(a).await,
        Command::Set(a) => {
            let change = TenantLimits {
                publish_rate: a.publish_rate,
                publish_burst: a.publish_burst,
                channel_publish_rate: a.channel_publish_rate,
                channel_publish_burst: a.channel_publish_burst,
                max_connections: a.max_connections,
                max_channels: a.max_channels,
                connection_action_rate: a.connection_action_rate,
                connection_action_burst: a.connection_action_burst,
                read_rate: a.read_rate,
                read_burst: a.read_burst,
                dry_run: a.dry_run,
            };
            if change.is_empty() {
                return Err(CliError::Usage(
                    "give at least one limit to set (see `agentwire tenant set --help`)".into(),
                ));
            }
            let admin = admin(&a.tenant).await?;
            (
                a.tenant.tenant.clone(),
                admin.set(&a.tenant.tenant, &change).await?,
            )
        }
        Command::Get(t) => {
            let admin = admin(&t).await?;
            (t.tenant.clone(), admin.get(&t.tenant).await?)
        }
        Command::Clear(t) => {
            let admin = admin(&t).await?;
            let had = admin.clear(&t.tenant).await?;
            eprintln!(
                "{}: {}; connection count reset",
                t.tenant,
                if had {
                    "own limits removed"
                } else {
                    "had no limits of its own"
                }
            );
            (t.tenant.clone(), admin.get(&t.tenant).await?)
        }
    };
    println!("{}", view_json(&tenant, &view)?);
    Ok(())
}

async fn admin(t: &TenantArg) -> Result<agentwire_core::usecases::TenantAdmin, CliError> {
    agentwire_protocol::limits::validate_tenant(&t.tenant)?;
    let config = Config::from_env()?;
    let sdk = crate::publish::sdk_config(t.endpoint.as_deref()).await;
    Ok(Deps::new(&sdk, config).tenant_admin())
}

fn view_json(tenant: &str, v: &TenantView) -> Result<String, CliError> {
    Ok(serde_json::to_string(&serde_json::json!({
        "tenant": tenant,
        "own": v.own,
        "effective": v.effective,
        "connections": v.connections,
    }))?)
}
