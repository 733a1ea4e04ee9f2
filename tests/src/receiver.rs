//! A real HTTP webhook receiver for the tests: listens on loopback, answers
//! each POST with the next scripted status (200 once the script is used up),
//! or never (a receiver that hangs), and records every request it got.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: String,
    pub answered: u16,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<u16>,
    got: Vec<Received>,
    /// Take each request and never answer it.
    hang: bool,
}

type Shared = Arc<Mutex<Inner>>;

/// The receiver; its URL is `http://127.0.0.1:PORT/hook`.
pub struct Receiver {
    pub url: String,
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

async fn hook(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = record(&inner, headers, body);
    if status == 0 {
        // Hangs: the caller's time-out ends the request.
        std::future::pending::<()>().await;
    }
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Records a request; the status to answer it with (0: none, it hangs).
fn record(inner: &Shared, headers: HeaderMap, body: Bytes) -> u16 {
    let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
    let status = if g.hang {
        0
    } else {
        g.script.pop_front().unwrap_or(200)
    };
    g.got.push(Received {
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        answered: status,
        at: Instant::now(),
    });
    status
}

impl Receiver {
    pub async fn start() -> Self {
        let inner: Shared = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/hook"),
            inner,
            task,
        }
    }

    /// A receiver that takes every request and never answers (`answered`
    /// 0 in its records).
    pub async fn hanging() -> Self {
        let r = Self::start().await;
        r.inner.lock().unwrap_or_else(|p| p.into_inner()).hang = true;
        r
    }

    /// The next requests get these statuses, in order.
    pub fn answer_next(&self, statuses: &[u16]) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.script = statuses.iter().copied().collect();
    }

    pub fn requests(&self) -> Vec<Received> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .got
            .clone()
    }

    /// Waits until at least `n` requests arrived (up to `limit`); returns all so far.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.requests();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
