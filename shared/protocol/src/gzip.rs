//! Compressed payloads: the text of a stream event or a chunk, stored and
//! sent gzip-compressed (docs/protocol.md, "Compressed payloads").
//!
//! A stream event `{"stream", "index", "text"}` (exactly these keys) is
//! compressed as `{"stream", "index", "gz"}`, and a chunk
//! `{"$chunk", "part"}` as `{"$chunk", "gz"}`: `gz` is the base64
//! (standard, padded) of one gzip member of the text's UTF-8 bytes. The
//! gateway compresses when it commits ([`compress_raw`]), when the text is
//! at least [`MIN_TEXT_BYTES`] and the result is smaller; a client that
//! announced [`FEATURE`] in `hello` gets the compressed form, everyone
//! else the text back ([`expand_raw`], [`expand_frames`]). Data of any
//! other shape is never touched. Expanding is bounded: a `gz` never
//! decodes to more than the caller's bound.

use std::io::Read;

use base64::Engine;
use flate2::Compression;
use flate2::bufread::GzDecoder;
use flate2::write::GzEncoder;
use serde_json::{Map, Value};

use crate::chunks::CHUNK_KEY;
use crate::data::RawData;
use crate::frames::{EventFrame, ServerFrame};
use crate::limits::MAX_EVENT_DATA_BYTES;

/// The `hello` and `welcome` feature that names it.
pub const FEATURE: &str = "gzip";

/// The key of the compressed text.
pub const GZ_KEY: &str = "gz";

/// Texts shorter than this (in UTF-8 bytes) are never compressed: gzip's
/// header and trailer and base64's third would outweigh the saving.
pub const MIN_TEXT_BYTES: usize = 256;

/// Why a `gz` does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GzipError {
    #[error("gz is not base64")]
    Base64,
    #[error("gz is not one gzip member")]
    Gzip,
    #[error("gz decodes to more than {0} bytes")]
    TooLarge(usize),
    #[error("gz does not decode to UTF-8 text")]
    Utf8,
}

/// Which of the two shapes a payload has, and the key of its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `{"stream", "index", …}`: the text is `text`.
    Stream,
    /// `{"$chunk", …}`: the text is `part`.
    Chunk,
}

impl Shape {
    fn text_key(self) -> &'static str {
        match self {
            Shape::Stream => "text",
            Shape::Chunk => "part",
        }
    }

    /// The shape of `obj` when its keys are exactly this shape's with
    /// `last` as the text's key (`text`/`part`, or `gz`), the text a
    /// string.
    fn of(obj: &Map<String, Value>, last: Option<&str>) -> Option<Shape> {
        let shape = if obj.len() == 3
            && obj.get("stream").is_some_and(Value::is_string)
            && obj.get("index").is_some_and(Value::is_u64)
        {
            Shape::Stream
        } else if obj.len() == 2 && obj.get(CHUNK_KEY).is_some_and(Value::is_object) {
            Shape::Chunk
        } else {
            return None;
        };
        let key = last.unwrap_or(shape.text_key());
        obj.get(key).is_some_and(Value::is_string).then_some(shape)
    }
}

/// The compressed form of `data`, when it is a stream event or a chunk
/// whose text is at least [`MIN_TEXT_BYTES`] and compressing makes it
/// smaller; `None` otherwise (send it as it is).
pub fn compress(data: &Value) -> Option<Value> {
    let obj = data.as_object()?;
    let shape = Shape::of(obj, None)?;
    let text = obj.get(shape.text_key())?.as_str()?;
    if text.len() < MIN_TEXT_BYTES {
        return None;
    }
    let gz = gzip_base64(text.as_bytes())?;
    // The text as JSON (escapes included) against the base64, which
    // needs none.
    if gz.len() >= crate::chunks::json_text_len(text) {
        return None;
    }
    Some(Value::Object(replace(obj, shape.text_key(), GZ_KEY, gz)))
}

