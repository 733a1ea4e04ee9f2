//! Streams: a publisher writes small pieces (tokens, lines, bytes of
//! terminal output) and the [`Coalescer`] turns them into few events: what
//! was written within a short window (default 50 ms), or up to a size bound
//! (default 32 KiB), goes as one event. A 50-tokens-a-second answer costs
//! about 20 events a second at the default window, not 50; a fast terminal
//! costs one event per 32 KiB.
//!
//! Each event's data is `{"stream": ID, "index": N, "text": "…"}`, indexes
//! from 0 without holes; the last is `{"stream": ID, "index": N, "end":
//! true}`. A subscriber appends the texts in seq order (they are ordinary
//! events of the channel: resumed, replayed and acknowledged like any).
//! The clock is the caller's: the coalescer only says when its buffer is
//! due ([`Coalescer::deadline`]). [`StreamWriter`] drives one on a task:
//! the caller writes pieces, the task sends what is due to a
//! [`StreamSink`] (the events queue through
//! [`Publisher::stream`](crate::usecases::Publisher::stream), or the HTTP
//! API in `agentwire publish --stream`), what piled up while it sent going
//! as one batch, in order.

use std::time::{Duration, Instant};

use agentwire_protocol::chunks::escaped_len;
use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The default window and size bound.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(50);
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;

/// Coalesces one stream's pieces into event data.
#[derive(Debug)]
pub struct Coalescer {
    stream: String,
    window: Duration,
    max_bytes: usize,
    buf: String,
    /// The JSON-escaped size of `buf`.
    size: usize,
    /// When the oldest piece in `buf` was written.
    since: Option<Instant>,
    index: u64,
    ended: bool,
}

impl Coalescer {
    /// A stream with this id; `max_bytes` is clamped to 1..=64 KiB.
    pub fn new(stream: impl Into<String>, window: Duration, max_bytes: usize) -> Self {
        Self {
            stream: stream.into(),
            window,
            max_bytes: max_bytes.clamp(1, agentwire_protocol::chunks::PART_BYTES),
            buf: String::new(),
            size: 0,
            since: None,
            index: 0,
            ended: false,
        }
    }

    pub fn id(&self) -> &str {
        &self.stream
    }

    /// Adds `text`; the events now due because the buffer reached the
    /// size bound (a large piece can make several).
    pub fn push(&mut self, text: &str, now: Instant) -> Vec<Value> {
        let mut out = vec![];
        for c in text.chars() {
            let n = escaped_len(c);
            if self.size + n > self.max_bytes
                && let Some(v) = self.flush()
            {
                out.push(v);
            }
            if self.buf.is_empty() {
                self.since = Some(now);
            }
            self.buf.push(c);
            self.size += n;
        }
        out
    }

    /// When the buffered text must go (`None`: nothing is buffered).
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|s| s + self.window)
    }

    /// The buffered text as an event, if any.
    pub fn flush(&mut self) -> Option<Value> {
        if self.buf.is_empty() {
            return None;
        }
        let text = std::mem::take(&mut self.buf);
        self.size = 0;
        self.since = None;
        Some(self.next(json!({ "text": text })))
    }

    /// The buffered text and the end marker (once).
    pub fn finish(&mut self) -> Vec<Value> {
        if self.ended {
            return vec![];
        }
        let mut out: Vec<Value> = self.flush().into_iter().collect();
        out.push(self.next(json!({ "end": true })));
        self.ended = true;
        out
    }

    fn next(&mut self, mut v: Value) -> Value {
        if let Some(o) = v.as_object_mut() {
            o.insert("stream".into(), Value::String(self.stream.clone()));
            o.insert("index".into(), Value::from(self.index));
        }
        self.index += 1;
        v
    }
}

/// Where a stream's events go, in order: `(idempotency key, data)` pairs,
/// at most ten at a time.
#[async_trait]
pub trait StreamSink: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;
    async fn send(&self, events: Vec<(String, Value)>) -> Result<(), Self::Error>;
}

/// What a finished stream sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReport {
    pub id: String,
    /// Events sent, the end marker included.
    pub events: usize,
    /// Bytes of text written.
    pub bytes: usize,
}

/// Why a stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError<E: std::error::Error + 'static> {
    /// The sink refused a batch; what came after it was not sent.
    #[error("the stream stopped after {sent} events: {source}")]
    Send {
        sent: usize,
        #[source]
        source: E,
    },
    /// The stream's task ended without a report (it panicked or was
    /// cancelled).
    #[error("the stream's task ended: {0}")]
    Task(String),
}

/// A stream being published: [`write`](Self::write) pieces, then
/// [`finish`](Self::finish). Each event's idempotency key is
/// `<stream>:<index>`, so a stream sent again makes each event once.
pub struct StreamWriter<E: std::error::Error + Send + Sync + 'static> {
    id: String,
    tx: mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<Result<StreamReport, StreamError<E>>>,
}

impl<E: std::error::Error + Send + Sync + 'static> StreamWriter<E> {
    /// Starts the stream's task (on the current Tokio runtime).
    pub fn open<S: StreamSink<Error = E>>(
        sink: S,
        id: impl Into<String>,
        window: Duration,
        max_bytes: usize,
    ) -> Self {
        let id = id.into();
        let (tx, rx) = mpsc::unbounded_channel();
        let coalescer = Coalescer::new(id.clone(), window, max_bytes);
        let task = tokio::spawn(run(sink, coalescer, rx));
        Self { id, tx, task }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Adds a piece (a token, a line); `false` once the stream has stopped
    /// on an error ([`finish`](Self::finish) returns it).
    pub fn write(&self, text: impl Into<String>) -> bool {
        self.tx.send(text.into()).is_ok()
    }

    /// Sends the rest and the end marker; the report once all were taken.
    pub async fn finish(self) -> Result<StreamReport, StreamError<E>> {
        drop(self.tx);
        self.task
            .await
            .map_err(|e| StreamError::Task(e.to_string()))?
    }
}

