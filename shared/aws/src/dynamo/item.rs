//! Item mapping: one pair of conversions per stored type, and the keys.
//!
//! The domain types live in `agentwire-core`, so the conversions are this
//! crate's own traits ([`FromItem`] reads an item, [`ToItem`] writes one)
//! rather than `TryFrom<&Item>`/`From<&T>`, which the orphan rule forbids
//! between a foreign type and `HashMap`. Records that carry more than the
//! domain type (the channel key, the TTL) are small structs here.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use agentwire_core::model::{ChannelKey, ChannelState, Connection, StoredEvent, Subscriber};
use agentwire_core::ports::StoreError;
use agentwire_core::webhook::WebhookScope;
use agentwire_protocol::RawData;

/// One DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

/// Reads a domain value from its item.
pub trait FromItem: Sized {
    fn from_item(item: &Item) -> Result<Self, StoreError>;
}

/// Writes a value as its item.
pub trait ToItem {
    fn to_item(&self) -> Item;
}

/// `tenant#channel`: the key of every per-channel item. Tenants and
/// channels cannot contain `#`, so it splits back uniquely.
pub fn channel_pk(key: &ChannelKey) -> String {
    format!("{}#{}", key.tenant, key.channel)
}

/// The channel of a `tenant#channel` key.
pub fn channel_key(pk: &str) -> Option<ChannelKey> {
    let (tenant, channel) = pk.split_once('#')?;
    Some(ChannelKey::new(tenant, channel))
}

/// The channels-table item holding a scope's webhook. `*` is not a valid
/// channel name, so `tenant#*` never collides with a channel.
pub fn scope_pk(scope: &WebhookScope) -> String {
    match scope {
        WebhookScope::Channel(k) => channel_pk(k),
        WebhookScope::TenantDefault(t) => format!("{t}#*"),
    }
}

/// The dedup item of event `id`: a channel pk has exactly one `#`, so this
/// never collides with one.
pub fn dedup_pk(key: &ChannelKey, id: &str) -> String {
    format!("{}#{}", channel_pk(key), id)
}

/// The cursors-table partition of a principal.
/// The item holding a tenant's count of counted connections (a connection
/// id never starts with `#`).
pub fn connection_count_pk(tenant: &str) -> String {
    format!("#count#{tenant}")
}

