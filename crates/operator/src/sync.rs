//! The one way the operator takes its in-memory locks.

use std::sync::{Mutex, MutexGuard};

/// Locks one of the operator's in-memory maps (status memory, credential cache, throttle state, metrics). Their
/// critical sections are plain inserts, removals and look-ups that do not panic; a poisoned lock therefore means a
/// bug, and carrying on with a half-updated map (a lost operation in flight, a forgotten rotation lock, a throttle
/// block that never lifts) would be worse than failing loudly.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().expect("an in-memory map of the operator was poisoned by a panic while it was held")
}
