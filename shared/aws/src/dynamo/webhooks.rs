//! [`WebhookStore`] and [`WebhookDirectory`] on the channels table:
//! attribute `webhook` (JSON text, without its secrets) on the channel's
//! item, or on `tenant#*` for the tenant default; its signing secrets on
//! an item of their own, `whsec#<that pk>` (attribute `secrets`, JSON
//! text). A receiver that timed out is held on an item of its own,
//! `whhold#<tenant>#<host>` (`until`, Unix ms; `expires_at` for TTL).
//!
//! The secrets are read only by an adapter made
//! [`with_secrets`](DynamoWebhooks::with_secrets) (the webhook function
//! that signs, the admin function that shows a new secret once); the
//! dispatcher, the reads and the session use one without, which never
//! reads a `whsec#` item (their IAM policies refuse those keys,
//! `dynamodb:LeadingKeys`), and hands out configurations whose `secret`
//! is empty. A webhook stored before the split, with its secrets in
//! `webhook`, is still read whole by an adapter with secrets.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;

use agentwire_core::clock::Clock;
use agentwire_core::config::Tables;
use agentwire_core::model::ChannelKey;
use agentwire_core::ports::{
    ChannelLog, ReceiverHolds, StoreError, WebhookDirectory, WebhookStore, effective_webhook,
};
use agentwire_core::webhook::{WebhookConfig, WebhookScope};
use serde_json::Value;

use super::DynamoLog;
use super::condition_held;
use super::item::{get_n, get_s, n, s, scope_pk};
use crate::error::store_error;

/// Webhook configurations, stored beside the channel's head.
#[derive(Clone)]
pub struct DynamoWebhooks {
    log: DynamoLog,
    clock: Arc<dyn Clock>,
    secrets: bool,
}

/// The fields of a configuration kept apart from it.
const SECRET_FIELDS: [&str; 3] = ["secret", "previous_secret", "previous_until"];

fn secrets_pk(scope: &WebhookScope) -> String {
    format!("whsec#{}", scope_pk(scope))
}

impl DynamoWebhooks {
    /// An adapter that never reads secrets.
    pub fn new(client: Client, tables: Tables, clock: Arc<dyn Clock>) -> Self {
        Self {
            log: DynamoLog::new(client, tables, clock.clone()),
            clock,
            secrets: false,
        }
    }

    /// The same, reading the signing secrets too.
    pub fn with_secrets(mut self) -> Self {
        self.secrets = true;
        self
    }

    async fn item(&self, pk: String, op: &'static str) -> Result<Option<super::Item>, StoreError> {
        Ok(self
            .log
            .client
            .get_item()
            .table_name(&self.log.tables.channels)
            .key("pk", s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(op, e))?
            .item)
    }
}

#[async_trait]
impl WebhookStore for DynamoWebhooks {
    async fn get(&self, scope: &WebhookScope) -> Result<Option<WebhookConfig>, StoreError> {
        let Some(text) = self
            .item(scope_pk(scope), "get webhook")
            .await?
            .and_then(|i| get_s(&i, "webhook"))
        else {
            return Ok(None);
        };
        let mut v: Value =
            serde_json::from_str(&text).map_err(|e| StoreError::failed("read webhook", e))?;
        let legacy = v.get("secret").is_some();
        if self.secrets && !legacy {
            // Written before its configuration: missing only while a put is
            // under way (retryable).
            let secrets = self
                .item(secrets_pk(scope), "get webhook secrets")
                .await?
                .and_then(|i| get_s(&i, "secrets"))
                .ok_or_else(|| StoreError::Unavailable {
                    op: "get webhook secrets",
                    reason: "the webhook has no secrets item yet".into(),
                })?;
            let secrets: Value = serde_json::from_str(&secrets)
                .map_err(|e| StoreError::failed("read webhook secrets", e))?;
            if let (Some(v), Value::Object(sec)) = (v.as_object_mut(), secrets) {
                v.extend(sec);
            }
        }
        if let Some(v) = v.as_object_mut() {
            if !self.secrets {
                for k in SECRET_FIELDS {
                    v.remove(k);
                }
            }
            v.entry("secret").or_insert(Value::String(String::new()));
        }
        serde_json::from_value(v)
            .map(Some)
            .map_err(|e| StoreError::failed("read webhook", e))
    }

