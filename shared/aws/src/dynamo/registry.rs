//! [`ConnectionRegistry`] on the connections and subscriptions tables.
//!
//! Presence is kept, not counted on read: beside a channel's subscription
//! items, one item (`sk` = [`PRESENCE_SK`], which sorts before every
//! connection id) holds `count`, moved by one when a subscription is
//! created or deleted (a `PutItem`/`DeleteItem` that returns the old item
//! says which). A subscription that ends by TTL (a connection dropped
//! without `$disconnect`) is not subtracted at once: listing the
//! subscribers, which the dispatcher does whenever the membership moved,
//! sets the count to the live subscriptions it read (only if no join or
//! leave moved it meanwhile).
//!
//! The same item keeps the sample of principals a join is answered with:
//! `sample`, a string set of at most [`PRESENCE_SAMPLE`] principals. A
//! subscribe adds its principal while there is room (a conditional
//! `ADD`), a deleted subscription takes its principal out (in the update
//! that moves the count), and a listing puts back present principals the
//! set lost (a principal with two connections that closed one) and drops
//! those whose subscription expired. A join reads count and sample with one
//! `GetItem` of that one item: the same cost on a channel of 2 subscribers
//! as of 100,000 (a `Query`, even with a `Limit`, reads the whole table on
//! the local endpoint, see docs/benchmarks.md).
//!
//! The same item holds `version`, moved by one on every subscribe (a
//! re-join too) and every deleted subscription, in the same `UpdateItem`
//! as the count: the dispatcher reads it (one `GetItem`) after each commit
//! and reuses the subscriber list it read before while it has not moved.
//!
//! Subscription items are keyed `sk` = `NNN#connection-id`, `NNN` the
//! connection's shard (see [`subscription_sk`]), so that a fan-out job's
//! shards are one key range.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::{StreamExt, TryStreamExt};

use agentwire_core::clock::Clock;
use agentwire_core::config::Tables;
use agentwire_core::model::{ChannelKey, Connection, Membership, ShardRange, Subscriber};
use agentwire_core::ports::{Claim, ConnectionRegistry, StoreError};

use agentwire_core::model::ChannelPresence;
use agentwire_core::protocol::PRESENCE_SAMPLE;
use aws_sdk_dynamodb::types::ReturnValue;

use super::item::{
    FromItem, Item, SubscriptionRecord, ToItem, channel_pk, connection_count_pk, expired, get_n,
    get_s, n, s, subscription_connection, subscription_sk, subscription_sk_bounds,
};
use super::{condition_held, put_all};
use crate::error::store_error;

