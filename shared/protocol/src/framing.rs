//! Framing: events coalesced into as few frames as fit API Gateway's
//! message size.

use serde::Serialize;

use crate::frames::EventFrame;
use crate::limits::MAX_MESSAGE_BYTES;

/// What a `batch` frame adds around its events (`{"type":"batch","events":[]}`
/// and a margin).
const BATCH_ENVELOPE: usize = 32;

/// One `event` frame for a single event; otherwise `batch` frames, each
/// within [`MAX_MESSAGE_BYTES`], in order (a lone leftover is a plain
/// `event` frame). The data may be a tree or the stored text
/// ([`RawData`](crate::RawData)): the frames' text is the same.
pub fn coalesce<D: Serialize>(events: Vec<EventFrame<D>>) -> Vec<String> {
    let mut frames = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut size = 0;
    for e in &events {
        let object = event_object(e);
        if !current.is_empty() && size + object.len() + 1 + BATCH_ENVELOPE > MAX_MESSAGE_BYTES {
            frames.push(batch_of(std::mem::take(&mut current)));
            size = 0;
        }
        size += object.len() + 1;
        current.push(object);
    }
    if !current.is_empty() {
        frames.push(batch_of(current));
    }
    frames
}

/// A `batch` frame of `events`, or an `event` frame for one.
pub fn batch_frame<D: Serialize>(events: Vec<EventFrame<D>>) -> String {
    batch_of(events.iter().map(event_object).collect())
}

/// The `event` frame of one event.
pub fn event_frame<D: Serialize>(e: &EventFrame<D>) -> String {
    tagged_event(&event_object(e))
}

/// An event's JSON object, as a `batch` lists it (no `type`).
fn event_object<D: Serialize>(e: &EventFrame<D>) -> String {
    // Strings, integers and JSON data (a tree or checked text) always
    // serialise; an error frame stands in should that ever change.
    serde_json::to_string(e).unwrap_or_else(|err| {
        format!(r#"{{"type":"error","code":"internal","message":"unserialisable event: {err}"}}"#)
    })
}

/// `{"type":"event",` and the object's fields: what serde writes for
/// `ServerFrame::Event` (the tag first).
fn tagged_event(object: &str) -> String {
    let fields = object.strip_prefix('{').unwrap_or(object);
    let mut out = String::with_capacity(object.len() + 16);
    out.push_str(r#"{"type":"event","#);
    out.push_str(fields);
    out
}

fn batch_of(objects: Vec<String>) -> String {
    if let [one] = objects.as_slice() {
        return tagged_event(one);
    }
    let len: usize = objects.iter().map(|o| o.len() + 1).sum();
    let mut out = String::with_capacity(len + BATCH_ENVELOPE);
    out.push_str(r#"{"type":"batch","events":["#);
    for (i, o) in objects.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(o);
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::ServerFrame;
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
        assert_eq!(coalesce(Vec::<EventFrame>::new()), Vec::<String>::new());
    }

    #[test]
    fn frames_are_what_serde_writes_for_the_server_frames() {
        let events: Vec<EventFrame> = (1..=3).map(|s| ev(s, "hi")).collect();
        assert_eq!(
            event_frame(&events[0]),
            ServerFrame::Event(events[0].clone()).to_json()
        );
        assert_eq!(
            batch_frame(events.clone()),
            ServerFrame::Batch {
                events: events.clone()
            }
            .to_json()
        );
        assert_eq!(
            batch_frame(vec![events[1].clone()]),
            ServerFrame::Event(events[1].clone()).to_json()
        );
    }

    #[test]
    fn raw_data_frames_match_tree_data_frames() {
        use crate::RawData;
        let tree: Vec<EventFrame> = (1..=4).map(|s| ev(s, &"y".repeat(40_000))).collect();
        let raw: Vec<EventFrame<RawData>> = tree
            .iter()
            .map(|e| EventFrame {
                channel: e.channel.clone(),
                epoch: e.epoch.clone(),
                seq: e.seq,
                id: e.id.clone(),
                kind: e.kind.clone(),
                data: RawData::from(&e.data),
                ts: e.ts.clone(),
            })
            .collect();
        assert_eq!(coalesce(raw), coalesce(tree));
    }
}