pub fn cursor_pk(tenant: &str, principal: &str) -> String {
    format!("{tenant}#{principal}")
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn list(v: &[String]) -> AttributeValue {
    AttributeValue::L(v.iter().map(|g| s(g.clone())).collect())
}

pub(crate) fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

/// A flag: `true` only when the attribute is the boolean `true`.
pub(crate) fn get_bool(item: &Item, k: &str) -> bool {
    matches!(item.get(k), Some(AttributeValue::Bool(true)))
}

pub(crate) fn get_n(item: &Item, k: &str) -> Option<u64> {
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

/// Whether the item's TTL (`expires_at`) has passed at `now`.
pub(crate) fn expired(item: &Item, now: u64) -> bool {
    get_n(item, "expires_at").is_some_and(|t| t <= now)
}

fn corrupt(what: &str, attr: &str) -> StoreError {
    StoreError::failed("read item", format!("stored {what} is missing {attr}"))
}

fn req_s(item: &Item, what: &str, attr: &str) -> Result<String, StoreError> {
    get_s(item, attr).ok_or_else(|| corrupt(what, attr))
}

fn req_n(item: &Item, what: &str, attr: &str) -> Result<u64, StoreError> {
    get_n(item, attr).ok_or_else(|| corrupt(what, attr))
}

impl FromItem for Connection {
    fn from_item(item: &Item) -> Result<Self, StoreError> {
        let what = "connection";
        Ok(Connection {
            id: req_s(item, what, "pk")?,
            tenant: req_s(item, what, "tenant")?,
            principal: req_s(item, what, "principal")?,
            grants: get_list(item, "grants"),
            publish: get_list(item, "publish"),
            protocol: get_n(item, "protocol").and_then(|p| u32::try_from(p).ok()),
            connected_at: get_n(item, "connected_at").unwrap_or(0),
            expires_at: get_n(item, "expires_at").unwrap_or(0),
            channels: get_list(item, "channels"),
            token_exp: get_n(item, "token_exp").unwrap_or(0),
            token_iat: get_n(item, "token_iat"),
            counted: get_bool(item, "counted"),
            gzip: get_bool(item, "gzip"),
        })
    }
}

/// The joined channels are not written: `subscribe` adds them to the item's
/// string set one by one (a set cannot be empty).
impl ToItem for Connection {
    fn to_item(&self) -> Item {
        let mut item = HashMap::from([
            ("pk".to_owned(), s(&self.id)),
            ("tenant".to_owned(), s(&self.tenant)),
            ("principal".to_owned(), s(&self.principal)),
            ("grants".to_owned(), list(&self.grants)),
            ("publish".to_owned(), list(&self.publish)),
            ("connected_at".to_owned(), n(self.connected_at)),
            ("expires_at".to_owned(), n(self.expires_at)),
            ("token_exp".to_owned(), n(self.token_exp)),
        ]);
        if let Some(p) = self.protocol {
            item.insert("protocol".to_owned(), n(u64::from(p)));
        }
        if let Some(iat) = self.token_iat {
            item.insert("token_iat".to_owned(), n(iat));
        }
        if self.counted {
            item.insert("counted".to_owned(), AttributeValue::Bool(true));
        }
        if self.gzip {
            item.insert("gzip".to_owned(), AttributeValue::Bool(true));
        }
        if !self.channels.is_empty() {
            item.insert(
                "channels".to_owned(),
                AttributeValue::Ss(self.channels.clone()),
            );
        }
        item
    }
}

/// A subscription item: the subscriber of a channel, until `expires_at`.
pub struct SubscriptionRecord<'a> {
    pub key: &'a ChannelKey,
    pub subscriber: &'a Subscriber,
    pub joined_at: u64,
    pub expires_at: u64,
}

/// A subscription's `sk`: its shard (three digits), `#`, the connection
/// id. A shard's items are one contiguous key range, so a fan-out job
/// lists its shards with one `Query` that reads no other shard's items.
pub fn subscription_sk(connection_id: &str) -> String {
    format!(
        "{:03}#{connection_id}",
        agentwire_core::model::subscription_shard(connection_id)
    )
}

/// The connection id of a subscription's `sk`.
pub fn subscription_connection(sk: &str) -> &str {
    match sk.split_once('#') {
        Some((shard, id)) if shard.len() == 3 && shard.bytes().all(|b| b.is_ascii_digit()) => id,
        _ => sk,
    }
}

/// The `sk` bounds of the shards `range` (inclusive, for `BETWEEN`): `#`
/// sorts before `$`, so `"NNN$"` is above every `"NNN#..."`.
pub fn subscription_sk_bounds(range: agentwire_core::model::ShardRange) -> (String, String) {
    (
        format!("{:03}#", range.start),
        format!("{:03}$", range.end.saturating_sub(1)),
    )
}

impl FromItem for Subscriber {
    fn from_item(item: &Item) -> Result<Self, StoreError> {
        Ok(Subscriber {
            connection_id: subscription_connection(&req_s(item, "subscription", "sk")?).to_owned(),
            principal: get_s(item, "principal").unwrap_or_default(),
            token_exp: get_n(item, "token_exp").unwrap_or(0),
            gzip: get_bool(item, "gzip"),
        })
    }
}

impl ToItem for SubscriptionRecord<'_> {
    fn to_item(&self) -> Item {
        let mut item = HashMap::from([
            ("pk".to_owned(), s(channel_pk(self.key))),
            (
                "sk".to_owned(),
                s(subscription_sk(&self.subscriber.connection_id)),
            ),
            ("principal".to_owned(), s(&self.subscriber.principal)),
            ("token_exp".to_owned(), n(self.subscriber.token_exp)),
            ("joined_at".to_owned(), n(self.joined_at)),
            ("expires_at".to_owned(), n(self.expires_at)),
        ]);
        if self.subscriber.gzip {
            item.insert("gzip".to_owned(), AttributeValue::Bool(true));
        }
        item
    }
}

/// A new channel's item (its webhook and retention are set later).
pub struct ChannelRecord<'a> {
    pub key: &'a ChannelKey,
    pub state: &'a ChannelState,
    pub created_at: u64,
}

impl FromItem for ChannelState {
    fn from_item(item: &Item) -> Result<Self, StoreError> {
        Ok(ChannelState {
            epoch: req_s(item, "channel", "epoch")?,
            head: req_n(item, "channel", "head")?,
            retention_s: get_n(item, "retention_s"),
        })
    }
}

impl ToItem for ChannelRecord<'_> {
    fn to_item(&self) -> Item {
        let mut item = HashMap::from([
            ("pk".to_owned(), s(channel_pk(self.key))),
            ("epoch".to_owned(), s(&self.state.epoch)),
            ("head".to_owned(), n(self.state.head)),
            ("created_at".to_owned(), n(self.created_at)),
        ]);
        if let Some(r) = self.state.retention_s {
            item.insert("retention_s".to_owned(), n(r));
        }
        item
    }
}

/// A committed event's item, kept until `expires_at`.
pub struct EventRecord<'a> {
    pub event: &'a StoredEvent,
    pub committed_at: u64,
    pub expires_at: u64,
}

impl FromItem for StoredEvent {
    fn from_item(item: &Item) -> Result<Self, StoreError> {
        let what = "event";
        let pk = req_s(item, what, "pk")?;
        let data = req_s(item, what, "data")?;
        Ok(StoredEvent {
            key: channel_key(&pk).ok_or_else(|| corrupt(what, "a tenant#channel pk"))?,
            epoch: req_s(item, what, "epoch")?,
            seq: req_n(item, what, "sk")?,
            id: req_s(item, what, "id")?,
            kind: req_s(item, what, "kind")?,
            // Checked to be JSON (a scan), never parsed into a tree.
            data: RawData::from_text(data).map_err(|e| StoreError::failed("read event", e))?,
            ts: get_s(item, "ts").unwrap_or_default(),
        })
    }
}

