//! Messages larger than one event: chunk events and their reassembly.
//!
//! A message whose data does not fit in one event (96 KiB), or that is
//! binary, is published as `count` chunk events sharing one message id.
//! Each chunk is an ordinary event (its own seq, retention and idempotency
//! key `<message>#<index>`, the message's `kind`) whose data is
//!
//! ```json
//! {"$chunk": {"message": "m1", "index": 0, "count": 3, "encoding": "utf8", "bytes": 200000},
//!  "part": "…"}
//! ```
//!
//! The parts, concatenated in index order, are the message's text: its
//! JSON (`json`), the string itself (`utf8`), or the base64 of its bytes
//! (`base64`; every part but the last a multiple of 3 bytes, so the
//! concatenation is one base64 text). `bytes` is the size of the decoded
//! message. A [`Reassembler`] turns a channel's chunk events back into one
//! [`Message`], within a bound on what it holds, and reports a message it
//! can never complete (a chunk lost to retention, a message over the
//! bound) as [`Assembled::Lost`], never as a corrupt one.

use std::collections::{HashMap, VecDeque};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::limits::MAX_EVENT_DATA_BYTES;

/// The key that marks an event's data as a chunk.
pub const CHUNK_KEY: &str = "$chunk";

/// The most a chunk's part holds, as JSON text (well within one event).
pub const PART_BYTES: usize = 64 * 1024;

/// Raw bytes per base64 part (a multiple of 3: 64 KiB of base64).
const PART_RAW_BYTES: usize = PART_BYTES / 4 * 3;

/// The longest message id (the chunk ids add `#<index>` to it).
pub const MAX_MESSAGE_ID: usize = 112;

/// How a message's parts encode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The parts are the JSON text of the data.
    Json,
    /// The parts are the text itself.
    Utf8,
    /// The parts are the base64 of the bytes.
    Base64,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Utf8 => "utf8",
            Encoding::Base64 => "base64",
        }
    }
}

/// The `$chunk` header of a chunk event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkHeader {
    pub message: String,
    pub index: u32,
    pub count: u32,
    pub encoding: Encoding,
    /// The decoded message's size in bytes.
    pub bytes: u64,
}

/// What a publisher sends: any JSON, a text, or bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Json(Value),
    Text(String),
    Bytes(Vec<u8>),
}

impl Payload {
    /// The event data when it fits in one plain event (`None`: chunk it).
    /// Bytes always go as chunks, so their encoding is named.
    pub fn as_event_data(&self) -> Option<Value> {
        let v = match self {
            Payload::Json(v) => v.clone(),
            Payload::Text(t) => Value::String(t.clone()),
            Payload::Bytes(_) => return None,
        };
        (crate::limits::json_size(&v) <= MAX_EVENT_DATA_BYTES).then_some(v)
    }
}

/// One chunk event to publish: its id (idempotency key) and data.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub id: String,
    pub data: Value,
}

/// The chunk events of `payload` as message `message`, in order.
pub fn split(message: &str, payload: &Payload) -> Vec<Chunk> {
    let (encoding, parts, bytes) = match payload {
        Payload::Json(v) => {
            let text = v.to_string();
            let n = text.len();
            (Encoding::Json, split_text(&text), n)
        }
        Payload::Text(t) => (Encoding::Utf8, split_text(t), t.len()),
        Payload::Bytes(b) => {
            let engine = base64::engine::general_purpose::STANDARD;
            let parts: Vec<String> = if b.is_empty() {
                vec![String::new()]
            } else {
                b.chunks(PART_RAW_BYTES).map(|c| engine.encode(c)).collect()
            };
            (Encoding::Base64, parts, b.len())
        }
    };
    let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let header = ChunkHeader {
                message: message.to_owned(),
                index,
                count,
                encoding,
                bytes: bytes as u64,
            };
            let mut data = serde_json::Map::new();
            data.insert(
                CHUNK_KEY.to_owned(),
                serde_json::to_value(header).unwrap_or(Value::Null),
            );
            data.insert("part".to_owned(), Value::String(part));
            Chunk {
                id: format!("{message}#{index}"),
                data: Value::Object(data),
            }
        })
        .collect()
}

