//! Hostile event data: valid, within the size limit, and as costly as
//! JSON gets to hold as a tree. Shared by the memory test and the bench.

use std::time::Duration;

use agentwire_aws::DynamoLog;
use agentwire_core::clock::{Clock, SystemClock, rfc3339};
use agentwire_core::model::{ChannelKey, ChannelState, Envelope};
use agentwire_core::ports::ChannelLog;
use agentwire_protocol::RawData;
use agentwire_protocol::limits::MAX_EVENT_DATA_BYTES;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::Stack;

/// The three shapes, in turn by `i`: 100 nested arrays around small
/// numbers, one flat array of small numbers, one string of escapes. Each
/// is about [`MAX_EVENT_DATA_BYTES`] of JSON text; as a `serde_json::Value`
/// the first two take 16-20 times that.
pub fn worst_case_data(i: u64) -> RawData {
    const DEPTH: usize = 100;
    let max = MAX_EVENT_DATA_BYTES;
    let text = match i % 3 {
        0 => {
            let zeros = (max - 2 * DEPTH).div_ceil(2) - 1;
            format!(
                "{}{}0{}",
                "[".repeat(DEPTH),
                "0,".repeat(zeros - 1),
                "]".repeat(DEPTH)
            )
        }
        1 => format!("[{}0]", "0,".repeat((max - 3) / 2)),
        _ => format!("\"{}\"", "\\u0001".repeat((max - 2) / 6)),
    };
    // Each shape is valid JSON by construction.
    RawData::from_text(text).unwrap_or_default()
}

/// Stores `n` events of [`worst_case_data`] on `channel` (with
/// `BatchWriteItem`, 50 at a time: set-up, not the commit path), live for
/// an hour. Returns the channel's state.
pub async fn seed(stack: &Stack, channel: &str, n: u64) -> ChannelState {
    let log = DynamoLog::new(
        stack.ddb(),
        stack.config.tables.clone(),
        stack.clock.clone(),
    );
    let key = ChannelKey::new(&stack.tenant, channel);
    let mut state = log.ensure_channel(&key).await.expect("channel");
    let expires = SystemClock.epoch_s() + 3600;
    let mut first = 1;
    while first <= n {
        let last = (first + 49).min(n);
        let events: Vec<Envelope> = (first..=last)
            .map(|i| Envelope {
                tenant: stack.tenant.clone(),
                channel: channel.into(),
                id: format!("e{i}"),
                kind: "hostile".into(),
                data: worst_case_data(i),
                ts: rfc3339(std::time::SystemTime::now()),
            })
            .collect();
        state.head = log
            .import(&key, &state, &events, expires)
            .await
            .expect("import");
        first = last + 1;
    }
    state
}

/// A frame, read without building a tree of its data (skipped fields are
/// scanned, not kept).
#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    ty: String,
    seq: Option<u64>,
    #[serde(default)]
    events: Vec<Seq>,
    #[serde(default)]
    channels: Vec<JoinedChannel>,
    code: Option<String>,
}

#[derive(Deserialize)]
struct Seq {
    seq: u64,
}

#[derive(Deserialize)]
struct JoinedChannel {
    head: u64,
    until: Option<u64>,
}

#[derive(Deserialize)]
struct Page {
    events: Vec<Seq>,
    next_after: Option<u64>,
}

/// Replays `channel` from seq 0 to `head` over one WebSocket, joining
/// again from each `until`; panics unless every seq arrives once, in
/// order. Returns the joins it took.
pub async fn replay_all(stack: &Stack, channel: &str, state: &ChannelState) -> usize {
    let mut c = stack.client(&stack.token("ana", &[channel])).await;
    c.hello().await;
    let mut next = 1u64;
    let mut joins = 0;
    while next <= state.head {
        joins += 1;
        assert!(joins <= 1000, "the replay makes no progress at {next}");
        c.send_json(json!({"action": "join", "channels": [
            {"name": channel, "since": {"epoch": state.epoch, "seq": next - 1}}
        ]}))
        .await;
        let mut end = None;
        while end.is_none_or(|end| next <= end) {
            let msg = tokio::time::timeout(Duration::from_secs(30), c.ws.next())
                .await
                .expect("a frame within 30 s")
                .expect("the connection stays open")
                .expect("a frame");
            let Message::Text(text) = msg else { continue };
            let f: Frame = serde_json::from_str(&text).expect("a frame");
            let seqs: Vec<u64> = match f.ty.as_str() {
                "joined" => {
                    let j = &f.channels[0];
                    end = Some(j.until.unwrap_or(j.head));
                    vec![]
                }
                "event" => vec![f.seq.expect("an event's seq")],
                "batch" => f.events.iter().map(|e| e.seq).collect(),
                "health" | "presence" => vec![],
                other => panic!("unexpected {other} frame ({:?})", f.code),
            };
            for s in seqs {
                assert_eq!(s, next, "in order, once");
                next += 1;
            }
        }
    }
    joins
}

/// Reads `channel`'s whole history over HTTP, 1,000 events a page at
/// most, following `next_after`; panics unless seqs 1 to `head` arrive
/// once, in order. Returns the pages it took.
pub async fn history_all(stack: &Stack, channel: &str, head: u64) -> usize {
    let token = stack.token("ana", &[channel]);
    let http = reqwest::Client::new();
    let (mut after, mut pages, mut read) = (0u64, 0, 0u64);
    loop {
        pages += 1;
        let resp = http
            .get(format!(
                "{}/v1/channels/{channel}/events?after={after}&limit=1000",
                stack.gateway.http_url()
            ))
            .bearer_auth(&token)
            .send()
            .await
            .expect("the gateway answers");
        assert_eq!(resp.status(), 200);
        let body = resp.bytes().await.expect("a body");
        let page: Page = serde_json::from_slice(&body).expect("a history page");
        for e in &page.events {
            assert_eq!(e.seq, read + 1, "in order, once");
            read = e.seq;
        }
        match page.next_after {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(read, head);
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shape_is_json_within_the_limit_and_near_it() {
        for i in 0..3 {
            let d = worst_case_data(i);
            assert!(d.len() <= MAX_EVENT_DATA_BYTES, "{i}: {}", d.len());
            assert!(d.len() > MAX_EVENT_DATA_BYTES - 16, "{i}: {}", d.len());
            assert!(!d.value().is_null(), "{i} parses");
        }
    }
}
