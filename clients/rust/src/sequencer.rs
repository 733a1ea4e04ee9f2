//! One channel's delivery order: each seq exactly once, in order.
//!
//! The gateway subscribes before it replays, so a live event may overtake
//! the replay (even the `joined` answer), and a seq may come twice. The
//! sequencer holds events that arrive early and drops what it already
//! delivered. A hole is never guessed to be lost: only the server's `gap`
//! frame (the range is gone from the log) becomes a [`Delivery::Gap`]. A
//! hole in the live stream (a post that failed or was throttled on the
//! way), a replay that stops short of the head (the per-join replay budget)
//! or held events given up to stay within bounds instead make the channel
//! ask for a re-join from [`Sequencer::last`] ([`Sequencer::wants_rejoin`]):
//! the events are still in the log.

use std::collections::BTreeMap;

use agentwire_protocol::EventFrame;

/// What the application gets, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Event(EventFrame),
    /// Seqs `from..=to` of the channel will never be delivered.
    Gap {
        channel: String,
        from: u64,
        to: u64,
    },
}

/// Held events beyond which the held events are dropped (and fetched again
/// from the log by a re-join), so memory stays bounded whatever the server
/// sends.
pub const DEFAULT_MAX_PENDING: usize = 10_000;
/// The same bound in bytes (the events' approximate JSON size).
pub const DEFAULT_MAX_PENDING_BYTES: usize = 32 * 1024 * 1024;

/// The state of one channel.
#[derive(Debug, Clone)]
pub struct Sequencer {
    channel: String,
    epoch: Option<String>,
    last: Option<u64>,
    /// Where the current replay ends: seqs up to it come from the replay.
    replay_until: u64,
    /// The highest seq known to exist in this epoch (the head at `joined`,
    /// or any event seen, held or dropped). Delivered up to the replay's end
    /// but short of it means a re-join.
    known: u64,
    /// A join was sent and its `joined` has not come: how far the replay
    /// reaches is unknown, so early events are held, never taken for holes.
    awaiting_join: bool,
    pending: BTreeMap<u64, EventFrame>,
    pending_bytes: usize,
    max_pending: usize,
    max_pending_bytes: usize,
}

impl Sequencer {
    /// A channel the client has not seen yet.
    pub fn new(channel: &str) -> Self {
        Self {
            channel: channel.to_owned(),
            epoch: None,
            last: None,
            replay_until: 0,
            known: 0,
            awaiting_join: true,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            max_pending: DEFAULT_MAX_PENDING,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
        }
    }

    /// A channel resumed from a position the client kept.
    pub fn resuming(channel: &str, epoch: &str, last: u64) -> Self {
        let mut s = Self::new(channel);
        s.epoch = Some(epoch.to_owned());
        s.last = Some(last);
        s
    }

    pub fn with_max_pending(mut self, max: usize) -> Self {
        self.max_pending = max.max(1);
        self
    }

    pub fn with_max_pending_bytes(mut self, max: usize) -> Self {
        self.max_pending_bytes = max.max(1);
        self
    }

    /// The last delivered seq: where a re-join resumes (`since`).
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// Events held back, waiting for earlier seqs.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The approximate size of the held events, in bytes.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// A (re)join is about to be sent: until its `joined`, early events wait.
    pub fn rejoining(&mut self) {
        self.awaiting_join = true;
    }

    /// Whether the channel should be joined again from [`Sequencer::last`]:
    /// no join is under way, the replay (if any) is complete, and seqs
    /// after the last delivered one are known to exist but did not arrive
    /// (lost on the way, dropped to stay within bounds, or beyond the end of
    /// a replay page).
    pub fn wants_rejoin(&self) -> bool {
        match self.last {
            Some(last) => !self.awaiting_join && last >= self.replay_until && last < self.known,
            None => false,
        }
    }

