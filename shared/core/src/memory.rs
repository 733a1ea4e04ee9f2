//! In-memory implementations of the ports, for unit tests (feature
//! `test-util`). They keep the adapters' rules (TTL filtering at their
//! clock's time, conditional commits, forward-only cursors), which the
//! [`contract`](crate::contract) tests check against both.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::{Clock, SystemClock};
use crate::model::{
    ChannelKey, ChannelPresence, ChannelState, Connection, DeadWebhookJob, Envelope, FanoutJob,
    Membership, ShardRange, StoredEvent, Subscriber, WebhookJob, subscription_shard,
};
use crate::ports::{
    AppendError, ChannelLog, ChannelSettings, Claim, ConnectionRegistry, CursorStore, DeadLetters,
    Dedup, EventQueue, FanoutQueue, PushError, Pusher, ReadBudget, StoreError,
    WebhookDeadLetterQueue, WebhookDirectory, WebhookJobs, WebhookStore, effective_webhook,
};
use crate::sync::lock;
use crate::webhook::{WebhookConfig, WebhookScope};

/// The clock of a fake: the system's unless one is given.
fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// How long a cursor outlives its last move (the DynamoDB adapter's TTL).
const CURSOR_TTL_S: u64 = 30 * 24 * 3600;

/// A connection record for tests.
pub fn connection(id: &str, tenant: &str, principal: &str, grants: &[&str]) -> Connection {
    Connection {
        id: id.into(),
        tenant: tenant.into(),
        principal: principal.into(),
        grants: grants.iter().map(|g| g.to_string()).collect(),
        publish: vec![],
        protocol: None,
        connected_at: 0,
        expires_at: u64::MAX,
        channels: vec![],
        token_exp: 0,
        token_iat: None,
        counted: false,
        gzip: false,
    }
}

/// Holds a fake's call at one point until the test lets it go, so that a
/// test can make something happen exactly there: [`Gate::arm`], start the
/// code under test, wait for [`Gate::reached`], act, then [`Gate::release`].
/// Only the first call after `arm` is held.
#[derive(Default)]
pub struct Gate {
    armed: std::sync::atomic::AtomicBool,
    reached: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl Gate {
    pub fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits until a call is held here.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the held call go on.
    pub fn release(&self) {
        self.release.notify_one();
    }

    async fn pass(&self) {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.reached.notify_one();
            self.release.notified().await;
        }
    }
}

/// A subscription: the subscriber and when it expires.
type Subscriptions = BTreeMap<String, (Subscriber, u64)>;

/// Connections and subscriptions; expired ones are left out of reads.
pub struct MemoryRegistry {
    conns: Mutex<HashMap<String, Connection>>,
    /// Each tenant's count of counted connections (kept apart from the
    /// records, as the adapter keeps it).
    counts: Mutex<HashMap<String, u64>>,
    /// The deployment's open connections ([`ConnectionRegistry::count_open`]).
    open: Mutex<u64>,
    subs: Mutex<BTreeMap<ChannelKey, Subscriptions>>,
    /// Each channel's membership version, moved like the adapter's.
    versions: Mutex<HashMap<ChannelKey, u64>>,
    listings: std::sync::atomic::AtomicUsize,
    membership_reads: std::sync::atomic::AtomicUsize,
    /// Listings of whole channels still to fail (`Unavailable`).
    failing_listings: std::sync::atomic::AtomicUsize,
    clock: Arc<dyn Clock>,
    /// Holds the next [`ConnectionRegistry::membership`] read once armed.
    pub before_membership: Gate,
    /// Holds the next [`ConnectionRegistry::get_connection`], after its
    /// read, once armed: the reader then acts on a stale record.
    pub after_get: Gate,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::with_clock(system())
    }
}

