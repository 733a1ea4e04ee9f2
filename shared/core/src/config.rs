//! Settings, read from the environment once per cold start.

use std::time::Duration;

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} = {value:?}: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// The shortest retention by default: above the events queue's redelivery
/// window (its visibility timeout, 60 s, times its `maxReceiveCount`, 100:
/// 100 minutes), within which SQS may hand a message over again. An event's
/// dedup record lives as long as the event, so a shorter retention would
/// let a redelivered message commit twice.
pub const MIN_RETENTION: Duration = Duration::from_secs(2 * 3600);

/// Why retention has a floor, for the errors that refuse one below it.
pub const RETENTION_FLOOR_WHY: &str = "an event's dedup record lives as long as the event, and the events queue may redeliver a message for up to 100 minutes (visibility 60 s x maxReceiveCount 100), which would then commit twice";

/// The shortest HS256 token key accepted (the SHA-256 output size).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// DynamoDB table names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub connections: String,
    pub subscriptions: String,
    pub channels: String,
    pub events: String,
    pub cursors: String,
    pub limits: String,
}

impl Default for Tables {
    fn default() -> Self {
        Self {
            connections: "agentwire-connections".into(),
            subscriptions: "agentwire-subscriptions".into(),
            channels: "agentwire-channels".into(),
            events: "agentwire-events".into(),
            cursors: "agentwire-cursors".into(),
            limits: "agentwire-limits".into(),
        }
    }
}