/// The count a presence item holds (below 0 after decrements that passed an
/// uncorrected TTL expiry).
fn presence_count(item: &Item) -> i64 {
    item.get("count")
        .and_then(|v| v.as_n().ok())
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The count as readers see it: never below 0.
fn present(item: &Item) -> u64 {
    u64::try_from(presence_count(item)).unwrap_or(0)
}

/// The `sk` of a channel's presence item: `#` sorts before the characters
/// of a connection id, so a `Query` reads it first.
pub const PRESENCE_SK: &str = "#presence";

/// Connections and subscriptions.
#[derive(Clone)]
pub struct DynamoRegistry {
    client: Client,
    tables: Tables,
    clock: Arc<dyn Clock>,
}

impl DynamoRegistry {
    /// Sets the presence count and sample to what a listing read, if no
    /// join or leave moved the membership version since (`kept` is the
    /// presence item the listing read, `None` when there was none).
    async fn correct_presence(
        &self,
        key: &ChannelKey,
        kept: Option<&Item>,
        live: &[Subscriber],
    ) -> Result<(), StoreError> {
        let count = kept.map_or(0, presence_count);
        let had = kept.map(sample).unwrap_or_default();
        let want = corrected_sample(&had, live);
        if count == live.len() as i64 && want == had {
            return Ok(());
        }
        let req = self
            .client
            .update_item()
            .table_name(&self.tables.subscriptions)
            .key("pk", s(channel_pk(key)))
            .key("sk", s(PRESENCE_SK))
            .expression_attribute_names("#c", "count")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":live", n(live.len() as u64));
        let req = if want.is_empty() {
            req.update_expression("SET #c = :live REMOVE #s")
        } else {
            req.update_expression("SET #c = :live, #s = :sample")
                .expression_attribute_values(":sample", AttributeValue::Ss(want))
        }
        .expression_attribute_names("#s", "sample");
        let req = match kept.and_then(|item| get_n(item, "version")) {
            Some(v) => req
                .condition_expression("#v = :v")
                .expression_attribute_values(":v", n(v)),
            None => req.condition_expression("attribute_not_exists(#v)"),
        };
        condition_held("correct presence", req.send().await)?;
        Ok(())
    }

    /// The channel's subscription items, every page of a consistent
    /// `Query`: the whole partition (the presence item too), or only the
    /// subscriptions of `shards`.
    async fn channel_items(
        &self,
        key: &ChannelKey,
        shards: Option<ShardRange>,
    ) -> Result<Vec<Item>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.tables.subscriptions)
            .expression_attribute_values(":pk", s(channel_pk(key)))
            .consistent_read(true);
        let query = match shards {
            None => query.key_condition_expression("pk = :pk"),
            Some(range) => {
                let (lo, hi) = subscription_sk_bounds(range);
                query
                    .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                    .expression_attribute_values(":lo", s(lo))
                    .expression_attribute_values(":hi", s(hi))
            }
        };
        query
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| store_error("query subscribers", e))
    }

    pub fn new(client: Client, tables: Tables, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            tables,
            clock,
        }
    }

    /// The connection's item, expired or not (a consistent read).
    async fn connection_item(&self, id: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.connections)
            .key("pk", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("get connection", e))?;
        Ok(out.item)
    }

    /// Deletes a subscription; one fewer present if it was there.
    async fn delete_subscription(&self, key_pk: String, conn_id: &str) -> Result<(), StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.tables.subscriptions)
            .key("pk", s(key_pk.clone()))
            .key("sk", s(subscription_sk(conn_id)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| store_error("delete subscription", e))?;
        if let Some(old) = out.attributes().filter(|a| !a.is_empty()) {
            let principal = get_s(old, "principal");
            self.move_presence(key_pk, -1, principal.as_deref()).await?;
        }
        Ok(())
    }

    /// Adds `by` (±1 on a join or leave, 0 on a re-join) to the channel's
    /// presence count and moves its membership version; a leave takes
    /// `gone` out of the sample in the same update. Returns the presence
    /// item as it is after the update.
    async fn move_presence(
        &self,
        key_pk: String,
        by: i64,
        gone: Option<&str>,
    ) -> Result<Item, StoreError> {
        let req = self
            .client
            .update_item()
            .table_name(&self.tables.subscriptions)
            .key("pk", s(key_pk))
            .key("sk", s(PRESENCE_SK))
            .expression_attribute_names("#c", "count")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":by", AttributeValue::N(by.to_string()))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew);
        let req = match gone {
            Some(p) => req
                .update_expression("ADD #c :by, #v :one DELETE #s :p")
                .expression_attribute_names("#s", "sample")
                .expression_attribute_values(":p", AttributeValue::Ss(vec![p.to_owned()])),
            None => req.update_expression("ADD #c :by, #v :one"),
        };
        let out = req
            .send()
            .await
            .map_err(|e| store_error("count presence", e))?;
        Ok(out.attributes.unwrap_or_default())
    }

    /// Adds to the channel's sample (`presence`, the presence item as an
    /// update left it) the first of `principals` it lacks, as many as it
    /// has room for: one `ADD`, conditional on room and on the membership
    /// version that update left. A sample that filled meanwhile stays as it
    /// is, and so does one whose version moved: a leave of the same
    /// connection that ran in between took its principal out before this
    /// `ADD` could put it in, and must not be undone (another join that
    /// moved it only leaves its principal for the next listing).
    async fn fill_sample<'a>(
        &self,
        key_pk: String,
        presence: &Item,
        principals: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StoreError> {
        let had = sample(presence);
        let room = PRESENCE_SAMPLE.saturating_sub(had.len());
        let mut add: Vec<String> = Vec::new();
        for p in principals {
            if add.len() >= room {
                break;
            }
            if !had.iter().any(|h| h == p) && !add.iter().any(|a| a == p) {
                add.push(p.to_owned());
            }
        }
        if add.is_empty() {
            return Ok(());
        }
        let res = self
            .client
            .update_item()
            .table_name(&self.tables.subscriptions)
            .key("pk", s(key_pk))
            .key("sk", s(PRESENCE_SK))
            .update_expression("ADD #s :p")
            .condition_expression("(attribute_not_exists(#s) OR size(#s) <= :most) AND #v = :v")
            .expression_attribute_names("#s", "sample")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":v", n(get_n(presence, "version").unwrap_or(0)))
            .expression_attribute_values(":most", n((PRESENCE_SAMPLE - add.len()) as u64))
            .expression_attribute_values(":p", AttributeValue::Ss(add))
            .send()
            .await;
        condition_held("sample presence", res)?;
        Ok(())
    }

    /// Bulk-loads subscriptions of connections that need not exist (25
    /// items per `BatchWriteItem`) and adds them to the presence count:
    /// crowds for benchmarks and tests, not a join path.
    pub async fn import_subscribers(
        &self,
        key: &ChannelKey,
        subscribers: &[Subscriber],
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let now = self.clock.epoch_s();
        let items = subscribers.iter().map(|subscriber| {
            SubscriptionRecord {
                key,
                subscriber,
                joined_at: now,
                expires_at,
            }
            .to_item()
        });
        put_all(
            &self.client,
            &self.tables.subscriptions,
            "import subscribers",
            items,
        )
        .await?;
        let presence = self
            .move_presence(channel_pk(key), subscribers.len() as i64, None)
            .await?;
        self.fill_sample(
            channel_pk(key),
            &presence,
            subscribers.iter().map(|s| s.principal.as_str()),
        )
        .await
    }
}