impl MemoryRegistry {
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            conns: Mutex::default(),
            counts: Mutex::default(),
            open: Mutex::default(),
            subs: Mutex::default(),
            versions: Mutex::default(),
            listings: Default::default(),
            membership_reads: Default::default(),
            failing_listings: Default::default(),
            clock,
            before_membership: Gate::default(),
            after_get: Gate::default(),
        }
    }

    /// How many times a channel's subscribers were listed (whole or by shard).
    pub fn listings(&self) -> usize {
        self.listings.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The next `n` listings of a whole channel fail as unavailable.
    pub fn fail_listings(&self, n: usize) {
        self.failing_listings
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many times a channel's membership was read.
    pub fn membership_reads(&self) -> usize {
        self.membership_reads
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn bump(&self, key: &ChannelKey) {
        *lock(&self.versions).entry(key.clone()).or_default() += 1;
    }

    fn live_in(&self, key: &ChannelKey, shards: ShardRange) -> Vec<Subscriber> {
        self.listings
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let now = self.clock.epoch_s();
        lock(&self.subs)
            .get(key)
            .map(|s| {
                s.values()
                    .filter(|(sub, expires_at)| {
                        *expires_at > now && shards.contains(subscription_shard(&sub.connection_id))
                    })
                    .map(|(sub, _)| sub.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        lock(&self.conns).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Connection ids subscribed to the channel.
    pub fn subscriber_ids(&self, key: &ChannelKey) -> Vec<String> {
        lock(&self.subs)
            .get(key)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[async_trait]
impl ConnectionRegistry for MemoryRegistry {
    async fn put_connection(&self, conn: &Connection) -> Result<(), StoreError> {
        lock(&self.conns).insert(conn.id.clone(), conn.clone());
        Ok(())
    }

    async fn get_connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        let now = self.clock.epoch_s();
        let conn = lock(&self.conns)
            .get(id)
            .filter(|c| c.expires_at > now)
            .cloned();
        self.after_get.pass().await;
        Ok(conn)
    }

    async fn update_token(&self, conn: &Connection) -> Result<bool, StoreError> {
        Ok(lock(&self.conns)
            .get_mut(&conn.id)
            .map(|c| {
                c.grants = conn.grants.clone();
                c.publish = conn.publish.clone();
                c.token_exp = conn.token_exp;
                c.token_iat = conn.token_iat;
            })
            .is_some())
    }

    async fn connections_of(
        &self,
        tenant: &str,
        principal: &str,
    ) -> Result<Vec<Connection>, StoreError> {
        let now = self.clock.epoch_s();
        Ok(lock(&self.conns)
            .values()
            .filter(|c| c.tenant == tenant && c.principal == principal && c.expires_at > now)
            .cloned()
            .collect())
    }

    async fn set_protocol(&self, id: &str, protocol: u32, gzip: bool) -> Result<bool, StoreError> {
        Ok(lock(&self.conns)
            .get_mut(id)
            .map(|c| {
                c.protocol = Some(protocol);
                c.gzip = gzip;
            })
            .is_some())
    }

    async fn claim_channel(
        &self,
        conn_id: &str,
        channel: &str,
        max: u32,
    ) -> Result<Claim, StoreError> {
        let mut conns = lock(&self.conns);
        let Some(c) = conns.get_mut(conn_id) else {
            return Ok(Claim::Gone);
        };
        if c.channels.iter().any(|ch| ch == channel) {
            return Ok(Claim::Claimed);
        }
        if c.channels.len() >= max as usize {
            return Ok(Claim::Full);
        }
        c.channels.push(channel.to_owned());
        Ok(Claim::Claimed)
    }

    async fn subscribe(
        &self,
        conn: &Connection,
        key: &ChannelKey,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        let mut conns = lock(&self.conns);
        let Some(c) = conns.get_mut(&conn.id) else {
            return Ok(false);
        };
        if !c.channels.contains(&key.channel) {
            c.channels.push(key.channel.clone());
        }
        let subscriber = Subscriber {
            connection_id: conn.id.clone(),
            principal: conn.principal.clone(),
            token_exp: conn.token_exp,
            gzip: conn.gzip,
        };
        lock(&self.subs)
            .entry(key.clone())
            .or_default()
            .insert(conn.id.clone(), (subscriber, expires_at));
        drop(conns);
        self.bump(key);
        Ok(true)
    }

    async fn unsubscribe(&self, conn_id: &str, key: &ChannelKey) -> Result<(), StoreError> {
        if let Some(c) = lock(&self.conns).get_mut(conn_id) {
            c.channels.retain(|ch| ch != &key.channel);
        }
        let removed = lock(&self.subs)
            .get_mut(key)
            .is_some_and(|s| s.remove(conn_id).is_some());
        if removed {
            self.bump(key);
        }
        Ok(())
    }

    async fn subscribers(&self, key: &ChannelKey) -> Result<Vec<Subscriber>, StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        let failing = self
            .failing_listings
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(StoreError::Unavailable {
                op: "query subscribers",
                reason: "injected failure".into(),
            });
        }
        Ok(self.live_in(key, ShardRange::ALL))
    }

    async fn subscribers_in(
        &self,
        key: &ChannelKey,
        shards: ShardRange,
    ) -> Result<Vec<Subscriber>, StoreError> {
        Ok(self.live_in(key, shards))
    }

    async fn membership(&self, key: &ChannelKey) -> Result<Membership, StoreError> {
        self.before_membership.pass().await;
        self.membership_reads
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let now = self.clock.epoch_s();
        let count = lock(&self.subs)
            .get(key)
            .map_or(0, |s| s.values().filter(|(_, e)| *e > now).count());
        Ok(Membership {
            count: count as u64,
            version: lock(&self.versions).get(key).copied().unwrap_or(0),
        })
    }

    /// Exact: the live subscriptions, the first principals in order.
    async fn presence(&self, key: &ChannelKey) -> Result<ChannelPresence, StoreError> {
        let live = self.subscribers(key).await?;
        let principals: std::collections::BTreeSet<String> =
            live.iter().map(|s| s.principal.clone()).collect();
        Ok(ChannelPresence {
            count: live.len() as u64,
            principals: principals
                .into_iter()
                .take(agentwire_protocol::PRESENCE_SAMPLE)
                .collect(),
        })
    }

    async fn put_counted_connection(
        &self,
        conn: &Connection,
        max: u64,
    ) -> Result<bool, StoreError> {
        let mut counts = lock(&self.counts);
        let n = counts.entry(conn.tenant.clone()).or_default();
        if *n >= max {
            return Ok(false);
        }
        *n += 1;
        let mut c = conn.clone();
        c.counted = true;
        lock(&self.conns).insert(c.id.clone(), c);
        Ok(true)
    }

    async fn counted_connections(&self, tenant: &str) -> Result<u64, StoreError> {
        Ok(lock(&self.counts).get(tenant).copied().unwrap_or(0))
    }

    async fn reset_connection_count(&self, tenant: &str) -> Result<(), StoreError> {
        lock(&self.counts).remove(tenant);
        Ok(())
    }

    async fn remove_connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        let Some(c) = lock(&self.conns).remove(id) else {
            return Ok(None);
        };
        let removed = c.clone();
        if c.counted
            && let Some(n) = lock(&self.counts).get_mut(&c.tenant)
        {
            *n = n.saturating_sub(1);
        }
        for ch in c.channels {
            let key = ChannelKey::new(&c.tenant, ch);
            let removed = lock(&self.subs)
                .get_mut(&key)
                .is_some_and(|s| s.remove(id).is_some());
            if removed {
                self.bump(&key);
            }
        }
        Ok(Some(removed))
    }

    async fn count_open(&self, delta: i64) -> Result<u64, StoreError> {
        let mut open = lock(&self.open);
        *open = open.saturating_add_signed(delta);
        Ok(*open)
    }
}

/// Token buckets and tenant limits in memory, with the adapter's
/// arithmetic ([`Gcra`](crate::limits::Gcra)).
#[derive(Default)]
pub struct MemoryLimits {
    tats: Mutex<HashMap<String, u64>>,
    settings: Mutex<HashMap<String, crate::limits::TenantLimits>>,
    /// How many takes and settings reads were made (cost tests).
    pub calls: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl crate::ports::RateLimiter for MemoryLimits {
    async fn take(
        &self,
        bucket: &str,
        rate: crate::limits::Rate,
        want: u32,
        now_us: u64,
    ) -> Result<crate::limits::Take, StoreError> {
        use crate::limits::{Step, Take, wait_ms};
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut tats = lock(&self.tats);
        let tat = tats.get(bucket).copied();
        Ok(match rate.gcra().step_n(tat, now_us, want) {
            Step::Start { new_tat, granted } | Step::Advance { new_tat, granted } => {
                tats.insert(bucket.to_owned(), new_tat);
                Take::Granted(granted)
            }
            Step::Refuse { wait_us } => Take::Limited {
                retry_after_ms: wait_ms(wait_us),
            },
        })
    }
}

#[async_trait]
impl crate::ports::LimitSettings for MemoryLimits {
    async fn get(&self, tenant: &str) -> Result<Option<crate::limits::TenantLimits>, StoreError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(lock(&self.settings).get(tenant).cloned())
    }

    async fn put(
        &self,
        tenant: &str,
        limits: &crate::limits::TenantLimits,
    ) -> Result<(), StoreError> {
        lock(&self.settings).insert(tenant.to_owned(), limits.clone());
        Ok(())
    }

    async fn clear(&self, tenant: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.settings).remove(tenant).is_some())
    }
}

#[derive(Default)]
struct LogState {
    heads: HashMap<ChannelKey, ChannelState>,
    /// Events with when they expire.
    events: HashMap<ChannelKey, Vec<(StoredEvent, u64)>>,
    /// Dedup records: (channel, id) → (seq, epoch, expires_at).
    ids: HashMap<(ChannelKey, String), (u64, String, u64)>,
    failing: HashSet<ChannelKey>,
    failing_ids: HashSet<String>,
    epochs: u64,
}

/// The channel log in memory, with the same conditional-commit and TTL
/// rules as the DynamoDB adapter, and switches to make commits fail.
pub struct MemoryLog {
    state: Mutex<LogState>,
    clock: Arc<dyn Clock>,
    /// Yield to the scheduler between a writer's read of the head and its
    /// commit, so that concurrent writers really interleave there.
    interleave: std::sync::atomic::AtomicBool,
    head_moved: std::sync::atomic::AtomicUsize,
    /// Holds the next append, before it commits, once armed.
    pub before_append: Gate,
    /// `read_range` calls so far.
    range_reads: std::sync::atomic::AtomicUsize,
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self::with_clock(system())
    }
}

impl MemoryLog {
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Mutex::default(),
            clock,
            interleave: Default::default(),
            head_moved: Default::default(),
            before_append: Gate::default(),
            range_reads: Default::default(),
        }
    }

    /// How many `read_range` calls were made.
    pub fn range_reads(&self) -> usize {
        self.range_reads.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Makes every commit yield before it checks the head (see `interleave`).
    pub fn interleave_writers(&self) {
        self.interleave
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Commits refused because another writer moved the head.
    pub fn head_moved(&self) -> usize {
        self.head_moved.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every later commit that includes this event id is refused for good
    /// (a message that can never be committed: `StoreError::Failed`).
    pub fn fail_id(&self, id: &str) {
        lock(&self.state).failing_ids.insert(id.into());
    }

    /// Every later commit on this channel fails with an unavailable store.
    pub fn fail_channel(&self, key: &ChannelKey) {
        lock(&self.state).failing.insert(key.clone());
    }

    /// Commits on this channel succeed again.
    pub fn heal_channel(&self, key: &ChannelKey) {
        lock(&self.state).failing.remove(key);
    }

    /// Every event of the channel ever committed, expired ones included.
    pub fn events(&self, key: &ChannelKey) -> Vec<StoredEvent> {
        lock(&self.state)
            .events
            .get(key)
            .map(|v| v.iter().map(|(e, _)| e.clone()).collect())
            .unwrap_or_default()
    }

    /// Forgets the channel's events up to `seq`, as retention would.
    pub fn expire_through(&self, key: &ChannelKey, seq: u64) {
        if let Some(v) = lock(&self.state).events.get_mut(key) {
            v.retain(|(e, _)| e.seq > seq);
        }
    }
}

#[async_trait]
impl ChannelLog for MemoryLog {
    async fn channel(&self, key: &ChannelKey) -> Result<Option<ChannelState>, StoreError> {
        Ok(lock(&self.state).heads.get(key).cloned())
    }

    async fn ensure_channel(&self, key: &ChannelKey) -> Result<ChannelState, StoreError> {
        let mut s = lock(&self.state);
        s.epochs += 1;
        let epoch = format!("mem{}", s.epochs);
        Ok(s.heads
            .entry(key.clone())
            .or_insert(ChannelState {
                epoch,
                head: 0,
                retention_s: None,
            })
            .clone())
    }

    async fn append(
        &self,
        key: &ChannelKey,
        state: &ChannelState,
        events: &[Envelope],
        dedup: Dedup,
        expires_at: u64,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        self.before_append.pass().await;
        if self.interleave.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::task::yield_now().await;
        }
        let now = self.clock.epoch_s();
        let mut s = lock(&self.state);
        if s.failing.contains(key) {
            return Err(StoreError::Unavailable {
                op: "append",
                reason: "injected failure".into(),
            }
            .into());
        }
        if events.iter().any(|e| s.failing_ids.contains(&e.id)) {
            return Err(StoreError::failed("append", "injected permanent failure").into());
        }
        if s.heads.get(key).map(|h| h.head) != Some(state.head) {
            self.head_moved
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(AppendError::HeadMoved);
        }
        // As in DynamoDB: a dedup record blocks its id while it is live and
        // of this epoch.
        let dups: Vec<String> = events
            .iter()
            .filter(|_| dedup == Dedup::Record)
            .filter(|e| {
                s.ids
                    .get(&(key.clone(), e.id.clone()))
                    .is_some_and(|(_, epoch, exp)| *exp > now && *epoch == state.epoch)
            })
            .map(|e| e.id.clone())
            .collect();
        if !dups.is_empty() {
            return Err(AppendError::Duplicate(dups));
        }
        let stored: Vec<StoredEvent> = events
            .iter()
            .enumerate()
            .map(|(i, e)| e.stored(key, &state.epoch, state.head + 1 + i as u64))
            .collect();
        for e in stored.iter().filter(|_| dedup == Dedup::Record) {
            s.ids.insert(
                (key.clone(), e.id.clone()),
                (e.seq, e.epoch.clone(), expires_at),
            );
        }
        s.events
            .entry(key.clone())
            .or_default()
            .extend(stored.iter().map(|e| (e.clone(), expires_at)));
        if let Some(h) = s.heads.get_mut(key) {
            h.head += stored.len() as u64;
        }
        Ok(stored)
    }

    async fn find_by_id(
        &self,
        key: &ChannelKey,
        id: &str,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let now = self.clock.epoch_s();
        let s = lock(&self.state);
        let Some((seq, _, exp)) = s.ids.get(&(key.clone(), id.to_owned())) else {
            return Ok(None);
        };
        if *exp <= now {
            return Ok(None);
        }
        Ok(s.events
            .get(key)
            .and_then(|v| {
                v.iter()
                    .find(|(e, exp)| e.seq == *seq && e.id == id && *exp > now)
            })
            .map(|(e, _)| e.clone()))
    }

    async fn read_range(
        &self,
        key: &ChannelKey,
        from: u64,
        to: u64,
        budget: ReadBudget,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.range_reads
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let now = self.clock.epoch_s();
        let s = lock(&self.state);
        let mut out = Vec::new();
        let mut bytes = 0;
        let live = s.events.get(key).into_iter().flatten();
        for (e, _) in live.filter(|(e, exp)| e.seq >= from && e.seq <= to && *exp > now) {
            match budget.admit(out.len(), bytes, e) {
                Some(total) => bytes = total,
                None => break,
            }
            out.push(e.clone());
        }
        Ok(out)
    }
}

#[async_trait]
impl ChannelSettings for MemoryLog {
    async fn set_retention(
        &self,
        key: &ChannelKey,
        retention: Option<Duration>,
    ) -> Result<ChannelState, StoreError> {
        self.ensure_channel(key).await?;
        let mut s = lock(&self.state);
        let state = s
            .heads
            .get_mut(key)
            .ok_or_else(|| StoreError::failed("set retention", "channel vanished"))?;
        state.retention_s = retention.map(|r| r.as_secs().max(1));
        Ok(state.clone())
    }
}

/// Cursors that move forward only and expire [`CURSOR_TTL_S`] after their
/// last move.
/// (tenant, principal, channel) → (seq, expires_at).
type CursorMap = HashMap<(String, String, String), (u64, u64)>;

pub struct MemoryCursors {
    cursors: Mutex<CursorMap>,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryCursors {
    fn default() -> Self {
        Self::with_clock(system())
    }
}

impl MemoryCursors {
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            cursors: Mutex::default(),
            clock,
        }
    }
}

