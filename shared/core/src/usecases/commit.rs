//! Committing a run of one channel's events: each gets the next seq, once.
//! One home for the dispatcher (events from the queue) and the publish
//! function (HTTP publishes committed directly).
//!
//! - Stream and chunk texts are stored gzip-compressed when that makes
//!   them smaller ([`Envelope::compressed`]).
//! - Ids already committed resolve to their seq (with [`Dedup::Record`]);
//!   one whose dedup record outlived its event is reported `unresolved`.
//! - A writer that finds its seqs taken (another writer, or a head the
//!   cache held too long) reads the channel again and retries, with a
//!   short backoff, [`COMMIT_ATTEMPTS`] times; then the commit is
//!   `Unavailable` (retryable).
//! - A warm function keeps each channel's state (epoch, head, retention)
//!   for [`SETTINGS_TTL`]: a commit with a fresh cached head reads
//!   nothing, and a retention change applies within that time. A stale
//!   head is harmless: the seq it names is taken, so the append is refused
//!   and the state read again. Events live far longer than the cache
//!   (the shortest retention is hours), so a cached head never points
//!   below an expired event's seq.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::TtlCache;
use crate::clock::Clock;
use crate::model::{ChannelKey, ChannelState, Envelope, StoredEvent};
use crate::ports::{AppendError, ChannelLog, Dedup, StoreError};
use crate::usecases::delivery::SETTINGS_TTL;

/// Attempts at one commit when other writers keep taking the next seqs.
pub const COMMIT_ATTEMPTS: usize = 8;

/// A committed run: its events in seq order (new ones and ids that already
/// had a seq), how many were new, and the ids that had a live dedup record
/// but no retained event (never committed again, never dropped silently:
/// the caller reports them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Committed {
    pub events: Vec<StoredEvent>,
    pub fresh: usize,
    pub unresolved: Vec<String>,
}

impl Committed {
    /// The committed event of `id`.
    pub fn event(&self, id: &str) -> Option<&StoredEvent> {
        self.events.iter().find(|e| e.id == id)
    }
}

/// The commit use case.
pub struct Committer {
    log: Arc<dyn ChannelLog>,
    clock: Arc<dyn Clock>,
    retention: Duration,
    states: TtlCache<ChannelKey, ChannelState>,
    /// Whether texts are stored compressed (on unless a benchmark compares).
    compress: std::sync::atomic::AtomicBool,
}

impl Committer {
    /// Events are kept for `retention` unless their channel sets its own.
    pub fn new(log: Arc<dyn ChannelLog>, clock: Arc<dyn Clock>, retention: Duration) -> Self {
        Self {
            states: TtlCache::new(SETTINGS_TTL, clock.clone()),
            log,
            clock,
            retention,
            compress: true.into(),
        }
    }

