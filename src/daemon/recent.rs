//! A map that keeps only its most recently used entries: what the daemon remembers on behalf of
//! callers it does not know (organizations served by a machine identity), so that no caller can
//! grow it without bound.

use std::collections::HashMap;
use std::hash::Hash;

pub struct Recent<K, V> {
    capacity: usize,
    /// Each entry with the tick of its last use.
    entries: HashMap<K, (V, u64)>,
    tick: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> Recent<K, V> {
    pub fn new(capacity: usize) -> Self {
        Recent {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            tick: 0,
        }
    }

    /// Sets `key` to `value` as the most recently used entry, forgetting the least recently
    /// used one when full.
    pub fn put(&mut self, key: K, value: V) {
        self.tick += 1;
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(key, (value, self.tick));
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }

    /// Keeps only the entries whose value `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.entries.retain(|_, (v, _)| keep(v));
    }

    pub fn entries(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, (v, _))| (k, v))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recently_used() {
        let mut r = Recent::new(3);
        for i in 0..3 {
            r.put(i, i * 10);
        }
        r.put(0, 0); // used again: 1 is now the oldest
        r.put(3, 30);
        assert_eq!(r.len(), 3);
        assert_eq!(r.get(&1), None);
        assert_eq!(
            (r.get(&0), r.get(&2), r.get(&3)),
            (Some(&0), Some(&20), Some(&30))
        );
        r.retain(|v| *v != 20);
        assert_eq!(r.get(&2), None);
        for i in 0..10_000 {
            r.put(100 + i, i);
        }
        assert_eq!(r.len(), 3);
    }
}
