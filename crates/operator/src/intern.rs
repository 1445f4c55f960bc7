//! Strings that many in-memory entries share (namespaces, subscription ids, storage account ids), stored once:
//! at 10,000 workspaces a copy per entry would cost more than the entries themselves.

use std::collections::HashSet;
use std::sync::Arc;

/// A set of shared strings: [`Interner::intern`] hands out the one copy of a value.
#[derive(Debug, Default)]
pub struct Interner(HashSet<Arc<str>>);

impl Interner {
    /// The shared copy of `value` (made on first use).
    pub fn intern(&mut self, value: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(value) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(value);
        self.0.insert(shared.clone());
        shared
    }

    /// Drops the strings nobody holds any more (only the set's own reference is left).
    pub fn prune(&mut self) {
        self.0.retain(|s| Arc::strong_count(s) > 1);
    }

    /// How many strings are stored.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is stored.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_stored_once_and_pruned_when_nobody_holds_it() {
        let mut interner = Interner::default();
        let a = interner.intern("team-a");
        let again = interner.intern("team-a");
        assert!(Arc::ptr_eq(&a, &again));
        let b = interner.intern("team-b");
        assert_eq!(interner.len(), 2);
        drop(b);
        interner.prune();
        assert_eq!(interner.len(), 1, "team-b is no longer held");
        drop((a, again));
        interner.prune();
        assert!(interner.is_empty());
    }
}