impl ToItem for EventRecord<'_> {
    fn to_item(&self) -> Item {
        let e = self.event;
        HashMap::from([
            ("pk".to_owned(), s(channel_pk(&e.key))),
            ("sk".to_owned(), n(e.seq)),
            ("id".to_owned(), s(&e.id)),
            ("kind".to_owned(), s(&e.kind)),
            ("data".to_owned(), s(e.data.get())),
            ("ts".to_owned(), s(&e.ts)),
            ("epoch".to_owned(), s(&e.epoch)),
            ("committed_at".to_owned(), n(self.committed_at)),
            ("expires_at".to_owned(), n(self.expires_at)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_round_trips() {
        let c = Connection {
            id: "c-1".into(),
            tenant: "acme".into(),
            principal: "ana".into(),
            grants: vec!["agent-*".into()],
            publish: vec![],
            protocol: Some(1),
            connected_at: 10,
            expires_at: 20,
            channels: vec!["a".into(), "b".into()],
            token_exp: 30,
            token_iat: Some(25),
            counted: true,
            gzip: true,
        };
        assert_eq!(Connection::from_item(&c.to_item()).unwrap(), c);
        let bare = Connection {
            protocol: None,
            channels: vec![],
            counted: false,
            gzip: false,
            ..c
        };
        assert_eq!(Connection::from_item(&bare.to_item()).unwrap(), bare);
    }

    #[test]
    fn a_subscription_round_trips_to_its_subscriber() {
        let key = ChannelKey::new("acme", "a");
        let sub = Subscriber {
            connection_id: "c-1".into(),
            principal: "ana".into(),
            token_exp: 99,
            gzip: false,
        };
        let item = SubscriptionRecord {
            key: &key,
            subscriber: &sub,
            joined_at: 1,
            expires_at: 2,
        }
        .to_item();
        assert_eq!(Subscriber::from_item(&item).unwrap(), sub);
        let gzip = Subscriber { gzip: true, ..sub };
        let item = SubscriptionRecord {
            key: &key,
            subscriber: &gzip,
            joined_at: 1,
            expires_at: 2,
        }
        .to_item();
        assert_eq!(Subscriber::from_item(&item).unwrap(), gzip);
        assert_eq!(get_s(&item, "pk").as_deref(), Some("acme#a"));
        let shard = agentwire_core::model::subscription_shard("c-1");
        assert_eq!(get_s(&item, "sk"), Some(format!("{shard:03}#c-1")));
        assert!(expired(&item, 2) && !expired(&item, 1));
    }

    #[test]
    fn a_channel_round_trips() {
        let key = ChannelKey::new("acme", "a");
        for retention_s in [None, Some(60)] {
            let state = ChannelState {
                epoch: "e1".into(),
                head: 7,
                retention_s,
            };
            let item = ChannelRecord {
                key: &key,
                state: &state,
                created_at: 5,
            }
            .to_item();
            assert_eq!(ChannelState::from_item(&item).unwrap(), state);
        }
    }

    #[test]
    fn an_event_round_trips_and_a_corrupt_one_is_an_error() {
        let event = StoredEvent {
            key: ChannelKey::new("acme", "a"),
            epoch: "e1".into(),
            seq: 42,
            id: "id-1".into(),
            kind: "note".into(),
            data: serde_json::json!({"text": "hi", "n": [1, 2]}).into(),
            ts: "2026-11-24T09:00:00.000Z".into(),
        };
        let mut item = EventRecord {
            event: &event,
            committed_at: 1,
            expires_at: 2,
        }
        .to_item();
        assert_eq!(StoredEvent::from_item(&item).unwrap(), event);
        item.remove("kind");
        let err = StoredEvent::from_item(&item).unwrap_err();
        assert!(err.to_string().contains("kind"), "{err}");
    }

    #[test]
    fn keys_split_back() {
        let key = ChannelKey::new("acme", "agent-1");
        assert_eq!(channel_key(&channel_pk(&key)), Some(key.clone()));
        assert_eq!(
            scope_pk(&WebhookScope::TenantDefault("acme".into())),
            "acme#*"
        );
        assert_eq!(
            scope_pk(&WebhookScope::Channel(key.clone())),
            "acme#agent-1"
        );
        assert_eq!(dedup_pk(&key, "x"), "acme#agent-1#x");
    }

    #[test]
    fn a_subscription_key_sorts_inside_its_shard_bounds_and_after_presence() {
        use agentwire_core::model::ShardRange;
        for id in ["c-1", "AbC=", "zzzz", "a#b", "x"] {
            let sk = subscription_sk(id);
            assert_eq!(subscription_connection(&sk), id);
            assert!(sk.as_str() > super::super::registry::PRESENCE_SK);
            let shard = agentwire_core::model::subscription_shard(id);
            for r in ShardRange::split(9) {
                let (lo, hi) = subscription_sk_bounds(r);
                let inside = lo.as_str() <= sk.as_str() && sk.as_str() <= hi.as_str();
                assert_eq!(inside, r.contains(shard), "{id} in {r}");
            }
        }
        assert_eq!(subscription_connection("legacy-id"), "legacy-id");
    }
}
