//! [`ConnectionRegistry`] on the connections and subscriptions tables.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::{StreamExt, TryStreamExt};

use agentwire_core::clock::Clock;
use agentwire_core::config::Tables;
use agentwire_core::model::{ChannelKey, Connection, Subscriber};
use agentwire_core::ports::{ConnectionRegistry, StoreError};

use super::condition_held;
use super::item::{FromItem, Item, SubscriptionRecord, ToItem, channel_pk, expired, s};
use crate::error::store_error;

/// Connections and subscriptions.
#[derive(Clone)]
pub struct DynamoRegistry {
    client: Client,
    tables: Tables,
    clock: Arc<dyn Clock>,
}

impl DynamoRegistry {
    pub fn new(client: Client, tables: Tables, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            tables,
            clock,
        }
    }

    async fn delete_subscription(&self, key_pk: String, conn_id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.tables.subscriptions)
            .key("pk", s(key_pk))
            .key("sk", s(conn_id))
            .send()
            .await
            .map_err(|e| store_error("delete subscription", e))?;
        Ok(())
    }
}

#[async_trait]
impl ConnectionRegistry for DynamoRegistry {
    async fn put_connection(&self, c: &Connection) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.tables.connections)
            .set_item(Some(c.to_item()))
            .send()
            .await
            .map_err(|e| store_error("put connection", e))?;
        Ok(())
    }

    async fn get_connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.connections)
            .key("pk", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("get connection", e))?;
        match out.item() {
            Some(item) if !expired(item, self.clock.epoch_s()) => {
                Ok(Some(Connection::from_item(item)?))
            }
            _ => Ok(None),
        }
    }

    async fn set_protocol(&self, id: &str, protocol: u32) -> Result<bool, StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.tables.connections)
            .key("pk", s(id))
            .update_expression("SET protocol = :p")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":p", super::item::n(u64::from(protocol)))
            .send()
            .await;
        Ok(condition_held("set protocol", res)?.is_some())
    }

    async fn subscribe(
        &self,
        conn: &Connection,
        key: &ChannelKey,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        // The connection learns the channel first, so a disconnect that runs
        // after this point finds the subscription and deletes it.
        let res = self
            .client
            .update_item()
            .table_name(&self.tables.connections)
            .key("pk", s(&conn.id))
            .update_expression("ADD channels :c")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":c", AttributeValue::Ss(vec![key.channel.clone()]))
            .send()
            .await;
        if condition_held("record joined channel", res)?.is_none() {
            return Ok(false);
        }
        let subscriber = Subscriber {
            connection_id: conn.id.clone(),
            principal: conn.principal.clone(),
            token_exp: conn.token_exp,
        };
        let record = SubscriptionRecord {
            key,
            subscriber: &subscriber,
            joined_at: self.clock.epoch_s(),
            expires_at,
        };
        self.client
            .put_item()
            .table_name(&self.tables.subscriptions)
            .set_item(Some(record.to_item()))
            .send()
            .await
            .map_err(|e| store_error("put subscription", e))?;
        Ok(true)
    }

    async fn unsubscribe(&self, conn_id: &str, key: &ChannelKey) -> Result<(), StoreError> {
        self.delete_subscription(channel_pk(key), conn_id).await?;
        let res = self
            .client
            .update_item()
            .table_name(&self.tables.connections)
            .key("pk", s(conn_id))
            .update_expression("DELETE channels :c")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":c", AttributeValue::Ss(vec![key.channel.clone()]))
            .send()
            .await;
        // A connection already gone has nothing to forget.
        condition_held("forget joined channel", res)?;
        Ok(())
    }

    async fn subscribers(&self, key: &ChannelKey) -> Result<Vec<Subscriber>, StoreError> {
        let now = self.clock.epoch_s();
        let items: Vec<Item> = self
            .client
            .query()
            .table_name(&self.tables.subscriptions)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(channel_pk(key)))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| store_error("query subscribers", e))?;
        items
            .iter()
            .filter(|i| !expired(i, now))
            .map(Subscriber::from_item)
            .collect()
    }

    async fn remove_connection(&self, id: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.connections)
            .key("pk", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("get connection", e))?;
        let Some(item) = out.item() else {
            return Ok(false);
        };
        let conn = Connection::from_item(item)?;
        let pks: Vec<String> = conn
            .channels
            .iter()
            .map(|ch| channel_pk(&ChannelKey::new(&conn.tenant, ch)))
            .collect();
        futures::stream::iter(pks)
            .map(|pk| self.delete_subscription(pk, id))
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        self.client
            .delete_item()
            .table_name(&self.tables.connections)
            .key("pk", s(id))
            .send()
            .await
            .map_err(|e| store_error("delete connection", e))?;
        Ok(true)
    }
}
