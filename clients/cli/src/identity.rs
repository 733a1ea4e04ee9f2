//! `agentwire tenant trust|revoke`: the issuers a tenant trusts and the
//! principals it cut off (the limits table holds both; a running function
//! sees a trust change within `AGENTWIRE_TRUST_CACHE`, 10 s by default, and
//! a revocation at once).

use std::path::PathBuf;
use std::time::Duration;

use agentwire_aws::{ApiGatewayPusher, Deps};
use agentwire_core::auth::trust::{KeySource, Preset, TrustEntry, TrustOwner, encode_secret};
use agentwire_core::config::Config;
use agentwire_core::usecases::IdentityAdmin;

use crate::error::CliError;

#[derive(Debug, clap::Args)]
pub struct TrustArgs {
    /// The tenant (`*` with --tenant-claim: a deployment-level issuer).
    tenant: String,
    /// The issuer (`iss`) to trust.
    #[arg(long, required_unless_present_any = ["list", "remove"])]
    issuer: Option<String>,
    /// Where its public keys are (fetched over HTTPS, cached).
    #[arg(long, conflicts_with_all = ["jwks_file", "hs256_secret_file"])]
    jwks_url: Option<String>,
    /// Its public keys inline: a file holding a JWKS document.
    #[arg(long, conflicts_with = "hs256_secret_file")]
    jwks_file: Option<PathBuf>,
    /// An HS256 secret agentwire stores (at least 32 bytes): a key that can
    /// only sign tokens for this tenant.
    #[arg(long)]
    hs256_secret_file: Option<PathBuf>,
    /// The `kid` of the HS256 secret.
    #[arg(long, requires = "hs256_secret_file")]
    kid: Option<String>,
    /// An accepted `aud` (repeatable).
    #[arg(long = "audience")]
    audiences: Vec<String>,
    /// A channel pattern granted for joining, `{sub}` for the principal (repeatable).
    #[arg(long = "channels")]
    channels: Vec<String>,
    /// A channel pattern granted for publishing, `{sub}` for the principal (repeatable).
    #[arg(long = "publish")]
    publish: Vec<String>,
    /// The claim naming the principal (default `sub`).
    #[arg(long)]
    principal_claim: Option<String>,
    /// A claim holding {"channels":[..],"publish":[..],"admin":bool}.
    #[arg(long)]
    grants_claim: Option<String>,
    /// The longest token lifetime accepted, like 1h.
    #[arg(long, value_parser = humantime::parse_duration)]
    max_lifetime: Option<Duration>,
    /// supabase (aud `authenticated`, service_role refused) or cognito
    /// (token_use and client_id / aud checked against --client-id).
    #[arg(long, value_parser = ["supabase", "cognito"])]
    preset: Option<String>,
    /// A Cognito app client id (repeatable; with --preset cognito).
    #[arg(long = "client-id")]
    client_ids: Vec<String>,
    /// Accept Supabase service_role tokens (with --preset supabase).
    #[arg(long)]
    allow_service_role: bool,
    /// For a deployment-level issuer (tenant `*`): the claim that names the tenant.
    #[arg(long)]
    tenant_claim: Option<String>,
    /// List the tenant's trusted issuers instead.
    #[arg(long, conflicts_with = "remove")]
    list: bool,
    /// Remove the tenant's trust in this issuer instead.
    #[arg(long, value_name = "ISS")]
    remove: Option<String>,
    /// AWS endpoint override, e.g. http://127.0.0.1:4566 for the local stack.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    tenant: String,
    /// The principal whose tokens issued before now are refused.
    #[arg(long, required_unless_present = "list")]
    sub: Option<String>,
    /// List the tenant's revocations instead.
    #[arg(long)]
    list: bool,
    /// The API Gateway Management endpoint that closes live connections
    /// (the dev gateway's http://127.0.0.1:8080 locally).
    #[arg(long, env = "AGENTWIRE_CONNECTIONS_ENDPOINT")]
    connections_endpoint: Option<String>,
    /// AWS endpoint override, e.g. http://127.0.0.1:4566 for the local stack.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: Option<String>,
}

async fn deps(endpoint: Option<&str>) -> Result<Deps, CliError> {
    let config = Config::from_env()?;
    let sdk = crate::publish::sdk_config(endpoint).await;
    Ok(Deps::new(&sdk, config))
}

/// The owner named on the command line: a tenant, or `*`.
fn owner(tenant: &str) -> Result<Option<&str>, CliError> {
    if tenant == "*" {
        return Ok(None);
    }
    agentwire_protocol::limits::validate_tenant(tenant)?;
    Ok(Some(tenant))
}

