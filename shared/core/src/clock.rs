//! Time, behind a trait so that use cases can be tested at any instant.

use std::time::{SystemTime, UNIX_EPOCH};

/// Where the use cases read the time from.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;

    /// Seconds since the Unix epoch (what DynamoDB TTL attributes hold).
    fn epoch_s(&self) -> u64 {
        epoch_s(self.now())
    }

    /// Milliseconds since the Unix epoch (latencies against an event's `ts`).
    fn epoch_ms(&self) -> u64 {
        epoch_ms(self.now())
    }

    /// Microseconds since the Unix epoch (token buckets).
    fn epoch_us(&self) -> u64 {
        epoch_us(self.now())
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Seconds since the Unix epoch, 0 before it.
pub fn epoch_s(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, 0 before it.
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Microseconds since the Unix epoch, 0 before it.
pub fn epoch_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A uniform draw in 0..1 from the operating system's random source, for
/// jitter (retry delays, emulated latency); 0.5, the middle of the band, if
/// it cannot be read.
pub fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

/// RFC 3339 with milliseconds, in UTC: `2026-11-23T09:00:00.000Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A clock that stands still until moved (feature `test-util`): expiry,
/// retention and schedules tested without waiting.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug)]
pub struct ManualClock {
    now: std::sync::Mutex<SystemTime>,
}

#[cfg(any(test, feature = "test-util"))]
impl ManualClock {
    /// Starting at the system's time.
    pub fn new() -> Self {
        Self::at(SystemTime::now())
    }

    pub fn at(t: SystemTime) -> Self {
        Self {
            now: std::sync::Mutex::new(t),
        }
    }

    pub fn advance(&self, d: std::time::Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += d;
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_draws_stay_in_the_unit_interval() {
        let draws: Vec<f64> = (0..1000).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        assert!(draws.iter().any(|d| *d < 0.5) && draws.iter().any(|d| *d >= 0.5));
    }
}