#[async_trait]
impl CursorStore for MemoryCursors {
    async fn advance(
        &self,
        tenant: &str,
        principal: &str,
        channel: &str,
        seq: u64,
    ) -> Result<u64, StoreError> {
        let now = self.clock.epoch_s();
        let mut c = lock(&self.cursors);
        let v = c
            .entry((tenant.into(), principal.into(), channel.into()))
            .or_insert((0, 0));
        if v.1 <= now {
            // Expired: as good as none.
            *v = (0, 0);
        }
        if v.1 == 0 || seq > v.0 {
            *v = (seq, now + CURSOR_TTL_S);
        }
        Ok(v.0)
    }

    async fn get(
        &self,
        tenant: &str,
        principal: &str,
        channel: &str,
    ) -> Result<Option<u64>, StoreError> {
        let now = self.clock.epoch_s();
        Ok(lock(&self.cursors)
            .get(&(tenant.into(), principal.into(), channel.into()))
            .filter(|(_, exp)| *exp > now)
            .map(|(seq, _)| *seq))
    }
}

/// Records posts per connection; connections marked gone answer `Gone`,
/// and the next posts to a connection can be made to fail.
#[derive(Default)]
pub struct MemoryPusher {
    posts: Mutex<HashMap<String, Vec<String>>>,
    gone: Mutex<HashSet<String>>,
    /// Connection → (posts still to fail, retryable or final).
    failing: Mutex<HashMap<String, (usize, bool)>>,
    attempts: Mutex<HashMap<String, usize>>,
}

