//! A connection's lifecycle as the metrics see it: one home for what
//! opening and removing a connection records, whoever removes it (its
//! `$disconnect`, a post answered Gone, a revocation).
//!
//! - `connections_opened` / `connections_closed`: counted once per
//!   connection (a removal counts only when it deleted the record, so a
//!   `$disconnect` racing a Gone post's removal counts once);
//! - `connections_open`: the deployment's level, kept in the registry
//!   ([`ConnectionRegistry::count_open`]) and sampled after each change
//!   (a distribution: a gauge would be flushed again, stale, by every
//!   later invocation of a function that once set it);
//! - `connection_duration_s`: how long the removed connection was open.
//!
//! The bookkeeping never refuses a connection or fails a removal: a count
//! that cannot be moved is logged, and the level stays off by that one
//! (the count is never recomputed; a `$disconnect` that never comes, or a
//! record that expires by TTL, leaves it one too high the same way).

use crate::clock::Clock;
use crate::metrics as m;
use crate::model::Connection;
use crate::ports::{ConnectionRegistry, StoreError};

/// Records a connection just accepted.
pub(crate) async fn opened(registry: &dyn ConnectionRegistry) {
    ::metrics::counter!(m::CONNECTIONS_OPENED).increment(1);
    level(registry, 1).await;
}

/// Removes a connection and records it: the connection when this call
/// removed it (see [`ConnectionRegistry::remove_connection`]).
pub(crate) async fn remove(
    registry: &dyn ConnectionRegistry,
    clock: &dyn Clock,
    id: &str,
) -> Result<Option<Connection>, StoreError> {
    let removed = registry.remove_connection(id).await?;
    if let Some(c) = &removed {
        ::metrics::counter!(m::CONNECTIONS_CLOSED).increment(1);
        let open_s = clock.epoch_s().saturating_sub(c.connected_at);
        ::metrics::histogram!(m::CONNECTION_DURATION).record(open_s as f64);
        level(registry, -1).await;
    }
    Ok(removed)
}

async fn level(registry: &dyn ConnectionRegistry, delta: i64) {
    match registry.count_open(delta).await {
        Ok(open) => ::metrics::histogram!(m::CONNECTIONS_OPEN).record(open as f64),
        Err(e) => {
            tracing::warn!(error = %e, delta, "could not move the count of open connections");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::memory::{MemoryRegistry, connection};

    #[tokio::test]
    async fn the_level_follows_opens_and_removals_each_counted_once() {
        let clock = Arc::new(ManualClock::new());
        let reg = MemoryRegistry::with_clock(clock.clone());
        for id in ["a", "b"] {
            let mut c = connection(id, "t", "p", &["*"]);
            c.connected_at = clock.epoch_s();
            reg.put_connection(&c).await.unwrap();
            opened(&reg).await;
        }
        assert_eq!(reg.count_open(0).await.unwrap(), 2);
        clock.advance(Duration::from_secs(90));
        let gone = remove(&reg, clock.as_ref(), "a").await.unwrap();
        assert_eq!(gone.map(|c| c.id), Some("a".to_owned()));
        assert_eq!(
            remove(&reg, clock.as_ref(), "a").await.unwrap(),
            None,
            "a second removal is not counted again"
        );
        assert_eq!(reg.count_open(0).await.unwrap(), 1);
    }
}
