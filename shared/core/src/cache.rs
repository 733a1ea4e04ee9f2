//! A small time-bounded cache for settings a warm function reuses between
//! invocations (a channel's webhook, its head and retention), so that a
//! change made elsewhere applies within the cache's time to live.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::clock::Clock;

/// Most entries kept; past it the cache starts afresh (memory stays bounded
/// whatever the number of channels an instance sees).
pub const MAX_ENTRIES: usize = 10_000;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Values by key, each kept for `ttl` from when it was put.
pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (u64, V)>>,
    ttl_ms: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    /// A `ttl` of zero caches nothing.
    pub fn new(ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl_ms: AtomicU64::new(millis(ttl)),
            clock,
        }
    }

    /// Changes the time to live of what is put from now on (and of what is
    /// held: an entry older than the new one is not returned).
    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl_ms.store(millis(ttl), Ordering::Relaxed);
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl_ms.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, (u64, V)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value put for `key` less than the time to live ago.
    pub fn get(&self, key: &K) -> Option<V> {
        let ttl = self.ttl_ms();
        if ttl == 0 {
            return None;
        }
        let now = self.clock.epoch_ms();
        let mut entries = self.lock();
        match entries.get(key) {
            Some((at, v)) if now.saturating_sub(*at) < ttl => Some(v.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, key: K, value: V) {
        if self.ttl_ms() == 0 {
            return;
        }
        let now = self.clock.epoch_ms();
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(key, (now, value));
    }

    /// Changes a live entry in place (its age stays); nothing when there is
    /// none.
    pub fn update(&self, key: &K, f: impl FnOnce(&mut V)) {
        if let Some((_, v)) = self.lock().get_mut(key) {
            f(v);
        }
    }

    pub fn remove(&self, key: &K) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn a_value_lives_for_its_ttl_only() {
        let clock = Arc::new(ManualClock::new());
        let c: TtlCache<&str, u32> = TtlCache::new(Duration::from_secs(10), clock.clone());
        c.put("a", 1);
        clock.advance(Duration::from_millis(9_999));
        assert_eq!(c.get(&"a"), Some(1));
        c.update(&"a", |v| *v = 2);
        assert_eq!(c.get(&"a"), Some(2));
        clock.advance(Duration::from_millis(1));
        assert_eq!(c.get(&"a"), None);
        c.put("b", 1);
        c.set_ttl(Duration::ZERO);
        assert_eq!(c.get(&"b"), None, "off from now on");
    }

    #[test]
    fn a_zero_ttl_caches_nothing_and_the_size_is_bounded() {
        let clock = Arc::new(ManualClock::new());
        let off: TtlCache<u32, u32> = TtlCache::new(Duration::ZERO, clock.clone());
        off.put(1, 1);
        assert_eq!(off.get(&1), None);
        let c: TtlCache<usize, usize> = TtlCache::new(Duration::from_secs(1), clock);
        for i in 0..=MAX_ENTRIES {
            c.put(i, i);
        }
        assert!(c.lock().len() <= MAX_ENTRIES);
        assert_eq!(c.get(&MAX_ENTRIES), Some(MAX_ENTRIES));
    }
}
