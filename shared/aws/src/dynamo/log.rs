//! [`ChannelLog`] and [`ChannelSettings`] on the channels and events tables.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};

use agentwire_core::clock::Clock;
use agentwire_core::config::Tables;
use agentwire_core::model::{ChannelKey, ChannelState, Envelope, StoredEvent};
use agentwire_core::ports::{
    AppendError, ChannelLog, ChannelSettings, Dedup, ReadBudget, StoreError,
};

use super::item::{
    ChannelRecord, EventRecord, FromItem, Item, ToItem, channel_pk, dedup_pk, expired, get_n,
    get_s, n, s,
};
use super::{build_error, put_all};
use crate::error::store_error;

/// The per-channel log: head, events and dedup items.
#[derive(Clone)]
pub struct DynamoLog {
    pub(super) client: Client,
    pub(super) tables: Tables,
    clock: Arc<dyn Clock>,
}

/// Whether a cancelled transaction may commit when tried again: one of its
/// items was throttled or conflicted with another transaction (the
/// reasons DynamoDB gives besides `ConditionalCheckFailed`, which the
/// append handles itself, and validation errors, which are permanent).
pub fn cancellation_is_transient(codes: &[Option<&str>]) -> bool {
    codes.iter().flatten().any(|c| {
        matches!(
            *c,
            "ThrottlingError"
                | "ProvisionedThroughputExceeded"
                | "TransactionConflict"
                | "RequestLimitExceeded"
        )
    })
}

/// What an item of the append transaction is.
#[derive(Debug, PartialEq, Eq)]
enum Role {
    Head,
    Event,
    Dedup(String),
}

/// Seqs one `BatchGetItem` probes at most while looking for the oldest
/// retained event.
const PROBES: u64 = 100;