impl MemoryPusher {
    /// Whether the connection was closed or is gone.
    pub fn is_gone(&self, id: &str) -> bool {
        lock(&self.gone).contains(id)
    }

    pub fn set_gone(&self, id: &str) {
        lock(&self.gone).insert(id.into());
    }

    /// The next `n` posts to `id` fail: `Throttled` (retryable) or `Refused`.
    pub fn fail_next(&self, id: &str, n: usize, retryable: bool) {
        lock(&self.failing).insert(id.into(), (n, retryable));
    }

    /// Posts tried to `id`, failed ones included.
    pub fn attempts(&self, id: &str) -> usize {
        lock(&self.attempts).get(id).copied().unwrap_or(0)
    }

    pub fn posts(&self, id: &str) -> Vec<String> {
        lock(&self.posts).get(id).cloned().unwrap_or_default()
    }
}

#[async_trait]
impl Pusher for MemoryPusher {
    async fn post(&self, connection_id: &str, frame: &str) -> Result<(), PushError> {
        *lock(&self.attempts)
            .entry(connection_id.into())
            .or_default() += 1;
        if lock(&self.gone).contains(connection_id) {
            return Err(PushError::Gone);
        }
        if let Some((left, retryable)) = lock(&self.failing).get_mut(connection_id)
            && *left > 0
        {
            *left -= 1;
            return Err(if *retryable {
                PushError::Throttled
            } else {
                PushError::Refused {
                    status: Some(400),
                    reason: "injected failure".to_owned(),
                }
            });
        }
        lock(&self.posts)
            .entry(connection_id.into())
            .or_default()
            .push(frame.into());
        Ok(())
    }