/// Everything the functions need to know besides the AWS SDK's own settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub tables: Tables,
    /// The FIFO events queue (publishers and the dead-letter path use it).
    pub events_queue_url: Option<String>,
    /// Where the dispatcher records envelopes it can never commit.
    pub events_dlq_url: Option<String>,
    /// The API Gateway Management endpoint (`https://{api}.execute-api.{region}.amazonaws.com/{stage}`).
    pub connections_endpoint: Option<String>,
    /// HS256 key for tokens (`AGENTWIRE_JWT_SECRET`).
    pub jwt_secret: Option<Vec<u8>>,
    /// More HS256 keys, each with its `kid` (`AGENTWIRE_JWT_KEYS`, JSON
    /// `[{"kid": "...", "secret": "..."}]`; the first signs): a key rotates
    /// without a flag day.
    pub jwt_keys: Vec<(String, Vec<u8>)>,
    /// The Secrets Manager secret holding the keys
    /// (`AGENTWIRE_JWT_SECRET_ID`), read at cold start.
    pub jwt_secret_id: Option<String>,
    /// How long an instance keeps an issuer's trust entry
    /// (`AGENTWIRE_TRUST_CACHE`).
    pub trust_cache: Duration,
    /// Per-request timeout of a JWKS fetch (`AGENTWIRE_JWKS_TIMEOUT`).
    pub jwks_timeout: Duration,
    /// How long events stay replayable.
    pub retention: Duration,
    /// The shortest retention accepted, for the deployment and for a
    /// channel (`AGENTWIRE_MIN_RETENTION`, default [`MIN_RETENTION`]).
    pub min_retention: Duration,
    /// Longest a connection lives (API Gateway closes it after 2 h).
    pub max_connection: Duration,
    /// Posts to live connections in flight at once, per dispatcher invocation.
    pub fanout_concurrency: usize,
    /// Most events one join request replays (`AGENTWIRE_REPLAY_MAX_EVENTS`).
    pub replay_max_events: usize,
    /// Most bytes one join request replays (`AGENTWIRE_REPLAY_MAX_BYTES`).
    pub replay_max_bytes: usize,
    /// Seconds between pings a client should send (announced in `welcome`).
    pub heartbeat_s: u64,
    /// Which webhook URLs may be called.
    pub webhook_urls: crate::webhook::UrlPolicy,
    /// The webhook job queue (a standard queue); without it, no webhook is called.
    pub webhook_queue_url: Option<String>,
    /// Where undeliverable webhook jobs are kept.
    pub webhook_dlq_url: Option<String>,
    /// Delays before each webhook attempt.
    pub webhook_schedule: crate::webhook::RetrySchedule,
    /// Per-request timeout of a webhook call.
    pub webhook_timeout: Duration,
    /// How long a receiver that timed out is held, its other jobs not sent
    /// (`AGENTWIRE_WEBHOOK_HOLD`, 30 s).
    pub webhook_hold: Duration,
    /// The fan-out queue (a standard queue); without it every channel is
    /// fanned out inline by the dispatcher.
    pub fanout_queue_url: Option<String>,
    /// When fan-out is sharded (`AGENTWIRE_FANOUT_THRESHOLD`,
    /// `AGENTWIRE_FANOUT_PER_JOB`).
    pub fanout: crate::usecases::FanoutPolicy,
    /// Every tenant's limits unless its own say otherwise
    /// (`AGENTWIRE_DEFAULT_LIMITS`, JSON; empty: unlimited).
    pub default_limits: crate::limits::TenantLimits,
    /// How long an instance keeps a tenant's limits (`AGENTWIRE_LIMITS_CACHE`).
    pub limits_cache: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tables: Tables::default(),
            events_queue_url: None,
            events_dlq_url: None,
            connections_endpoint: None,
            jwt_secret: None,
            jwt_keys: Vec::new(),
            jwt_secret_id: None,
            trust_cache: Duration::from_secs(10),
            jwks_timeout: Duration::from_secs(5),
            retention: Duration::from_secs(72 * 3600),
            min_retention: MIN_RETENTION,
            max_connection: Duration::from_secs(2 * 3600),
            fanout_concurrency: 64,
            replay_max_events: 2_000,
            replay_max_bytes: 2 * 1024 * 1024,
            heartbeat_s: 300,
            webhook_urls: crate::webhook::UrlPolicy::default(),
            webhook_queue_url: None,
            webhook_dlq_url: None,
            webhook_schedule: crate::webhook::RetrySchedule::default(),
            webhook_timeout: Duration::from_secs(15),
            webhook_hold: Duration::from_secs(30),
            fanout_queue_url: None,
            fanout: crate::usecases::FanoutPolicy::default(),
            default_limits: Default::default(),
            limits_cache: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Reads `AGENTWIRE_*` variables; unset ones keep their defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`Config::from_env`], from any lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        let table = |name: &str, default: String| get(name).unwrap_or(default);
        c.tables = Tables {
            connections: table("AGENTWIRE_CONNECTIONS_TABLE", c.tables.connections),
            subscriptions: table("AGENTWIRE_SUBSCRIPTIONS_TABLE", c.tables.subscriptions),
            channels: table("AGENTWIRE_CHANNELS_TABLE", c.tables.channels),
            events: table("AGENTWIRE_EVENTS_TABLE", c.tables.events),
            cursors: table("AGENTWIRE_CURSORS_TABLE", c.tables.cursors),
            limits: table("AGENTWIRE_LIMITS_TABLE", c.tables.limits),
        };
        if let Some(v) = get("AGENTWIRE_DEFAULT_LIMITS") {
            c.default_limits = serde_json::from_str(&v).map_err(|e| ConfigError::Invalid {
                name: "AGENTWIRE_DEFAULT_LIMITS",
                value: v.clone(),
                reason: format!("not a limits object: {e}"),
            })?;
        }
        if let Some(v) = get("AGENTWIRE_LIMITS_CACHE") {
            c.limits_cache = duration("AGENTWIRE_LIMITS_CACHE", &v)?;
        }
        c.events_queue_url = get("AGENTWIRE_EVENTS_QUEUE_URL");
        c.events_dlq_url = get("AGENTWIRE_EVENTS_DLQ_URL");
        c.connections_endpoint = get("AGENTWIRE_CONNECTIONS_ENDPOINT");
        c.jwt_secret = get("AGENTWIRE_JWT_SECRET").map(String::into_bytes);
        c.jwt_secret_id = get("AGENTWIRE_JWT_SECRET_ID").filter(|v| !v.is_empty());
        if let Some(v) = get("AGENTWIRE_JWT_KEYS") {
            c.jwt_keys = jwt_keys(&v)?;
        }
        if let Some(v) = get("AGENTWIRE_TRUST_CACHE") {
            c.trust_cache = duration("AGENTWIRE_TRUST_CACHE", &v)?;
        }
        if let Some(v) = get("AGENTWIRE_JWKS_TIMEOUT") {
            c.jwks_timeout = duration("AGENTWIRE_JWKS_TIMEOUT", &v)?;
        }
        if let Some(v) = get("AGENTWIRE_MIN_RETENTION") {
            c.min_retention = duration("AGENTWIRE_MIN_RETENTION", &v)?;
        }
        if let Some(v) = get("AGENTWIRE_RETENTION") {
            c.retention = duration("AGENTWIRE_RETENTION", &v)?;
            if c.retention < c.min_retention {
                return Err(ConfigError::Invalid {
                    name: "AGENTWIRE_RETENTION",
                    value: v,
                    reason: format!(
                        "shorter than the floor of {} (AGENTWIRE_MIN_RETENTION): {RETENTION_FLOOR_WHY}",
                        humantime::format_duration(c.min_retention)
                    ),
                });
            }
        }
        if let Some(v) = get("AGENTWIRE_MAX_CONNECTION") {
            c.max_connection = duration("AGENTWIRE_MAX_CONNECTION", &v)?;
        }
        if let Some(v) = get("AGENTWIRE_FANOUT_CONCURRENCY") {
            c.fanout_concurrency = number("AGENTWIRE_FANOUT_CONCURRENCY", &v)?;
        }
        if let Some(v) = get("AGENTWIRE_REPLAY_MAX_EVENTS") {
            c.replay_max_events = number("AGENTWIRE_REPLAY_MAX_EVENTS", &v)?;
        }
        if let Some(v) = get("AGENTWIRE_REPLAY_MAX_BYTES") {
            c.replay_max_bytes = number("AGENTWIRE_REPLAY_MAX_BYTES", &v)?;
        }
        if let Some(v) = get("AGENTWIRE_HEARTBEAT_S") {
            c.heartbeat_s = number("AGENTWIRE_HEARTBEAT_S", &v)?;
        }
        if let Some(v) = get("AGENTWIRE_WEBHOOK_ALLOW_INSECURE") {
            c.webhook_urls.allow_insecure_loopback = match v.trim() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" | "" => false,
                other => {
                    return Err(ConfigError::Invalid {
                        name: "AGENTWIRE_WEBHOOK_ALLOW_INSECURE",
                        value: other.to_owned(),
                        reason: "use true or false".into(),
                    });
                }
            };
        }
        c.fanout_queue_url = get("AGENTWIRE_FANOUT_QUEUE_URL").filter(|u| !u.is_empty());
        if let Some(v) = get("AGENTWIRE_FANOUT_THRESHOLD") {
            c.fanout.threshold = positive("AGENTWIRE_FANOUT_THRESHOLD", &v)?;
        }
        if let Some(v) = get("AGENTWIRE_FANOUT_PER_JOB") {
            c.fanout.per_job = positive("AGENTWIRE_FANOUT_PER_JOB", &v)?;
        }
        c.webhook_queue_url = get("AGENTWIRE_WEBHOOK_QUEUE_URL");
        c.webhook_dlq_url = get("AGENTWIRE_WEBHOOK_DLQ_URL");
        if let Some(v) = get("AGENTWIRE_WEBHOOK_SCHEDULE") {
            let delays = v
                .split(',')
                .map(|d| duration("AGENTWIRE_WEBHOOK_SCHEDULE", d.trim()))
                .collect::<Result<Vec<_>, _>>()?;
            if delays.is_empty() {
                return Err(ConfigError::Invalid {
                    name: "AGENTWIRE_WEBHOOK_SCHEDULE",
                    value: v,
                    reason: "give at least one delay".into(),
                });
            }
            c.webhook_schedule = crate::webhook::RetrySchedule::new(delays);
        }
        if let Some(v) = get("AGENTWIRE_WEBHOOK_TIMEOUT") {
            c.webhook_timeout = duration("AGENTWIRE_WEBHOOK_TIMEOUT", &v)?;
        }
        if let Some(v) = get("AGENTWIRE_WEBHOOK_HOLD") {
            c.webhook_hold = duration("AGENTWIRE_WEBHOOK_HOLD", &v)?;
        }
        if let Some(v) = get("AGENTWIRE_WEBHOOK_ALLOW_HOSTS") {
            c.webhook_urls.allow_hosts = v
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect();
        }
        Ok(c)
    }

    /// The token key, or the error naming the variable to set.
    /// The token key: at least [`MIN_JWT_SECRET_BYTES`] bytes (HS256 keys
    /// shorter than the hash are refused at start-up).
    pub fn require_jwt_secret(&self) -> Result<&[u8], ConfigError> {
        match &self.jwt_secret {
            Some(s) if s.len() >= MIN_JWT_SECRET_BYTES => Ok(s),
            Some(s) if !s.is_empty() => Err(ConfigError::Invalid {
                name: "AGENTWIRE_JWT_SECRET",
                // Never the key itself.
                value: format!("<{} bytes>", s.len()),
                reason: format!("the key must be at least {MIN_JWT_SECRET_BYTES} bytes"),
            }),
            _ => Err(ConfigError::Missing("AGENTWIRE_JWT_SECRET")),
        }
    }

    /// The deployment's token keys: those of `AGENTWIRE_JWT_KEYS` (the
    /// first signs), then `AGENTWIRE_JWT_SECRET` (without `kid`); each at
    /// least [`MIN_JWT_SECRET_BYTES`].
    pub fn keyring(&self) -> Result<crate::auth::Keyring, ConfigError> {
        let mut keys: Vec<crate::auth::TokenKey> = self
            .jwt_keys
            .iter()
            .map(|(kid, secret)| crate::auth::TokenKey::hs256(secret).with_kid(kid))
            .collect();
        if self.jwt_secret.is_some() || keys.is_empty() {
            keys.push(crate::auth::TokenKey::hs256(self.require_jwt_secret()?));
        }
        Ok(crate::auth::Keyring::new(keys))
    }

    pub fn require_connections_endpoint(&self) -> Result<&str, ConfigError> {
        self.connections_endpoint
            .as_deref()
            .ok_or(ConfigError::Missing("AGENTWIRE_CONNECTIONS_ENDPOINT"))
    }

    pub fn require_events_queue_url(&self) -> Result<&str, ConfigError> {
        self.events_queue_url
            .as_deref()
            .ok_or(ConfigError::Missing("AGENTWIRE_EVENTS_QUEUE_URL"))
    }

    pub fn require_webhook_queue_url(&self) -> Result<&str, ConfigError> {
        self.webhook_queue_url
            .as_deref()
            .ok_or(ConfigError::Missing("AGENTWIRE_WEBHOOK_QUEUE_URL"))
    }

    pub fn require_webhook_dlq_url(&self) -> Result<&str, ConfigError> {
        self.webhook_dlq_url
            .as_deref()
            .ok_or(ConfigError::Missing("AGENTWIRE_WEBHOOK_DLQ_URL"))
    }

    pub fn require_events_dlq_url(&self) -> Result<&str, ConfigError> {
        self.events_dlq_url
            .as_deref()
            .ok_or(ConfigError::Missing("AGENTWIRE_EVENTS_DLQ_URL"))
    }
}

