//! The retry schedule of webhook deliveries, and how a long delay is carried
//! by SQS (whose message delay is at most 15 minutes), with no Lambda
//! sleeping.

use std::time::Duration;

/// SQS's largest `DelaySeconds`.
pub const SQS_MAX_DELAY: Duration = Duration::from_secs(900);
/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Delays before each attempt; the first is the first delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl Default for RetrySchedule {
    /// The Standard Webhooks schedule: immediately, 5 s, 5 min, 30 min, 2 h,
    /// 5 h, 10 h, 14 h, 20 h, 24 h (about three days in all).
    fn default() -> Self {
        let s = |secs: u64| Duration::from_secs(secs);
        Self {
            delays: vec![
                s(0),
                s(5),
                s(300),
                s(1800),
                s(7200),
                s(18_000),
                s(36_000),
                s(50_400),
                s(72_000),
                s(86_400),
            ],
        }
    }
}

impl RetrySchedule {
    /// A custom schedule (tests shorten it). The first delay is the first attempt's.
    pub fn new(delays: Vec<Duration>) -> Self {
        Self { delays }
    }

    /// How many attempts in all.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.delays.len()).unwrap_or(u32::MAX)
    }

    /// The wait before attempt `attempts_made + 1`, after `attempts_made`
    /// failed: the schedule's delay, or the receiver's `Retry-After` when
    /// longer (capped at 24 h), with up to ±10% jitter (`jitter` in 0..1
    /// picks where). `None` when the schedule is exhausted.
    pub fn next_delay(
        &self,
        attempts_made: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        let base = *self.delays.get(usize::try_from(attempts_made).ok()?)?;
        let base = base.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
        let factor = 0.9 + 0.2 * jitter.clamp(0.0, 1.0);
        Some(base.mul_f64(factor))
    }

    /// Total time the schedule spans.
    pub fn span(&self) -> Duration {
        self.delays.iter().sum()
    }
}

/// The delay of the next SQS hop toward `remaining`: at most 15 minutes; a
/// job that arrives early is sent on again for what is left.
pub fn hop(remaining: Duration) -> Duration {
    remaining.min(SQS_MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_schedule_spans_about_three_days() {
        let s = RetrySchedule::default();
        assert_eq!(s.attempts(), 10);
        let days = s.span().as_secs_f64() / 86_400.0;
        assert!((2.9..3.2).contains(&days), "{days}");
    }

    #[test]
    fn delays_follow_the_schedule_with_bounded_jitter() {
        let s = RetrySchedule::default();
        assert_eq!(s.next_delay(1, None, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(s.next_delay(2, None, 0.0), Some(Duration::from_secs(270)));
        assert_eq!(s.next_delay(2, None, 1.0), Some(Duration::from_secs(330)));
        assert_eq!(
            s.next_delay(10, None, 0.5),
            None,
            "exhausted after ten attempts"
        );
    }

    #[test]
    fn retry_after_lengthens_but_never_shortens_and_is_capped() {
        let s = RetrySchedule::default();
        assert_eq!(
            s.next_delay(1, Some(Duration::from_secs(60)), 0.5),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            s.next_delay(2, Some(Duration::from_secs(1)), 0.5),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            s.next_delay(1, Some(Duration::from_secs(7 * 86_400)), 0.5),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn long_delays_travel_in_sqs_hops() {
        assert_eq!(hop(Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(hop(Duration::from_secs(7200)), SQS_MAX_DELAY);
    }
}
