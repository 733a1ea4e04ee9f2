//! In-memory implementations of the ports, for unit tests. Not for
//! production or integration tests: those use the real adapters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::model::{ChannelKey, ChannelState, Connection, Envelope, StoredEvent, Subscriber};
use crate::ports::{
    AppendError, ChannelLog, ConnectionRegistry, CursorStore, DeadLetters, EventQueue, PushError,
    Pusher, StoreError,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

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
    }
}

#[derive(Default)]
pub struct MemoryRegistry {
    conns: Mutex<HashMap<String, Connection>>,
    subs: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
}

impl MemoryRegistry {
    pub fn len(&self) -> usize {
        lock(&self.conns).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Connection ids subscribed to the channel.
    pub fn subscriber_ids(&self, key: &ChannelKey) -> Vec<String> {
        lock(&self.subs)
            .get(&key.pk())
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
        Ok(lock(&self.conns).get(id).cloned())
    }

    async fn set_protocol(&self, id: &str, protocol: u32) -> Result<bool, StoreError> {
        Ok(lock(&self.conns)
            .get_mut(id)
            .map(|c| c.protocol = Some(protocol))
            .is_some())
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
        let _ = expires_at;
        lock(&self.subs)
            .entry(key.pk())
            .or_default()
            .insert(conn.id.clone(), conn.principal.clone());
        Ok(true)
    }

    async fn unsubscribe(&self, conn_id: &str, key: &ChannelKey) -> Result<(), StoreError> {
        if let Some(c) = lock(&self.conns).get_mut(conn_id) {
            c.channels.retain(|ch| ch != &key.channel);
        }
        if let Some(s) = lock(&self.subs).get_mut(&key.pk()) {
            s.remove(conn_id);
        }
        Ok(())
    }

    async fn subscribers(&self, key: &ChannelKey) -> Result<Vec<Subscriber>, StoreError> {
        let conns = lock(&self.conns);
        Ok(lock(&self.subs)
            .get(&key.pk())
            .map(|s| {
                s.iter()
                    .map(|(c, p)| Subscriber {
                        connection_id: c.clone(),
                        principal: p.clone(),
                        token_exp: conns.get(c).map_or(0, |c| c.token_exp),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn remove_connection(&self, id: &str) -> Result<bool, StoreError> {
        let Some(c) = lock(&self.conns).remove(id) else {
            return Ok(false);
        };
        let mut subs = lock(&self.subs);
        for ch in c.channels {
            if let Some(s) = subs.get_mut(&ChannelKey::new(&c.tenant, ch).pk()) {
                s.remove(id);
            }
        }
        Ok(true)
    }
}

#[derive(Default)]
struct LogState {
    heads: HashMap<String, ChannelState>,
    events: HashMap<String, Vec<StoredEvent>>,
    ids: HashMap<String, u64>,
    failing: HashSet<String>,
    failing_ids: HashSet<String>,
    epochs: u64,
}

/// The channel log in memory, with the same conditional-commit rules as the
/// DynamoDB adapter, and a switch to make a channel's commits fail.
#[derive(Default)]
pub struct MemoryLog {
    state: Mutex<LogState>,
    /// Yield to the scheduler between a writer's read of the head and its
    /// commit, so that concurrent writers really interleave there.
    interleave: std::sync::atomic::AtomicBool,
    head_moved: std::sync::atomic::AtomicUsize,
}

impl MemoryLog {
    /// Makes every commit yield before it checks the head (see `interleave`).
    pub fn interleave_writers(&self) {
        self.interleave
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Commits refused because another writer moved the head.
    pub fn head_moved(&self) -> usize {
        self.head_moved.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every later commit that includes this event id fails (a message that
    /// keeps failing).
    pub fn fail_id(&self, id: &str) {
        lock(&self.state).failing_ids.insert(id.into());
    }

    /// Every later commit on this channel fails with an unavailable store.
    pub fn fail_channel(&self, key: &ChannelKey) {
        lock(&self.state).failing.insert(key.pk());
    }

    pub fn events(&self, key: &ChannelKey) -> Vec<StoredEvent> {
        lock(&self.state)
            .events
            .get(&key.pk())
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets the channel's events up to `seq`, as retention would.
    pub fn expire_through(&self, key: &ChannelKey, seq: u64) {
        if let Some(v) = lock(&self.state).events.get_mut(&key.pk()) {
            v.retain(|e| e.seq > seq);
        }
    }
}

#[async_trait]
impl ChannelLog for MemoryLog {
    async fn channel(&self, key: &ChannelKey) -> Result<Option<ChannelState>, StoreError> {
        Ok(lock(&self.state).heads.get(&key.pk()).cloned())
    }

    async fn ensure_channel(&self, key: &ChannelKey) -> Result<ChannelState, StoreError> {
        let mut s = lock(&self.state);
        s.epochs += 1;
        let epoch = format!("mem{}", s.epochs);
        Ok(s.heads
            .entry(key.pk())
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
        _expires_at: u64,
    ) -> Result<Vec<StoredEvent>, AppendError> {
        if self.interleave.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::task::yield_now().await;
        }
        let mut s = lock(&self.state);
        let pk = key.pk();
        if s.failing.contains(&pk) || events.iter().any(|e| s.failing_ids.contains(&e.id)) {
            return Err(StoreError::Unavailable {
                op: "append",
                reason: "injected failure".into(),
            }
            .into());
        }
        if s.heads.get(&pk).map(|h| h.head) != Some(state.head) {
            self.head_moved
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(AppendError::HeadMoved);
        }
        let dups: Vec<String> = events
            .iter()
            .filter(|e| s.ids.contains_key(&format!("{pk}#{}", e.id)))
            .map(|e| e.id.clone())
            .collect();
        if !dups.is_empty() {
            return Err(AppendError::Duplicate(dups));
        }
        let stored: Vec<StoredEvent> = events
            .iter()
            .enumerate()
            .map(|(i, e)| StoredEvent {
                key: key.clone(),
                epoch: state.epoch.clone(),
                seq: state.head + 1 + i as u64,
                id: e.id.clone(),
                kind: e.kind.clone(),
                data: e.data.clone(),
                ts: e.ts.clone(),
            })
            .collect();
        for e in &stored {
            s.ids.insert(format!("{pk}#{}", e.id), e.seq);
        }
        s.events
            .entry(pk.clone())
            .or_default()
            .extend(stored.iter().cloned());
        if let Some(h) = s.heads.get_mut(&pk) {
            h.head += stored.len() as u64;
        }
        Ok(stored)
    }

    async fn find_by_id(
        &self,
        key: &ChannelKey,
        id: &str,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let s = lock(&self.state);
        let pk = key.pk();
        let Some(seq) = s.ids.get(&format!("{pk}#{id}")) else {
            return Ok(None);
        };
        Ok(s.events
            .get(&pk)
            .and_then(|v| v.iter().find(|e| e.seq == *seq))
            .cloned())
    }

    async fn read_range(
        &self,
        key: &ChannelKey,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let s = lock(&self.state);
        Ok(s.events
            .get(&key.pk())
            .map(|v| {
                v.iter()
                    .filter(|e| e.seq >= from && e.seq <= to)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[derive(Default)]
pub struct MemoryCursors {
    cursors: Mutex<HashMap<(String, String, String), u64>>,
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
        let mut c = lock(&self.cursors);
        let v = c
            .entry((tenant.into(), principal.into(), channel.into()))
            .or_insert(seq);
        *v = (*v).max(seq);
        Ok(*v)
    }

    async fn get(
        &self,
        tenant: &str,
        principal: &str,
        channel: &str,
    ) -> Result<Option<u64>, StoreError> {
        Ok(lock(&self.cursors)
            .get(&(tenant.into(), principal.into(), channel.into()))
            .copied())
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
    pub fn set_gone(&self, id: &str) {
        lock(&self.gone).insert(id.into());
    }

    /// The next `n` posts to `id` fail: `Retryable` (throttled) or `Failed`.
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
            let reason = "injected failure".to_owned();
            return Err(if *retryable {
                PushError::Retryable(reason)
            } else {
                PushError::Failed(reason)
            });
        }
        lock(&self.posts)
            .entry(connection_id.into())
            .or_default()
            .push(frame.into());
        Ok(())
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

/// Webhook configurations by scope key.
#[derive(Default)]
pub struct MemoryWebhooks {
    configs: Mutex<HashMap<String, crate::webhook::WebhookConfig>>,
}

#[async_trait]
impl crate::ports::WebhookStore for MemoryWebhooks {
    async fn get(
        &self,
        scope: &crate::webhook::WebhookScope,
    ) -> Result<Option<crate::webhook::WebhookConfig>, StoreError> {
        Ok(lock(&self.configs).get(&scope.pk()).cloned())
    }

    async fn put(
        &self,
        scope: &crate::webhook::WebhookScope,
        config: &crate::webhook::WebhookConfig,
    ) -> Result<(), StoreError> {
        lock(&self.configs).insert(scope.pk(), config.clone());
        Ok(())
    }

    async fn remove(&self, scope: &crate::webhook::WebhookScope) -> Result<bool, StoreError> {
        Ok(lock(&self.configs).remove(&scope.pk()).is_some())
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

/// Scheduled and dead-lettered webhook jobs.
#[derive(Default)]
pub struct MemoryWebhookJobs {
    scheduled: Mutex<Vec<(crate::usecases::deliver::WebhookJob, std::time::Duration)>>,
    dead: Mutex<Vec<(crate::usecases::deliver::WebhookJob, String)>>,
    failing: Mutex<bool>,
}

impl MemoryWebhookJobs {
    /// Every later schedule fails with an unavailable store.
    pub fn fail(&self) {
        *lock(&self.failing) = true;
    }

    pub fn take_scheduled(
        &self,
    ) -> Vec<(crate::usecases::deliver::WebhookJob, std::time::Duration)> {
        std::mem::take(&mut *lock(&self.scheduled))
    }

    pub fn dead(&self) -> Vec<(crate::usecases::deliver::WebhookJob, String)> {
        lock(&self.dead).clone()
    }
}

#[async_trait]
impl crate::ports::WebhookJobs for MemoryWebhookJobs {
    async fn schedule(
        &self,
        job: &crate::usecases::deliver::WebhookJob,
        delay: std::time::Duration,
    ) -> Result<(), StoreError> {
        if *lock(&self.failing) {
            return Err(StoreError::Unavailable {
                op: "schedule webhook job",
                reason: "injected failure".into(),
            });
        }
        lock(&self.scheduled).push((job.clone(), delay));
        Ok(())
    }

    async fn dead_letter(
        &self,
        job: &crate::usecases::deliver::WebhookJob,
        reason: &str,
    ) -> Result<(), StoreError> {
        lock(&self.dead).push((job.clone(), reason.to_owned()));
        Ok(())
    }
}