impl DynamoLog {
    /// A `Query` of `key`'s events `from..=to` that leaves out those expired
    /// at `now` (TTL deletes late), to finish with its projection, limit
    /// and paging.
    fn live_events(&self, key: &ChannelKey, from: u64, to: u64, now: u64) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.tables.events)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .filter_expression("attribute_not_exists(expires_at) OR expires_at > :now")
            .expression_attribute_values(":pk", s(channel_pk(key)))
            .expression_attribute_values(":from", n(from))
            .expression_attribute_values(":to", n(to))
            .expression_attribute_values(":now", n(now))
    }

    /// Which of `seqs` are stored and not expired at `now` (one
    /// `BatchGetItem`, its unprocessed keys asked again).
    async fn live_seqs(
        &self,
        key: &ChannelKey,
        seqs: &[u64],
        now: u64,
    ) -> Result<std::collections::HashSet<u64>, StoreError> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let pk = channel_pk(key);
        let keys: Vec<Item> = seqs
            .iter()
            .map(|q| Item::from([("pk".to_owned(), s(&pk)), ("sk".to_owned(), n(*q))]))
            .collect();
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .projection_expression("sk, expires_at")
                .consistent_read(true)
                .build()
                .map_err(|e| build_error("probe events", e))?,
        );
        let mut live = std::collections::HashSet::new();
        for _ in 0..5 {
            let Some(ka) = pending.take() else { break };
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.tables.events, ka)
                .send()
                .await
                .map_err(|e| store_error("probe events", e))?;
            for item in out
                .responses()
                .and_then(|r| r.get(&self.tables.events))
                .into_iter()
                .flatten()
            {
                if !expired(item, now)
                    && let Some(q) = get_n(item, "sk")
                {
                    live.insert(q);
                }
            }
            pending = out
                .unprocessed_keys()
                .and_then(|u| u.get(&self.tables.events))
                .filter(|ka| !ka.keys().is_empty())
                .cloned();
        }
        if pending.is_some() {
            return Err(StoreError::Unavailable {
                op: "probe events",
                reason: "keys left unprocessed after 5 attempts".into(),
            });
        }
        Ok(live)
    }

    /// One event without a dedup record: a conditional `PutItem` of its
    /// item (the seq is the lock: 1 WCU up to 1 KB), then the head moved up
    /// to it (`UpdateItem`, 1 WCU). A taken seq is `HeadMoved`, unless the
    /// item there is this very event (an attempt the SDK retried had
    /// landed). The head update may fail or be lost with the function: the
    /// event is committed all the same, and the next writer, refused at
    /// this seq, moves the head past it ([`Self::catch_up`]).
    async fn put_one(
        &self,
        key: &ChannelKey,
        event: &StoredEvent,
        now: u64,
        expires_at: u64,
    ) -> Result<(), AppendError> {
        let op = "append";
        let record = EventRecord {
            event,
            committed_at: now,
            expires_at,
        };
        let res = self
            .client
            .put_item()
            .table_name(&self.tables.events)
            .set_item(Some(record.to_item()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match super::condition_held(op, res) {
            Ok(Some(_)) => {}
            Ok(None) => {
                if self.holds(key, event).await? {
                    self.raise_head(key, event.seq).await;
                    return Ok(());
                }
                self.catch_up(key, event.seq - 1).await?;
                return Err(AppendError::HeadMoved);
            }
            Err(e) => {
                // An error after which the put may still have landed (a
                // time-out, a 5xx): the item tells.
                if matches!(self.holds(key, event).await, Ok(true)) {
                    self.raise_head(key, event.seq).await;
                    return Ok(());
                }
                return Err(e.into());
            }
        }
        self.raise_head(key, event.seq).await;
        Ok(())
    }

    /// Whether the event item at `event.seq` is `event` (same id).
    async fn holds(&self, key: &ChannelKey, event: &StoredEvent) -> Result<bool, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.events)
            .key("pk", s(channel_pk(key)))
            .key("sk", n(event.seq))
            .projection_expression("#id")
            .expression_attribute_names("#id", "id")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("check event", e))?;
        Ok(out.item().and_then(|i| get_s(i, "id")).as_deref() == Some(event.id.as_str()))
    }

    /// Moves the head up to `seq` (never down). A failure is logged only:
    /// the event is committed, and a later writer catches the head up.
    async fn raise_head(&self, key: &ChannelKey, seq: u64) {
        let res = self
            .client
            .update_item()
            .table_name(&self.tables.channels)
            .key("pk", s(channel_pk(key)))
            .update_expression("SET head = :new")
            .condition_expression("attribute_exists(pk) AND head < :new")
            .expression_attribute_values(":new", n(seq))
            .send()
            .await;
        if let Err(e) = super::condition_held("raise head", res) {
            tracing::warn!(channel = %key, seq, error = %e, "could not move the head; the next commit will");
        }
    }

    /// After a seq above `head` was found taken: the newest event's seq
    /// (one `Query`, newest first, expired items included: a seq is never
    /// given twice), and the head moved up to it, so that readers and the
    /// next writer see it.
    async fn catch_up(&self, key: &ChannelKey, head: u64) -> Result<(), StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.events)
            .key_condition_expression("pk = :pk AND sk > :head")
            .expression_attribute_values(":pk", s(channel_pk(key)))
            .expression_attribute_values(":head", n(head))
            .projection_expression("sk")
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("find the head", e))?;
        if let Some(top) = out.items().first().and_then(|i| get_n(i, "sk")) {
            self.raise_head(key, top).await;
        }
        Ok(())
    }

    /// Events (with their dedup records for [`Dedup::Record`]) and the head
    /// in one transaction: all or nothing. A taken seq (an event item's
    /// condition) or a moved head is `HeadMoved`; a known id `Duplicate`.
    async fn transact(
        &self,
        key: &ChannelKey,
        state: &ChannelState,
        stored: &[StoredEvent],
        dedup: Dedup,
        now: u64,
        expires_at: u64,
    ) -> Result<(), AppendError> {
        let op = "append";
        let new_head = state.head + stored.len() as u64;
        let head = Update::builder()
            .table_name(&self.tables.channels)
            .key("pk", s(channel_pk(key)))
            .update_expression("SET head = :new")
            .condition_expression("head = :old")
            .expression_attribute_values(":new", n(new_head))
            .expression_attribute_values(":old", n(state.head))
            .build()
            .map_err(|e| build_error(op, e))?;
        let mut items = vec![TransactWriteItem::builder().update(head).build()];
        // What each item is, for the cancellation reasons.
        let mut roles: Vec<Role> = vec![Role::Head];
        for e in stored {
            let record = EventRecord {
                event: e,
                committed_at: now,
                expires_at,
            };
            let event = Put::builder()
                .table_name(&self.tables.events)
                .set_item(Some(record.to_item()))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(|err| build_error(op, err))?;
            items.push(TransactWriteItem::builder().put(event).build());
            roles.push(Role::Event);
            if dedup == Dedup::Skip {
                continue;
            }
            // An id is new unless a live dedup record of this epoch holds
            // it: one that expired (TTL deletes late) or belongs to an
            // earlier incarnation of the channel is replaced, and the event
            // committed again.
            let record = Put::builder()
                .table_name(&self.tables.events)
                .item("pk", s(dedup_pk(key, &e.id)))
                .item("sk", n(0))
                .item("seq", n(e.seq))
                .item("epoch", s(&state.epoch))
                .item("expires_at", n(expires_at))
                .condition_expression(
                    "attribute_not_exists(pk) OR expires_at <= :now OR epoch <> :epoch",
                )
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":epoch", s(&state.epoch))
                .build()
                .map_err(|err| build_error(op, err))?;
            items.push(TransactWriteItem::builder().put(record).build());
            roles.push(Role::Dedup(e.id.clone()));
        }
        let err = match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        if let Some(tce) = err.as_service_error().and_then(|se| match se {
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(t) => {
                Some(t)
            }
            _ => None,
        }) {
            let failed: Vec<&Role> = tce
                .cancellation_reasons()
                .iter()
                .zip(&roles)
                .filter(|(r, _)| r.code() == Some("ConditionalCheckFailed"))
                .map(|(_, role)| role)
                .collect();
            if failed.contains(&&Role::Head) {
                return Err(AppendError::HeadMoved);
            }
            if failed.contains(&&Role::Event) {
                // The head item lags an event committed without a
                // transaction: catch it up, then the caller reads it.
                self.catch_up(key, state.head).await?;
                return Err(AppendError::HeadMoved);
            }
            let dups: Vec<String> = failed
                .into_iter()
                .filter_map(|r| match r {
                    Role::Dedup(id) => Some(id.clone()),
                    _ => None,
                })
                .collect();
            if !dups.is_empty() {
                return Err(AppendError::Duplicate(dups));
            }
            let codes: Vec<Option<&str>> =
                tce.cancellation_reasons().iter().map(|r| r.code()).collect();
            if cancellation_is_transient(&codes) {
                return Err(StoreError::Unavailable {
                    op,
                    reason: format!("transaction cancelled: {codes:?}"),
                }
                .into());
            }
        }
        Err(store_error(op, err).into())
    }

    pub fn new(client: Client, tables: Tables, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            tables,
            clock,
        }
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
        let op = "import events";
        let now = self.clock.epoch_s();
        let pk = channel_pk(key);
        let items = events.iter().zip(state.head + 1..).map(|(e, seq)| {
            EventRecord {
                event: &e.stored(key, &state.epoch, seq),
                committed_at: now,
                expires_at,
            }
            .to_item()
        });
        put_all(&self.client, &self.tables.events, op, items).await?;
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
            .key("pk", s(channel_pk(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("get channel", e))?;
        out.item().map(ChannelState::from_item).transpose()
    }
}