/// The plain form of `data` when it is compressed, its text at most
/// `max_text` bytes; `Ok(None)` when it is not compressed (nothing to do).
pub fn expand(data: &Value, max_text: usize) -> Result<Option<Value>, GzipError> {
    let Some(obj) = data.as_object() else {
        return Ok(None);
    };
    let Some(shape) = Shape::of(obj, Some(GZ_KEY)) else {
        return Ok(None);
    };
    let gz = obj.get(GZ_KEY).and_then(Value::as_str).unwrap_or_default();
    let text = gunzip_base64(gz, max_text)?;
    Ok(Some(Value::Object(replace(
        obj,
        GZ_KEY,
        shape.text_key(),
        text,
    ))))
}

/// [`compress`] on stored text: `None` when the data is left as it is. A
/// scan of the text rules out most data before any parse.
pub fn compress_raw(data: &RawData) -> Option<RawData> {
    let text = data.get();
    if text.len() < MIN_TEXT_BYTES
        || !text.starts_with('{')
        || !(text.contains("\"text\"") || text.contains("\"part\""))
    {
        return None;
    }
    let value: Value = serde_json::from_str(text).ok()?;
    compress(&value).map(|v| RawData::from_value(&v))
}

/// [`expand`] on stored text, the text bounded by what one event holds:
/// `Ok(None)` when the data is not compressed.
pub fn expand_raw(data: &RawData) -> Result<Option<RawData>, GzipError> {
    let text = data.get();
    if !text.starts_with('{') || !text.contains("\"gz\"") {
        return Ok(None);
    }
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Ok(None);
    };
    Ok(expand(&value, MAX_EVENT_DATA_BYTES)?.map(|v| RawData::from_value(&v)))
}

/// Checks data a publisher sent in the compressed form: it must decode,
/// and its plain form must fit one event. `Ok(())` for any other data.
pub fn check_raw(data: &RawData) -> Result<(), String> {
    match expand_raw(data) {
        Ok(None) => Ok(()),
        Ok(Some(plain)) if plain.len() > MAX_EVENT_DATA_BYTES => Err(format!(
            "gz expands to {} bytes of data; at most {MAX_EVENT_DATA_BYTES} are allowed",
            plain.len()
        )),
        Ok(Some(_)) => Ok(()),
        Err(e) => Err(format!("{e}: publish the text, or gzip it whole as base64")),
    }
}

/// Stored data in the gateway's own compressed form: compressed data
/// from a publisher expanded and compressed again (one gzip member,
/// whatever the publisher sent), plain data compressed when that pays.
/// `None`: store it as it is.
pub fn canonical_raw(data: &RawData) -> Option<RawData> {
    match expand_raw(data) {
        Ok(Some(plain)) => Some(compress_raw(&plain).unwrap_or(plain)),
        Ok(None) => compress_raw(data),
        Err(_) => None,
    }
}

/// `frames` (`event` and `batch` frames) with every compressed payload
/// expanded, coalesced again within the message size (an expanded batch
/// may need more frames); `None` when none holds one. A payload that
/// does not decode is sent as it is, and a frame that holds no events
/// keeps its place.
pub fn expand_frames<F: AsRef<str>>(frames: &[F]) -> Option<Vec<String>> {
    if !frames.iter().any(|f| f.as_ref().contains("\"gz\"")) {
        return None;
    }
    let mut events: Vec<EventFrame> = Vec::new();
    let mut changed = false;
    let mut out: Vec<String> = Vec::new();
    for f in frames {
        let Some(parsed) = events_of(f.as_ref()) else {
            out.extend(crate::framing::coalesce(std::mem::take(&mut events)));
            out.push(f.as_ref().to_owned());
            continue;
        };
        for mut e in parsed {
            if let Ok(Some(plain)) = expand(&e.data, MAX_EVENT_DATA_BYTES) {
                e.data = plain;
                changed = true;
            }
            events.push(e);
        }
    }
    out.extend(crate::framing::coalesce(events));
    changed.then_some(out)
}

/// The events of an `event` or `batch` frame (`None`: another frame).
fn events_of(frame: &str) -> Option<Vec<EventFrame>> {
    match serde_json::from_str::<ServerFrame>(frame).ok()? {
        ServerFrame::Event(e) => Some(vec![e]),
        ServerFrame::Batch { events } => Some(events),
        _ => None,
    }
}

/// `obj` with `from` replaced by `to` holding `text`.
fn replace(obj: &Map<String, Value>, from: &str, to: &str, text: String) -> Map<String, Value> {
    let mut out = obj.clone();
    out.remove(from);
    out.insert(to.to_owned(), Value::String(text));
    out
}

