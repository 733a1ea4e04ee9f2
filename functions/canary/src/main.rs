use agentwire_fn_canary::Canary;
use lambda_runtime::{Error, LambdaEvent};

/// The canary's settings: `AGENTWIRE_CANARY_WS_URL` and
/// `AGENTWIRE_CANARY_HTTP_URL` (the stage's URLs), `AGENTWIRE_CANARY_TENANT`
/// (default `agentwire-canary`), and the deployment's token keys as every
/// function reads them (`AGENTWIRE_JWT_SECRET_ID`).
async fn canary() -> Result<Canary, Error> {
    let var = |name: &'static str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{name} is not set"))
    };
    let mut config = agentwire_core::config::Config::from_env()?;
    let sdk = agentwire_aws::deps::sdk_config_from_env().await;
    agentwire_aws::secrets::resolve_jwt_keys(&sdk, &mut config).await?;
    let key = config
        .keyring()?
        .signer()
        .cloned()
        .ok_or("the deployment has no token key to sign the canary's tokens with")?;
    let tenant = var("AGENTWIRE_CANARY_TENANT").unwrap_or_else(|_| "agentwire-canary".to_owned());
    Ok(Canary::new(
        var("AGENTWIRE_CANARY_WS_URL")?,
        var("AGENTWIRE_CANARY_HTTP_URL")?,
        key,
        tenant,
    ))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    agentwire_aws::telemetry::init_json();
    let metrics = agentwire_aws::telemetry::emf("canary")?;
    let canary = canary().await?;
    agentwire_aws::telemetry::run_with_metrics(metrics, |_: LambdaEvent<serde_json::Value>| {
        let canary = canary.clone();
        async move {
            // A failed probe is a metric (`canary_runs` by the step that
            // failed) and a log line (both `probe`'s), not a failed
            // invocation: the CanaryAlarm watches the share that passed.
            let _ = canary.probe().await;
            Ok::<_, Error>(())
        }
    })
    .await
}