#[derive(serde::Deserialize)]
struct KeyEntry {
    kid: String,
    secret: String,
}

fn jwt_keys(v: &str) -> Result<Vec<(String, Vec<u8>)>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name: "AGENTWIRE_JWT_KEYS",
        // Never the keys themselves.
        value: format!("<{} bytes>", v.len()),
        reason,
    };
    let entries: Vec<KeyEntry> = serde_json::from_str(v)
        .map_err(|_| invalid("not a JSON list of {\"kid\", \"secret\"}".into()))?;
    entries
        .into_iter()
        .map(|e| {
            if e.secret.len() < MIN_JWT_SECRET_BYTES {
                return Err(invalid(format!(
                    "key {:?} is shorter than {MIN_JWT_SECRET_BYTES} bytes",
                    e.kid
                )));
            }
            Ok((e.kid, e.secret.into_bytes()))
        })
        .collect()
}

fn positive(name: &'static str, v: &str) -> Result<u64, ConfigError> {
    match number::<u64>(name, v)? {
        0 => Err(ConfigError::Invalid {
            name,
            value: v.to_owned(),
            reason: "must be at least 1".into(),
        }),
        n => Ok(n),
    }
}

fn duration(name: &'static str, v: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(v).map_err(|e| ConfigError::Invalid {
        name,
        value: v.to_owned(),
        reason: format!("{e} (write it like 72h or 90s)"),
    })
}

