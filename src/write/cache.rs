//! A bounded map that forgets its least recently used entries, skipping those still in use:
//! the executor's cache of aggregates. Catching up over a million events (the process managers
//! re-run every follow-up) touched tens of thousands of aggregates, and keeping up to 20 000 of
//! each type cost the service 60 MiB it never used again.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

/// At most `capacity` entries (more only while every older one is in use); when full, the
/// least recently used of those nobody else holds are forgotten down to three quarters.
#[derive(Debug)]
pub(crate) struct RecentlyUsed<K, V> {
    entries: HashMap<K, (Arc<V>, u64)>,
    uses: u64,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> RecentlyUsed<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            uses: 0,
            capacity: capacity.max(1),
        }
    }

    /// The entry under `key`, made by `make` when there is none, marked as just used.
    pub(crate) fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> Arc<V> {
        self.uses += 1;
        let now = self.uses;
        if let Some((value, used)) = self.entries.get_mut(key) {
            *used = now;
            return value.clone();
        }
        if self.entries.len() >= self.capacity {
            self.forget_least_recent();
        }
        let value = Arc::new(make());
        self.entries.insert(key.clone(), (value.clone(), now));
        value
    }

    /// How many entries are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `key` is kept.
    #[cfg(test)]
    pub(crate) fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    fn forget_least_recent(&mut self) {
        let keep = self.capacity - (self.capacity / 4).max(1);
        let excess = self.entries.len().saturating_sub(keep);
        let mut idle: Vec<(u64, K)> = self
            .entries
            .iter()
            .filter(|(_, (value, _))| Arc::strong_count(value) == 1)
            .map(|(key, (_, used))| (*used, key.clone()))
            .collect();
        if idle.len() > excess {
            idle.select_nth_unstable_by_key(excess, |(used, _)| *used);
            idle.truncate(excess);
        }
        for (_, key) in idle {
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RecentlyUsed;
    use proptest::prelude::*;

    #[test]
    fn a_full_cache_forgets_the_least_recently_used_first() {
        let mut cache = RecentlyUsed::new(8);
        for key in 0..8 {
            cache.get_or_insert_with(&key, || key);
        }
        // 0 and 1 used again: 2, 3 are now the oldest.
        cache.get_or_insert_with(&0, || 0);
        cache.get_or_insert_with(&1, || 1);
        cache.get_or_insert_with(&8, || 8);
        assert!(cache.len() <= 8);
        for kept in [0, 1, 6, 7, 8] {
            assert!(
                cache.contains(&kept),
                "{kept} was used recently and is gone"
            );
        }
        for forgotten in [2, 3] {
            assert!(
                !cache.contains(&forgotten),
                "{forgotten} was the oldest and is kept"
            );
        }
    }

    #[test]
    fn an_entry_in_use_is_never_forgotten() {
        let mut cache = RecentlyUsed::new(4);
        let held = cache.get_or_insert_with(&1_000, || "held");
        for n in 0..100 {
            cache.get_or_insert_with(&n, || "idle");
        }
        let again = cache.get_or_insert_with(&1_000, || "made again");
        assert!(
            std::sync::Arc::ptr_eq(&held, &again),
            "an entry someone holds was replaced"
        );
    }

    proptest! {
        /// Whatever the order of use, the cache never grows past its capacity while nothing
        /// is held, and the entry just used is always there.
        #[test]
        fn the_cache_stays_within_its_capacity(
            capacity in 1usize..20,
            keys in proptest::collection::vec(0u8..40, 0..300),
        ) {
            let mut cache = RecentlyUsed::new(capacity);
            for key in keys {
                let value = cache.get_or_insert_with(&key, || key);
                prop_assert_eq!(*value, key);
                drop(value);
                prop_assert!(cache.len() <= capacity);
                prop_assert!(cache.contains(&key));
            }
        }
    }
}
