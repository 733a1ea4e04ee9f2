//! Locking that survives a panic: the state behind these mutexes (caches,
//! hints, fakes' maps) is valid after any partial update, so a holder that
//! panicked leaves nothing to repair and the lock is taken as it is.

use std::sync::{Mutex, MutexGuard};

/// The guard of `m`, whether or not a holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