    /// Stores stream and chunk texts compressed (`true`, the default) or
    /// as published, while running (the dev gateway's benchmarks compare
    /// both in one run). Clients read either.
    pub fn set_compression(&self, on: bool) {
        self.compress
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long a channel's state is reused (zero: read before every
    /// commit).
    pub fn with_settings_ttl(mut self, ttl: Duration) -> Self {
        self.states = TtlCache::new(ttl, self.clock.clone());
        self
    }

    /// Changes how long a channel's state is reused, on a running function
    /// (the dev gateway's benchmarks compare with no cache).
    pub fn set_settings_ttl(&self, ttl: Duration) {
        self.states.set_ttl(ttl);
    }

    async fn state(&self, key: &ChannelKey) -> Result<ChannelState, StoreError> {
        if let Some(s) = self.states.get(key) {
            return Ok(s);
        }
        let s = self.log.ensure_channel(key).await?;
        self.states.put(key.clone(), s.clone());
        Ok(s)
    }

    /// Commits a run of one channel's envelopes, in order. Ids that already
    /// have a seq resolve to it; a taken seq is re-read and retried.
    pub async fn commit(
        &self,
        key: &ChannelKey,
        run: &[Envelope],
        dedup: Dedup,
    ) -> Result<Committed, StoreError> {
        let compress = self.compress.load(std::sync::atomic::Ordering::Relaxed);
        let mut pending: Vec<Envelope> = Vec::with_capacity(run.len());
        for env in run {
            if !pending.iter().any(|p| p.id == env.id) {
                pending.push(if compress {
                    env.compressed()
                } else {
                    env.clone()
                });
            }
        }
        let mut done: HashMap<String, StoredEvent> = HashMap::new();
        let mut unresolved: Vec<String> = Vec::new();
        let mut fresh = 0;
        for attempt in 0..COMMIT_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            let state = self.state(key).await?;
            let retention = state.retention_s.unwrap_or(self.retention.as_secs());
            let expires_at = self.clock.epoch_s() + retention;
            match self
                .log
                .append(key, &state, &pending, dedup, expires_at)
                .await
            {
                Ok(events) => {
                    fresh += events.len();
                    let head = state.head + events.len() as u64;
                    self.states.update(key, |s| s.head = s.head.max(head));
                    for e in events {
                        done.insert(e.id.clone(), e);
                    }
                    pending.clear();
                }
                Err(AppendError::HeadMoved) => {
                    self.states.remove(key);
                    // The first retry follows at once (the cached head was
                    // merely old); later ones back off from a busy channel.
                    if attempt > 0 {
                        tracing::info!(channel = %key, attempt, "head moved; retrying commit");
                        tokio::time::sleep(Duration::from_millis(5 << attempt.min(6))).await;
                    }
                }
                Err(AppendError::Duplicate(ids)) => {
                    for id in ids {
                        match self.log.find_by_id(key, &id).await? {
                            Some(e) => {
                                done.insert(id.clone(), e);
                            }
                            None => {
                                // A live dedup record without its event (TTL
                                // raced the commit): never dropped silently.
                                tracing::warn!(channel = %key, id, "duplicate id whose event is gone");
                                unresolved.push(id.clone());
                            }
                        }
                        pending.retain(|p| p.id != id);
                    }
                }
                Err(AppendError::Store(e)) => {
                    self.states.remove(key);
                    return Err(e);
                }
            }
        }
        if !pending.is_empty() {
            return Err(StoreError::Unavailable {
                op: "append",
                reason: format!("the head kept moving over {COMMIT_ATTEMPTS} attempts"),
            });
        }
        let mut events: Vec<StoredEvent> = done.into_values().collect();
        events.sort_by_key(|e| e.seq);
        Ok(Committed {
            events,
            fresh,
            unresolved,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::memory::MemoryLog;
    use serde_json::json;

    fn env(id: &str) -> Envelope {
        Envelope::parse(
            &json!({"tenant":"acme","channel":"a","id":id,"kind":"k","data":{},"ts":"2026-12-08T00:00:00.000Z"})
                .to_string(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_cached_head_saves_the_read_and_a_stale_one_is_read_again() {
        let log = Arc::new(MemoryLog::default());
        let clock = Arc::new(ManualClock::new());
        let c = Committer::new(log.clone(), clock.clone(), Duration::from_secs(3600));
        let other = Committer::new(log.clone(), clock, Duration::from_secs(3600));
        let key = ChannelKey::new("acme", "a");
        assert_eq!(
            c.commit(&key, &[env("e1")], Dedup::Skip)
                .await
                .unwrap()
                .events[0]
                .seq,
            1
        );
        // Another writer moves the head past what `c` holds.
        assert_eq!(
            other
                .commit(&key, &[env("e2")], Dedup::Record)
                .await
                .unwrap()
                .events[0]
                .seq,
            2
        );
        let moved = log.head_moved();
        let third = c.commit(&key, &[env("e3")], Dedup::Record).await.unwrap();
        assert_eq!((third.events[0].seq, third.fresh), (3, 1));
        assert_eq!(
            log.head_moved(),
            moved + 1,
            "refused once on the stale head"
        );
        // An id already committed with a record resolves to its seq.
        let again = c
            .commit(&key, &[env("e3"), env("e4")], Dedup::Record)
            .await
            .unwrap();
        let seqs: Vec<(u64, &str)> = again
            .events
            .iter()
            .map(|e| (e.seq, e.id.as_str()))
            .collect();
        assert_eq!((seqs, again.fresh), (vec![(3, "e3"), (4, "e4")], 1));
    }

    #[tokio::test]
    async fn a_store_failure_is_returned_as_it_is() {
        let log = Arc::new(MemoryLog::default());
        let c = Committer::new(
            log.clone(),
            Arc::new(ManualClock::new()),
            Duration::from_secs(60),
        );
        let key = ChannelKey::new("acme", "a");
        log.fail_channel(&key);
        let err = c.commit(&key, &[env("e1")], Dedup::Skip).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
    }
}