/// The base64 of the gzip of `bytes` (`None` only if the encoder fails,
/// which writing to memory does not).
pub fn gzip_base64(bytes: &[u8]) -> Option<String> {
    use std::io::Write;
    let mut enc = GzEncoder::new(Vec::with_capacity(bytes.len() / 3), Compression::default());
    enc.write_all(bytes).ok()?;
    let gz = enc.finish().ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(gz))
}

/// The text that `gz` (base64 of one gzip member) holds, at most `max`
/// bytes.
pub fn gunzip_base64(gz: &str, max: usize) -> Result<String, GzipError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(gz)
        .map_err(|_| GzipError::Base64)?;
    let mut decoder = GzDecoder::new(bytes.as_slice());
    let mut out = Vec::new();
    (&mut decoder)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| GzipError::Gzip)?;
    if out.len() > max {
        return Err(GzipError::TooLarge(max));
    }
    // One member, nothing after it.
    if !decoder.into_inner().is_empty() {
        return Err(GzipError::Gzip);
    }
    String::from_utf8(out).map_err(|_| GzipError::Utf8)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn terminal(n: usize) -> String {
        "\u{1b}[32m   Compiling\u{1b}[0m agentwire-core v0.1.0\n".repeat(n)
    }

    #[test]
    fn a_long_stream_text_is_compressed_and_expands_to_the_same_data() {
        let data = json!({"stream": "s1", "index": 4, "text": terminal(40)});
        let packed = compress(&data).unwrap();
        assert!(packed.get("text").is_none());
        assert_eq!(packed["stream"], "s1");
        assert_eq!(packed["index"], 4);
        assert!(packed.to_string().len() * 5 < data.to_string().len());
        assert_eq!(expand(&packed, 1 << 20).unwrap(), Some(data));
    }

    #[test]
    fn a_chunk_part_is_compressed_and_expands_to_the_same_data() {
        let data = json!({"$chunk": {"message": "m", "index": 0, "count": 1, "encoding": "utf8", "bytes": 2000},
                          "part": "ab".repeat(1000)});
        let packed = compress(&data).unwrap();
        assert!(packed.get("part").is_none() && packed.get("gz").is_some());
        assert_eq!(expand(&packed, 1 << 20).unwrap(), Some(data));
    }

    #[test]
    fn short_texts_and_other_shapes_are_left_alone() {
        for data in [
            json!({"stream": "s1", "index": 0, "text": "a few tokens"}),
            json!({"stream": "s1", "index": 0, "end": true}),
            json!({"stream": "s1", "index": 0, "text": terminal(40), "extra": 1}),
            json!({"stream": 7, "index": 0, "text": terminal(40)}),
            json!({"text": terminal(40)}),
            json!({"$chunk": "x", "part": terminal(40)}),
            json!([terminal(40)]),
        ] {
            assert_eq!(compress(&data), None, "{data}");
            assert_eq!(compress_raw(&RawData::from_value(&data)), None, "{data}");
        }
    }

    #[test]
    fn text_that_does_not_shrink_is_left_alone() {
        // Random-looking text: gzip and base64 make it bigger.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let text: String = (0..600)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'!' + (x % 90) as u8)
            })
            .collect();
        let text = text.replace('\\', "/").replace('"', "'");
        assert_eq!(
            compress(&json!({"stream": "s", "index": 0, "text": text})),
            None
        );
    }

    #[test]
    fn data_that_is_not_compressed_needs_no_expansion() {
        for data in [
            json!({"stream": "s1", "index": 0, "text": "x"}),
            json!({"gz": "not ours", "n": 3}),
            json!({"stream": "s1", "gz": "H4sI"}),
            json!("gz"),
        ] {
            assert_eq!(expand(&data, 100).unwrap(), None, "{data}");
            assert_eq!(expand_raw(&RawData::from_value(&data)).unwrap(), None);
        }
    }

    #[test]
    fn a_gz_that_does_not_decode_is_a_typed_error() {
        let with = |gz: &str| json!({"stream": "s1", "index": 0, "gz": gz});
        assert_eq!(expand(&with("%%%"), 100), Err(GzipError::Base64));
        assert_eq!(expand(&with("bm90IGd6aXA="), 100), Err(GzipError::Gzip));
        let invalid_utf8 = gzip_base64(&[0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(expand(&with(&invalid_utf8), 100), Err(GzipError::Utf8));
        let member = |text: &[u8]| {
            base64::engine::general_purpose::STANDARD
                .decode(gzip_base64(text).unwrap())
                .unwrap()
        };
        let two =
            base64::engine::general_purpose::STANDARD.encode([member(b"a"), member(b"b")].concat());
        assert_eq!(
            expand(&with(&two), 100),
            Err(GzipError::Gzip),
            "one member only"
        );
    }

    #[test]
    fn expanding_is_bounded_whatever_the_gz_claims() {
        // 10 MB of zeros gzip to about 10 KB.
        let bomb = gzip_base64(&vec![b'0'; 10 << 20]).unwrap();
        assert!(bomb.len() < 20_000);
        let data = RawData::from_value(&json!({"stream": "s", "index": 0, "gz": bomb}));
        assert_eq!(
            expand_raw(&data),
            Err(GzipError::TooLarge(MAX_EVENT_DATA_BYTES))
        );
        assert!(check_raw(&data).is_err());
    }

    #[test]
    fn a_publishers_compressed_data_is_checked_and_stored_in_the_gateways_form() {
        let text = terminal(40);
        let plain = RawData::from_value(&json!({"stream": "s", "index": 0, "text": text}));
        // The publisher's gzip at another level, as two members would not be.
        let theirs = {
            use std::io::Write;
            let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
            enc.write_all(text.as_bytes()).unwrap();
            base64::engine::general_purpose::STANDARD.encode(enc.finish().unwrap())
        };
        let sent = RawData::from_value(&json!({"stream": "s", "index": 0, "gz": theirs}));
        assert_eq!(check_raw(&sent), Ok(()));
        let stored = canonical_raw(&sent).unwrap();
        assert_eq!(Some(stored.clone()), compress_raw(&plain));
        assert_eq!(expand_raw(&stored).unwrap(), Some(plain.clone()));
        // A short text sent compressed is stored plain.
        let short = RawData::from_value(
            &json!({"stream": "s", "index": 0, "gz": gzip_base64(b"hi").unwrap()}),
        );
        assert_eq!(
            canonical_raw(&short).unwrap().value(),
            json!({"stream": "s", "index": 0, "text": "hi"})
        );
        let bad = RawData::from_value(&json!({"stream": "s", "index": 0, "gz": "bm90IGd6aXA="}));
        assert!(check_raw(&bad).unwrap_err().contains("not one gzip member"));
    }

    fn ev(seq: u64, data: Value) -> EventFrame<RawData> {
        EventFrame {
            channel: "c".into(),
            epoch: "e".into(),
            seq,
            id: format!("i{seq}"),
            kind: "out".into(),
            data: RawData::from_value(&data),
            ts: "2026-12-08T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn frames_expand_and_are_cut_again_within_the_message_size() {
        // Five events of 60 KB of text: compressed they share one batch
        // frame; expanded they need a frame or two each.
        let text = terminal(1400);
        assert!(text.len() > 60_000);
        let plain: Vec<EventFrame<RawData>> = (1..=5)
            .map(|seq| ev(seq, json!({"stream": "s", "index": seq, "text": text})))
            .collect();
        let packed: Vec<EventFrame<RawData>> = plain
            .iter()
            .map(|e| EventFrame {
                data: compress_raw(&e.data).unwrap(),
                ..e.clone()
            })
            .collect();
        let frames = crate::framing::coalesce(packed);
        assert_eq!(frames.len(), 1);
        let expanded = expand_frames(&frames).unwrap();
        assert_eq!(expanded, crate::framing::coalesce(plain));
        assert!(expanded.len() >= 3);
        assert!(
            expanded
                .iter()
                .all(|f| f.len() <= crate::limits::MAX_MESSAGE_BYTES)
        );
        let nothing = crate::framing::coalesce(vec![ev(1, json!({"n": 1}))]);
        assert_eq!(expand_frames(&nothing), None);
    }
}
