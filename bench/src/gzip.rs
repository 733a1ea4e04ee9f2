//! `--only gzip`: what gzip would save a stream of real terminal output,
//! measured on logs kept in `bench/data/` (a `cargo build -vv` and an
//! `npm ci` of the console, both with their ANSI colours), cut into stream
//! events as a publisher's coalescer cuts them (64 KiB of JSON text each).
//! Each event is compressed on its own (a subscriber resuming from any seq
//! must decode it without the ones before), and its gzip is base64 in the
//! event's JSON, since API Gateway frames are text.
//!
//! It prints, per log: the sizes, the ratio, the DynamoDB write units a
//! second of a 1 MB/s stream (queue path: an event item in a transaction
//! with its dedup record and the head; direct path: one conditional put
//! and the head update), and the `@connections` units (32 KB each) per MB
//! per subscriber, without and with gzip.

use std::io::Write;
use std::path::Path;

use agentwire_protocol::chunks::escaped_prefix;
use base64::Engine;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;

/// The most JSON text a stream event carries (the coalescer's bound).
const EVENT_TEXT: usize = 64 * 1024;

/// The event item's attributes besides its data (keys, id, kind, ts,
/// epoch, committed_at, expires_at), and an event frame's besides its data.
const ITEM_OVERHEAD: usize = 200;
const FRAME_OVERHEAD: usize = 150;

fn gzip_base64(text: &str) -> String {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(text.as_bytes());
    let bytes = enc.finish().unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

struct Sizes {
    raw: usize,
    events: usize,
    /// The events' data as JSON, with the text, then with its gzip.
    json: usize,
    gz: usize,
    /// Write units for the whole log: queue path (transaction), direct path.
    wcu_queue: (f64, f64),
    wcu_direct: (f64, f64),
    /// `@connections` units for the whole log, per subscriber.
    messages: (f64, f64),
}

fn measure(text: &str) -> Sizes {
    let mut s = Sizes {
        raw: text.len(),
        events: 0,
        json: 0,
        gz: 0,
        wcu_queue: (0.0, 0.0),
        wcu_direct: (0.0, 0.0),
        messages: (0.0, 0.0),
    };
    let kb = |bytes: usize| (bytes as f64 / 1024.0).ceil();
    let mut rest = text;
    let mut index = 0;
    while !rest.is_empty() {
        let cut = escaped_prefix(rest, EVENT_TEXT);
        let piece = &rest[..cut];
        rest = &rest[cut..];
        let plain = json!({"stream": "s1", "index": index, "text": piece}).to_string();
        let gz = json!({"stream": "s1", "index": index, "gz": gzip_base64(piece)}).to_string();
        index += 1;
        s.events += 1;
        s.json += plain.len();
        s.gz += gz.len();
        for (bytes, queue, direct, msgs) in [
            (
                plain.len(),
                &mut s.wcu_queue.0,
                &mut s.wcu_direct.0,
                &mut s.messages.0,
            ),
            (
                gz.len(),
                &mut s.wcu_queue.1,
                &mut s.wcu_direct.1,
                &mut s.messages.1,
            ),
        ] {
            let item = kb(bytes + ITEM_OVERHEAD);
            // Transaction: each item twice; event, dedup record, head.
            *queue += 2.0 * (item + 1.0 + 1.0);
            *direct += item + 1.0;
            *msgs += ((bytes + FRAME_OVERHEAD) as f64 / 32768.0).ceil();
        }
    }
    s
}

pub fn gzip(dir: &Path) -> Result<(), String> {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    if logs.is_empty() {
        return Err(format!("no *.log in {}", dir.display()));
    }
    println!(
        "Terminal output as stream events of up to 64 KiB, each gzipped on its own (base64 in the JSON):"
    );
    println!();
    println!(
        "| log | bytes | events | data as JSON | gzip + base64 | ratio | WCU/s at 1 MB/s, queue path | direct path | @connections units per MB per subscriber |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for path in logs {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        let s = measure(&text);
        let per_mb = |x: f64| x / (s.raw as f64 / 1_048_576.0);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!(
            "| {name} | {} | {} | {} | {} | {:.1}× | {:.0} → {:.0} | {:.0} → {:.0} | {:.0} → {:.0} |",
            s.raw,
            s.events,
            s.json,
            s.gz,
            s.json as f64 / s.gz as f64,
            per_mb(s.wcu_queue.0),
            per_mb(s.wcu_queue.1),
            per_mb(s.wcu_direct.0),
            per_mb(s.wcu_direct.1),
            per_mb(s.messages.0),
            per_mb(s.messages.1),
        );
    }
    println!();
    Ok(())
}