/// How many bytes `text` takes inside a JSON string.
pub fn json_text_len(text: &str) -> usize {
    text.chars().map(escaped_len).sum()
}

/// How many bytes `c` takes inside a JSON string.
pub fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The byte length of the longest prefix of `text` whose characters take
/// at most `max` bytes inside a JSON string (a character boundary; at
/// least one character when `text` is not empty).
pub fn escaped_prefix(text: &str, max: usize) -> usize {
    let mut size = 0;
    for (i, c) in text.char_indices() {
        let n = escaped_len(c);
        if i > 0 && size + n > max {
            return i;
        }
        size += n;
    }
    text.len()
}

/// `text` cut at character boundaries into parts of at most
/// [`PART_BYTES`] as JSON string contents (at least one part).
fn split_text(text: &str) -> Vec<String> {
    let mut parts = vec![];
    let mut rest = text;
    loop {
        let cut = escaped_prefix(rest, PART_BYTES);
        parts.push(rest[..cut].to_owned());
        rest = &rest[cut..];
        if rest.is_empty() {
            return parts;
        }
    }
}

/// A reassembled message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub channel: String,
    /// The message id.
    pub id: String,
    pub kind: String,
    /// The seq of its last chunk.
    pub seq: u64,
    pub payload: Payload,
}

impl Message {
    pub fn encoding(&self) -> Encoding {
        match self.payload {
            Payload::Json(_) => Encoding::Json,
            Payload::Text(_) => Encoding::Utf8,
            Payload::Bytes(_) => Encoding::Base64,
        }
    }

    /// The data as JSON: the value, the text, or the base64 of the bytes.
    pub fn data_json(&self) -> Value {
        match &self.payload {
            Payload::Json(v) => v.clone(),
            Payload::Text(t) => Value::String(t.clone()),
            Payload::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        }
    }
}

/// Why a message will never be handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// A chunk of it never came (gone from the log, or its start was before
    /// where this client began).
    Missing,
    /// It is larger than the client holds.
    TooLarge,
    /// Its chunks do not agree (count, encoding) or do not decode.
    Invalid,
}

impl LostReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LostReason::Missing => "missing",
            LostReason::TooLarge => "too_large",
            LostReason::Invalid => "invalid",
        }
    }
}

/// What one event did to the reassembly.
#[derive(Debug, Clone, PartialEq)]
pub enum Assembled {
    /// Not a chunk: deliver the event as it is.
    NotChunk,
    /// A chunk, held (or a repeat of one already taken).
    Pending,
    /// The last chunk: the whole message.
    Complete(Message),
    /// A message that can never complete; reported once.
    Lost {
        channel: String,
        message: String,
        reason: LostReason,
    },
}

struct Partial {
    /// When it started, in messages started: the smallest is the oldest.
    started: u64,
    header: ChunkHeader,
    kind: String,
    next: u32,
    text: String,
}

/// Messages lost that this reassembler remembers, to report each once.
const LOST_REMEMBERED: usize = 1024;

/// The most messages a [`Reassembler`] holds in progress by default; a new
/// one beyond it makes the oldest lost (`too_large`: over the bound).
pub const DEFAULT_MAX_PARTIAL: usize = 64;

/// The longest message id a [`Reassembler`] takes from a chunk, in bytes;
/// a longer one is lost as `invalid` (reported under its first bytes).
pub const MAX_RECEIVED_ID_BYTES: usize = 128;

/// Reassembles chunk events into messages, per channel, within bounds.
pub struct Reassembler {
    max_message_bytes: u64,
    max_held_bytes: u64,
    held: u64,
    partial: HashMap<(String, String), Partial>,
    lost: VecDeque<(String, String)>,
    max_partial: usize,
    started: u64,
    /// Messages dropped to make room for newer ones, not yet taken.
    evicted: Vec<Assembled>,
}

