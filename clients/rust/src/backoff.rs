//! Reconnect delays: exponential with full jitter (a uniformly random delay
//! between zero and the current ceiling), reset after a stable connection,
//! with an optional cap on attempts.

use std::time::Duration;

/// The reconnect schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// The first ceiling (default 0.5 s).
    pub initial: Duration,
    /// The largest ceiling (default 30 s).
    pub max: Duration,
    /// Give up after this many attempts in a row; `None` never gives up.
    pub max_attempts: Option<u32>,
    /// A connection that lasted this long resets the schedule (default 60 s).
    pub stable_after: Duration,
    /// The jitter fraction `j`, 0 to 1 (default 1, full jitter): the delay
    /// is `ceiling × (1 − j + j × unit)`, so 0 waits the ceiling itself.
    pub jitter: f64,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_attempts: None,
            stable_after: Duration::from_secs(60),
            jitter: 1.0,
            attempt: 0,
        }
    }
}

impl Backoff {
    /// Ceilings from `initial` doubling to `max`; no attempt cap, reset
    /// after 60 s of stable connection.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            ..Self::default()
        }
    }

    /// Gives up after `attempts` attempts in a row.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// The jitter fraction: 1 (the default) is full jitter, 0 none (every
    /// delay is its ceiling), 0.5 a delay between half the ceiling and it.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// A connection that lasted `after` resets the schedule.
    pub fn with_stable_after(mut self, after: Duration) -> Self {
        self.stable_after = after;
        self
    }

    /// Attempts made since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The ceiling of the next delay: `initial × 2^attempt`, at most `max`.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay, with `unit` (uniform in 0..1, from the caller's
    /// random source) picking where under the ceiling it falls (within the
    /// jitter fraction's share of it); `None` when the attempts are used up.
    pub fn next_delay(&mut self, unit: f64) -> Option<Duration> {
        if self.max_attempts.is_some_and(|m| self.attempt >= m) {
            return None;
        }
        let j = if self.jitter.is_nan() {
            1.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        let u = if unit.is_nan() {
            0.5
        } else {
            unit.clamp(0.0, 1.0)
        };
        let delay = self.ceiling().mul_f64(1.0 - j + j * u);
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }

    /// A connection ended after `lasted`: a stable one resets the schedule.
    pub fn connection_ended(&mut self, lasted: Duration) {
        if lasted >= self.stable_after {
            self.attempt = 0;
        }
    }

    /// Starts over (after a successful, stable connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_half_a_second_to_thirty() {
        let mut b = Backoff::default();
        let ceilings: Vec<u64> = (0..9)
            .map(|_| {
                let c = b.ceiling().as_millis() as u64;
                b.next_delay(0.5);
                c
            })
            .collect();
        assert_eq!(
            ceilings,
            vec![500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let mut b = Backoff::default();
        assert_eq!(b.next_delay(0.0), Some(Duration::ZERO));
        assert_eq!(b.next_delay(1.0), Some(Duration::from_secs(1)));
        assert_eq!(b.next_delay(0.25), Some(Duration::from_millis(500)));
        assert_eq!(
            b.next_delay(7.0),
            Some(Duration::from_secs(4)),
            "clamped to the ceiling"
        );
    }

    #[test]
    fn the_jitter_fraction_narrows_the_draw() {
        let mut none = Backoff::default().with_jitter(0.0);
        assert_eq!(none.next_delay(0.0), Some(Duration::from_millis(500)));
        assert_eq!(none.next_delay(0.9), Some(Duration::from_secs(1)));
        let mut half = Backoff::default().with_jitter(0.5);
        assert_eq!(half.next_delay(0.0), Some(Duration::from_millis(250)));
        assert_eq!(half.next_delay(1.0), Some(Duration::from_secs(1)));
        let mut silly = Backoff::default().with_jitter(7.0);
        assert_eq!(
            silly.next_delay(0.5),
            Some(Duration::from_millis(250)),
            "clamped to full"
        );
    }

    #[test]
    fn an_attempt_cap_ends_the_schedule() {
        let mut b = Backoff {
            max_attempts: Some(2),
            ..Backoff::default()
        };
        assert!(b.next_delay(0.5).is_some());
        assert!(b.next_delay(0.5).is_some());
        assert_eq!(b.next_delay(0.5), None);
    }

    #[test]
    fn only_a_stable_connection_resets_the_schedule() {
        let mut b = Backoff::default();
        for _ in 0..4 {
            b.next_delay(0.5);
        }
        b.connection_ended(Duration::from_secs(5));
        assert_eq!(b.attempt(), 4, "a short-lived connection keeps backing off");
        b.connection_ended(Duration::from_secs(61));
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.ceiling(), Duration::from_millis(500));
    }
}
