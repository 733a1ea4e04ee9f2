//! Time, behind a trait so that use cases can be tested at any instant.

use std::time::{SystemTime, UNIX_EPOCH};

/// Where the use cases read the time from.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;

    /// Seconds since the Unix epoch (what DynamoDB TTL attributes hold).
    fn epoch_s(&self) -> u64 {
        epoch_s(self.now())
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

/// RFC 3339 with milliseconds, in UTC: `2026-11-23T09:00:00.000Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
