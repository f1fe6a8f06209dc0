//! The cache of resolved addresses, bounded by count and by bytes.
//!
//! Two generations: new entries go to the current one; when it holds half
//! the bounds it becomes the previous one and the older previous is let
//! go. An entry found in the previous generation moves to the current one,
//! so what keeps being used stays, and what stopped being used goes within
//! two rotations: a rough least-recently-used order for the price of two
//! hash maps. Rotations happen only between reports ([`NameCache::rotate`]),
//! so that every address a report resolved is still there when it is built.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use crate::SymbolLine;

/// Bytes an entry costs besides its names: key, value, and the hash
/// table's slot.
const ENTRY_BYTES: u64 = 96;
/// Bytes a kept string costs besides its text: its Arc's counts and the
/// set's slot.
const STRING_BYTES: u64 = 40;

struct Generation<K> {
    map: HashMap<K, Arc<[SymbolLine]>>,
    /// Function names and source paths of `map`, each held once.
    strings: HashSet<Arc<str>>,
    bytes: u64,
}

impl<K> Default for Generation<K> {
    fn default() -> Self {
        Generation {
            map: HashMap::new(),
            strings: HashSet::new(),
            bytes: 0,
        }
    }
}

impl<K: Hash + Eq> Generation<K> {
    /// Keeps `lines` under `key`, their strings shared with this
    /// generation's, and counts what that costs.
    fn insert(&mut self, key: K, lines: &[SymbolLine]) -> Arc<[SymbolLine]> {
        let mut cost = ENTRY_BYTES + std::mem::size_of_val(lines) as u64;
        let strings = &mut self.strings;
        let mut share = |s: &Arc<str>| -> Arc<str> {
            if let Some(held) = strings.get(s) {
                return held.clone();
            }
            cost += s.len() as u64 + STRING_BYTES;
            strings.insert(s.clone());
            s.clone()
        };
        let lines: Arc<[SymbolLine]> = lines
            .iter()
            .map(|l| SymbolLine {
                name: share(&l.name),
                file: l.file.as_ref().map(&mut share),
                line: l.line,
            })
            .collect();
        self.bytes += cost;
        self.map.insert(key, lines.clone());
        lines
    }
}

pub struct NameCache<K> {
    current: Generation<K>,
    previous: Generation<K>,
    /// Bounds of both generations together.
    pub entry_limit: usize,
    pub byte_limit: u64,
    pub rotations: u64,
}

impl<K: Hash + Eq + Clone> NameCache<K> {
    pub fn new(entry_limit: usize, byte_limit: u64) -> Self {
        NameCache {
            current: Generation::default(),
            previous: Generation::default(),
            entry_limit,
            byte_limit,
            rotations: 0,
        }
    }

    /// Whether `key` is held; if by the previous generation, it moves to
    /// the current one.
    pub fn touch(&mut self, key: &K) -> bool {
        if self.current.map.contains_key(key) {
            return true;
        }
        match self.previous.map.remove(key) {
            Some(lines) => {
                self.current.insert(key.clone(), &lines);
                true
            }
            None => false,
        }
    }

    pub fn get(&self, key: &K) -> Option<&Arc<[SymbolLine]>> {
        self.current
            .map
            .get(key)
            .or_else(|| self.previous.map.get(key))
    }

    pub fn insert(&mut self, key: K, lines: &[SymbolLine]) {
        self.current.insert(key, lines);
    }

    /// Entries held, in both generations.
    pub fn len(&self) -> usize {
        self.current.map.len() + self.previous.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Estimated bytes held, in both generations.
    pub fn bytes(&self) -> u64 {
        self.current.bytes + self.previous.bytes
    }

    /// Between reports: a current generation holding half the bounds
    /// becomes the previous one (the older is let go); one holding all of
    /// them by itself (a single report resolved that much) is let go too.
    pub fn rotate(&mut self) {
        let full = |g: &Generation<K>, share: u64| {
            g.map.len() as u64 > (self.entry_limit as u64) / share
                || g.bytes > self.byte_limit / share
        };
        if full(&self.current, 1) {
            self.current = Generation::default();
            self.previous = Generation::default();
            self.rotations += 1;
        } else if full(&self.current, 2) {
            self.previous = std::mem::take(&mut self.current);
            self.rotations += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(name: &str) -> Vec<SymbolLine> {
        vec![SymbolLine {
            name: name.into(),
            file: Some("/src/a.c".into()),
            line: 1,
        }]
    }

    #[test]
    fn what_is_used_stays_and_the_rest_goes_within_two_rotations() {
        let mut c = NameCache::new(10, u64::MAX);
        for k in 0..6u64 {
            c.insert(k, &lines(&format!("f{k}")));
        }
        c.rotate(); // 6 > 5: the six become the previous generation
        assert_eq!((c.len(), c.rotations), (6, 1));
        assert!(c.touch(&0), "found in the previous generation");
        for k in 10..16u64 {
            c.insert(k, &lines("g"));
        }
        c.rotate();
        assert!(c.get(&0).is_some(), "used, so kept");
        assert!(c.get(&1).is_none(), "unused for two rotations");
        assert_eq!(&*c.get(&10).unwrap()[0].name, "g");
        assert!(!c.touch(&1));
    }

    #[test]
    fn bytes_are_bounded_and_strings_shared() {
        let mut c = NameCache::new(usize::MAX, 2_000);
        c.insert(1u64, &lines("same"));
        let one = c.bytes();
        c.insert(2u64, &lines("same"));
        assert!(c.bytes() - one < one, "names and paths are held once");
        let a = c.get(&1).unwrap()[0].name.clone();
        let b = c.get(&2).unwrap()[0].name.clone();
        assert!(Arc::ptr_eq(&a, &b));
        for k in 3..100u64 {
            c.insert(k, &lines(&format!("name-{k}")));
        }
        c.rotate();
        assert_eq!(c.len(), 0, "a generation over the whole bound goes");
        assert!(c.bytes() == 0 && c.is_empty());
    }
}