    async fn close(&self, connection_id: &str) -> Result<(), PushError> {
        if lock(&self.gone).insert(connection_id.to_owned()) {
            Ok(())
        } else {
            Err(PushError::Gone)
        }
    }
}

/// Dead letters kept as `(message id, body, reason)`; can be made to fail.
#[derive(Default)]
pub struct MemoryDeadLetters {
    records: Mutex<Vec<(String, String, String)>>,
    failing: Mutex<bool>,
}

impl MemoryDeadLetters {
    pub fn fail(&self) {
        *lock(&self.failing) = true;
    }

    pub fn records(&self) -> Vec<(String, String, String)> {
        lock(&self.records).clone()
    }
}

#[async_trait]
impl DeadLetters for MemoryDeadLetters {
    async fn record(&self, message_id: &str, body: &str, reason: &str) -> Result<(), StoreError> {
        if *lock(&self.failing) {
            return Err(StoreError::failed("dead-letter", "injected failure"));
        }
        lock(&self.records).push((message_id.into(), body.into(), reason.into()));
        Ok(())
    }
}

/// Envelopes put on the events queue, in order.
#[derive(Default)]
pub struct MemoryEventQueue {
    sent: Mutex<Vec<Envelope>>,
}

impl MemoryEventQueue {
    pub fn sent(&self) -> Vec<Envelope> {
        lock(&self.sent).clone()
    }
}

