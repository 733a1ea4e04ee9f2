//! What a command can fail with, typed; `main` prints it with its causes.

use agentwire_core::auth::{AuthError, GrantError};
use agentwire_core::config::ConfigError;
use agentwire_core::ports::StoreError;
use agentwire_core::usecases::{PublishError, RedriveError, WebhookAdminError};
use agentwire_protocol::ProtocolError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Arguments that do not fit together or do not parse.
    #[error("{0}")]
    Usage(String),
    /// A tenant, channel or event the protocol does not allow.
    #[error(transparent)]
    Invalid(#[from] ProtocolError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Webhook(#[from] WebhookAdminError),
    #[error(transparent)]
    Redrive(#[from] RedriveError),
    #[error(transparent)]
    Retention(#[from] agentwire_core::usecases::RetentionError),
    #[error(transparent)]
    Identity(#[from] agentwire_core::usecases::IdentityError),
    #[error("cannot read a file: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Client(#[from] agentwire_client::ClientError),
    #[error("cannot encode the output: {0}")]
    Json(#[from] serde_json::Error),
    /// The HTTP API could not be reached.
    #[error("cannot reach {endpoint}")]
    Http {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP API refused the event.
    #[error("HTTP {status}: {message}")]
    Refused { status: u16, message: String },
    /// A queue given by name was not found.
    #[error("cannot find queue {queue:?}")]
    Queue {
        queue: String,
        #[source]
        source: StoreError,
    },
}

impl From<&str> for CliError {
    fn from(s: &str) -> Self {
        CliError::Usage(s.to_owned())
    }
}

/// `error`, then each cause on its own line.
pub fn report(e: &CliError) -> String {
    let mut out = format!("agentwire: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(&format!("\n  caused by: {s}"));
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_every_cause_once() {
        let e = CliError::Queue {
            queue: "agentwire-events.fifo".into(),
            source: StoreError::failed("find queue", "AWS.SimpleQueueService.NonExistentQueue"),
        };
        assert_eq!(
            report(&e),
            "agentwire: cannot find queue \"agentwire-events.fifo\"\n  caused by: find queue: AWS.SimpleQueueService.NonExistentQueue"
        );
        let usage = CliError::from("give --tenant (SQS) or --url (HTTP)");
        assert_eq!(
            report(&usage),
            "agentwire: give --tenant (SQS) or --url (HTTP)"
        );
    }
}