pub async fn trust(a: TrustArgs) -> Result<(), CliError> {
    let tenant = owner(&a.tenant)?;
    let admin: IdentityAdmin = deps(a.endpoint.as_deref()).await?.identity_admin();
    if a.list {
        let entries = admin.issuers(tenant).await?;
        println!("{}", serde_json::to_string(&entries)?);
        return Ok(());
    }
    if let Some(iss) = &a.remove {
        let had = admin.remove_issuer(tenant, iss).await?;
        eprintln!(
            "{}: {}",
            a.tenant,
            if had {
                format!("no longer trusts {iss}")
            } else {
                format!("did not trust {iss}")
            }
        );
        return Ok(());
    }
    let entry = entry(&a, tenant)?;
    admin.trust(&entry).await?;
    eprintln!(
        "{}: trusts {} (running functions see it within AGENTWIRE_TRUST_CACHE, 10 s by default)",
        a.tenant, entry.issuer
    );
    println!("{}", serde_json::to_string(&entry.redacted())?);
    Ok(())
}

fn entry(a: &TrustArgs, tenant: Option<&str>) -> Result<TrustEntry, CliError> {
    let issuer = a.issuer.clone().unwrap_or_default();
    let keys = match (&a.jwks_url, &a.jwks_file, &a.hs256_secret_file) {
        (Some(url), _, _) => KeySource::Jwks { url: url.clone() },
        (_, Some(file), _) => KeySource::Inline {
            jwks: serde_json::from_slice(&std::fs::read(file)?).map_err(|e| {
                CliError::Usage(format!("{}: not a JWKS document: {e}", file.display()))
            })?,
        },
        (_, _, Some(file)) => {
            let secret = std::fs::read(file)?;
            let secret = secret.strip_suffix(b"\n").unwrap_or(&secret);
            KeySource::Hs256 {
                kid: a.kid.clone(),
                secret_b64: encode_secret(secret),
            }
        }
        _ => {
            return Err(CliError::Usage(
                "say where the issuer's keys are: --jwks-url, --jwks-file or --hs256-secret-file"
                    .into(),
            ));
        }
    };
    let owner = match (tenant, &a.tenant_claim) {
        (Some(t), None) => TrustOwner::Tenant(t.to_owned()),
        (None, Some(claim)) => TrustOwner::TenantClaim(claim.clone()),
        (Some(_), Some(_)) => {
            return Err(CliError::Usage(
                "--tenant-claim is for a deployment-level issuer (tenant `*`)".into(),
            ));
        }
        (None, None) => {
            return Err(CliError::Usage(
                "a deployment-level issuer (tenant `*`) needs --tenant-claim".into(),
            ));
        }
    };
    let preset = match a.preset.as_deref() {
        Some("supabase") => Some(Preset::Supabase {
            allow_service_role: a.allow_service_role,
        }),
        Some(_) => Some(Preset::Cognito {
            client_ids: a.client_ids.clone(),
        }),
        None => None,
    };
    Ok(TrustEntry {
        issuer,
        owner,
        keys,
        audiences: a.audiences.clone(),
        principal_claim: a.principal_claim.clone(),
        grants_claim: a.grants_claim.clone(),
        channels: a.channels.clone(),
        publish: a.publish.clone(),
        max_lifetime_s: a.max_lifetime.map(|d| d.as_secs()),
        preset,
    })
}

pub async fn revoke(a: RevokeArgs) -> Result<(), CliError> {
    agentwire_protocol::limits::validate_tenant(&a.tenant)?;
    let deps = deps(a.endpoint.as_deref()).await?;
    let admin = deps.identity_admin();
    if a.list {
        let list: Vec<serde_json::Value> = admin
            .revocations(&a.tenant)
            .await?
            .into_iter()
            .map(|r| serde_json::json!({"sub": r.sub, "at_ms": r.at_ms}))
            .collect();
        println!("{}", serde_json::to_string(&list)?);
        return Ok(());
    }
    let sub = a.sub.unwrap_or_default();
    let Some(endpoint) = a.connections_endpoint else {
        return Err(CliError::Usage(
            "give --connections-endpoint (or AGENTWIRE_CONNECTIONS_ENDPOINT): the revocation closes live connections through it".into(),
        ));
    };
    let closer = ApiGatewayPusher::new(&deps.sdk, &endpoint);
    let r = admin.revoke(&a.tenant, &sub, &closer).await?;
    eprintln!(
        "{}: tokens of {sub} issued before now are refused; {} live connection(s) closed{}",
        a.tenant,
        r.closed,
        if r.failed > 0 {
            format!(
                ", {} could not be closed now (they are refused at their next join, ack or refresh)",
                r.failed
            )
        } else {
            String::new()
        }
    );
    println!(
        "{}",
        serde_json::json!({"tenant": a.tenant, "sub": sub, "at_ms": r.at_ms, "closed": r.closed, "failed": r.failed})
    );
    Ok(())
}