#[async_trait]
impl EventQueue for MemoryEventQueue {
    async fn send(&self, envelope: &Envelope) -> Result<(), StoreError> {
        lock(&self.sent).push(envelope.clone());
        Ok(())
    }
}

/// The fan-out queue in memory: the jobs enqueued, in order, and a switch
/// to make enqueueing fail.
#[derive(Default)]
pub struct MemoryFanoutQueue {
    jobs: Mutex<Vec<FanoutJob>>,
    failing: std::sync::atomic::AtomicBool,
}

impl MemoryFanoutQueue {
    /// Takes the jobs enqueued so far.
    pub fn take(&self) -> Vec<FanoutJob> {
        std::mem::take(&mut *lock(&self.jobs))
    }

    pub fn fail(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl FanoutQueue for MemoryFanoutQueue {
    async fn enqueue(&self, jobs: &[FanoutJob]) -> Result<(), StoreError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                op: "enqueue fan-out jobs",
                reason: "the fake queue is set to fail".into(),
            });
        }
        lock(&self.jobs).extend(jobs.iter().cloned());
        Ok(())
    }
}

/// Webhook configurations by scope; the directory skips expired ones at
/// its clock's time.
pub struct MemoryWebhooks {
    configs: Mutex<HashMap<WebhookScope, WebhookConfig>>,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryWebhooks {
    fn default() -> Self {
        Self::with_clock(system())
    }
}

impl MemoryWebhooks {
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            configs: Mutex::default(),
            clock,
        }
    }
}

