//! The deployment's token keys from AWS Secrets Manager, read once at cold
//! start (`AGENTWIRE_JWT_SECRET_ID`, the secret's ARN or name), never from
//! a plain environment variable in a deployment.
//!
//! The secret holds one key (its text, as the template generates it) or
//! several with their `kid`s, the first signing:
//! `{"keys": [{"kid": "2026-12", "secret": "…"}, {"kid": "2026-11", "secret": "…"}]}`
//! (a plain JSON list of the same objects works too), so a key rotates
//! without a flag day: add the new key first, move it to the front, drop
//! the old one once its tokens have expired.

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use serde::Deserialize;

use agentwire_core::config::{Config, ConfigError, MIN_JWT_SECRET_BYTES};

#[derive(Deserialize)]
struct Entry {
    kid: String,
    secret: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Keys {
    Wrapped { keys: Vec<Entry> },
    List(Vec<Entry>),
}

/// Reads the keys the secret `config.jwt_secret_id` holds into `config`
/// (several: `jwt_keys`; one: `jwt_secret`). Nothing to do without one.
/// The error names the secret and its size, never its text.
pub async fn resolve_jwt_keys(sdk: &SdkConfig, config: &mut Config) -> Result<(), ConfigError> {
    let Some(id) = config.jwt_secret_id.clone() else {
        return Ok(());
    };
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    let out = client
        .get_secret_value()
        .secret_id(&id)
        .send()
        .await
        .map_err(|e| ConfigError::Invalid {
            name: "AGENTWIRE_JWT_SECRET_ID",
            value: id.clone(),
            reason: format!("cannot read the secret: {}", DisplayErrorContext(&e)),
        })?;
    let text = out.secret_string().unwrap_or_default().trim().to_owned();
    let invalid = |reason: String| ConfigError::Invalid {
        name: "AGENTWIRE_JWT_SECRET_ID",
        value: format!("{id} (<{} bytes>)", text.len()),
        reason,
    };
    if text.starts_with('{') || text.starts_with('[') {
        let keys = match serde_json::from_str::<Keys>(&text) {
            Ok(Keys::Wrapped { keys }) | Ok(Keys::List(keys)) => keys,
            Err(_) => {
                return Err(invalid(
                    "a JSON secret must be {\"keys\": [{\"kid\", \"secret\"}, …]}".into(),
                ));
            }
        };
        if keys.is_empty() {
            return Err(invalid("the secret lists no key".into()));
        }
        for k in &keys {
            if k.secret.len() < MIN_JWT_SECRET_BYTES {
                return Err(invalid(format!(
                    "key {:?} is shorter than {MIN_JWT_SECRET_BYTES} bytes",
                    k.kid
                )));
            }
        }
        config.jwt_keys = keys
            .into_iter()
            .map(|k| (k.kid, k.secret.into_bytes()))
            .collect();
    } else {
        config.jwt_secret = Some(text.into_bytes());
    }
    Ok(())
}
