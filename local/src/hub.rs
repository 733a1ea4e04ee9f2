//! The live connections of this gateway and their outbound queues.
//!
//! Like API Gateway, each connection's outbound buffer is bounded: a post
//! that would overflow it is refused (`429 LimitExceededException`), so a
//! client that stops reading costs the gateway bounded memory and the
//! poster a typed, retryable error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::mpsc;

use crate::faults::{Faults, PostFault};

/// What the connection task should do next. `Text` and `Binary` carry the
/// bytes they hold in the connection's outbound buffer (0 for route answers,
/// which API Gateway does not count against `@connections`).
#[derive(Debug)]
pub enum Outbound {
    Text(String, usize),
    Binary(Vec<u8>, usize),
    Close(u16, String),
}

/// One live connection, as the `@connections` API sees it.
#[derive(Debug, Clone)]
pub struct Live {
    pub tx: mpsc::UnboundedSender<Outbound>,
    pub connected_at: SystemTime,
    pub source_ip: SocketAddr,
    pub user_agent: Option<String>,
    /// Bytes posted and not yet written to the socket.
    pub buffered: Arc<AtomicUsize>,
    /// Ends the connection at once, whatever is still queued for it
    /// (`DELETE @connections/{id}`).
    pub closer: Arc<tokio::sync::Notify>,
}

/// Why a post was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostRefused {
    /// Unknown or closing connection (410 `GoneException`).
    Gone,
    /// The outbound buffer is full (429 `LimitExceededException`).
    BufferFull { buffered: usize },
    /// A failure a test asked for (500 `InternalServerErrorException`).
    Injected,
}

/// Posts and refusals per connection, for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostStats {
    pub accepted: u64,
    pub buffer_full: u64,
    pub injected: u64,
}

/// The registry of live sockets (the gateway's, not agentwire's: agentwire's
/// registry is in DynamoDB).
#[derive(Debug, Default)]
pub struct Hub {
    live: Mutex<HashMap<String, Live>>,
    /// Connection → posts still to fail (see [`Hub::fail_next_posts`]).
    failing: Mutex<HashMap<String, u64>>,
    stats: Mutex<HashMap<String, PostStats>>,
    /// Failures injected at a rate (`FaultSettings::connections`).
    faults: Arc<Faults>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// A hub whose posts fail at the rates of `faults`.
    pub(crate) fn with_faults(faults: Arc<Faults>) -> Self {
        Self {
            faults,
            ..Self::default()
        }
    }

    pub(crate) fn insert(&self, id: &str, live: Live) {
        lock(&self.live).insert(id.to_owned(), live);
    }

    /// Forgets a closed connection, with its post counters and injected
    /// failures.
    pub(crate) fn remove(&self, id: &str) {
        lock(&self.live).remove(id);
        lock(&self.failing).remove(id);
        lock(&self.stats).remove(id);
    }

    pub fn get(&self, id: &str) -> Option<Live> {
        lock(&self.live).get(id).cloned()
    }

    /// Queues a message outside the buffer's bound (route answers, closes);
    /// `false` when the connection is unknown or closing.
    pub fn send(&self, id: &str, msg: Outbound) -> bool {
        self.get(id).is_some_and(|l| l.tx.send(msg).is_ok())
    }

    /// Queues a `@connections` post if the connection's outbound buffer has
    /// room for it (at most `limit` bytes queued and unwritten).
    pub fn post(
        &self,
        id: &str,
        payload: Result<String, Vec<u8>>,
        limit: usize,
    ) -> Result<(), PostRefused> {
        let Some(live) = self.get(id) else {
            return Err(PostRefused::Gone);
        };
        let mut stats = lock(&self.stats);
        let stat = stats.entry(id.to_owned()).or_default();
        if let Some(left) = lock(&self.failing).get_mut(id)
            && *left > 0
        {
            *left -= 1;
            stat.injected += 1;
            return Err(PostRefused::Injected);
        }
        match self.faults.post_fault() {
            None => {}
            Some(PostFault::Server) => {
                stat.injected += 1;
                return Err(PostRefused::Injected);
            }
            Some(PostFault::Throttled) => {
                stat.injected += 1;
                return Err(PostRefused::BufferFull {
                    buffered: live.buffered.load(Ordering::Acquire),
                });
            }
            Some(PostFault::Gone) => {
                // A 410 means the connection is gone: it is, from now on.
                stat.injected += 1;
                live.closer.notify_one();
                return Err(PostRefused::Gone);
            }
        }
        let len = match &payload {
            Ok(t) => t.len(),
            Err(b) => b.len(),
        };
        let buffered = live.buffered.load(Ordering::Acquire);
        if buffered + len > limit {
            stat.buffer_full += 1;
            return Err(PostRefused::BufferFull { buffered });
        }
        live.buffered.fetch_add(len, Ordering::AcqRel);
        let msg = match payload {
            Ok(t) => Outbound::Text(t, len),
            Err(b) => Outbound::Binary(b, len),
        };
        if live.tx.send(msg).is_err() {
            live.buffered.fetch_sub(len, Ordering::AcqRel);
            return Err(PostRefused::Gone);
        }
        stat.accepted += 1;
        Ok(())
    }

    /// Closes connection `id` now, as API Gateway's `DeleteConnection` does:
    /// not behind what is queued for a client that does not read (that is
    /// dropped with the socket). `false` when the connection is unknown.
    pub fn close(&self, id: &str) -> bool {
        self.get(id).map(|l| l.closer.notify_one()).is_some()
    }

    /// Makes the next `n` posts to connection `id` fail with a 500, as a
    /// failing API Gateway would (tests of the dispatcher's retries and of
    /// the client's recovery from the log).
    pub fn fail_next_posts(&self, id: &str, n: u64) {
        lock(&self.failing).insert(id.to_owned(), n);
    }

    /// What the posts to connection `id` came to so far (while it is open).
    pub fn post_stats(&self, id: &str) -> PostStats {
        lock(&self.stats).get(id).copied().unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        lock(&self.live).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every connection with this code and reason.
    pub fn close_all(&self, code: u16, reason: &str) {
        for l in lock(&self.live).values() {
            let _ = l.tx.send(Outbound::Close(code, reason.to_owned()));
        }
    }
}