#[async_trait]
impl WebhookStore for MemoryWebhooks {
    async fn get(&self, scope: &WebhookScope) -> Result<Option<WebhookConfig>, StoreError> {
        Ok(lock(&self.configs).get(scope).cloned())
    }

    async fn put(&self, scope: &WebhookScope, config: &WebhookConfig) -> Result<(), StoreError> {
        lock(&self.configs).insert(scope.clone(), config.clone());
        Ok(())
    }

    async fn remove(&self, scope: &WebhookScope) -> Result<bool, StoreError> {
        Ok(lock(&self.configs).remove(scope).is_some())
    }
}

#[async_trait]
impl WebhookDirectory for MemoryWebhooks {
    async fn effective(
        &self,
        key: &ChannelKey,
    ) -> Result<Option<(WebhookScope, WebhookConfig)>, StoreError> {
        effective_webhook(self, key, self.clock.epoch_s()).await
    }
}

/// Receiver holds in a map.
#[derive(Default)]
pub struct MemoryHolds {
    holds: Mutex<HashMap<String, u64>>,
}

#[async_trait]
impl crate::ports::ReceiverHolds for MemoryHolds {
    async fn held_until(&self, receiver: &str) -> Result<Option<u64>, StoreError> {
        Ok(lock(&self.holds).get(receiver).copied())
    }

    async fn hold(
        &self,
        receiver: &str,
        seen: Option<u64>,
        until: u64,
    ) -> Result<bool, StoreError> {
        let mut holds = lock(&self.holds);
        if holds.get(receiver).copied() != seen {
            return Ok(false);
        }
        holds.insert(receiver.to_owned(), until);
        Ok(true)
    }

    async fn release(&self, receiver: &str, seen: u64) -> Result<(), StoreError> {
        let mut holds = lock(&self.holds);
        if holds.get(receiver) == Some(&seen) {
            holds.remove(receiver);
        }
        Ok(())
    }
}

/// One request a [`ScriptedSender`] saw: its headers and body.
pub type SentRequest = (Vec<(String, String)>, String);

/// A webhook sender that answers from a script, recording what was sent.
pub struct ScriptedSender {
    script: Mutex<std::collections::VecDeque<crate::ports::SendOutcome>>,
    sent: Mutex<Vec<SentRequest>>,
}

impl ScriptedSender {
    pub fn new(script: Vec<crate::ports::SendOutcome>) -> Self {
        Self {
            script: Mutex::new(script.into()),
            sent: Mutex::new(Vec::new()),
        }
    }

    /// Every request: its headers and body.
    pub fn sent(&self) -> Vec<SentRequest> {
        lock(&self.sent).clone()
    }
}

#[async_trait]
impl crate::ports::WebhookSender for ScriptedSender {
    async fn send(
        &self,
        _url: &url::Url,
        _addrs: &[std::net::SocketAddr],
        headers: &[(&str, String)],
        body: &str,
    ) -> crate::ports::SendOutcome {
        lock(&self.sent).push((
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            body.to_owned(),
        ));
        lock(&self.script)
            .pop_front()
            .unwrap_or(crate::ports::SendOutcome::ConnectFailed(
                "script exhausted".into(),
            ))
    }
}

/// Scheduled and dead-lettered webhook jobs, and raw dead letters; the
/// dead-letter queue lists both.
#[derive(Default)]
pub struct MemoryWebhookJobs {
    scheduled: Mutex<Vec<(WebhookJob, Duration)>>,
    dead: Mutex<Vec<(WebhookJob, String)>>,
    /// Everything dead-lettered, as the queue holds it: (body, reason, handle).
    queue: Mutex<Vec<(String, String, String)>>,
    failing: Mutex<bool>,
}

impl MemoryWebhookJobs {
    /// Every later schedule fails with an unavailable store.
    pub fn fail(&self) {
        *lock(&self.failing) = true;
    }

    pub fn take_scheduled(&self) -> Vec<(WebhookJob, Duration)> {
        std::mem::take(&mut *lock(&self.scheduled))
    }

    pub fn dead(&self) -> Vec<(WebhookJob, String)> {
        lock(&self.dead).clone()
    }

    /// What the dead-letter queue holds: (body, reason).
    pub fn dead_letter_queue(&self) -> Vec<(String, String)> {
        lock(&self.queue)
            .iter()
            .map(|(b, r, _)| (b.clone(), r.clone()))
            .collect()
    }

    fn keep(&self, body: String, reason: &str) {
        let mut q = lock(&self.queue);
        let handle = format!("h{}", q.len());
        q.push((body, reason.to_owned(), handle));
    }
}

