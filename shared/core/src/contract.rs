//! Port contract tests (feature `test-util`): one set of cases per port,
//! which every implementation must pass. Each takes the implementation
//! under test, built on the [`ManualClock`] it is given, and a namespace
//! (a tenant name no other test uses), so the same cases run against the
//! in-memory fakes (this crate's tests) and against the DynamoDB adapters
//! on the local endpoint (`agentwire-e2e`), and the fakes cannot drift from
//! the adapters. A failed case panics with what differed.

// Test code, shipped for the other crates' tests: assertions are its point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::json;

use crate::clock::{Clock, ManualClock};
use crate::limits::{Rate, Take, TenantLimits};
use crate::model::{ChannelKey, Connection, Envelope};
use crate::ports::{
    AppendError, ChannelLog, ChannelSettings, ConnectionRegistry, CursorStore, Dedup,
    LimitSettings, RateLimiter, ReadBudget, WebhookDirectory, WebhookStore,
};
use crate::webhook::{WebhookConfig, WebhookMode, WebhookScope};

fn conn(ns: &str, id: &str, expires_at: u64) -> Connection {
    Connection {
        id: format!("{ns}-{id}"),
        tenant: ns.to_owned(),
        principal: format!("p-{id}"),
        grants: vec!["*".into()],
        publish: vec![],
        protocol: None,
        connected_at: 1,
        expires_at,
        channels: vec![],
        token_exp: 77,
        token_iat: None,
        counted: false,
        gzip: false,
    }
}

fn env(key: &ChannelKey, id: &str) -> Envelope {
    Envelope {
        tenant: key.tenant.clone(),
        channel: key.channel.clone(),
        id: id.to_owned(),
        kind: "note".into(),
        data: json!({"id": id}).into(),
        ts: "2026-11-24T09:00:00.000Z".into(),
    }
}