impl Default for Reassembler {
    /// Messages up to 64 MiB, 128 MiB held at most.
    fn default() -> Self {
        Self::new(64 * 1024 * 1024, 128 * 1024 * 1024)
    }
}

impl Reassembler {
    pub fn new(max_message_bytes: u64, max_held_bytes: u64) -> Self {
        Self {
            max_message_bytes,
            max_held_bytes,
            held: 0,
            partial: HashMap::new(),
            lost: VecDeque::new(),
            max_partial: DEFAULT_MAX_PARTIAL,
            started: 0,
            evicted: Vec::new(),
        }
    }

    /// At most `max` messages in progress at once (at least 1; default
    /// [`DEFAULT_MAX_PARTIAL`]): starting one more makes the oldest lost
    /// (`too_large`), reported by [`Reassembler::take_evicted`].
    pub fn with_max_partial(mut self, max: usize) -> Self {
        self.max_partial = max.max(1);
        self
    }

    /// Messages in progress.
    pub fn partial(&self) -> usize {
        self.partial.len()
    }

    /// The messages lost to the count bound since the last call (each an
    /// [`Assembled::Lost`]), to report before what `accept` returned.
    pub fn take_evicted(&mut self) -> Vec<Assembled> {
        std::mem::take(&mut self.evicted)
    }

    /// Bytes held in incomplete messages.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Takes one delivered event (in seq order per channel).
    pub fn accept(&mut self, channel: &str, seq: u64, kind: &str, data: &Value) -> Assembled {
        let Some(obj) = data.as_object() else {
            return Assembled::NotChunk;
        };
        let Some(raw) = obj.get(CHUNK_KEY) else {
            return Assembled::NotChunk;
        };
        let header: ChunkHeader = match serde_json::from_value(raw.clone()) {
            Ok(h) => h,
            Err(_) => return Assembled::NotChunk,
        };
        if header.message.len() > MAX_RECEIVED_ID_BYTES {
            let mut cut = MAX_RECEIVED_ID_BYTES;
            while !header.message.is_char_boundary(cut) {
                cut -= 1;
            }
            let key = (channel.to_owned(), header.message[..cut].to_owned());
            return self.lose(key, LostReason::Invalid);
        }
        let key = (channel.to_owned(), header.message.clone());
        let Some(part) = obj.get("part").and_then(Value::as_str) else {
            return self.lose(key, LostReason::Invalid);
        };
        if header.count == 0 || header.index >= header.count {
            return self.lose(key, LostReason::Invalid);
        }
        if header.index == 0 {
            // A (re)start: a message of the same id still held is replaced.
            if let Some(old) = self.partial.remove(&key) {
                self.held -= old.text.len() as u64;
            }
            self.lost.retain(|k| *k != key);
            if header.bytes > self.max_message_bytes {
                return self.lose(key, LostReason::TooLarge);
            }
            while self.partial.len() >= self.max_partial {
                let Some(oldest) = self
                    .partial
                    .iter()
                    .min_by_key(|(_, p)| p.started)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                let lost = self.lose(oldest, LostReason::TooLarge);
                self.evicted.push(lost);
            }
            self.started += 1;
            self.partial.insert(
                key.clone(),
                Partial {
                    started: self.started,
                    header: header.clone(),
                    kind: kind.to_owned(),
                    next: 0,
                    text: String::new(),
                },
            );
        } else if self.lost.contains(&key) {
            return Assembled::Pending;
        }
        let Some(p) = self.partial.get_mut(&key) else {
            return self.lose(key, LostReason::Missing);
        };
        if header.index < p.next {
            return Assembled::Pending; // a repeat
        }
        if header.index > p.next {
            return self.lose(key, LostReason::Missing);
        }
        if header.count != p.header.count || header.encoding != p.header.encoding {
            return self.lose(key, LostReason::Invalid);
        }
        let grows = part.len() as u64;
        if p.text.len() as u64 + grows > self.max_message_bytes.saturating_mul(2)
            || self.held + grows > self.max_held_bytes
        {
            return self.lose(key, LostReason::TooLarge);
        }
        p.text.push_str(part);
        p.next += 1;
        self.held += grows;
        if p.next < p.header.count {
            return Assembled::Pending;
        }
        let Some(done) = self.partial.remove(&key) else {
            return Assembled::Pending;
        };
        self.held -= done.text.len() as u64;
        match decode(&done) {
            Some(payload) => Assembled::Complete(Message {
                channel: channel.to_owned(),
                id: done.header.message,
                kind: done.kind,
                seq,
                payload,
            }),
            None => self.lose(key, LostReason::Invalid),
        }
    }