#[async_trait]
impl WebhookJobs for MemoryWebhookJobs {
    async fn schedule(&self, job: &WebhookJob, delay: Duration) -> Result<(), StoreError> {
        if *lock(&self.failing) {
            return Err(StoreError::Unavailable {
                op: "schedule webhook job",
                reason: "injected failure".into(),
            });
        }
        lock(&self.scheduled).push((job.clone(), delay));
        Ok(())
    }

    async fn dead_letter(&self, job: &WebhookJob, reason: &str) -> Result<(), StoreError> {
        let body =
            serde_json::to_string(job).map_err(|e| StoreError::failed("encode webhook job", e))?;
        lock(&self.dead).push((job.clone(), reason.to_owned()));
        self.keep(body, reason);
        Ok(())
    }

    async fn dead_letter_raw(&self, body: &str, reason: &str) -> Result<(), StoreError> {
        self.keep(body.to_owned(), reason);
        Ok(())
    }
}

#[async_trait]
impl WebhookDeadLetterQueue for MemoryWebhookJobs {
    async fn list(&self, max: usize, _hold: Duration) -> Result<Vec<DeadWebhookJob>, StoreError> {
        Ok(lock(&self.queue)
            .iter()
            .take(max)
            .map(|(body, reason, handle)| DeadWebhookJob::new(body, reason, handle))
            .collect())
    }

    async fn delete(&self, dead: &DeadWebhookJob) -> Result<(), StoreError> {
        lock(&self.queue).retain(|(_, _, h)| *h != dead.handle);
        Ok(())
    }
}

/// Trusted issuers in memory, one owner per issuer.
#[derive(Debug, Default)]
pub struct MemoryTrust {
    entries: Mutex<BTreeMap<String, crate::auth::trust::TrustEntry>>,
}

#[async_trait]
impl crate::ports::TrustStore for MemoryTrust {
    async fn issuer(
        &self,
        iss: &str,
    ) -> Result<Option<crate::auth::trust::TrustEntry>, StoreError> {
        Ok(lock(&self.entries).get(iss).cloned())
    }

    async fn put_issuer(&self, entry: &crate::auth::trust::TrustEntry) -> Result<bool, StoreError> {
        let mut entries = lock(&self.entries);
        if let Some(have) = entries.get(&entry.issuer)
            && have.owner != entry.owner
        {
            return Ok(false);
        }
        entries.insert(entry.issuer.clone(), entry.clone());
        Ok(true)
    }

    async fn issuers_of(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<crate::auth::trust::TrustEntry>, StoreError> {
        Ok(lock(&self.entries)
            .values()
            .filter(|e| e.tenant() == tenant)
            .cloned()
            .collect())
    }

    async fn remove_issuer(&self, tenant: Option<&str>, iss: &str) -> Result<bool, StoreError> {
        let mut entries = lock(&self.entries);
        match entries.get(iss) {
            Some(e) if e.tenant() == tenant => Ok(entries.remove(iss).is_some()),
            _ => Ok(false),
        }
    }
}

/// Revocations in memory.
#[derive(Debug, Default)]
pub struct MemoryRevocations {
    at: Mutex<BTreeMap<(String, String), u64>>,
}

#[async_trait]
impl crate::ports::Revocations for MemoryRevocations {
    async fn revoked_at(&self, tenant: &str, sub: &str) -> Result<Option<u64>, StoreError> {
        Ok(lock(&self.at)
            .get(&(tenant.to_owned(), sub.to_owned()))
            .copied())
    }

    async fn revoke(&self, tenant: &str, sub: &str, at_ms: u64) -> Result<(), StoreError> {
        let mut at = lock(&self.at);
        let e = at.entry((tenant.to_owned(), sub.to_owned())).or_default();
        *e = (*e).max(at_ms);
        Ok(())
    }

    async fn revocations(&self, tenant: &str) -> Result<Vec<crate::ports::Revocation>, StoreError> {
        Ok(lock(&self.at)
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((t, s), at)| crate::ports::Revocation {
                tenant: t.clone(),
                sub: s.clone(),
                at_ms: *at,
            })
            .collect())
    }
}

/// A JWKS fetcher that reaches nothing (for verifiers without JWKS issuers).
#[derive(Debug, Default)]
pub struct NoJwks;

#[async_trait]
impl crate::ports::JwksFetcher for NoJwks {
    async fn fetch(&self, url: &str) -> Result<crate::ports::FetchedJwks, crate::ports::JwksError> {
        Err(crate::ports::JwksError::Unavailable(format!(
            "no JWKS fetcher here ({url})"
        )))
    }
}
