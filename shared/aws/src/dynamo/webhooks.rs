//! [`WebhookStore`] and [`WebhookDirectory`] on the channels table:
//! attribute `webhook` (JSON text) on the channel's item, or on `tenant#*`
//! for the tenant default.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;

use agentwire_core::clock::Clock;
use agentwire_core::config::Tables;
use agentwire_core::model::ChannelKey;
use agentwire_core::ports::{
    ChannelLog, StoreError, WebhookDirectory, WebhookStore, effective_webhook,
};
use agentwire_core::webhook::{WebhookConfig, WebhookScope};

use super::DynamoLog;
use super::condition_held;
use super::item::{get_s, s, scope_pk};
use crate::error::store_error;

/// Webhook configurations, stored beside the channel's head.
#[derive(Clone)]
pub struct DynamoWebhooks {
    log: DynamoLog,
    clock: Arc<dyn Clock>,
}

impl DynamoWebhooks {
    pub fn new(client: Client, tables: Tables, clock: Arc<dyn Clock>) -> Self {
        Self {
            log: DynamoLog::new(client, tables, clock.clone()),
            clock,
        }
    }
}

#[async_trait]
impl WebhookStore for DynamoWebhooks {
    async fn get(&self, scope: &WebhookScope) -> Result<Option<WebhookConfig>, StoreError> {
        let out = self
            .log
            .client
            .get_item()
            .table_name(&self.log.tables.channels)
            .key("pk", s(scope_pk(scope)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("get webhook", e))?;
        match out.item().and_then(|i| get_s(i, "webhook")) {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| StoreError::failed("read webhook", e)),
        }
    }

    async fn put(&self, scope: &WebhookScope, config: &WebhookConfig) -> Result<(), StoreError> {
        if let WebhookScope::Channel(key) = scope {
            // A channel item always has its head and epoch.
            self.log.ensure_channel(key).await?;
        }
        let text =
            serde_json::to_string(config).map_err(|e| StoreError::failed("encode webhook", e))?;
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
        Ok(condition_held("remove webhook", out)?.is_some())
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
