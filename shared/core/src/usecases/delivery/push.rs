//! Posting a frame to a connection with bounded, jittered retries.
//!
//! API Gateway answers `LimitExceededException` when a connection's outbound
//! buffer is full (a slow consumer) or the account's post rate is exceeded,
//! and may fail with a 5xx or time out. Such a post is retried a few times
//! with full-jitter backoff within the invocation; after that the caller
//! gives up on the connection for this run. Nothing is lost either way: the
//! events are in the log, and the client fetches the hole from it.

use std::time::Duration;

use crate::ports::{PushError, Pusher};

/// How a throttled or failed post is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushRetry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The ceiling of the first retry's delay; it doubles per retry.
    pub base: Duration,
    /// The largest ceiling.
    pub cap: Duration,
}

impl Default for PushRetry {
    /// 4 attempts, ceilings 50, 100 and 200 ms: at most 350 ms of waiting
    /// per connection and frame.
    fn default() -> Self {
        Self {
            attempts: 4,
            base: Duration::from_millis(50),
            cap: Duration::from_millis(800),
        }
    }
}

impl PushRetry {
    /// The delay before retry `n` (1-based): uniform in `0..=ceiling`.
    pub fn delay(&self, n: u32, unit: f64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(self.cap);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// What one post came to, with the retries it took.
#[derive(Debug)]
pub struct Posted {
    pub result: Result<(), PushError>,
    pub retries: u32,
}

/// Posts `frame`, retrying throttled and unavailable answers
/// ([`PushError::is_retryable`]) per `policy`. `Gone` and `Refused` are
/// final at once.
pub async fn post_retrying(
    pusher: &dyn Pusher,
    connection_id: &str,
    frame: &str,
    policy: PushRetry,
) -> Posted {
    let mut retries = 0;
    loop {
        match pusher.post(connection_id, frame).await {
            Err(e) if e.is_retryable() && retries + 1 < policy.attempts => {
                retries += 1;
                let delay = policy.delay(retries, crate::clock::random_unit());
                tracing::debug!(
                    connection_id,
                    retries,
                    ?delay,
                    error = %e,
                    "post throttled or unavailable; retrying"
                );
                tokio::time::sleep(delay).await;
            }
            result => return Posted { result, retries },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryPusher;

    fn fast() -> PushRetry {
        PushRetry {
            attempts: 4,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        }
    }

    #[test]
    fn delays_are_full_jitter_under_a_doubling_capped_ceiling() {
        let p = PushRetry::default();
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(50));
        assert_eq!(p.delay(2, 1.0), Duration::from_millis(100));
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(200));
        assert_eq!(p.delay(9, 1.0), Duration::from_millis(800));
        assert_eq!(p.delay(3, 0.0), Duration::ZERO);
        assert_eq!(p.delay(2, 0.5), Duration::from_millis(50));
    }

    #[tokio::test]
    async fn throttled_posts_are_retried_until_one_goes_through() {
        let pusher = MemoryPusher::default();
        pusher.fail_next("c1", 2, true);
        let p = post_retrying(&pusher, "c1", "f", fast()).await;
        assert!(p.result.is_ok());
        assert_eq!(p.retries, 2);
        assert_eq!(pusher.attempts("c1"), 3);
        assert_eq!(pusher.posts("c1"), vec!["f".to_string()]);
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let pusher = MemoryPusher::default();
        pusher.fail_next("c1", 10, true);
        let p = post_retrying(&pusher, "c1", "f", fast()).await;
        assert!(matches!(p.result, Err(PushError::Throttled)));
        assert_eq!(pusher.attempts("c1"), 4);
        assert!(pusher.posts("c1").is_empty());
    }

    #[tokio::test]
    async fn a_final_failure_is_not_retried() {
        let pusher = MemoryPusher::default();
        pusher.fail_next("c1", 1, false);
        let p = post_retrying(&pusher, "c1", "f", fast()).await;
        assert!(matches!(p.result, Err(PushError::Refused { .. })));
        assert_eq!((pusher.attempts("c1"), p.retries), (1, 0));
    }
}
