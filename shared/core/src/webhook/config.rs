//! A webhook as durable state of a channel (or the tenant-wide default): read
//! for every event, never consumed by a send, optionally expiring.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::signature::{SigningSecret, WebhookSignError};
use crate::model::ChannelKey;

/// When the webhook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookMode {
    /// Only when the channel has no live subscriber.
    Fallback,
    /// For every event (a mirror).
    Always,
    /// Kept but not called.
    Off,
}

impl std::str::FromStr for WebhookMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fallback" => Ok(Self::Fallback),
            "always" => Ok(Self::Always),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "mode must be fallback, always or off, not {other:?}"
            )),
        }
    }
}

/// Where a webhook is configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WebhookScope {
    Channel(ChannelKey),
    /// Used by every channel of the tenant that has none of its own.
    TenantDefault(String),
}

/// One webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookConfig {
    pub url: String,
    /// The current `whsec_` secret.
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_until: Option<u64>,
    pub mode: WebhookMode,
    /// When the configuration lapses (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Why deliveries stopped (a receiver answered 410 Gone), if they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<String>,
    pub updated_at: u64,
}

impl WebhookConfig {
    /// A new webhook with a freshly generated secret.
    pub fn new(
        url: &str,
        mode: WebhookMode,
        expires_at: Option<u64>,
        now: u64,
    ) -> Result<Self, WebhookSignError> {
        Ok(Self {
            url: url.to_owned(),
            secret: SigningSecret::generate()?.as_str().to_owned(),
            previous_secret: None,
            previous_until: None,
            mode,
            expires_at,
            disabled: None,
            updated_at: now,
        })
    }

    /// A new secret; the old one keeps signing for `grace`.
    pub fn rotate(&mut self, grace: Duration, now: u64) -> Result<(), WebhookSignError> {
        let new = SigningSecret::generate()?;
        self.previous_secret = Some(std::mem::replace(&mut self.secret, new.as_str().to_owned()));
        self.previous_until = Some(now.saturating_add(grace.as_secs()));
        self.updated_at = now;
        Ok(())
    }

    /// The secrets that sign now: the current one, and the previous one
    /// during its grace period. A stored secret that does not parse is an
    /// error, never a silently unsigned delivery.
    pub fn signing_secrets(&self, now: u64) -> Result<Vec<SigningSecret>, WebhookSignError> {
        let mut out = vec![SigningSecret::parse(&self.secret)?];
        if let (Some(prev), Some(until)) = (&self.previous_secret, self.previous_until)
            && now < until
        {
            out.push(SigningSecret::parse(prev)?);
        }
        Ok(out)
    }

    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// Whether an event with `live_subscribers` live subscribers goes to
    /// this webhook now.
    pub fn wants(&self, live_subscribers: usize, now: u64) -> bool {
        if self.expired(now) || self.disabled.is_some() {
            return false;
        }
        match self.mode {
            WebhookMode::Always => true,
            WebhookMode::Fallback => live_subscribers == 0,
            WebhookMode::Off => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_only_without_live_subscribers_always_mirrors_off_never() {
        let mut c =
            WebhookConfig::new("https://h.example/", WebhookMode::Fallback, None, 0).unwrap();
        assert!(c.wants(0, 10));
        assert!(!c.wants(1, 10));
        c.mode = WebhookMode::Always;
        assert!(c.wants(3, 10));
        c.mode = WebhookMode::Off;
        assert!(!c.wants(0, 10));
    }

    #[test]
    fn expired_or_disabled_webhooks_are_not_called() {
        let mut c =
            WebhookConfig::new("https://h.example/", WebhookMode::Always, Some(100), 0).unwrap();
        assert!(c.wants(0, 99));
        assert!(!c.wants(0, 100));
        c.expires_at = None;
        c.disabled = Some("410 Gone from the receiver".into());
        assert!(!c.wants(0, 1));
    }

    #[test]
    fn a_rotation_signs_with_both_secrets_during_the_grace_period_only() {
        let mut c = WebhookConfig::new("https://h.example/", WebhookMode::Always, None, 0).unwrap();
        let old = c.secret.clone();
        c.rotate(Duration::from_secs(3600), 1000).unwrap();
        assert_ne!(c.secret, old);
        let during = c.signing_secrets(2000).unwrap();
        assert_eq!(during.len(), 2);
        assert_eq!(during[1].as_str(), old);
        assert_eq!(c.signing_secrets(4600).unwrap().len(), 1);
    }

    #[test]
    fn stored_form_round_trips() {
        let c =
            WebhookConfig::new("https://h.example/", WebhookMode::Fallback, Some(5), 1).unwrap();
        let back: WebhookConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert_eq!("always".parse::<WebhookMode>(), Ok(WebhookMode::Always));
        assert!("sometimes".parse::<WebhookMode>().is_err());
    }
}
