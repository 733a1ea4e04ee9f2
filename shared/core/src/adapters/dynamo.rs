//! DynamoDB adapters: the connection registry, the channel log and cursors.
//!
//! Items (tables are named in [`crate::config::Tables`]):
//! - connections: `pk` = connection id; tenant, principal, grants, publish,
//!   protocol, connected_at, expires_at (TTL), channels (string set).
//! - subscriptions: `pk` = tenant#channel, `sk` = connection id; principal,
//!   expires_at (TTL).
//! - channels: `pk` = tenant#channel; head, epoch, created_at.
//! - events: `pk` = tenant#channel, `sk` = seq; id, kind, data (JSON text),
//!   ts, epoch, expires_at (TTL). Beside them, one dedup item per event id:
//!   `pk` = tenant#channel#id, `sk` = 0, holding the seq.
//! - cursors: `pk` = tenant#principal, `sk` = channel; seq, updated_at.
//!
//! TTL deletes late, so every read here filters expired items itself.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update};
use futures::{StreamExt, TryStreamExt};

use super::store_error;
use crate::clock::{Clock, SystemClock};
use crate::config::Tables;
use crate::model::{ChannelKey, ChannelState, Connection, Envelope, StoredEvent, Subscriber};
use crate::ports::{AppendError, ChannelLog, ConnectionRegistry, CursorStore, StoreError};

type Item = HashMap<String, AttributeValue>;