    /// The channel's `joined` entry: its epoch, head, how many events the
    /// replay brings and, when the replay stops short of the head, where it
    /// ends. Returns what the held events now allow.
    pub fn joined(
        &mut self,
        epoch: &str,
        head: u64,
        replayed: u64,
        until: Option<u64>,
    ) -> Vec<Delivery> {
        let end = until.unwrap_or(head).min(head);
        // Same epoch: the same log. `last` may even be past `head`: live
        // events can overtake the `joined` whose head was read before they
        // were committed. A log that starts over gets a new epoch.
        let same_log = self.epoch.as_deref() == Some(epoch) && self.last.is_some();
        if !same_log {
            // A new client, another epoch, or a reset log: the replay (if
            // any) starts right after `end - replayed`.
            self.pending.retain(|_, e| e.epoch == epoch);
            self.pending_bytes = self.pending.values().map(EventFrame::approx_len).sum();
            self.last = Some(end.saturating_sub(replayed));
            self.known = 0;
        }
        self.epoch = Some(epoch.to_owned());
        self.replay_until = end;
        let held_max = self.pending.keys().next_back().copied().unwrap_or(0);
        self.known = self.known.max(head).max(held_max);
        self.awaiting_join = false;
        self.drain()
    }

    /// The server's `gap` frame. Only the part after the last delivered
    /// seq is surfaced: a seq already delivered (live, before the re-join's
    /// answer) is not missing.
    pub fn gap(&mut self, from: u64, to: u64) -> Vec<Delivery> {
        let from = match self.last {
            Some(last) => from.max(last + 1),
            None => from,
        };
        if from > to {
            return self.drain();
        }
        // Held events inside the range are here after all: the gap ends
        // before the first of them.
        let to = match self.pending.range(from..=to).next() {
            Some((&held, _)) => held - 1,
            None => to,
        };
        let mut out = Vec::new();
        if from <= to {
            out.push(Delivery::Gap {
                channel: self.channel.clone(),
                from,
                to,
            });
            self.last = Some(to);
        }
        out.extend(self.drain());
        out
    }

    /// One event (from an `event` frame or a `batch`).
    pub fn event(&mut self, e: EventFrame) -> Vec<Delivery> {
        if self.epoch.as_deref() == Some("") && self.last == Some(0) {
            // Joined before the channel had a log (the empty epoch): the
            // first log is this one.
            self.epoch = Some(e.epoch.clone());
        }
        if self.epoch.as_deref().is_some_and(|ep| ep != e.epoch) && self.last.is_some() {
            // From another incarnation of the log: the next `joined` decides.
            self.hold(e);
            return Vec::new();
        }
        let Some(last) = self.last else {
            // Before any `joined`: hold it until we know where the log starts.
            self.hold(e);
            return Vec::new();
        };
        if e.seq <= last {
            return Vec::new();
        }
        self.known = self.known.max(e.seq);
        if e.seq == last + 1 {
            self.last = Some(e.seq);
            let mut out = vec![Delivery::Event(e)];
            out.extend(self.drain());
            return out;
        }
        // Early (the replay has not reached it), or after a hole (which
        // makes the channel want a re-join once the replay is complete).
        self.hold(e);
        Vec::new()
    }

    /// Holds an event; over the bounds every held event is dropped (the
    /// re-join that follows fetches them again from the log).
    fn hold(&mut self, e: EventFrame) {
        if self.pending.contains_key(&e.seq) {
            return;
        }
        if self.epoch.as_deref() == Some(e.epoch.as_str()) {
            self.known = self.known.max(e.seq);
        }
        self.pending_bytes += e.approx_len();
        self.pending.insert(e.seq, e);
        if self.pending.len() > self.max_pending || self.pending_bytes > self.max_pending_bytes {
            tracing::debug!(
                channel = %self.channel,
                held = self.pending.len(),
                bytes = self.pending_bytes,
                "agentwire: too many held events; dropping them to fetch them again from the log"
            );
            self.pending.clear();
            self.pending_bytes = 0;
        }
    }

    /// Delivers held events that are next in line; drops held duplicates.
    fn drain(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        let Some(mut last) = self.last else {
            return out;
        };
        while let Some((&seq, _)) = self.pending.first_key_value() {
            if seq > last + 1 {
                break;
            }
            if let Some((_, e)) = self.pending.pop_first() {
                self.pending_bytes = self.pending_bytes.saturating_sub(e.approx_len());
                if seq == last + 1 {
                    out.push(Delivery::Event(e));
                    last = seq;
                }
            }
        }
        self.last = Some(last);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64) -> EventFrame {
        EventFrame {
            channel: "c".into(),
            epoch: "e1".into(),
            seq,
            id: format!("i{seq}"),
            kind: "k".into(),
            data: serde_json::Value::Null,
            ts: "t".into(),
        }
    }

