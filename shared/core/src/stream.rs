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
//! due ([`Coalescer::deadline`]).

use std::time::{Duration, Instant};

use agentwire_protocol::chunks::escaped_len;
use serde_json::{Value, json};

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

#[cfg(test)]
mod tests {
    use super::*;

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