/// [`ConnectionRegistry`]: records, protocol, subscriptions, TTL filtering
/// and removal.
pub async fn connection_registry(reg: &dyn ConnectionRegistry, clock: &ManualClock, ns: &str) {
    let now = clock.epoch_s();
    let key = ChannelKey::new(ns, "room");
    let a = conn(ns, "a", now + 3600);
    reg.put_connection(&a).await.unwrap();
    assert_eq!(reg.get_connection(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(
        reg.get_connection(&format!("{ns}-none")).await.unwrap(),
        None
    );

    // Conditional updates refuse unknown connections.
    assert!(
        !reg.set_protocol(&format!("{ns}-none"), 1, true)
            .await
            .unwrap()
    );
    assert!(reg.set_protocol(&a.id, 1, true).await.unwrap());
    let a = reg.get_connection(&a.id).await.unwrap().unwrap();
    assert_eq!((a.protocol, a.gzip), (Some(1), true));
    let ghost = conn(ns, "ghost", now + 3600);
    assert!(!reg.subscribe(&ghost, &key, now + 3600).await.unwrap());
    assert!(reg.subscribers(&key).await.unwrap().is_empty());

    // Subscriptions list their principal and token expiry; an expired one
    // is left out before TTL deletes it.
    let b = conn(ns, "b", now + 3600);
    reg.put_connection(&b).await.unwrap();
    assert!(reg.subscribe(&a, &key, now + 3600).await.unwrap());
    assert!(reg.subscribe(&b, &key, now + 10).await.unwrap());
    let mut subs = reg.subscribers(&key).await.unwrap();
    subs.sort_by(|x, y| x.connection_id.cmp(&y.connection_id));
    assert_eq!(
        subs.iter()
            .map(|s| (
                s.connection_id.as_str(),
                s.principal.as_str(),
                s.token_exp,
                s.gzip
            ))
            .collect::<Vec<_>>(),
        [
            (a.id.as_str(), "p-a", 77, true),
            (b.id.as_str(), "p-b", 77, false)
        ],
        "a subscription takes gzip from its connection's hello"
    );
    assert_eq!(
        reg.get_connection(&a.id).await.unwrap().unwrap().channels,
        ["room"]
    );
    clock.advance(Duration::from_secs(11));
    let subs = reg.subscribers(&key).await.unwrap();
    assert_eq!(subs.len(), 1, "the expired subscription is left out");
    assert_eq!(subs[0].connection_id, a.id);

    // Presence: b's subscription expired; once the subscribers have been
    // listed (as the dispatcher does for every event), the count is the
    // live one. Joining again is not counted twice.
    let p = reg.presence(&key).await.unwrap();
    assert_eq!(
        (p.count, p.principals.as_slice()),
        (1, ["p-a".to_owned()].as_slice())
    );
    assert!(
        reg.subscribe(&a, &key, clock.epoch_s() + 3600)
            .await
            .unwrap()
    );
    assert_eq!(
        reg.presence(&key).await.unwrap().count,
        1,
        "a re-join counts once"
    );
    let others: Vec<Connection> = (0..25)
        .map(|i| conn(ns, &format!("x{i:02}"), clock.epoch_s() + 3600))
        .collect();
    for c in &others {
        reg.put_connection(c).await.unwrap();
        assert!(
            reg.subscribe(c, &key, clock.epoch_s() + 3600)
                .await
                .unwrap()
        );
    }
    let p = reg.presence(&key).await.unwrap();
    assert_eq!(p.count, 26);
    assert!(
        !p.principals.is_empty() && p.principals.len() <= agentwire_protocol::PRESENCE_SAMPLE,
        "a bounded sample: {:?}",
        p.principals
    );
    let mut sorted = p.principals.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, p.principals, "distinct and sorted");
    let present = |p: &crate::model::ChannelPresence, gone: &[&str]| {
        p.principals.iter().all(|x| {
            !gone.contains(&x.as_str()) && (x == "p-a" || others.iter().any(|c| &c.principal == x))
        })
    };
    assert!(
        present(&p, &[]),
        "only present principals: {:?}",
        p.principals
    );
    assert_eq!(
        p.principals.len(),
        agentwire_protocol::PRESENCE_SAMPLE,
        "26 principals fill the sample"
    );

    // A sampled principal that leaves is out of the sample at once; a
    // listing (which the dispatcher runs when the membership moved) fills
    // the sample again from who is present.
    let left = p.principals.iter().find(|x| *x != "p-a").cloned().unwrap();
    let leaver = others.iter().find(|c| c.principal == left).unwrap();
    reg.unsubscribe(&leaver.id, &key).await.unwrap();
    let p = reg.presence(&key).await.unwrap();
    assert_eq!(p.count, 25);
    assert!(present(&p, &[&left]), "{left} left: {:?}", p.principals);
    reg.subscribers(&key).await.unwrap();
    let p = reg.presence(&key).await.unwrap();
    assert_eq!(p.principals.len(), agentwire_protocol::PRESENCE_SAMPLE);
    assert!(present(&p, &[&left]), "refilled: {:?}", p.principals);

    // A principal on two connections that closes one is present still (in
    // the sample after the next listing at the latest).
    let a2 = Connection {
        id: format!("{ns}-a2"),
        ..a.clone()
    };
    reg.put_connection(&a2).await.unwrap();
    assert!(
        reg.subscribe(&a2, &key, clock.epoch_s() + 3600)
            .await
            .unwrap()
    );
    reg.unsubscribe(&a2.id, &key).await.unwrap();
    reg.subscribers(&key).await.unwrap();
    assert!(
        reg.presence(&key)
            .await
            .unwrap()
            .principals
            .contains(&"p-a".to_owned()),
        "p-a is still on the channel"
    );

    for c in &others {
        reg.unsubscribe(&c.id, &key).await.unwrap();
    }
    assert_eq!(
        reg.presence(&key).await.unwrap(),
        crate::model::ChannelPresence {
            count: 1,
            principals: vec!["p-a".into()],
        }
    );
    let empty = reg.presence(&ChannelKey::new(ns, "nobody")).await.unwrap();
    assert_eq!((empty.count, empty.principals.len()), (0, 0));

    // Leaving, then removing the connection with what it joined.
    reg.unsubscribe(&a.id, &key).await.unwrap();
    assert_eq!(reg.presence(&key).await.unwrap().count, 0);
    assert!(reg.subscribers(&key).await.unwrap().is_empty());
    assert!(
        reg.get_connection(&a.id)
            .await
            .unwrap()
            .unwrap()
            .channels
            .is_empty()
    );
    assert!(
        reg.subscribe(&a, &key, clock.epoch_s() + 3600)
            .await
            .unwrap()
    );
    assert!(reg.remove_connection(&a.id).await.unwrap().is_some());
    assert!(reg.remove_connection(&a.id).await.unwrap().is_none());
    assert_eq!(reg.get_connection(&a.id).await.unwrap(), None);
    assert!(
        reg.subscribers(&key)
            .await
            .unwrap()
            .iter()
            .all(|s| s.connection_id != a.id),
        "removing a connection removes its subscriptions"
    );
    assert_eq!(
        reg.presence(&key).await.unwrap().count,
        0,
        "and its presence"
    );

    // A connection past its TTL is gone for readers.
    let c = conn(ns, "c", clock.epoch_s() + 5);
    reg.put_connection(&c).await.unwrap();
    clock.advance(Duration::from_secs(6));
    assert_eq!(reg.get_connection(&c.id).await.unwrap(), None);

    // A shard listing (all a big channel ever gets) that meets an expired
    // subscription takes it out of the count and the sample, as a 410
    // would: nothing else would on a channel that is never listed whole.
    let big = ChannelKey::new(ns, "big");
    let stays = conn(ns, "stays", clock.epoch_s() + 3600);
    let lapses = conn(ns, "lapses", clock.epoch_s() + 5);
    for (c, until) in [(&stays, 3600), (&lapses, 5)] {
        reg.put_connection(c).await.unwrap();
        assert!(
            reg.subscribe(c, &big, clock.epoch_s() + until)
                .await
                .unwrap()
        );
    }
    assert_eq!(reg.presence(&big).await.unwrap().count, 2);
    clock.advance(Duration::from_secs(6));
    let listed = reg
        .subscribers_in(&big, crate::model::ShardRange::ALL)
        .await
        .unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|s| s.principal.as_str())
            .collect::<Vec<_>>(),
        ["p-stays"]
    );
    assert_eq!(
        reg.presence(&big).await.unwrap(),
        crate::model::ChannelPresence {
            count: 1,
            principals: vec!["p-stays".into()],
        },
        "the lapsed subscription left count and sample"
    );

    membership_and_shards(reg, clock, ns).await;

    // The deployment's open connections: a level moved by deltas, never
    // below zero (a removal of a connection opened before the count
    // existed floors it).
    assert_eq!(reg.count_open(0).await.unwrap(), 0);
    assert_eq!(reg.count_open(2).await.unwrap(), 2);
    assert_eq!(reg.count_open(-1).await.unwrap(), 1);
    assert_eq!(reg.count_open(-5).await.unwrap(), 0);
    assert_eq!(reg.count_open(1).await.unwrap(), 1);
}