#[async_trait]
impl ChannelSettings for DynamoLog {
    async fn set_retention(
        &self,
        key: &ChannelKey,
        retention: Option<std::time::Duration>,
    ) -> Result<ChannelState, StoreError> {
        self.ensure_channel(key).await?;
        let req = self
            .client
            .update_item()
            .table_name(&self.tables.channels)
            .key("pk", s(channel_pk(key)))
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
}

/// A new epoch: 16 hex digits, unique per channel incarnation.
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
        let record = ChannelRecord {
            key,
            state: &state,
            created_at: self.clock.epoch_s(),
        };
        let res = self
            .client
            .put_item()
            .table_name(&self.tables.channels)
            .set_item(Some(record.to_item()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        if super::condition_held("create channel", res)?.is_some() {
            return Ok(state);
        }
        // Another writer created it first.
        self.read_channel(key).await?.ok_or_else(|| {
            StoreError::failed("create channel", "channel vanished while being created")
        })
    }

    async fn append(
        &self,
        key: &ChannelKey,
        state: &ChannelState,
        events: &[Envelope],
        dedup: Dedup,
        expires_at: u64,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        let now = self.clock.epoch_s();
        let stored: Vec<StoredEvent> = events
            .iter()
            .zip(state.head + 1..)
            .map(|(e, seq)| e.stored(key, &state.epoch, seq))
            .collect();
        match (dedup, stored.as_slice()) {
            (Dedup::Skip, [one]) => {
                self.put_one(key, one, now, expires_at).await?;
            }
            _ => {
                self.transact(key, state, &stored, dedup, now, expires_at)
                    .await?
            }
        }
        Ok(stored)
    }

    async fn find_by_id(
        &self,
        key: &ChannelKey,
        id: &str,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let now = self.clock.epoch_s();
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.events)
            .key("pk", s(dedup_pk(key, id)))
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
            .key("pk", s(channel_pk(key)))
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
        Ok(Some(StoredEvent::from_item(item)?))
    }

