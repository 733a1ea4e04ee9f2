//! Framing: events coalesced into as few frames as fit API Gateway's
//! message size.

use crate::frames::{EventFrame, ServerFrame};
use crate::limits::MAX_MESSAGE_BYTES;

/// What a `batch` frame adds around its events (`{"type":"batch","events":[]}`
/// and a margin).
const BATCH_ENVELOPE: usize = 32;

/// One `event` frame for a single event; otherwise `batch` frames, each
/// within [`MAX_MESSAGE_BYTES`], in order (a lone leftover is a plain
/// `event` frame).
pub fn coalesce(events: Vec<EventFrame>) -> Vec<String> {
    if events.len() == 1 {
        return events
            .into_iter()
            .map(|e| ServerFrame::Event(e).to_json())
            .collect();
    }
    let mut frames = Vec::new();
    let mut current: Vec<EventFrame> = Vec::new();
    let mut size = 0;
    for e in events {
        let len = serde_json::to_string(&e)
            .map(|s| s.len())
            .unwrap_or(MAX_MESSAGE_BYTES);
        if !current.is_empty() && size + len + 1 + BATCH_ENVELOPE > MAX_MESSAGE_BYTES {
            frames.push(batch_frame(std::mem::take(&mut current)));
            size = 0;
        }
        size += len + 1;
        current.push(e);
    }
    if !current.is_empty() {
        frames.push(batch_frame(current));
    }
    frames
}

/// A `batch` frame of `events`, or an `event` frame for one.
pub fn batch_frame(events: Vec<EventFrame>) -> String {
    if events.len() == 1 {
        return events
            .into_iter()
            .map(|e| ServerFrame::Event(e).to_json())
            .collect();
    }
    ServerFrame::Batch { events }.to_json()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(seq: u64, data: &str) -> EventFrame {
        EventFrame {
            channel: "a".into(),
            epoch: "e".into(),
            seq,
            id: format!("i{seq}"),
            kind: "k".into(),
            data: json!(data),
            ts: "t".into(),
        }
    }

    #[test]
    fn coalesce_splits_within_the_message_limit() {
        let big = "x".repeat(50_000);
        let frames = coalesce((1..=5).map(|s| ev(s, &big)).collect());
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|f| f.len() <= MAX_MESSAGE_BYTES));
        assert!(
            frames[2].starts_with(r#"{"type":"event""#),
            "a lone leftover is a plain event"
        );
    }

    #[test]
    fn small_events_share_one_batch_in_order() {
        let frames = coalesce((1..=3).map(|s| ev(s, "hi")).collect());
        assert_eq!(frames.len(), 1);
        let ServerFrame::Batch { events } = serde_json::from_str(&frames[0]).unwrap() else {
            panic!("not a batch: {}", frames[0]);
        };
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(coalesce(vec![]), Vec::<String>::new());
    }
}