/// The stream's task: coalesces what is written, sends what is due.
async fn run<S: StreamSink>(
    sink: S,
    mut coalescer: Coalescer,
    mut rx: mpsc::UnboundedReceiver<String>,
) -> Result<StreamReport, StreamError<S::Error>> {
    let (mut events, mut bytes) = (0usize, 0usize);
    let mut pending: Vec<Value> = vec![];
    let mut open = true;
    while open {
        let deadline = coalescer.deadline();
        tokio::select! {
            piece = rx.recv() => match piece {
                Some(text) => {
                    bytes += text.len();
                    pending.extend(coalescer.push(&text, now()));
                    // What else is already written joins this round.
                    while let Ok(text) = rx.try_recv() {
                        bytes += text.len();
                        pending.extend(coalescer.push(&text, now()));
                    }
                }
                None => {
                    pending.extend(coalescer.finish());
                    open = false;
                }
            },
            () = sleep_until(deadline), if deadline.is_some() => {
                pending.extend(coalescer.flush());
            }
        }
        while !pending.is_empty() {
            let batch: Vec<(String, Value)> = pending
                .drain(..pending.len().min(10))
                .map(|data| (format!("{}:{}", coalescer.id(), data["index"]), data))
                .collect();
            let n = batch.len();
            sink.send(batch).await.map_err(|source| StreamError::Send {
                sent: events,
                source,
            })?;
            events += n;
        }
    }
    Ok(StreamReport {
        id: coalescer.id().to_owned(),
        events,
        bytes,
    })
}

/// Tokio's clock (so a test's paused time moves the windows too).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The batches a sink took.
    type Batches = Arc<Mutex<Vec<Vec<(String, Value)>>>>;

    #[derive(Clone, Default)]
    struct Recorder {
        batches: Batches,
        fail_after: Option<usize>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("refused")]
    struct Refused;

    #[async_trait]
    impl StreamSink for Recorder {
        type Error = Refused;
        async fn send(&self, events: Vec<(String, Value)>) -> Result<(), Refused> {
            let mut b = self.batches.lock().unwrap();
            if self.fail_after.is_some_and(|n| b.len() >= n) {
                return Err(Refused);
            }
            b.push(events);
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_sends_what_the_window_gathered_and_ends_the_stream() {
        let sink = Recorder::default();
        let w = StreamWriter::open(sink.clone(), "s1", DEFAULT_WINDOW, DEFAULT_MAX_BYTES);
        for tok in ["Hel", "lo", ", ", "world"] {
            assert!(w.write(tok));
        }
        // The window passes with nothing more written: the text goes alone.
        tokio::time::sleep(DEFAULT_WINDOW * 2).await;
        assert_eq!(sink.batches.lock().unwrap().len(), 1);
        assert!(w.write("!"));
        let report = w.finish().await.unwrap();
        assert_eq!((report.events, report.bytes), (3, 13));
        let all: Vec<(String, Value)> = sink.batches.lock().unwrap().concat();
        assert_eq!(
            all,
            vec![
                (
                    "s1:0".into(),
                    json!({"stream": "s1", "index": 0, "text": "Hello, world"})
                ),
                (
                    "s1:1".into(),
                    json!({"stream": "s1", "index": 1, "text": "!"})
                ),
                (
                    "s1:2".into(),
                    json!({"stream": "s1", "index": 2, "end": true})
                ),
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_batch_stops_the_stream_with_its_error() {
        let sink = Recorder {
            fail_after: Some(0),
            ..Recorder::default()
        };
        let w = StreamWriter::open(sink, "s2", DEFAULT_WINDOW, 4);
        w.write("more than four bytes");
        let e = w.finish().await.unwrap_err();
        assert!(matches!(e, StreamError::Send { sent: 0, .. }), "{e}");
    }

    #[test]
    fn pieces_within_the_window_are_one_event() {
        let t0 = Instant::now();
        let mut c = Coalescer::new("s1", DEFAULT_WINDOW, DEFAULT_MAX_BYTES);
        assert!(c.deadline().is_none());
        for (i, tok) in ["Hel", "lo", ", ", "world"].iter().enumerate() {
            assert!(
                c.push(tok, t0 + Duration::from_millis(i as u64 * 10))
                    .is_empty()
            );
        }
        assert_eq!(
            c.deadline(),
            Some(t0 + DEFAULT_WINDOW),
            "from the first piece"
        );
        let e = c.flush().unwrap();
        assert_eq!(
            e,
            json!({"stream": "s1", "index": 0, "text": "Hello, world"})
        );
        assert!(c.flush().is_none());
        let end = c.finish();
        assert_eq!(end, vec![json!({"stream": "s1", "index": 1, "end": true})]);
        assert!(c.finish().is_empty(), "ended once");
    }

    #[test]
    fn the_size_bound_cuts_events_on_character_boundaries() {
        let now = Instant::now();
        let mut c = Coalescer::new("s", DEFAULT_WINDOW, 10);
        let due = c.push("ééééééé\"\"\"", now); // 14 + 6 escaped bytes
        assert_eq!(due.len(), 1);
        assert_eq!(due[0]["text"], "ééééé");
        let rest = c.finish();
        assert_eq!(rest[0]["text"], "éé\"\"\"");
        assert_eq!(rest[0]["index"], 1);
        assert_eq!(rest[1]["end"], true);
        let all: String = due
            .iter()
            .chain(&rest)
            .filter_map(|v| v["text"].as_str())
            .collect();
        assert_eq!(all, "ééééééé\"\"\"");
    }
}