/// A conditional `UpdateItem`'s result: `Some(output)` when it applied,
/// `None` when its condition did not hold, the mapped error otherwise.
fn condition_held<R: std::fmt::Debug>(
    op: &'static str,
    res: Result<UpdateItemOutput, SdkError<UpdateItemError, R>>,
) -> Result<Option<UpdateItemOutput>, StoreError> {
    match res {
        Ok(out) => Ok(Some(out)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(store_error(op, e)),
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n(item: &Item, k: &str) -> Option<u64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|x| x.parse().ok())
}

fn get_list(item: &Item, k: &str) -> Vec<String> {
    match item.get(k) {
        Some(AttributeValue::L(l)) => l.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
        Some(AttributeValue::Ss(l)) => l.clone(),
        _ => Vec::new(),
    }
}

fn expired(item: &Item, now: u64) -> bool {
    get_n(item, "expires_at").is_some_and(|t| t <= now)
}

fn corrupt(op: &'static str, what: &str) -> StoreError {
    StoreError::failed(op, format!("stored item is missing {what}"))
}

fn build_error(op: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::failed(op, format!("request could not be built: {e}"))
}

/// Connections and subscriptions.
#[derive(Clone)]
pub struct DynamoRegistry {
    client: Client,
    tables: Tables,
}

impl DynamoRegistry {
    pub fn new(client: Client, tables: Tables) -> Self {
        Self { client, tables }
    }

    fn now(&self) -> u64 {
        SystemClock.epoch_s()
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

fn connection_from(item: &Item) -> Result<Connection, StoreError> {
    let op = "read connection";
    Ok(Connection {
        id: get_s(item, "pk").ok_or_else(|| corrupt(op, "pk"))?,
        tenant: get_s(item, "tenant").ok_or_else(|| corrupt(op, "tenant"))?,
        principal: get_s(item, "principal").ok_or_else(|| corrupt(op, "principal"))?,
        grants: get_list(item, "grants"),
        publish: get_list(item, "publish"),
        protocol: get_n(item, "protocol").and_then(|p| u32::try_from(p).ok()),
        connected_at: get_n(item, "connected_at").unwrap_or(0),
        expires_at: get_n(item, "expires_at").unwrap_or(0),
        channels: get_list(item, "channels"),
        token_exp: get_n(item, "token_exp").unwrap_or(0),
    })
}

#[async_trait]
impl ConnectionRegistry for DynamoRegistry {
    async fn put_connection(&self, c: &Connection) -> Result<(), StoreError> {
        let list = |v: &[String]| AttributeValue::L(v.iter().map(|g| s(g.clone())).collect());
        let mut req = self
            .client
            .put_item()
            .table_name(&self.tables.connections)
            .item("pk", s(&c.id))
            .item("tenant", s(&c.tenant))
            .item("principal", s(&c.principal))
            .item("grants", list(&c.grants))
            .item("publish", list(&c.publish))
            .item("connected_at", n(c.connected_at))
            .item("expires_at", n(c.expires_at))
            .item("token_exp", n(c.token_exp));
        if let Some(p) = c.protocol {
            req = req.item("protocol", n(u64::from(p)));
        }
        req.send()
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
            Some(item) if !expired(item, self.now()) => Ok(Some(connection_from(item)?)),
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
            .expression_attribute_values(":p", n(u64::from(protocol)))
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
        self.client
            .put_item()
            .table_name(&self.tables.subscriptions)
            .item("pk", s(key.pk()))
            .item("sk", s(&conn.id))
            .item("principal", s(&conn.principal))
            .item("token_exp", n(conn.token_exp))
            .item("joined_at", n(self.now()))
            .item("expires_at", n(expires_at))
            .send()
            .await
            .map_err(|e| store_error("put subscription", e))?;
        Ok(true)
    }

    async fn unsubscribe(&self, conn_id: &str, key: &ChannelKey) -> Result<(), StoreError> {
        self.delete_subscription(key.pk(), conn_id).await?;
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
        let now = self.now();
        let items: Vec<Item> = self
            .client
            .query()
            .table_name(&self.tables.subscriptions)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(key.pk()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| store_error("query subscribers", e))?;
        Ok(items
            .iter()
            .filter(|i| !expired(i, now))
            .filter_map(|i| {
                Some(Subscriber {
                    connection_id: get_s(i, "sk")?,
                    principal: get_s(i, "principal").unwrap_or_default(),
                    token_exp: get_n(i, "token_exp").unwrap_or(0),
                })
            })
            .collect())
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
        let conn = connection_from(item)?;
        let pks: Vec<String> = conn
            .channels
            .iter()
            .map(|ch| ChannelKey::new(&conn.tenant, ch).pk())
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

/// The per-channel log: head, events and dedup items.
#[derive(Clone)]
pub struct DynamoLog {
    client: Client,
    tables: Tables,
}

impl DynamoLog {
    pub fn new(client: Client, tables: Tables) -> Self {
        Self { client, tables }
    }

    /// Bulk-loads `events` as seqs `state.head + 1 ..` (25 items per
    /// `BatchWriteItem`, unprocessed items resent) and moves the head past
    /// them: history for benchmarks and tests, not a publish path (no dedup
    /// records, no transaction; nothing else may write the channel
    /// meanwhile). Returns the new head.
    pub async fn import(
        &self,
        key: &ChannelKey,
        state: &ChannelState,
        events: &[Envelope],
        expires_at: u64,
    ) -> Result<u64, StoreError> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        let op = "import events";
        let now = SystemClock.epoch_s();
        let pk = key.pk();
        for (chunk_no, chunk) in events.chunks(25).enumerate() {
            let mut writes = Vec::with_capacity(chunk.len());
            for (i, e) in chunk.iter().enumerate() {
                let seq = state.head + 1 + (chunk_no * 25 + i) as u64;
                let put = PutRequest::builder()
                    .set_item(Some(event_item(
                        op,
                        &pk,
                        seq,
                        e,
                        &state.epoch,
                        now,
                        expires_at,
                    )?))
                    .build()
                    .map_err(|err| build_error(op, err))?;
                writes.push(WriteRequest::builder().put_request(put).build());
            }
            let mut pending = HashMap::from([(self.tables.events.clone(), writes)]);
            for _ in 0..8 {
                let out = self
                    .client
                    .batch_write_item()
                    .set_request_items(Some(pending))
                    .send()
                    .await
                    .map_err(|e| store_error(op, e))?;
                pending = out.unprocessed_items.unwrap_or_default();
                if pending.values().all(Vec::is_empty) {
                    break;
                }
            }
            if !pending.values().all(Vec::is_empty) {
                return Err(StoreError::Unavailable {
                    op,
                    reason: "items stayed unprocessed after 8 attempts".into(),
                });
            }
        }
        let head = state.head + events.len() as u64;
        self.client
            .update_item()
            .table_name(&self.tables.channels)
            .key("pk", s(&pk))
            .update_expression("SET head = :n")
            .expression_attribute_values(":n", n(head))
            .send()
            .await
            .map_err(|e| store_error(op, e))?;
        Ok(head)
    }

    async fn read_channel(&self, key: &ChannelKey) -> Result<Option<ChannelState>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.channels)
            .key("pk", s(key.pk()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("get channel", e))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        Ok(Some(ChannelState {
            epoch: get_s(item, "epoch").ok_or_else(|| corrupt("get channel", "epoch"))?,
            head: get_n(item, "head").ok_or_else(|| corrupt("get channel", "head"))?,
            retention_s: get_n(item, "retention_s"),
        }))
    }

    /// Sets (or, with `None`, removes) the channel's own retention; creates
    /// the channel if new. Applies to events committed from now on.
    pub async fn set_retention(
        &self,
        key: &ChannelKey,
        retention: Option<std::time::Duration>,
    ) -> Result<ChannelState, StoreError> {
        self.ensure_channel(key).await?;
        let req = self
            .client
            .update_item()
            .table_name(&self.tables.channels)
            .key("pk", s(key.pk()))
            .condition_expression("attribute_exists(pk)");
        let req = match retention {
            Some(r) => req
                .update_expression("SET retention_s = :r")
                .expression_attribute_values(":r", n(r.as_secs().max(1))),
            None => req.update_expression("REMOVE retention_s"),
        };
        req.send()
            .await
            .map_err(|e| store_error("set retention", e))?;
        self.read_channel(key)
            .await?
            .ok_or_else(|| StoreError::failed("set retention", "channel vanished"))
    }

    fn dedup_pk(key: &ChannelKey, id: &str) -> String {
        // A channel pk has exactly one '#', so this never collides with one.
        format!("{}#{}", key.pk(), id)
    }
}

/// A new epoch: 16 hex digits, unique per channel incarnation.
/// The event item of seq `seq`: the one layout `append` and `import` write
/// and `event_from` reads.
fn event_item(
    op: &'static str,
    pk: &str,
    seq: u64,
    e: &Envelope,
    epoch: &str,
    now: u64,
    expires_at: u64,
) -> Result<Item, StoreError> {
    let data = serde_json::to_string(&e.data).map_err(|err| StoreError::failed(op, err))?;
    Ok(HashMap::from([
        ("pk".to_owned(), s(pk)),
        ("sk".to_owned(), n(seq)),
        ("id".to_owned(), s(&e.id)),
        ("kind".to_owned(), s(&e.kind)),
        ("data".to_owned(), s(data)),
        ("ts".to_owned(), s(&e.ts)),
        ("epoch".to_owned(), s(epoch)),
        ("committed_at".to_owned(), n(now)),
        ("expires_at".to_owned(), n(expires_at)),
    ]))
}

fn new_epoch() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..16].to_owned()
}

#[async_trait]
impl ChannelLog for DynamoLog {
    async fn channel(&self, key: &ChannelKey) -> Result<Option<ChannelState>, StoreError> {
        self.read_channel(key).await
    }

    async fn ensure_channel(&self, key: &ChannelKey) -> Result<ChannelState, StoreError> {
        if let Some(state) = self.read_channel(key).await? {
            return Ok(state);
        }
        let state = ChannelState {
            epoch: new_epoch(),
            head: 0,
            retention_s: None,
        };
        let res = self
            .client
            .put_item()
            .table_name(&self.tables.channels)
            .item("pk", s(key.pk()))
            .item("epoch", s(&state.epoch))
            .item("head", n(0))
            .item("created_at", n(SystemClock.epoch_s()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(state),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                self.read_channel(key).await?.ok_or_else(|| {
                    StoreError::failed("create channel", "channel vanished while being created")
                })
            }
            Err(e) => Err(store_error("create channel", e)),
        }
    }

    async fn append(
        &self,
        key: &ChannelKey,
        state: &ChannelState,
        events: &[Envelope],
        expires_at: u64,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        let op = "append";
        let pk = key.pk();
        let now = SystemClock.epoch_s();
        let new_head = state.head + events.len() as u64;
        let head = Update::builder()
            .table_name(&self.tables.channels)
            .key("pk", s(&pk))
            .update_expression("SET head = :new")
            .condition_expression("head = :old")
            .expression_attribute_values(":new", n(new_head))
            .expression_attribute_values(":old", n(state.head))
            .build()
            .map_err(|e| build_error(op, e))?;
        let mut items = vec![TransactWriteItem::builder().update(head).build()];
        let mut stored = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let seq = state.head + 1 + i as u64;
            let event = Put::builder()
                .table_name(&self.tables.events)
                .set_item(Some(event_item(
                    op,
                    &pk,
                    seq,
                    e,
                    &state.epoch,
                    now,
                    expires_at,
                )?))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(|err| build_error(op, err))?;
            // An id is new unless a live dedup record of this epoch holds
            // it: one that expired (TTL deletes late) or belongs to an
            // earlier incarnation of the channel is replaced, and the event
            // committed again.
            let dedup = Put::builder()
                .table_name(&self.tables.events)
                .item("pk", s(Self::dedup_pk(key, &e.id)))
                .item("sk", n(0))
                .item("seq", n(seq))
                .item("epoch", s(&state.epoch))
                .item("expires_at", n(expires_at))
                .condition_expression(
                    "attribute_not_exists(pk) OR expires_at <= :now OR epoch <> :epoch",
                )
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":epoch", s(&state.epoch))
                .build()
                .map_err(|err| build_error(op, err))?;
            items.push(TransactWriteItem::builder().put(event).build());
            items.push(TransactWriteItem::builder().put(dedup).build());
            stored.push(StoredEvent {
                key: key.clone(),
                epoch: state.epoch.clone(),
                seq,
                id: e.id.clone(),
                kind: e.kind.clone(),
                data: e.data.clone(),
                ts: e.ts.clone(),
            });
        }
        let res = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let err = match res {
            Ok(_) => return Ok(stored),
            Err(err) => err,
        };
        if let Some(tce) = err.as_service_error().and_then(|se| match se {
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(t) => {
                Some(t)
            }
            _ => None,
        }) {
            let failed: Vec<usize> = tce
                .cancellation_reasons()
                .iter()
                .enumerate()
                .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                .map(|(i, _)| i)
                .collect();
            if failed.contains(&0) {
                return Err(AppendError::HeadMoved);
            }
            // Items are [head, event 1, dedup 1, event 2, dedup 2, ...].
            let dups: Vec<String> = failed
                .iter()
                .filter(|i| **i > 0)
                .map(|i| events[(i - 1) / 2].id.clone())
                .collect();
            if !dups.is_empty() {
                return Err(AppendError::Duplicate(dups));
            }
        }
        Err(store_error(op, err).into())
    }

    async fn find_by_id(
        &self,
        key: &ChannelKey,
        id: &str,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let now = SystemClock.epoch_s();
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.events)
            .key("pk", s(Self::dedup_pk(key, id)))
            .key("sk", n(0))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("get dedup record", e))?;
        let Some(seq) = out
            .item()
            .filter(|i| !expired(i, now))
            .and_then(|i| get_n(i, "seq"))
        else {
            return Ok(None);
        };
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.events)
            .key("pk", s(key.pk()))
            .key("sk", n(seq))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("get event", e))?;
        // The seq must still hold this id (a reset log reuses seqs).
        let Some(item) = out
            .item()
            .filter(|i| !expired(i, now) && get_s(i, "id").as_deref() == Some(id))
        else {
            return Ok(None);
        };
        Ok(Some(event_from(key, seq, item)?))
    }

    /// Expired events are a prefix of the log until TTL deletes them (which
    /// may take days), and a filter applies after `Limit`: a `Limit 1`
    /// filtered query would walk them one round trip each. So the filtered
    /// pages grow: 1 item (the common case: the first item is live), then
    /// 100, then 10,000 (DynamoDB's 1 MB page cap bounds each), projecting
    /// only the key. 5,000 expired events cost 3 queries.
    async fn oldest_retained(
        &self,
        key: &ChannelKey,
        head: u64,
    ) -> Result<Option<u64>, StoreError> {
        if head == 0 {
            return Ok(None);
        }
        let now = SystemClock.epoch_s();
        let mut start: Option<Item> = None;
        for page in [1, 100].into_iter().chain(std::iter::repeat(10_000)) {
            let res = self
                .client
                .query()
                .table_name(&self.tables.events)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .filter_expression("attribute_not_exists(expires_at) OR expires_at > :now")
                .expression_attribute_values(":pk", s(key.pk()))
                .expression_attribute_values(":from", n(1))
                .expression_attribute_values(":to", n(head))
                .expression_attribute_values(":now", n(now))
                .projection_expression("sk")
                .consistent_read(true)
                .limit(page)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| store_error("find oldest event", e))?;
            if let Some(seq) = res.items().first().and_then(|i| get_n(i, "sk")) {
                return Ok(Some(seq));
            }
            match res.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Pages through DynamoDB: a filter applies after `Limit`, so a page may
    /// hold fewer retained events than it read.
    async fn read_range(
        &self,
        key: &ChannelKey,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out = Vec::new();
        if from > to || limit == 0 {
            return Ok(out);
        }
        let now = SystemClock.epoch_s();
        let mut start: Option<Item> = None;
        loop {
            let page = i32::try_from(limit - out.len())
                .unwrap_or(READ_PAGE)
                .clamp(1, READ_PAGE);
            let res = self
                .client
                .query()
                .table_name(&self.tables.events)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .filter_expression("attribute_not_exists(expires_at) OR expires_at > :now")
                .expression_attribute_values(":pk", s(key.pk()))
                .expression_attribute_values(":from", n(from))
                .expression_attribute_values(":to", n(to))
                .expression_attribute_values(":now", n(now))
                .consistent_read(true)
                .limit(page)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| store_error("read events", e))?;
            for item in res.items() {
                if let Some(seq) = get_n(item, "sk") {
                    out.push(event_from(key, seq, item)?);
                }
            }
            match res.last_evaluated_key() {
                Some(k) if out.len() < limit && !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}

/// Events read per DynamoDB page while looking for retained ones.
const READ_PAGE: i32 = 1000;

fn event_from(key: &ChannelKey, seq: u64, item: &Item) -> Result<StoredEvent, StoreError> {
    let op = "read event";
    let data = get_s(item, "data").ok_or_else(|| corrupt(op, "data"))?;
    Ok(StoredEvent {
        key: key.clone(),
        epoch: get_s(item, "epoch").ok_or_else(|| corrupt(op, "epoch"))?,
        seq,
        id: get_s(item, "id").ok_or_else(|| corrupt(op, "id"))?,
        kind: get_s(item, "kind").ok_or_else(|| corrupt(op, "kind"))?,
        data: serde_json::from_str(&data).map_err(|e| StoreError::failed(op, e))?,
        ts: get_s(item, "ts").unwrap_or_default(),
    })
}

/// Durable cursors, forward only.
#[derive(Clone)]
pub struct DynamoCursors {
    client: Client,
    tables: Tables,
}

impl DynamoCursors {
    pub fn new(client: Client, tables: Tables) -> Self {
        Self { client, tables }
    }

    fn pk(tenant: &str, principal: &str) -> String {
        format!("{tenant}#{principal}")
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
        let res = self
            .client
            .update_item()
            .table_name(&self.tables.cursors)
            .key("pk", s(Self::pk(tenant, principal)))
            .key("sk", s(channel))
            .update_expression("SET seq = :s, updated_at = :now, expires_at = :exp")
            .condition_expression("attribute_not_exists(seq) OR seq < :s")
            .expression_attribute_values(":s", n(seq))
            .expression_attribute_values(":now", n(SystemClock.epoch_s()))
            .expression_attribute_values(":exp", n(SystemClock.epoch_s() + CURSOR_TTL_S))
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
            .key("pk", s(Self::pk(tenant, principal)))
            .key("sk", s(channel))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("get cursor", e))?;
        let now = SystemClock.epoch_s();
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

/// Webhook configurations in the channels table: attribute `webhook` (JSON
/// text) on the channel's item, or on `tenant#*` for the tenant default.
#[derive(Clone)]
pub struct DynamoWebhooks {
    log: DynamoLog,
}

impl DynamoWebhooks {
    pub fn new(client: Client, tables: Tables) -> Self {
        Self {
            log: DynamoLog::new(client, tables),
        }
    }
}

#[async_trait]
impl crate::ports::WebhookStore for DynamoWebhooks {
    async fn get(
        &self,
        scope: &crate::webhook::WebhookScope,
    ) -> Result<Option<crate::webhook::WebhookConfig>, StoreError> {
        let out = self
            .log
            .client
            .get_item()
            .table_name(&self.log.tables.channels)
            .key("pk", s(scope.pk()))
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

    async fn put(
        &self,
        scope: &crate::webhook::WebhookScope,
        config: &crate::webhook::WebhookConfig,
    ) -> Result<(), StoreError> {
        if let crate::webhook::WebhookScope::Channel(key) = scope {
            // A channel item always has its head and epoch.
            self.log.ensure_channel(key).await?;
        }
        let text =
            serde_json::to_string(config).map_err(|e| StoreError::failed("encode webhook", e))?;
        self.log
            .client
            .update_item()
            .table_name(&self.log.tables.channels)
            .key("pk", s(scope.pk()))
            .update_expression("SET webhook = :w")
            .expression_attribute_values(":w", s(text))
            .send()
            .await
            .map_err(|e| store_error("put webhook", e))?;
        Ok(())
    }

    async fn remove(&self, scope: &crate::webhook::WebhookScope) -> Result<bool, StoreError> {
        let out = self
            .log
            .client
            .update_item()
            .table_name(&self.log.tables.channels)
            .key("pk", s(scope.pk()))
            .update_expression("REMOVE webhook")
            .condition_expression("attribute_exists(webhook)")
            .send()
            .await;
        Ok(condition_held("remove webhook", out)?.is_some())
    }
}