/// The membership version moves with every subscribe (a re-join too: a
/// retried join must be seen), leave and removal, and not otherwise; a
/// shard range lists exactly its shards' subscriptions.
async fn membership_and_shards(reg: &dyn ConnectionRegistry, clock: &ManualClock, ns: &str) {
    let key = ChannelKey::new(ns, "members");
    let later = clock.epoch_s() + 3600;
    let none = reg.membership(&key).await.unwrap();
    assert_eq!(none.count, 0);
    let conns: Vec<Connection> = (0..40)
        .map(|i| conn(ns, &format!("m{i:02}"), later))
        .collect();
    for c in &conns {
        reg.put_connection(c).await.unwrap();
    }
    let mut last = none.version;
    let mut moved = |m: crate::model::Membership, what: &str| {
        assert!(
            m.version > last,
            "{what} moves the version ({} -> {})",
            last,
            m.version
        );
        last = m.version;
    };
    assert!(reg.subscribe(&conns[0], &key, later).await.unwrap());
    let m = reg.membership(&key).await.unwrap();
    assert_eq!(m.count, 1);
    moved(m, "a subscribe");
    assert!(reg.subscribe(&conns[0], &key, later).await.unwrap());
    let m = reg.membership(&key).await.unwrap();
    assert_eq!(m.count, 1, "a re-join counts once");
    moved(m, "a re-join");
    let same = reg.membership(&key).await.unwrap();
    assert_eq!(same, m, "reads move nothing");
    reg.subscribers(&key).await.unwrap();
    assert_eq!(reg.membership(&key).await.unwrap(), m, "nor does listing");
    reg.unsubscribe(&conns[1].id, &key).await.unwrap();
    assert_eq!(
        reg.membership(&key).await.unwrap(),
        m,
        "leaving a channel not joined moves nothing"
    );
    for c in &conns[1..] {
        assert!(reg.subscribe(c, &key, later).await.unwrap());
    }
    let m = reg.membership(&key).await.unwrap();
    assert_eq!(m.count, 40);
    moved(m, "subscribes");

    let all: std::collections::BTreeSet<String> = reg
        .subscribers(&key)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.connection_id)
        .collect();
    assert_eq!(all.len(), 40);
    let mut union = std::collections::BTreeSet::new();
    for range in crate::model::ShardRange::split(7) {
        for s in reg.subscribers_in(&key, range).await.unwrap() {
            assert!(
                range.contains(crate::model::subscription_shard(&s.connection_id)),
                "{} listed in {range}",
                s.connection_id
            );
            assert_eq!(s.token_exp, 77);
            assert!(union.insert(s.connection_id), "listed by one range only");
        }
    }
    assert_eq!(union, all, "the ranges together list every subscriber");

    reg.unsubscribe(&conns[0].id, &key).await.unwrap();
    let m = reg.membership(&key).await.unwrap();
    assert_eq!(m.count, 39);
    moved(m, "a leave");
    assert!(reg.remove_connection(&conns[1].id).await.unwrap().is_some());
    let m = reg.membership(&key).await.unwrap();
    assert_eq!(m.count, 38);
    moved(m, "a removal");
}

