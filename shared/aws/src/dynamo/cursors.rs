//! [`CursorStore`] on the cursors table.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::ReturnValue;

use agentwire_core::clock::Clock;
use agentwire_core::config::Tables;
use agentwire_core::ports::{CursorStore, StoreError};

use super::condition_held;
use super::item::{cursor_pk, expired, get_n, n, s};
use crate::error::store_error;

/// Durable cursors, forward only.
#[derive(Clone)]
pub struct DynamoCursors {
    client: Client,
    tables: Tables,
    clock: Arc<dyn Clock>,
}

impl DynamoCursors {
    pub fn new(client: Client, tables: Tables, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            tables,
            clock,
        }
    }
}

#[async_trait]
impl CursorStore for DynamoCursors {
    async fn advance(
        &self,
        tenant: &str,
        principal: &str,
        channel: &str,
        seq: u64,
    ) -> Result<u64, StoreError> {
        let now = self.clock.epoch_s();
        let res = self
            .client
            .update_item()
            .table_name(&self.tables.cursors)
            .key("pk", s(cursor_pk(tenant, principal)))
            .key("sk", s(channel))
            .update_expression("SET seq = :s, updated_at = :now, expires_at = :exp")
            .condition_expression("attribute_not_exists(seq) OR seq < :s OR expires_at <= :now")
            .expression_attribute_values(":s", n(seq))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":exp", n(now + CURSOR_TTL_S))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match condition_held("advance cursor", res)? {
            Some(out) => Ok(out
                .attributes()
                .and_then(|a| get_n(a, "seq"))
                .unwrap_or(seq)),
            // Not forward: the cursor stays where it is.
            None => Ok(self.get(tenant, principal, channel).await?.unwrap_or(seq)),
        }
    }

    async fn get(
        &self,
        tenant: &str,
        principal: &str,
        channel: &str,
    ) -> Result<Option<u64>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.cursors)
            .key("pk", s(cursor_pk(tenant, principal)))
            .key("sk", s(channel))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("get cursor", e))?;
        let now = self.clock.epoch_s();
        Ok(out
            .item()
            .filter(|i| !expired(i, now))
            .and_then(|i| get_n(i, "seq")))
    }
}

/// How long a durable cursor outlives its last forward move (TTL attribute
/// `expires_at`): 30 days, ten times the default retention. A cursor older
/// than its channel's retention only yields a gap anyway.
pub const CURSOR_TTL_S: u64 = 30 * 24 * 3600;