    async fn put(&self, scope: &WebhookScope, config: &WebhookConfig) -> Result<(), StoreError> {
        if let WebhookScope::Channel(key) = scope {
            // A channel item always has its head and epoch.
            self.log.ensure_channel(key).await?;
        }
        let mut public =
            serde_json::to_value(config).map_err(|e| StoreError::failed("encode webhook", e))?;
        let mut secrets = serde_json::Map::new();
        if let Some(p) = public.as_object_mut() {
            for k in SECRET_FIELDS {
                if let Some(v) = p.remove(k) {
                    secrets.insert(k.to_owned(), v);
                }
            }
        }
        // The secrets first: a configuration is never stored without them.
        self.log
            .client
            .put_item()
            .table_name(&self.log.tables.channels)
            .item("pk", s(secrets_pk(scope)))
            .item("secrets", s(Value::Object(secrets).to_string()))
            .send()
            .await
            .map_err(|e| store_error("put webhook secrets", e))?;
        let text = public.to_string();
        self.log
            .client
            .update_item()
            .table_name(&self.log.tables.channels)
            .key("pk", s(scope_pk(scope)))
            .update_expression("SET webhook = :w")
            .expression_attribute_values(":w", s(text))
            .send()
            .await
            .map_err(|e| store_error("put webhook", e))?;
        Ok(())
    }

    async fn remove(&self, scope: &WebhookScope) -> Result<bool, StoreError> {
        let out = self
            .log
            .client
            .update_item()
            .table_name(&self.log.tables.channels)
            .key("pk", s(scope_pk(scope)))
            .update_expression("REMOVE webhook")
            .condition_expression("attribute_exists(webhook)")
            .send()
            .await;
        let removed = condition_held("remove webhook", out)?.is_some();
        self.log
            .client
            .delete_item()
            .table_name(&self.log.tables.channels)
            .key("pk", s(secrets_pk(scope)))
            .send()
            .await
            .map_err(|e| store_error("remove webhook secrets", e))?;
        Ok(removed)
    }
}

#[async_trait]
impl WebhookDirectory for DynamoWebhooks {
    /// One consistent read for a channel with its own webhook, two for one
    /// that falls back to its tenant's default.
    async fn effective(
        &self,
        key: &ChannelKey,
    ) -> Result<Option<(WebhookScope, WebhookConfig)>, StoreError> {
        effective_webhook(self, key, self.clock.epoch_s()).await
    }
}

fn hold_pk(receiver: &str) -> String {
    format!("whhold#{receiver}")
}

/// A hold's item outlives its end by a day, then TTL removes it.
const HOLD_TTL_S: u64 = 86_400;

#[async_trait]
impl ReceiverHolds for DynamoWebhooks {
    async fn held_until(&self, receiver: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .item(hold_pk(receiver), "get receiver hold")
            .await?
            .and_then(|i| get_n(&i, "until")))
    }

    async fn hold(
        &self,
        receiver: &str,
        seen: Option<u64>,
        until: u64,
    ) -> Result<bool, StoreError> {
        let mut req = self
            .log
            .client
            .update_item()
            .table_name(&self.log.tables.channels)
            .key("pk", s(hold_pk(receiver)))
            .update_expression("SET #u = :u, expires_at = :e")
            .expression_attribute_names("#u", "until")
            .expression_attribute_values(":u", n(until))
            .expression_attribute_values(":e", n(until / 1000 + HOLD_TTL_S));
        req = match seen {
            Some(seen) => req
                .condition_expression("#u = :seen")
                .expression_attribute_values(":seen", n(seen)),
            None => req.condition_expression("attribute_not_exists(#u)"),
        };
        Ok(condition_held("hold receiver", req.send().await)?.is_some())
    }

    async fn release(&self, receiver: &str, seen: u64) -> Result<(), StoreError> {
        let res = self
            .log
            .client
            .delete_item()
            .table_name(&self.log.tables.channels)
            .key("pk", s(hold_pk(receiver)))
            .condition_expression("#u = :seen")
            .expression_attribute_names("#u", "until")
            .expression_attribute_values(":seen", n(seen))
            .send()
            .await;
        condition_held("release receiver", res)?;
        Ok(())
    }
}