/// The principals of a presence item's sample, sorted.
fn sample(item: &Item) -> Vec<String> {
    let mut principals = item
        .get("sample")
        .and_then(|v| v.as_ss().ok())
        .cloned()
        .unwrap_or_default();
    principals.sort();
    principals
}

/// The sample a listing sets: the principals of `had` still present, then
/// other present principals in order, up to [`PRESENCE_SAMPLE`]; sorted.
fn corrected_sample(had: &[String], live: &[Subscriber]) -> Vec<String> {
    let present: std::collections::BTreeSet<&str> =
        live.iter().map(|s| s.principal.as_str()).collect();
    let mut want: std::collections::BTreeSet<&str> = had
        .iter()
        .map(String::as_str)
        .filter(|p| present.contains(p))
        .collect();
    for p in &present {
        if want.len() >= PRESENCE_SAMPLE {
            break;
        }
        want.insert(p);
    }
    want.into_iter().map(str::to_owned).collect()
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

    async fn put_counted_connection(&self, c: &Connection, max: u64) -> Result<bool, StoreError> {
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
        let op = "put counted connection";
        let mut counted = c.clone();
        counted.counted = true;
        let count = Update::builder()
            .table_name(&self.tables.connections)
            .key("pk", s(connection_count_pk(&c.tenant)))
            .update_expression("ADD n :one")
            .condition_expression("attribute_not_exists(n) OR n < :max")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(max))
            .build()
            .map_err(|e| StoreError::failed(op, e))?;
        let put = Put::builder()
            .table_name(&self.tables.connections)
            .set_item(Some(counted.to_item()))
            .build()
            .map_err(|e| StoreError::failed(op, e))?;
        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(count).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) => {
                use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
                let at_max = matches!(
                    e.as_service_error(),
                    Some(TransactWriteItemsError::TransactionCanceledException(t))
                        if t.cancellation_reasons()
                            .first()
                            .is_some_and(|r| r.code() == Some("ConditionalCheckFailed"))
                );
                if at_max {
                    Ok(false)
                } else {
                    Err(store_error(op, e))
                }
            }
        }
    }

    async fn counted_connections(&self, tenant: &str) -> Result<u64, StoreError> {
        Ok(self
            .connection_item(&connection_count_pk(tenant))
            .await?
            .and_then(|i| get_n(&i, "n"))
            .unwrap_or(0))
    }

    async fn reset_connection_count(&self, tenant: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.tables.connections)
            .key("pk", s(connection_count_pk(tenant)))
            .send()
            .await
            .map_err(|e| store_error("reset connection count", e))?;
        Ok(())
    }

    async fn get_connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        match self.connection_item(id).await? {
            Some(item) if !expired(&item, self.clock.epoch_s()) => {
                Ok(Some(Connection::from_item(&item)?))
            }
            _ => Ok(None),
        }
    }

    async fn update_token(&self, c: &Connection) -> Result<bool, StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.tables.connections)
            .key("pk", s(&c.id))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":g", super::item::list(&c.grants))
            .expression_attribute_values(":p", super::item::list(&c.publish))
            .expression_attribute_values(":e", n(c.token_exp));
        req = match c.token_iat {
            Some(iat) => req
                .update_expression("SET grants = :g, publish = :p, token_exp = :e, token_iat = :i")
                .expression_attribute_values(":i", n(iat)),
            None => req.update_expression(
                "SET grants = :g, publish = :p, token_exp = :e REMOVE token_iat",
            ),
        };
        Ok(condition_held("update token", req.send().await)?.is_some())
    }

    /// A scan of the connections table (a revocation is rare; the table
    /// holds one item per live connection).
    async fn connections_of(
        &self,
        tenant: &str,
        principal: &str,
    ) -> Result<Vec<Connection>, StoreError> {
        let now = self.clock.epoch_s();
        let items: Vec<Item> = self
            .client
            .scan()
            .table_name(&self.tables.connections)
            .filter_expression("tenant = :t AND principal = :p")
            .expression_attribute_values(":t", s(tenant))
            .expression_attribute_values(":p", s(principal))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| store_error("list a principal's connections", e))?;
        items
            .iter()
            .filter(|i| !expired(i, now))
            .map(Connection::from_item)
            .collect()
    }

    async fn set_protocol(&self, id: &str, protocol: u32, gzip: bool) -> Result<bool, StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.tables.connections)
            .key("pk", s(id))
            .update_expression("SET protocol = :p, gzip = :g")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":p", super::item::n(u64::from(protocol)))
            .expression_attribute_values(":g", AttributeValue::Bool(gzip))
            .send()
            .await;
        Ok(condition_held("set protocol", res)?.is_some())
    }

    async fn claim_channel(
        &self,
        conn_id: &str,
        channel: &str,
        max: u32,
    ) -> Result<Claim, StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.tables.connections)
            .key("pk", s(conn_id))
            .update_expression("ADD channels :c")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(channels) \
                 OR contains(channels, :ch) OR size(channels) < :max)",
            )
            .expression_attribute_values(":c", AttributeValue::Ss(vec![channel.to_owned()]))
            .expression_attribute_values(":ch", s(channel))
            .expression_attribute_values(":max", n(u64::from(max)))
            .send()
            .await;
        if condition_held("claim joined channel", res)?.is_some() {
            return Ok(Claim::Claimed);
        }
        // Refused: full, or gone (told apart with one read; a refusal is rare).
        let exists = self
            .client
            .get_item()
            .table_name(&self.tables.connections)
            .key("pk", s(conn_id))
            .projection_expression("pk")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("claim joined channel", e))?
            .item()
            .is_some();
        Ok(if exists { Claim::Full } else { Claim::Gone })
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
            gzip: conn.gzip,
        };
        let record = SubscriptionRecord {
            key,
            subscriber: &subscriber,
            joined_at: self.clock.epoch_s(),
            expires_at,
        };
        let old = self
            .client
            .put_item()
            .table_name(&self.tables.subscriptions)
            .set_item(Some(record.to_item()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| store_error("put subscription", e))?;
        // A new subscription is one more present; joining again is not (an
        // expired one replaced is still counted, until a listing corrects
        // it). Either way the version moves, before the join reads the
        // head: a join retried after this failed is seen too.
        let new = old.attributes().is_none_or(|a| a.is_empty());
        let presence = self
            .move_presence(channel_pk(key), i64::from(new), None)
            .await?;
        self.fill_sample(channel_pk(key), &presence, [conn.principal.as_str()])
            .await?;
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
        let items = self.channel_items(key, None).await?;
        let kept = items
            .iter()
            .find(|i| get_s(i, "sk").as_deref() == Some(PRESENCE_SK));
        let live: Vec<Subscriber> = items
            .iter()
            .filter(|i| get_s(i, "sk").as_deref() != Some(PRESENCE_SK) && !expired(i, now))
            .map(Subscriber::from_item)
            .collect::<Result<_, _>>()?;
        self.correct_presence(key, kept, &live).await?;
        Ok(live)
    }

    async fn subscribers_in(
        &self,
        key: &ChannelKey,
        shards: ShardRange,
    ) -> Result<Vec<Subscriber>, StoreError> {
        let now = self.clock.epoch_s();
        let (gone, live): (Vec<Item>, Vec<Item>) = self
            .channel_items(key, Some(shards))
            .await?
            .into_iter()
            .partition(|i| expired(i, now));
        // A big channel is never listed whole, so nothing else would take
        // the expired subscriptions (connections that vanished without
        // `$disconnect`) out of its count and sample: each listing of a
        // shard deletes those it met, as a 410 would.
        let pk = channel_pk(key);
        let ids: Vec<String> = gone
            .iter()
            .filter_map(|i| get_s(i, "sk"))
            .map(|sk| subscription_connection(&sk).to_owned())
            .collect();
        let pruned: Vec<Result<(), StoreError>> = futures::stream::iter(ids)
            .map(|id| {
                let pk = pk.clone();
                async move { self.delete_subscription(pk, &id).await }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        if let Some(Err(e)) = pruned.into_iter().find(Result::is_err) {
            tracing::warn!(channel = %key, error = %e, "could not delete an expired subscription; the next listing tries again");
        }
        live.iter().map(Subscriber::from_item).collect()
    }

    async fn membership(&self, key: &ChannelKey) -> Result<Membership, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.subscriptions)
            .key("pk", s(channel_pk(key)))
            .key("sk", s(PRESENCE_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("read membership", e))?;
        Ok(out.item.map_or(Membership::default(), |item| Membership {
            count: present(&item),
            version: get_n(&item, "version").unwrap_or(0),
        }))
    }

    async fn presence(&self, key: &ChannelKey) -> Result<ChannelPresence, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.subscriptions)
            .key("pk", s(channel_pk(key)))
            .key("sk", s(PRESENCE_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("read presence", e))?;
        let Some(item) = out.item else {
            return Ok(ChannelPresence::default());
        };
        let principals: Vec<String> = sample(&item).into_iter().take(PRESENCE_SAMPLE).collect();
        Ok(ChannelPresence {
            // Decrements may pass an uncorrected TTL expiry.
            count: present(&item).max(principals.len() as u64),
            principals,
        })
    }

    async fn remove_connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        // Expired or not: whatever it joined is deleted with it.
        let Some(item) = self.connection_item(id).await? else {
            return Ok(None);
        };
        let conn = Connection::from_item(&item)?;
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
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.tables.connections)
            .key("pk", s(id))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| store_error("delete connection", e))?;
        // Only the remover that deleted the item counts it down (a
        // $disconnect racing a gone post's removal counts once), never
        // below zero.
        if deleted.attributes().is_none_or(|a| a.is_empty()) {
            return Ok(None);
        }
        if conn.counted {
            let res = self
                .client
                .update_item()
                .table_name(&self.tables.connections)
                .key("pk", s(connection_count_pk(&conn.tenant)))
                .update_expression("ADD n :minus")
                .condition_expression("n > :zero")
                .expression_attribute_values(":minus", AttributeValue::N("-1".into()))
                .expression_attribute_values(":zero", n(0))
                .send()
                .await;
            // The connection is gone whatever this write does: a failed
            // count-down is logged (the tenant's count stays one high until
            // `agentwire tenant` resets it), never the removal's error.
            if let Err(e) = condition_held("count connection down", res) {
                tracing::warn!(tenant = %conn.tenant, error = %e, "could not count a removed connection down");
            }
        }
        Ok(Some(conn))
    }

    async fn count_open(&self, delta: i64) -> Result<u64, StoreError> {
        let op = "count open connections";
        let level = |out: Option<&std::collections::HashMap<String, AttributeValue>>| {
            out.and_then(|a| a.get("n"))
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .map_or(0, |v| u64::try_from(v).unwrap_or(0))
        };
        let update = || {
            self.client
                .update_item()
                .table_name(&self.tables.connections)
                .key("pk", s(OPEN_COUNT_PK))
                .return_values(ReturnValue::AllNew)
        };
        if delta >= 0 {
            let out = update()
                .update_expression("ADD n :d")
                .expression_attribute_values(":d", AttributeValue::N(delta.to_string()))
                .send()
                .await
                .map_err(|e| store_error(op, e))?;
            return Ok(level(out.attributes()));
        }
        // Never below zero: a removal whose connection was opened before
        // the count existed floors it at zero instead. Two conditional
        // writes, tried again if a concurrent change slips between them.
        let floor = n(delta.unsigned_abs());
        for _ in 0..3 {
            let down = update()
                .update_expression("ADD n :d")
                .condition_expression("n >= :floor")
                .expression_attribute_values(":d", AttributeValue::N(delta.to_string()))
                .expression_attribute_values(":floor", floor.clone())
                .send()
                .await;
            if let Some(out) = condition_held(op, down)? {
                return Ok(level(out.attributes()));
            }
            let zero = update()
                .update_expression("SET n = :zero")
                .condition_expression("attribute_not_exists(n) OR n < :floor")
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":floor", floor.clone())
                .send()
                .await;
            if condition_held(op, zero)?.is_some() {
                return Ok(0);
            }
        }
        Err(StoreError::Unavailable {
            op,
            reason: "the count of open connections kept changing".into(),
        })
    }
}

/// The item holding the deployment's count of open connections (a key no
/// API Gateway connection id takes).
const OPEN_COUNT_PK: &str = "#open";
