//! Where a join resumes, and what is gone: the cursor and gap arithmetic,
//! with no I/O.

use agentwire_protocol::Since;

use crate::model::ChannelState;

/// What a join replays and what it reports missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePlan {
    /// Replay `from..=to` (the head at join time), if anything.
    pub replay: Option<(u64, u64)>,
    /// The range the client missed that is no longer retained.
    pub gap: Option<(u64, u64)>,
    /// `false` when the client's position could not be honoured: a gap, an
    /// epoch change, or a position past the head (the log was reset).
    pub recovered: bool,
}

impl ResumePlan {
    /// How many events the replay covers.
    pub fn replayed(&self) -> u64 {
        self.replay.map(|(from, to)| to + 1 - from).unwrap_or(0)
    }
}

/// The last seq the client already has, and whether that position is valid
/// in the current log. `None` for the last seq means "only new events".
fn last_seen(
    since: Option<&Since>,
    cursor: Option<u64>,
    state: &ChannelState,
) -> (Option<u64>, bool) {
    match since {
        Some(Since::Head) => (None, true),
        // The empty epoch is the position of a client that joined before
        // the channel had a log: seq 0 of whatever log came since.
        Some(Since::Position { epoch, seq }) if epoch.is_empty() && *seq == 0 => (Some(0), true),
        Some(Since::Position { epoch, seq }) => {
            if *epoch != state.epoch || *seq > state.head {
                (Some(0), false)
            } else {
                (Some(*seq), true)
            }
        }
        None => match cursor {
            None => (None, true),
            Some(c) if c > state.head => (Some(0), false),
            Some(c) => (Some(c), true),
        },
    }
}

/// The plan for one channel. `oldest` is the oldest retained seq of the
/// channel (`None` when nothing is retained). Retention is by time and seqs
/// are committed in time order, so what is retained is always `oldest..=head`.
pub fn plan(
    since: Option<&Since>,
    cursor: Option<u64>,
    state: &ChannelState,
    oldest: Option<u64>,
) -> ResumePlan {
    let (last, valid) = last_seen(since, cursor, state);
    let Some(last) = last else {
        return ResumePlan {
            replay: None,
            gap: None,
            recovered: true,
        };
    };
    let head = state.head;
    if last >= head {
        return ResumePlan {
            replay: None,
            gap: None,
            recovered: valid,
        };
    }
    let want = last + 1;
    match oldest {
        Some(o) if o <= want => ResumePlan {
            replay: Some((want, head)),
            gap: None,
            recovered: valid,
        },
        Some(o) if o <= head => ResumePlan {
            replay: Some((o, head)),
            gap: Some((want, o - 1)),
            recovered: false,
        },
        _ => ResumePlan {
            replay: None,
            gap: Some((want, head)),
            recovered: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(head: u64) -> ChannelState {
        ChannelState {
            epoch: "e1".into(),
            head,
            retention_s: None,
        }
    }

    fn pos(epoch: &str, seq: u64) -> Since {
        Since::Position {
            epoch: epoch.into(),
            seq,
        }
    }

    #[test]
    fn head_and_no_cursor_replay_nothing() {
        let nothing = ResumePlan {
            replay: None,
            gap: None,
            recovered: true,
        };
        assert_eq!(plan(Some(&Since::Head), Some(3), &st(10), Some(1)), nothing);
        assert_eq!(plan(None, None, &st(10), Some(1)), nothing);
    }

    #[test]
    fn a_position_replays_what_follows_it() {
        let p = plan(Some(&pos("e1", 5)), None, &st(20), Some(1));
        assert_eq!(p.replay, Some((6, 20)));
        assert_eq!(p.gap, None);
        assert!(p.recovered);
        assert_eq!(p.replayed(), 15);
    }

    #[test]
    fn the_durable_cursor_is_used_without_since() {
        let p = plan(None, Some(5), &st(20), Some(1));
        assert_eq!((p.replay, p.gap, p.recovered), (Some((6, 20)), None, true));
    }

    #[test]
    fn up_to_date_clients_replay_nothing() {
        let p = plan(Some(&pos("e1", 20)), None, &st(20), Some(1));
        assert_eq!((p.replay, p.gap, p.recovered), (None, None, true));
    }

    #[test]
    fn an_expired_cursor_gets_the_exact_gap_then_what_is_retained() {
        let p = plan(None, Some(2), &st(8), Some(6));
        assert_eq!(p.gap, Some((3, 5)));
        assert_eq!(p.replay, Some((6, 8)));
        assert!(!p.recovered);
        // Exactly at the boundary there is no gap.
        let p = plan(None, Some(5), &st(8), Some(6));
        assert_eq!((p.gap, p.recovered), (None, true));
    }

    #[test]
    fn nothing_retained_is_all_gap() {
        let p = plan(None, Some(2), &st(8), None);
        assert_eq!((p.replay, p.gap, p.recovered), (None, Some((3, 8)), false));
    }

    #[test]
    fn another_epoch_replays_the_current_log_unrecovered() {
        let p = plan(Some(&pos("old", 50)), None, &st(4), Some(1));
        assert_eq!((p.replay, p.gap, p.recovered), (Some((1, 4)), None, false));
        let p = plan(Some(&pos("old", 1)), None, &st(9), Some(4));
        assert_eq!(
            (p.replay, p.gap, p.recovered),
            (Some((4, 9)), Some((1, 3)), false)
        );
    }

    #[test]
    fn a_position_past_the_head_means_the_log_was_reset() {
        let p = plan(Some(&pos("e1", 99)), None, &st(3), Some(1));
        assert_eq!((p.replay, p.recovered), (Some((1, 3)), false));
        let p = plan(None, Some(99), &st(3), Some(1));
        assert_eq!((p.replay, p.recovered), (Some((1, 3)), false));
    }

    #[test]
    fn an_epoch_change_on_an_empty_log_is_unrecovered_without_replay() {
        let p = plan(Some(&pos("old", 7)), None, &st(0), None);
        assert_eq!((p.replay, p.gap, p.recovered), (None, None, false));
    }
}
