//! Counting samples by thread and stack.

use std::collections::HashMap;
use std::sync::Arc;

use crate::frame::{BinaryId, BinaryInfo, ContainerKey, RawFrame};
use crate::stack::{StackId, StackTable};

/// Who a sample belongs to. Names are part of the key so that a reused pid,
/// or a thread that renames itself, is not merged with its predecessor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThreadInfo {
    pub pid: u32,
    pub tid: u32,
    pub process_name: Arc<str>,
    pub thread_name: Arc<str>,
    /// `None` for processes outside any container (the host).
    pub container: Option<Arc<ContainerKey>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SampleKey {
    pub thread: ThreadInfo,
    pub stack: StackId,
}

/// Values kept alive as long as an aggregate is: the opened binaries its
/// frames refer to, so that their files stay open until symbolized.
#[derive(Clone, Default)]
pub struct KeepAlive(pub Vec<Arc<dyn std::any::Any + Send + Sync>>);

impl std::fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeepAlive({} values)", self.0.len())
    }
}

/// Samples of one aggregation window, with the tables their frames refer to.
#[derive(Debug, Clone, Default)]
pub struct Aggregate {
    pub stacks: StackTable,
    binaries: Vec<BinaryInfo>,
    binary_index: HashMap<BinaryInfo, BinaryId>,
    pub counts: HashMap<SampleKey, u64>,
    /// Samples taken (including those whose stack could not be unwound).
    pub total_samples: u64,
    /// Records the kernel reported as lost (ring buffer full). Its count
    /// covers records of every kind (samples, mmap, fork, exit...) without
    /// saying which, so this is not a count of samples (the name stays for
    /// the crates that read it).
    pub lost_samples: u64,
    /// Samples whose user stack could not be unwound past the first frame.
    pub truncated_stacks: u64,
    pub keep_alive: KeepAlive,
}

impl Aggregate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a binary and returns its id; equal descriptions share an id.
    pub fn binary(&mut self, info: BinaryInfo) -> BinaryId {
        if let Some(id) = self.binary_index.get(&info) {
            return *id;
        }
        let id = BinaryId(self.binaries.len() as u32);
        self.binaries.push(info.clone());
        self.binary_index.insert(info, id);
        id
    }

    /// Registers a binary that must not share its id with an equal
    /// description (two files not parsed yet, known by the same path, may be
    /// different files: each gets its own id and, later, its own info).
    pub fn binary_unshared(&mut self, info: BinaryInfo) -> BinaryId {
        let id = BinaryId(self.binaries.len() as u32);
        self.binaries.push(info);
        id
    }

    /// Replaces what is known of a binary (its file was parsed after
    /// frames of it were counted).
    pub fn set_binary_info(&mut self, id: BinaryId, info: BinaryInfo) {
        let Some(slot) = self.binaries.get_mut(id.0 as usize) else {
            return;
        };
        if self.binary_index.get(slot) == Some(&id) {
            self.binary_index.remove(slot);
        }
        *slot = info.clone();
        self.binary_index.entry(info).or_insert(id);
    }

    pub fn binary_info(&self, id: BinaryId) -> Option<&BinaryInfo> {
        self.binaries.get(id.0 as usize)
    }

    pub fn binaries(&self) -> impl Iterator<Item = (BinaryId, &BinaryInfo)> {
        self.binaries
            .iter()
            .enumerate()
            .map(|(i, b)| (BinaryId(i as u32), b))
    }

    /// Adds `count` samples of `frames` (leaf first) for `thread`.
    pub fn add(&mut self, thread: ThreadInfo, frames_leaf_first: &[RawFrame], count: u64) {
        let stack = self.stacks.intern_leaf_first(frames_leaf_first);
        *self.counts.entry(SampleKey { thread, stack }).or_insert(0) += count;
        self.total_samples += count;
    }

    /// Gives every sample of these processes the container now known for
    /// it (learned after the samples were counted).
    pub fn set_containers(&mut self, known: &HashMap<u32, Option<Arc<ContainerKey>>>) {
        let stale = self.counts.keys().any(|k| {
            known
                .get(&k.thread.pid)
                .is_some_and(|c| *c != k.thread.container)
        });
        if !stale {
            return;
        }
        for (mut key, count) in std::mem::take(&mut self.counts) {
            if let Some(c) = known.get(&key.thread.pid) {
                key.thread.container = c.clone();
            }
            *self.counts.entry(key).or_insert(0) += count;
        }
    }

    /// Number of distinct (thread, stack) entries.
    pub fn distinct(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(pid: u32, name: &str) -> ThreadInfo {
        ThreadInfo {
            pid,
            tid: pid,
            process_name: name.into(),
            thread_name: name.into(),
            container: None,
        }
    }

    #[test]
    fn equal_samples_are_counted_once_and_names_separate_pids() {
        let mut agg = Aggregate::new();
        let bin = agg.binary(BinaryInfo {
            path: "/bin/x".into(),
            open_path: None,
            build_id: None,
            symbol_bytes: 0,
            file_id: 0,
        });
        let frames = [RawFrame::User {
            binary: bin,
            file_offset: 0x10,
        }];
        agg.add(thread(1, "a"), &frames, 1);
        agg.add(thread(1, "a"), &frames, 2);
        agg.add(thread(1, "b"), &frames, 1);
        assert_eq!(agg.distinct(), 2);
        assert_eq!(agg.total_samples, 4);
        let same_bin = agg.binary(BinaryInfo {
            path: "/bin/x".into(),
            open_path: None,
            build_id: None,
            symbol_bytes: 0,
            file_id: 0,
        });
        assert_eq!(same_bin, bin);
    }
}