fn number<T: std::str::FromStr>(name: &'static str, v: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
        name,
        value: v.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_retention_below_the_floor_is_refused_with_the_reason() {
        let env: HashMap<&str, &str> = [("AGENTWIRE_RETENTION", "1h")].into();
        let e = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("AGENTWIRE_RETENTION") && text.contains("2h"),
            "{text}"
        );
        assert!(text.contains("commit twice"), "{text}");
        let env: HashMap<&str, &str> = [("AGENTWIRE_RETENTION", "2h")].into();
        let c = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.min_retention, MIN_RETENTION);
    }

    #[test]
    fn reads_variables_and_keeps_defaults() {
        let env: HashMap<&str, &str> = [
            ("AGENTWIRE_EVENTS_TABLE", "t-events"),
            ("AGENTWIRE_RETENTION", "90s"),
            ("AGENTWIRE_MIN_RETENTION", "60s"),
            ("AGENTWIRE_FANOUT_CONCURRENCY", "8"),
            ("AGENTWIRE_WEBHOOK_ALLOW_INSECURE", "true"),
            ("AGENTWIRE_WEBHOOK_ALLOW_HOSTS", "hooks.internal, 10.0.0.5"),
            ("AGENTWIRE_WEBHOOK_SCHEDULE", "0s, 1s, 2s"),
            ("AGENTWIRE_FANOUT_QUEUE_URL", "http://q/fanout"),
            ("AGENTWIRE_FANOUT_THRESHOLD", "2000"),
        ]
        .into();
        let c = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.tables.events, "t-events");
        assert_eq!(c.tables.connections, "agentwire-connections");
        assert_eq!(c.retention, Duration::from_secs(90));
        assert_eq!(c.fanout_concurrency, 8);
        assert_eq!(c.fanout_queue_url.as_deref(), Some("http://q/fanout"));
        assert_eq!((c.fanout.threshold, c.fanout.per_job), (2000, 250));
        assert!(c.webhook_urls.allow_insecure_loopback);
        assert_eq!(
            c.webhook_urls.allow_hosts,
            vec!["hooks.internal", "10.0.0.5"]
        );
        assert!(matches!(
            c.require_jwt_secret(),
            Err(ConfigError::Missing("AGENTWIRE_JWT_SECRET"))
        ));
    }

    #[test]
    fn a_token_key_shorter_than_32_bytes_is_refused_without_showing_it() {
        let short = Config::from_lookup(|k| {
            (k == "AGENTWIRE_JWT_SECRET").then(|| "short-secret-31-bytes-long-abcd".to_string())
        })
        .unwrap();
        let err = short.require_jwt_secret().unwrap_err().to_string();
        assert!(err.contains("at least 32 bytes"), "{err}");
        assert!(
            !err.contains("short-secret"),
            "the key never reaches a message: {err}"
        );
        let ok =
            Config::from_lookup(|k| (k == "AGENTWIRE_JWT_SECRET").then(|| "k".repeat(32))).unwrap();
        assert_eq!(ok.require_jwt_secret().unwrap().len(), 32);
    }

    #[test]
    fn several_keys_with_kids_and_never_their_text_in_errors() {
        let keys = format!(
            r#"[{{"kid":"2026-12","secret":"{}"}},{{"kid":"2026-11","secret":"{}"}}]"#,
            "a".repeat(32),
            "b".repeat(32)
        );
        let c = Config::from_lookup(|k| (k == "AGENTWIRE_JWT_KEYS").then(|| keys.clone())).unwrap();
        let ring = c.keyring().unwrap();
        assert_eq!(ring.signer().and_then(|k| k.kid()), Some("2026-12"));
        let short = r#"[{"kid":"x","secret":"hunter2"}]"#;
        let err = Config::from_lookup(|k| (k == "AGENTWIRE_JWT_KEYS").then(|| short.into()))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_fanout_threshold_of_zero_is_refused() {
        let err = Config::from_lookup(|k| (k == "AGENTWIRE_FANOUT_PER_JOB").then(|| "0".into()))
            .unwrap_err();
        assert!(
            err.to_string().contains("AGENTWIRE_FANOUT_PER_JOB"),
            "{err}"
        );
    }

    #[test]
    fn names_the_bad_variable() {
        let err = Config::from_lookup(|k| (k == "AGENTWIRE_RETENTION").then(|| "soon".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("AGENTWIRE_RETENTION"), "{err}");
    }
}
