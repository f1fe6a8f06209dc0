//! The files the symbolizer keeps parsed, bounded by count and by bytes.
//!
//! The parser (blazesym) maps each file it is asked about and keeps what it
//! parsed of it (symbol tables, decompressed debug sections, line tables)
//! until it is dropped as a whole. So files are kept in two parsers, two
//! generations: new files go to the current one; when adding one would
//! pass half of a bound, the current parser becomes the previous one and
//! the older previous is dropped. A file the previous parser holds is
//! looked up there, without parsing it again. Files in steady use are thus
//! parsed again once per two rotations, not once per report, and memory
//! stays near the bounds (beyond them only by one file larger than half of
//! them, which goes at the next rotation).

use std::collections::HashSet;
use std::hash::Hash;

use blazesym::symbolize::Symbolizer as Blaze;

fn new_blaze() -> Blaze {
    Blaze::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .build()
}

struct Generation<K> {
    blaze: Blaze,
    files: HashSet<K>,
    bytes: u64,
}

impl<K> Generation<K> {
    fn new() -> Self {
        Generation {
            blaze: new_blaze(),
            files: HashSet::new(),
            bytes: 0,
        }
    }
}

pub struct ParsedFiles<K> {
    current: Generation<K>,
    previous: Option<Generation<K>>,
    /// Bounds of both generations together.
    pub file_limit: usize,
    pub byte_limit: u64,
    pub rotations: u64,
}

impl<K: Hash + Eq + Clone> ParsedFiles<K> {
    pub fn new(file_limit: usize, byte_limit: u64) -> Self {
        ParsedFiles {
            current: Generation::new(),
            previous: None,
            file_limit,
            byte_limit,
            rotations: 0,
        }
    }

    /// The parser to ask about the file `key` of `bytes` bytes: the one
    /// that holds it, else the current one (rotated first if the file
    /// would pass half of a bound).
    pub fn parser_for(&mut self, key: &K, bytes: u64) -> &Blaze {
        let in_previous = !self.current.files.contains(key)
            && self
                .previous
                .as_ref()
                .is_some_and(|p| p.files.contains(key));
        if !in_previous && !self.current.files.contains(key) {
            let half_files = (self.file_limit / 2).max(1);
            if !self.current.files.is_empty()
                && (self.current.files.len() >= half_files
                    || self.current.bytes.saturating_add(bytes) > self.byte_limit / 2)
            {
                self.rotate_now();
            }
            self.current.files.insert(key.clone());
            self.current.bytes = self.current.bytes.saturating_add(bytes);
        }
        match &self.previous {
            Some(p) if in_previous => &p.blaze,
            _ => &self.current.blaze,
        }
    }

    fn rotate_now(&mut self) {
        let full = std::mem::replace(&mut self.current, Generation::new());
        self.previous = Some(full);
        self.rotations += 1;
    }

    /// Between reports: a current parser holding more than all the bounds
    /// by itself (one file larger than them) is let go at once.
    pub fn trim(&mut self) {
        if self.current.bytes > self.byte_limit || self.current.files.len() > self.file_limit {
            self.current = Generation::new();
            self.rotations += 1;
        }
    }

    /// Files held, in both parsers.
    pub fn len(&self) -> usize {
        self.current.files.len() + self.previous.as_ref().map_or(0, |p| p.files.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sizes of the files held, in both parsers.
    pub fn bytes(&self) -> u64 {
        self.current.bytes + self.previous.as_ref().map_or(0, |p| p.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_half_the_bounds_and_keeps_the_previous_files() {
        let mut p = ParsedFiles::new(4, 1_000);
        let _ = p.parser_for(&"a", 100);
        let _ = p.parser_for(&"b", 100);
        assert_eq!((p.len(), p.rotations), (2, 0));
        // A third file would pass half of the file bound: a rotation.
        let _ = p.parser_for(&"c", 100);
        assert_eq!((p.len(), p.bytes(), p.rotations), (3, 300, 1));
        // "a" is in the previous parser: asked there, nothing added.
        let _ = p.parser_for(&"a", 100);
        assert_eq!((p.len(), p.rotations), (3, 1));
        let _ = p.parser_for(&"d", 100);
        let _ = p.parser_for(&"e", 100);
        assert_eq!(p.rotations, 2);
        assert_eq!(p.len(), 3, "a and b went with the older parser");
        // A file over the whole byte bound is let go after its report.
        let _ = p.parser_for(&"huge", 5_000);
        p.trim();
        assert!(p.bytes() <= 1_000, "{}", p.bytes());
    }
}
