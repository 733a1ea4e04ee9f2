//! The live connections of this gateway and their outbound queues.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::mpsc;

/// What the connection task should do next.
#[derive(Debug)]
pub enum Outbound {
    Text(String),
    Binary(Vec<u8>),
    Close(u16, String),
}

/// One live connection, as the `@connections` API sees it.
#[derive(Debug, Clone)]
pub struct Live {
    pub tx: mpsc::UnboundedSender<Outbound>,
    pub connected_at: SystemTime,
    pub source_ip: SocketAddr,
    pub user_agent: Option<String>,
}

/// The registry of live sockets (the gateway's, not agentwire's: agentwire's
/// registry is in DynamoDB).
#[derive(Debug, Default)]
pub struct Hub {
    live: Mutex<HashMap<String, Live>>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn insert(&self, id: &str, live: Live) {
        self.lock().insert(id.to_owned(), live);
    }

    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn get(&self, id: &str) -> Option<Live> {
        self.lock().get(id).cloned()
    }

    /// Queues a message; `false` when the connection is unknown or closing.
    pub fn send(&self, id: &str, msg: Outbound) -> bool {
        self.get(id).is_some_and(|l| l.tx.send(msg).is_ok())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every connection with this code and reason.
    pub fn close_all(&self, code: u16, reason: &str) {
        for l in self.lock().values() {
            let _ = l.tx.send(Outbound::Close(code, reason.to_owned()));
        }
    }
}