    /// Expired events are a prefix of the log until TTL deletes them (which
    /// may take days), and a filter applies after `Limit`: a `Limit 1`
    /// filtered query would walk them one round trip each. So the filtered
    /// pages grow: 1 item (the common case: the first item is live), then
    /// 100, then 10,000 (DynamoDB's 1 MB page cap bounds each), projecting
    /// only the key. 5,000 expired events cost 3 queries.
    /// At most a handful of calls, whatever TTL has not deleted yet: one
    /// `Query` of the channel's first stored event (live in the common case:
    /// nothing expired); else `BatchGetItem` probes of seqs on a ladder down
    /// from the head (head, head-1, head-2, head-4, …), then up to 100
    /// evenly spaced seqs between the last live and the first dead probe,
    /// until they are neighbours. Expiry follows the seq (events expire in
    /// the order they were committed, retention changes aside), so the
    /// boundary is the oldest retained event.
    async fn oldest_retained(
        &self,
        key: &ChannelKey,
        head: u64,
    ) -> Result<Option<u64>, StoreError> {
        if head == 0 {
            return Ok(None);
        }
        let now = self.clock.epoch_s();
        let res = self
            .live_events(key, 1, head, now)
            .projection_expression("sk")
            .consistent_read(true)
            .limit(1)
            .send()
            .await
            .map_err(|e| store_error("find oldest event", e))?;
        if let Some(seq) = res.items().first().and_then(|i| get_n(i, "sk")) {
            return Ok(Some(seq));
        }
        // The first stored event is expired (its key is where the Query
        // stopped); nothing stored at all otherwise.
        let Some(mut dead) = res.last_evaluated_key().and_then(|k| get_n(k, "sk")) else {
            return Ok(None);
        };
        let mut ladder = vec![head];
        let mut step = 1u64;
        while head > dead + step {
            ladder.push(head - step);
            step = step.saturating_mul(2);
        }
        let live = self.live_seqs(key, &ladder, now).await?;
        let Some(mut alive) = ladder.iter().copied().filter(|q| live.contains(q)).min() else {
            return Ok(None);
        };
        if let Some(d) = ladder
            .iter()
            .copied()
            .filter(|q| *q < alive && !live.contains(q))
            .max()
        {
            dead = dead.max(d);
        }
        while alive > dead + 1 {
            let gap = alive - dead - 1;
            let probes: Vec<u64> = if gap <= PROBES {
                (dead + 1..alive).collect()
            } else {
                (1..=PROBES)
                    .map(|i| dead + i * gap / (PROBES + 1))
                    .collect()
            };
            let live = self.live_seqs(key, &probes, now).await?;
            for q in &probes {
                if live.contains(q) {
                    alive = alive.min(*q);
                }
            }
            if let Some(d) = probes
                .iter()
                .copied()
                .filter(|q| *q < alive && !live.contains(q))
                .max()
            {
                dead = dead.max(d);
            }
            if gap <= PROBES {
                break;
            }
        }
        Ok(Some(alive))
    }

    /// Pages through DynamoDB, each Query sized from what is left of the
    /// budget (by the average size of the events read so far, 1 KiB before
    /// the first): a read holds at most the budget and one Query's answer
    /// (at most 1 MB). A filter applies after `Limit`, so a page may hold
    /// fewer retained events than it read.
    async fn read_range(
        &self,
        key: &ChannelKey,
        from: u64,
        to: u64,
        budget: ReadBudget,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out: Vec<StoredEvent> = Vec::new();
        if from > to || budget.events == 0 {
            return Ok(out);
        }
        let now = self.clock.epoch_s();
        let mut bytes = 0usize;
        let mut start: Option<Item> = None;
        loop {
            let average = if out.is_empty() {
                FIRST_GUESS_BYTES
            } else {
                (bytes / out.len()).max(1)
            };
            let by_bytes = budget.bytes.saturating_sub(bytes) / average;
            let page = (budget.events - out.len()).min(by_bytes).max(1);
            let page = i32::try_from(page).unwrap_or(READ_PAGE).min(READ_PAGE);
            let res = self
                .live_events(key, from, to, now)
                .consistent_read(true)
                .limit(page)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| store_error("read events", e))?;
            for item in res.items() {
                let e = StoredEvent::from_item(item)?;
                match budget.admit(out.len(), bytes, &e) {
                    Some(total) => bytes = total,
                    None => return Ok(out),
                }
                out.push(e);
            }
            match res.last_evaluated_key() {
                Some(k) if out.len() < budget.events && !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }
}

/// The size assumed of an event before any is read, to size the first
/// Query of a read from its byte budget.
const FIRST_GUESS_BYTES: usize = 1024;

/// Events read per DynamoDB page while looking for retained ones.
const READ_PAGE: i32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_or_conflicting_transactions_are_transient() {
        assert!(cancellation_is_transient(&[
            Some("None"),
            Some("ThrottlingError")
        ]));
        assert!(cancellation_is_transient(&[Some("TransactionConflict")]));
        assert!(!cancellation_is_transient(&[Some("ValidationError")]));
        assert!(!cancellation_is_transient(&[None, Some("None")]));
    }
}