/// [`ChannelLog`] and [`ChannelSettings`]: creation, conditional commits,
/// dedup (live, expired), reads that skip expired events across pages, and
/// retention.
pub async fn channel_log<L>(log: &L, clock: &ManualClock, ns: &str)
where
    L: ChannelLog + ChannelSettings,
{
    let key = ChannelKey::new(ns, "log");
    assert_eq!(
        log.channel(&key).await.unwrap(),
        None,
        "reads create nothing"
    );
    let state = log.ensure_channel(&key).await.unwrap();
    assert_eq!((state.head, state.retention_s), (0, None));
    assert_eq!(log.ensure_channel(&key).await.unwrap(), state, "idempotent");
    assert_eq!(log.channel(&key).await.unwrap(), Some(state.clone()));
    assert_eq!(log.oldest_retained(&key, 0).await.unwrap(), None);

    // 30 short-lived events, then 10 long-lived ones.
    let now = clock.epoch_s();
    let short: Vec<Envelope> = (1..=30).map(|i| env(&key, &format!("s{i}"))).collect();
    let stored = log
        .append(&key, &state, &short, Dedup::Record, now + 10)
        .await
        .unwrap();
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>()
    );
    assert_eq!(stored[0].epoch, state.epoch);
    // A writer holding the old head is refused; a known id is a duplicate.
    assert!(matches!(
        log.append(&key, &state, &[env(&key, "x")], Dedup::Record, now + 10)
            .await,
        Err(AppendError::HeadMoved)
    ));
    let state = log.channel(&key).await.unwrap().unwrap();
    assert_eq!(state.head, 30);
    match log
        .append(
            &key,
            &state,
            &[env(&key, "new"), env(&key, "s3")],
            Dedup::Record,
            now + 10,
        )
        .await
    {
        Err(AppendError::Duplicate(ids)) => assert_eq!(ids, ["s3"]),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    assert_eq!(
        log.channel(&key).await.unwrap().unwrap().head,
        30,
        "nothing committed"
    );
    let long: Vec<Envelope> = (1..=10).map(|i| env(&key, &format!("l{i}"))).collect();
    log.append(&key, &state, &long, Dedup::Record, now + 1000)
        .await
        .unwrap();
    let found = log.find_by_id(&key, "s3").await.unwrap().unwrap();
    assert_eq!(
        (found.seq, found.data.value()["id"].as_str()),
        (3, Some("s3"))
    );
    assert_eq!(log.find_by_id(&key, "nope").await.unwrap(), None);
    let all = log
        .read_range(&key, 1, 40, ReadBudget::events(100))
        .await
        .unwrap();
    assert_eq!(all.len(), 40);
    assert_eq!(all[39].kind, "note");
    assert_eq!(
        log.read_range(&key, 5, 7, ReadBudget::events(100))
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        log.read_range(&key, 5, 40, ReadBudget::events(2))
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        log.read_range(&key, 7, 5, ReadBudget::events(10))
            .await
            .unwrap()
            .is_empty()
    );
    // A byte budget stops the read at the event that would pass it, never
    // before the first.
    let size = all[0].approx_len();
    let by_bytes = |bytes| ReadBudget { events: 100, bytes };
    let two = log
        .read_range(&key, 1, 40, by_bytes(2 * size + size / 2))
        .await
        .unwrap();
    assert_eq!(two.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    let one = log.read_range(&key, 1, 40, by_bytes(1)).await.unwrap();
    assert_eq!(one.iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);

    // The short-lived ones expire: reads skip them (in small pages, so the
    // adapters page past the expired prefix), dedup records no longer block.
    clock.advance(Duration::from_secs(11));
    let live = log
        .read_range(&key, 1, 40, ReadBudget::events(3))
        .await
        .unwrap();
    assert_eq!(live.iter().map(|e| e.seq).collect::<Vec<_>>(), [31, 32, 33]);
    assert_eq!(log.oldest_retained(&key, 40).await.unwrap(), Some(31));
    assert_eq!(log.find_by_id(&key, "s3").await.unwrap(), None);
    let state = log.channel(&key).await.unwrap().unwrap();
    let again = log
        .append(
            &key,
            &state,
            &[env(&key, "s3")],
            Dedup::Record,
            clock.epoch_s() + 1000,
        )
        .await
        .unwrap();
    assert_eq!(
        again[0].seq, 41,
        "an id whose dedup record expired commits again"
    );
    assert_eq!(log.find_by_id(&key, "s3").await.unwrap().unwrap().seq, 41);

    // Retention is the channel's own setting.
    let set = log
        .set_retention(&key, Some(Duration::from_secs(600)))
        .await
        .unwrap();
    assert_eq!((set.retention_s, set.head), (Some(600), 41));
    let cleared = log.set_retention(&key, None).await.unwrap();
    assert_eq!(cleared.retention_s, None);
    let other = ChannelKey::new(ns, "fresh");
    let created = log
        .set_retention(&other, Some(Duration::from_millis(10)))
        .await
        .unwrap();
    assert_eq!((created.head, created.retention_s), (0, Some(1)));

    // Without dedup records: the seq itself is the lock. A single event
    // and a run both commit; a writer whose state is stale is refused
    // (HeadMoved), never given a taken seq, and then finds the head.
    let key = ChannelKey::new(ns, "skip");
    let state = log.ensure_channel(&key).await.unwrap();
    let later = clock.epoch_s() + 1000;
    let one = log
        .append(&key, &state, &[env(&key, "a")], Dedup::Skip, later)
        .await
        .unwrap();
    assert_eq!(one[0].seq, 1);
    assert_eq!(
        log.find_by_id(&key, "a").await.unwrap(),
        None,
        "no dedup record"
    );
    for stale in [vec![env(&key, "b")], vec![env(&key, "b"), env(&key, "c")]] {
        assert!(matches!(
            log.append(&key, &state, &stale, Dedup::Skip, later).await,
            Err(AppendError::HeadMoved)
        ));
        assert!(matches!(
            log.append(&key, &state, &stale, Dedup::Record, later).await,
            Err(AppendError::HeadMoved)
        ));
    }
    let state = log.channel(&key).await.unwrap().unwrap();
    assert_eq!(state.head, 1);
    let run = log
        .append(
            &key,
            &state,
            &[env(&key, "b"), env(&key, "c")],
            Dedup::Skip,
            later,
        )
        .await
        .unwrap();
    assert_eq!(run.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    let state = log.channel(&key).await.unwrap().unwrap();
    assert_eq!(state.head, 3);
    let all = log
        .read_range(&key, 1, 3, ReadBudget::events(10))
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
}

/// [`CursorStore`]: forward only, per principal and channel, expiring.
pub async fn cursor_store(cursors: &dyn CursorStore, clock: &ManualClock, ns: &str) {
    assert_eq!(cursors.get(ns, "ana", "a").await.unwrap(), None);
    assert_eq!(cursors.advance(ns, "ana", "a", 5).await.unwrap(), 5);
    assert_eq!(
        cursors.advance(ns, "ana", "a", 3).await.unwrap(),
        5,
        "never back"
    );
    assert_eq!(cursors.advance(ns, "ana", "a", 9).await.unwrap(), 9);
    assert_eq!(cursors.get(ns, "ana", "a").await.unwrap(), Some(9));
    assert_eq!(cursors.get(ns, "ana", "b").await.unwrap(), None);
    assert_eq!(cursors.get(ns, "bob", "a").await.unwrap(), None);
    clock.advance(Duration::from_secs(31 * 24 * 3600));
    assert_eq!(cursors.get(ns, "ana", "a").await.unwrap(), None, "expired");
    // An expired cursor (TTL not yet run) is as good as none: any seq sets it.
    assert_eq!(cursors.advance(ns, "ana", "a", 3).await.unwrap(), 3);
    assert_eq!(cursors.get(ns, "ana", "a").await.unwrap(), Some(3));
}

/// [`WebhookStore`] and [`WebhookDirectory`]: configurations per scope, and
/// the effective one (the channel's own, else the tenant default, never an
/// expired one).
pub async fn webhooks<W>(store: &W, clock: &ManualClock, ns: &str)
where
    W: WebhookStore + WebhookDirectory,
{
    let key = ChannelKey::new(ns, "hooked");
    let own = WebhookScope::Channel(key.clone());
    let default = WebhookScope::TenantDefault(ns.to_owned());
    let now = clock.epoch_s();
    assert_eq!(store.get(&own).await.unwrap(), None);
    assert_eq!(store.effective(&key).await.unwrap(), None);
    assert!(!store.remove(&own).await.unwrap());

    let d = WebhookConfig::new("http://127.0.0.1:1/t", WebhookMode::Fallback, None, now).unwrap();
    store.put(&default, &d).await.unwrap();
    assert_eq!(store.get(&default).await.unwrap(), Some(d.clone()));
    assert_eq!(
        store.effective(&key).await.unwrap(),
        Some((default.clone(), d.clone()))
    );
    let c = WebhookConfig::new(
        "http://127.0.0.1:2/c",
        WebhookMode::Always,
        Some(now + 10),
        now,
    )
    .unwrap();
    store.put(&own, &c).await.unwrap();
    assert_eq!(store.effective(&key).await.unwrap(), Some((own.clone(), c)));
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        store.effective(&key).await.unwrap(),
        Some((default.clone(), d)),
        "expired: back to the default"
    );
    assert!(store.remove(&default).await.unwrap());
    assert_eq!(store.effective(&key).await.unwrap(), None);
    assert!(
        store.get(&own).await.unwrap().is_some(),
        "kept for the operator"
    );
}

/// Counted connections: admitted up to `max`, the record and the count
/// move together, a removal gives the place back (once), a reset zeroes it.
pub async fn counted_connections(reg: &dyn ConnectionRegistry, ns: &str) {
    let a = conn(ns, "ca", u64::MAX);
    let b = conn(ns, "cb", u64::MAX);
    let c = conn(ns, "cc", u64::MAX);
    assert!(reg.put_counted_connection(&a, 2).await.unwrap());
    assert!(reg.put_counted_connection(&b, 2).await.unwrap());
    assert!(
        !reg.put_counted_connection(&c, 2).await.unwrap(),
        "a third at max 2"
    );
    assert!(
        reg.get_connection(&c.id).await.unwrap().is_none(),
        "a refused connection is not recorded"
    );
    assert_eq!(reg.counted_connections(ns).await.unwrap(), 2);
    let stored = reg.get_connection(&a.id).await.unwrap().unwrap();
    assert!(stored.counted, "the record says it is counted");
    assert!(reg.remove_connection(&a.id).await.unwrap().is_some());
    assert!(reg.remove_connection(&a.id).await.unwrap().is_none());
    assert_eq!(
        reg.counted_connections(ns).await.unwrap(),
        1,
        "removed once, counted down once"
    );
    assert!(reg.put_counted_connection(&c, 2).await.unwrap());
    // An uncounted connection leaves the count alone.
    let d = conn(ns, "cd", u64::MAX);
    reg.put_connection(&d).await.unwrap();
    assert!(reg.remove_connection(&d.id).await.unwrap().is_some());
    assert_eq!(reg.counted_connections(ns).await.unwrap(), 2);
    reg.reset_connection_count(ns).await.unwrap();
    assert_eq!(reg.counted_connections(ns).await.unwrap(), 0);
    // A counted connection removed after a reset never goes below zero.
    assert!(reg.remove_connection(&b.id).await.unwrap().is_some());
    assert_eq!(reg.counted_connections(ns).await.unwrap(), 0);
    assert!(reg.remove_connection(&c.id).await.unwrap().is_some());
}

/// Token buckets: a burst is allowed up to its size and refused after with
/// the exact wait; concurrent takes never allow more than the burst; a
/// bucket refills at its rate. Limits settings round-trip and clear.
pub async fn rate_limiter<L>(limits: &L, ns: &str)
where
    L: RateLimiter + LimitSettings,
{
    let rate = Rate {
        per_s: 5,
        burst: 10,
    };
    let bucket = format!("bucket#contract#{ns}");
    let now = 1_000_000_000_000u64;
    let mut allowed = 0;
    let mut waits = vec![];
    for _ in 0..15 {
        match limits.take(&bucket, rate, 1, now).await.unwrap() {
            Take::Granted(n) => allowed += n,
            Take::Limited { retry_after_ms } => waits.push(retry_after_ms),
        }
    }
    assert_eq!(allowed, 10, "the burst");
    assert_eq!(
        waits,
        vec![200; 5],
        "one interval (200 ms) until the next fits"
    );
    assert_eq!(
        limits.take(&bucket, rate, 1, now + 200_000).await.unwrap(),
        Take::Granted(1)
    );
    assert!(matches!(
        limits.take(&bucket, rate, 1, now + 200_000).await.unwrap(),
        Take::Limited { .. }
    ));
    // Idle for long: a full burst again.
    let later = now + 3_600_000_000;
    for _ in 0..10 {
        assert_eq!(
            limits.take(&bucket, rate, 1, later).await.unwrap(),
            Take::Granted(1)
        );
    }
    // Concurrent takes on a fresh bucket: exactly the burst.
    let bucket = format!("bucket#contract-race#{ns}");
    let takes = (0..30).map(|_| limits.take(&bucket, rate, 1, now));
    let results = futures::future::join_all(takes).await;
    let allowed = results
        .iter()
        .filter(|r| matches!(r, Ok(Take::Granted(1))))
        .count();
    assert_eq!(allowed, 10, "concurrent takes: {results:?}");
    // Chunks (an instance's lease): as many as fit, never past the burst,
    // alone or racing.
    let bucket = format!("bucket#contract-chunk#{ns}");
    assert_eq!(
        limits.take(&bucket, rate, 4, now).await.unwrap(),
        Take::Granted(4)
    );
    assert_eq!(
        limits.take(&bucket, rate, 8, now).await.unwrap(),
        Take::Granted(6),
        "the 6 left of the burst"
    );
    assert_eq!(
        limits.take(&bucket, rate, 3, now).await.unwrap(),
        Take::Limited {
            retry_after_ms: 200
        }
    );
    let bucket = format!("bucket#contract-chunk-race#{ns}");
    let takes = (0..12).map(|_| limits.take(&bucket, rate, 3, now));
    let results = futures::future::join_all(takes).await;
    let granted: u32 = results
        .iter()
        .map(|r| match r {
            Ok(Take::Granted(n)) => *n,
            _ => 0,
        })
        .sum();
    assert_eq!(granted, 10, "racing chunks: {results:?}");

    assert_eq!(limits.get(ns).await.unwrap(), None);
    let l = TenantLimits {
        publish_rate: Some(5),
        max_connections: Some(3),
        dry_run: Some(true),
        ..Default::default()
    };
    limits.put(ns, &l).await.unwrap();
    assert_eq!(limits.get(ns).await.unwrap(), Some(l));
    assert!(limits.clear(ns).await.unwrap());
    assert!(!limits.clear(ns).await.unwrap());
    assert_eq!(limits.get(ns).await.unwrap(), None);
}

/// Trust entries: one owner per issuer, listed per owner, removed only by
/// their owner. `ns` keeps runs apart (issuers and tenants named after it).
pub async fn trust_store<T>(store: &T, ns: &str)
where
    T: crate::ports::TrustStore + ?Sized,
{
    use crate::auth::trust::{KeySource, TrustEntry, TrustOwner};
    let entry = |iss: &str, owner: TrustOwner| TrustEntry {
        issuer: iss.to_owned(),
        owner,
        keys: KeySource::Jwks {
            url: format!("https://{ns}.example/jwks"),
        },
        audiences: vec!["app".into()],
        principal_claim: None,
        grants_claim: Some("grants".into()),
        channels: vec!["inbox-{sub}".into()],
        publish: vec![],
        max_lifetime_s: Some(3600),
        preset: None,
    };
    let (a, b) = (format!("{ns}a"), format!("{ns}b"));
    let iss = format!("https://{ns}.example/");
    let mine = entry(&iss, TrustOwner::Tenant(a.clone()));
    assert_eq!(store.issuer(&iss).await.unwrap(), None);
    assert!(store.put_issuer(&mine).await.unwrap());
    assert_eq!(store.issuer(&iss).await.unwrap(), Some(mine.clone()));
    assert!(
        !store
            .put_issuer(&entry(&iss, TrustOwner::Tenant(b.clone())))
            .await
            .unwrap(),
        "another tenant cannot take the issuer"
    );
    assert!(
        !store
            .put_issuer(&entry(&iss, TrustOwner::TenantClaim("org".into())))
            .await
            .unwrap(),
        "nor the deployment"
    );
    let mut changed = mine.clone();
    changed.audiences = vec!["app2".into()];
    assert!(
        store.put_issuer(&changed).await.unwrap(),
        "its owner changes it"
    );
    assert_eq!(store.issuers_of(Some(&a)).await.unwrap(), vec![changed]);
    assert!(store.issuers_of(Some(&b)).await.unwrap().is_empty());
    assert!(!store.remove_issuer(Some(&b), &iss).await.unwrap());
    assert!(store.remove_issuer(Some(&a), &iss).await.unwrap());
    assert!(!store.remove_issuer(Some(&a), &iss).await.unwrap());
    assert_eq!(store.issuer(&iss).await.unwrap(), None);
}

/// Revocations never move back, and are per tenant.
pub async fn revocations<R>(store: &R, ns: &str)
where
    R: crate::ports::Revocations + ?Sized,
{
    let (a, b) = (format!("{ns}a"), format!("{ns}b"));
    assert_eq!(store.revoked_at(&a, "ana").await.unwrap(), None);
    store.revoke(&a, "ana", 2_000).await.unwrap();
    store.revoke(&a, "ana", 1_000).await.unwrap();
    assert_eq!(
        store.revoked_at(&a, "ana").await.unwrap(),
        Some(2_000),
        "never back"
    );
    store.revoke(&a, "ana", 3_000).await.unwrap();
    assert_eq!(store.revoked_at(&a, "ana").await.unwrap(), Some(3_000));
    assert_eq!(store.revoked_at(&b, "ana").await.unwrap(), None);
    store.revoke(&a, "bo", 5).await.unwrap();
    let list = store.revocations(&a).await.unwrap();
    let subs: Vec<(&str, u64)> = list.iter().map(|r| (r.sub.as_str(), r.at_ms)).collect();
    assert_eq!(subs, vec![("ana", 3_000), ("bo", 5)]);
    assert!(store.revocations(&b).await.unwrap().is_empty());
}

/// A receiver's hold moves only from the value seen (a claim lost to
/// another instance is `false`), is per receiver, and a release ends only
/// the hold it saw.
pub async fn receiver_holds<H>(holds: &H, ns: &str)
where
    H: crate::ports::ReceiverHolds + ?Sized,
{
    let (a, b) = (
        format!("{ns}a#hooks.example:443"),
        format!("{ns}b#hooks.example:443"),
    );
    assert_eq!(holds.held_until(&a).await.unwrap(), None);
    assert!(holds.hold(&a, None, 1_000).await.unwrap());
    assert!(!holds.hold(&a, None, 2_000).await.unwrap(), "already held");
    assert!(
        !holds.hold(&a, Some(999), 2_000).await.unwrap(),
        "not the value seen"
    );
    assert_eq!(holds.held_until(&a).await.unwrap(), Some(1_000));
    assert_eq!(holds.held_until(&b).await.unwrap(), None, "per receiver");
    assert!(
        holds.hold(&a, Some(1_000), 5_000).await.unwrap(),
        "the probe's claim"
    );
    holds.release(&a, 1_000).await.unwrap();
    assert_eq!(
        holds.held_until(&a).await.unwrap(),
        Some(5_000),
        "not the hold it saw"
    );
    holds.release(&a, 5_000).await.unwrap();
    assert_eq!(holds.held_until(&a).await.unwrap(), None);
    assert!(holds.hold(&a, None, 7_000).await.unwrap(), "held afresh");
}

/// A refreshed token replaces the connection's grants and expiry; a
/// principal's connections are found per tenant.
pub async fn token_updates(reg: &dyn ConnectionRegistry, ns: &str) {
    let tenant = format!("{ns}r");
    let mut c = conn(ns, "refresh-1", u64::MAX / 2);
    c.tenant = tenant.clone();
    c.principal = "ana".into();
    reg.put_connection(&c).await.unwrap();
    let mut other = conn(ns, "refresh-2", u64::MAX / 2);
    other.tenant = format!("{tenant}x");
    other.principal = "ana".into();
    reg.put_connection(&other).await.unwrap();
    let updated = Connection {
        grants: vec!["inbox-ana".into()],
        publish: vec!["out-*".into()],
        token_exp: 777,
        token_iat: Some(700),
        ..c.clone()
    };
    assert!(reg.update_token(&updated).await.unwrap());
    let got = reg.get_connection(&c.id).await.unwrap().unwrap();
    assert_eq!(
        (got.grants, got.publish, got.token_exp, got.token_iat),
        (
            vec!["inbox-ana".to_string()],
            vec!["out-*".to_string()],
            777,
            Some(700)
        )
    );
    let gone = Connection {
        id: format!("{ns}-nobody"),
        ..updated.clone()
    };
    assert!(!reg.update_token(&gone).await.unwrap());
    let found = reg.connections_of(&tenant, "ana").await.unwrap();
    assert_eq!(
        found.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec![c.id.as_str()]
    );
    assert!(reg.connections_of(&tenant, "bo").await.unwrap().is_empty());
}

/// Claiming channels under a maximum: a claim past it writes nothing, a
/// channel already held always fits, a connection that is gone says so.
pub async fn channel_claims(reg: &dyn ConnectionRegistry, ns: &str) {
    use crate::ports::Claim;
    let c = conn(ns, "claims-1", u64::MAX / 2);
    reg.put_connection(&c).await.unwrap();
    assert_eq!(
        reg.claim_channel(&c.id, "a", 2).await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        reg.claim_channel(&c.id, "b", 2).await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(reg.claim_channel(&c.id, "c", 2).await.unwrap(), Claim::Full);
    assert_eq!(
        reg.claim_channel(&c.id, "a", 2).await.unwrap(),
        Claim::Claimed
    );
    let mut held = reg.get_connection(&c.id).await.unwrap().unwrap().channels;
    held.sort();
    assert_eq!(held, ["a", "b"]);
    // Leaving one makes room.
    reg.unsubscribe(&c.id, &ChannelKey::new(&c.tenant, "a"))
        .await
        .unwrap();
    assert_eq!(
        reg.claim_channel(&c.id, "c", 2).await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        reg.claim_channel(&format!("{ns}-nobody"), "a", 2)
            .await
            .unwrap(),
        Claim::Gone
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::memory::{MemoryCursors, MemoryLog, MemoryRegistry, MemoryWebhooks};

    #[tokio::test]
    async fn the_memory_registry_keeps_the_contract() {
        let clock = Arc::new(ManualClock::new());
        connection_registry(&MemoryRegistry::with_clock(clock.clone()), &clock, "t1").await;
    }

    #[tokio::test]
    async fn the_memory_registry_counts_connections() {
        counted_connections(&MemoryRegistry::default(), "t1").await;
    }

    #[tokio::test]
    async fn the_memory_limits_keep_the_contract() {
        rate_limiter(&crate::memory::MemoryLimits::default(), "t1").await;
    }

    #[tokio::test]
    async fn the_memory_log_keeps_the_contract() {
        let clock = Arc::new(ManualClock::new());
        channel_log(&MemoryLog::with_clock(clock.clone()), &clock, "t1").await;
    }

    #[tokio::test]
    async fn the_memory_cursors_keep_the_contract() {
        let clock = Arc::new(ManualClock::new());
        cursor_store(&MemoryCursors::with_clock(clock.clone()), &clock, "t1").await;
    }

    #[tokio::test]
    async fn the_memory_identity_stores_keep_the_contract() {
        trust_store(&crate::memory::MemoryTrust::default(), "t1").await;
        revocations(&crate::memory::MemoryRevocations::default(), "t1").await;
        token_updates(&MemoryRegistry::default(), "t1").await;
        channel_claims(&MemoryRegistry::default(), "t1").await;
    }

    #[tokio::test]
    async fn the_memory_webhooks_keep_the_contract() {
        let clock = Arc::new(ManualClock::new());
        webhooks(&MemoryWebhooks::with_clock(clock.clone()), &clock, "t1").await;
        receiver_holds(&crate::memory::MemoryHolds::default(), "t1").await;
    }
}