    /// Drops what is held of `key` and reports it (once).
    fn lose(&mut self, key: (String, String), reason: LostReason) -> Assembled {
        if let Some(p) = self.partial.remove(&key) {
            self.held -= p.text.len() as u64;
        }
        if self.lost.contains(&key) {
            return Assembled::Pending;
        }
        if self.lost.len() >= LOST_REMEMBERED {
            self.lost.pop_front();
        }
        self.lost.push_back(key.clone());
        Assembled::Lost {
            channel: key.0,
            message: key.1,
            reason,
        }
    }
}

fn decode(p: &Partial) -> Option<Payload> {
    let payload = match p.header.encoding {
        Encoding::Json => Payload::Json(serde_json::from_str(&p.text).ok()?),
        Encoding::Utf8 => Payload::Text(p.text.clone()),
        Encoding::Base64 => Payload::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(&p.text)
                .ok()?,
        ),
    };
    let size = match &payload {
        Payload::Json(_) | Payload::Text(_) => p.text.len(),
        Payload::Bytes(b) => b.len(),
    };
    (size as u64 == p.header.bytes).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escaped_prefix_stops_at_a_character_within_the_bound() {
        // 'é' is 2 bytes, an escape 6, a quote 2 inside a JSON string.
        assert_eq!(escaped_prefix("aé\x1b\"b", 3), 3); // "aé"
        assert_eq!(escaped_prefix("aé\x1b\"b", 8), 3); // the escape would pass 8
        assert_eq!(escaped_prefix("aé\x1b\"b", 9), 4);
        assert_eq!(escaped_prefix("aé\x1b\"b", 100), 6);
        // At least one character, whatever the bound.
        assert_eq!(escaped_prefix("\x1bx", 1), 1);
        assert_eq!(escaped_prefix("", 10), 0);
    }
    use serde_json::json;

    fn feed(r: &mut Reassembler, chunks: &[Chunk], first_seq: u64) -> Vec<Assembled> {
        chunks
            .iter()
            .enumerate()
            .map(|(i, c)| r.accept("ch", first_seq + i as u64, "out", &c.data))
            .filter(|a| *a != Assembled::Pending)
            .collect()
    }

    #[test]
    fn small_data_is_one_plain_event_and_bytes_are_always_chunks() {
        assert_eq!(
            Payload::Json(json!({"a": 1})).as_event_data(),
            Some(json!({"a": 1}))
        );
        assert_eq!(
            Payload::Text("hi".into()).as_event_data(),
            Some(json!("hi"))
        );
        assert_eq!(Payload::Bytes(vec![1, 2]).as_event_data(), None);
        let big = "x".repeat(MAX_EVENT_DATA_BYTES);
        assert_eq!(Payload::Text(big).as_event_data(), None);
    }

    #[test]
    fn text_bytes_and_json_round_trip_through_chunks() {
        let text: String = (0..200_000)
            .map(|i| ['a', 'é', '"', '\n', '\u{1}', '🙂'][i % 6])
            .collect();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let value = json!({"rows": (0..20_000).collect::<Vec<_>>(), "note": "x"});
        for payload in [
            Payload::Text(text),
            Payload::Bytes(bytes),
            Payload::Json(value),
            Payload::Bytes(vec![]),
        ] {
            let chunks = split("m1", &payload);
            for c in &chunks {
                assert!(
                    crate::limits::json_size(&c.data) <= MAX_EVENT_DATA_BYTES,
                    "a chunk fits in one event"
                );
            }
            assert_eq!(chunks[0].id, "m1#0");
            let mut r = Reassembler::default();
            let out = feed(&mut r, &chunks, 10);
            let [Assembled::Complete(m)] = out.as_slice() else {
                panic!("{out:?}")
            };
            assert_eq!(m.payload, payload);
            assert_eq!((m.id.as_str(), m.kind.as_str()), ("m1", "out"));
            assert_eq!(m.seq, 10 + chunks.len() as u64 - 1);
            assert_eq!(r.held(), 0);
        }
    }

    #[test]
    fn a_missing_chunk_loses_the_message_once_and_others_go_on() {
        let a = split("a", &Payload::Text("y".repeat(200_000)));
        let b = split("b", &Payload::Text("z".repeat(100_000)));
        assert!(a.len() >= 3);
        let mut r = Reassembler::default();
        assert_eq!(r.accept("ch", 1, "k", &a[0].data), Assembled::Pending);
        assert_eq!(r.accept("ch", 2, "k", &b[0].data), Assembled::Pending);
        // a[1] is gone (retention): a[2] shows it.
        assert_eq!(
            r.accept("ch", 4, "k", &a[2].data),
            Assembled::Lost {
                channel: "ch".into(),
                message: "a".into(),
                reason: LostReason::Missing
            }
        );
        for (i, c) in a.iter().enumerate().skip(3) {
            assert_eq!(
                r.accept("ch", 5 + i as u64, "k", &c.data),
                Assembled::Pending
            );
        }
        let rest = feed(&mut r, &b[1..], 20);
        assert!(matches!(rest.as_slice(), [Assembled::Complete(m)] if m.id == "b"));
        // A message whose start this client never saw.
        assert!(matches!(
            r.accept("ch", 30, "k", &b[1].data),
            Assembled::Pending | Assembled::Lost { .. }
        ));
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn a_message_over_the_bound_is_lost_as_too_large_and_holds_nothing() {
        let chunks = split("big", &Payload::Bytes(vec![7; 200_000]));
        let mut r = Reassembler::new(100_000, 1_000_000);
        let out = feed(&mut r, &chunks, 1);
        assert_eq!(
            out,
            vec![Assembled::Lost {
                channel: "ch".into(),
                message: "big".into(),
                reason: LostReason::TooLarge
            }]
        );
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn repeats_are_ignored_and_plain_events_pass() {
        let chunks = split("m", &Payload::Text("q".repeat(150_000)));
        let mut r = Reassembler::default();
        assert_eq!(r.accept("ch", 1, "k", &chunks[0].data), Assembled::Pending);
        assert_eq!(r.accept("ch", 2, "k", &chunks[0].data), Assembled::Pending);
        assert_eq!(
            r.accept("ch", 3, "k", &json!({"$chunkish": 1})),
            Assembled::NotChunk
        );
        assert_eq!(r.accept("ch", 4, "k", &json!("text")), Assembled::NotChunk);
        let out = feed(&mut r, &chunks[1..], 5);
        assert!(matches!(out.as_slice(), [Assembled::Complete(_)]));
    }

    #[test]
    fn messages_in_progress_are_bounded_by_count_and_ids_by_length() {
        let mut r = Reassembler::default().with_max_partial(2);
        let first = |id: &str| split(id, &Payload::Text("w".repeat(100_000)))[0].clone();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            assert_eq!(
                r.accept("ch", i as u64, "k", &first(id).data),
                Assembled::Pending
            );
        }
        assert_eq!(r.partial(), 2);
        assert_eq!(
            r.take_evicted(),
            vec![Assembled::Lost {
                channel: "ch".into(),
                message: "a".into(),
                reason: LostReason::TooLarge
            }]
        );
        assert!(r.take_evicted().is_empty());
        let long = "é".repeat(200);
        let got = r.accept("ch", 9, "k", &first(&long).data);
        let Assembled::Lost {
            message, reason, ..
        } = got
        else {
            panic!("{got:?}")
        };
        assert_eq!(reason, LostReason::Invalid);
        assert!(message.len() <= MAX_RECEIVED_ID_BYTES);
        assert_eq!(r.partial(), 2);
    }
}