    /// Delivered seqs, with gaps as negative markers (-from).
    fn flat(ds: Vec<Delivery>) -> Vec<i64> {
        ds.into_iter()
            .map(|d| match d {
                Delivery::Event(e) => e.seq as i64,
                Delivery::Gap { from, .. } => -(from as i64),
            })
            .collect()
    }

    #[test]
    fn a_live_event_that_overtakes_the_replay_waits_for_it() {
        let mut s = Sequencer::resuming("c", "e1", 5);
        let mut out = Vec::new();
        out.extend(flat(s.event(ev(11)))); // live, before `joined`
        out.extend(flat(s.joined("e1", 10, 5, None)));
        for seq in 6..=10 {
            out.extend(flat(s.event(ev(seq))));
        }
        assert_eq!(out, vec![6, 7, 8, 9, 10, 11]);
        assert_eq!(s.last(), Some(11));
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn a_gap_frame_never_covers_what_was_already_delivered_or_is_held() {
        let mut s = Sequencer::resuming("c", "e1", 21);
        s.rejoining();
        let mut out = flat(s.event(ev(22))); // live, before the re-join's `joined`
        out.extend(flat(s.joined("e1", 22, 0, None)));
        out.extend(flat(s.gap(22, 22)));
        assert_eq!(out, vec![22], "22 arrived: no gap");
        // A range partly delivered is cut to what is really missing.
        let mut out = flat(s.gap(20, 25));
        out.extend(flat(s.event(ev(26))));
        assert_eq!(out, vec![-23, 26]);
        // A held event inside the range ends the gap before it.
        let mut s = Sequencer::resuming("c", "e1", 5);
        s.joined("e1", 10, 0, None);
        assert!(
            s.event(ev(9)).is_empty(),
            "held: the replay has not reached it"
        );
        let out = flat(s.gap(6, 9));
        assert_eq!(out, vec![-6, 9]);
    }

    #[test]
    fn live_events_that_overtake_the_joined_are_not_taken_for_a_reset() {
        // Re-join from 21; 22 is committed after the gateway read head 21,
        // and reaches the client before the `joined {head: 21}`.
        let mut s = Sequencer::resuming("c", "e1", 21);
        s.rejoining();
        let mut out = flat(s.event(ev(22)));
        out.extend(flat(s.joined("e1", 21, 0, None)));
        out.extend(flat(s.event(ev(23))));
        assert_eq!(out, vec![22, 23], "no gap, no repeat");
    }

    #[test]
    fn a_channel_joined_before_it_had_a_log_adopts_the_first_epoch() {
        let mut s = Sequencer::new("c");
        assert!(s.joined("", 0, 0, None).is_empty());
        let mut out = flat(s.event(ev(1)));
        out.extend(flat(s.event(ev(2))));
        assert_eq!(out, vec![1, 2]);
        assert_eq!(s.epoch(), Some("e1"));
    }

    #[test]
    fn duplicates_are_delivered_once() {
        let mut s = Sequencer::resuming("c", "e1", 0);
        s.joined("e1", 3, 3, None);
        let mut out = Vec::new();
        for seq in [1, 2, 2, 1, 3, 3] {
            out.extend(flat(s.event(ev(seq))));
        }
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn the_servers_gap_frame_is_surfaced_and_what_follows_delivered() {
        let mut s = Sequencer::resuming("c", "e1", 2);
        s.joined("e1", 8, 3, None);
        let mut out = flat(s.gap(3, 5));
        for seq in 6..=8 {
            out.extend(flat(s.event(ev(seq))));
        }
        assert_eq!(out, vec![-3, 6, 7, 8]);
    }

    #[test]
    fn a_hole_in_the_live_stream_asks_for_a_rejoin_never_a_gap() {
        let mut s = Sequencer::resuming("c", "e1", 4);
        s.joined("e1", 4, 0, None);
        assert_eq!(flat(s.event(ev(5))), vec![5]);
        assert!(!s.wants_rejoin());
        assert!(s.event(ev(8)).is_empty(), "held, not a gap");
        assert!(
            s.wants_rejoin(),
            "6 and 7 are in the log: join again from 5"
        );
        assert_eq!(s.last(), Some(5));
        s.rejoining();
        assert!(!s.wants_rejoin(), "a join is under way");
        assert!(s.event(ev(9)).is_empty());
        let mut out = flat(s.joined("e1", 8, 3, None));
        for q in 6..=8 {
            out.extend(flat(s.event(ev(q))));
        }
        assert_eq!(out, vec![6, 7, 8, 9]);
        assert!(!s.wants_rejoin());
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn a_replay_that_stops_short_of_the_head_continues_from_its_end() {
        let mut s = Sequencer::resuming("c", "e1", 0);
        let mut out = flat(s.joined("e1", 10, 4, Some(4)));
        for q in 1..=3 {
            out.extend(flat(s.event(ev(q))));
        }
        assert!(!s.wants_rejoin(), "the page is not complete yet");
        out.extend(flat(s.event(ev(4))));
        assert!(s.wants_rejoin(), "5..=10 are still to come");
        s.rejoining();
        out.extend(flat(s.joined("e1", 10, 6, None)));
        for q in 5..=10 {
            out.extend(flat(s.event(ev(q))));
        }
        assert_eq!(out, (1..=10).collect::<Vec<i64>>());
        assert!(!s.wants_rejoin());
    }

    #[test]
    fn a_new_client_starts_where_the_replay_starts() {
        let mut s = Sequencer::new("c");
        s.joined("e1", 20, 0, None); // since head
        assert_eq!(flat(s.event(ev(21))), vec![21]);
        let mut s = Sequencer::new("c");
        s.joined("e1", 20, 5, None); // from a position: 16..=20 follow
        let mut out = Vec::new();
        for seq in 16..=21 {
            out.extend(flat(s.event(ev(seq))));
        }
        assert_eq!(out, vec![16, 17, 18, 19, 20, 21]);
    }

    #[test]
    fn another_epoch_restarts_the_count() {
        let mut s = Sequencer::resuming("c", "old", 50);
        s.joined("e1", 3, 3, None);
        let mut out = Vec::new();
        for seq in 1..=3 {
            out.extend(flat(s.event(ev(seq))));
        }
        assert_eq!(out, vec![1, 2, 3]);
        assert_eq!(s.epoch(), Some("e1"));
    }

    #[test]
    fn held_events_are_bounded_by_count_and_dropped_for_a_rejoin() {
        let mut s = Sequencer::resuming("c", "e1", 0).with_max_pending(3);
        s.joined("e1", 0, 0, None);
        let mut out = Vec::new();
        for seq in [50, 51, 52] {
            out.extend(flat(s.event(ev(seq))));
        }
        assert!(out.is_empty());
        assert_eq!(s.pending(), 3);
        out.extend(flat(s.event(ev(53)))); // one too many: all dropped
        assert!(out.is_empty(), "no gap: the log still has 1..=53");
        assert_eq!((s.pending(), s.pending_bytes()), (0, 0));
        assert!(s.wants_rejoin());
    }

    #[test]
    fn held_events_are_bounded_by_bytes() {
        let big = |seq| EventFrame {
            data: serde_json::json!("x".repeat(1000)),
            ..ev(seq)
        };
        let mut s = Sequencer::resuming("c", "e1", 0).with_max_pending_bytes(3500);
        s.joined("e1", 0, 0, None);
        for seq in 2..=4 {
            assert!(s.event(big(seq)).is_empty());
        }
        assert_eq!(s.pending(), 3);
        assert!(s.pending_bytes() > 3000);
        assert!(s.event(big(5)).is_empty());
        assert_eq!(s.pending(), 0, "over 3500 bytes: dropped");
        assert!(s.wants_rejoin());
        s.rejoining();
        let mut out = flat(s.joined("e1", 5, 5, None));
        for seq in 1..=5 {
            out.extend(flat(s.event(big(seq))));
        }
        assert_eq!(out, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn after_a_reconnect_early_events_wait_for_the_new_joined() {
        let mut s = Sequencer::resuming("c", "e1", 0);
        s.joined("e1", 2, 2, None);
        s.event(ev(1));
        s.event(ev(2));
        s.rejoining(); // connection dropped; re-joining from seq 2
        assert!(
            s.event(ev(9)).is_empty(),
            "held: the replay may bring 3..=8"
        );
        let mut out = flat(s.joined("e1", 8, 6, None));
        for q in 3..=8 {
            out.extend(flat(s.event(ev(q))));
        }
        assert_eq!(out, vec![3, 4, 5, 6, 7, 8, 9]);
    }
}
