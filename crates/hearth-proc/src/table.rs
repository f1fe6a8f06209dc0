//! The live process table.
//!
//! Filled by a `/proc` scan at start and kept current from the kernel's
//! records: MMAP2 (executable mappings), COMM (names; `exec` replaces the
//! image), FORK (threads and child processes) and EXIT. Exited processes are
//! kept for a grace period, because samples taken just before an exit can be
//! processed after it.

use std::collections::HashMap;
use std::fs;
use std::sync::Arc;

use crate::binary::{Binary, BinaryCache, BinaryKey};
use crate::procfs;

/// An executable, file-backed mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub pgoff: u64,
    pub path: Arc<str>,
    /// The parsed file, when it could be opened.
    pub binary: Option<Arc<Binary>>,
    /// Runtime address minus SVMA, when the binary is known.
    pub bias: Option<u64>,
}

impl Mapping {
    /// File offset of runtime address `addr` inside this mapping.
    pub fn file_offset(&self, addr: u64) -> u64 {
        // Records are outside input: a hostile pgoff must not overflow.
        addr.wrapping_sub(self.start).wrapping_add(self.pgoff)
    }
}

#[derive(Debug, Clone)]
pub struct Process {
    pub pid: u32,
    pub name: Arc<str>,
    threads: HashMap<u32, Arc<str>>,
    /// Sorted by start, non-overlapping.
    mappings: Vec<Mapping>,
    /// Bumped whenever `mappings` changes, so unwinders know to rebuild.
    pub generation: u64,
    /// Kernel time of the main thread's exit.
    pub exited_at: Option<u64>,
}

impl Process {
    fn new(pid: u32, name: Arc<str>) -> Self {
        Process {
            pid,
            name,
            threads: HashMap::new(),
            mappings: Vec::new(),
            generation: 0,
            exited_at: None,
        }
    }

    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    pub fn mapping_for(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        let m = self.mappings.get(i.checked_sub(1)?)?;
        (addr < m.end).then_some(m)
    }

    pub fn thread_name(&self, tid: u32) -> Arc<str> {
        self.threads
            .get(&tid)
            .cloned()
            .unwrap_or_else(|| self.name.clone())
    }

    fn insert_mapping(&mut self, m: Mapping) {
        // A new mapping replaces whatever it overlaps (as mmap does).
        self.mappings
            .retain(|o| o.end <= m.start || o.start >= m.end);
        let i = self.mappings.partition_point(|o| o.start < m.start);
        self.mappings.insert(i, m);
        self.generation += 1;
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    pub processes_seen: u64,
    pub scanned: u64,
    pub execs: u64,
    pub mappings: u64,
    /// Processes first heard of through a sample (their creation was missed).
    pub late_discoveries: u64,
}

/// A description of a new executable mapping (from MMAP2 or `/proc/<pid>/maps`).
pub struct NewMapping<'a> {
    pub pid: u32,
    pub start: u64,
    pub len: u64,
    pub pgoff: u64,
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
    pub path: &'a str,
    /// Whether `path` is the file's name byte for byte (false when bytes
    /// that are not UTF-8 were replaced): only then may it be opened by
    /// name.
    pub path_exact: bool,
}

pub struct ProcessTable {
    procs: HashMap<u32, Process>,
    pub binaries: BinaryCache,
    pub stats: TableStats,
    /// Root of the proc file system (`/proc`; tests may point elsewhere).
    proc_root: String,
    /// How long exited processes are kept, in kernel-clock nanoseconds.
    pub exit_grace_ns: u64,
}

impl Default for ProcessTable {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessTable {
    pub fn new() -> Self {
        Self::with_proc_root("/proc")
    }

    pub fn with_proc_root(root: &str) -> Self {
        ProcessTable {
            procs: HashMap::new(),
            binaries: BinaryCache::new(),
            stats: TableStats::default(),
            proc_root: root.trim_end_matches('/').to_string(),
            exit_grace_ns: 2_000_000_000,
        }
    }

    /// Root of the proc file system this table reads.
    pub fn proc_root(&self) -> &str {
        &self.proc_root
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.procs.get(&pid)
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Reads every process currently in `/proc`. Processes that vanish while
    /// being read are skipped.
    pub fn scan_all(&mut self) {
        let Ok(dir) = fs::read_dir(&self.proc_root) else {
            return;
        };
        let pids: Vec<u32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        for pid in pids {
            self.scan_pid(pid);
        }
    }

    /// Loads one process from `/proc` (replacing what was known). Returns
    /// false if it is gone.
    pub fn scan_pid(&mut self, pid: u32) -> bool {
        let base = format!("{}/{pid}", self.proc_root);
        let Ok(comm) = fs::read(format!("{base}/comm")) else {
            return false;
        };
        let mut p = Process::new(pid, procfs::parse_comm(&comm).into());
        if let Ok(tasks) = fs::read_dir(format!("{base}/task")) {
            for t in tasks.flatten() {
                let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if let Ok(c) = fs::read(t.path().join("comm")) {
                    p.threads.insert(tid, procfs::parse_comm(&c).into());
                }
            }
        }
        // Generations only grow, so that unwinders never mistake the new
        // mappings for the ones they were built from.
        if let Some(old) = self.procs.get(&pid) {
            p.generation = old.generation + 1;
        }
        self.procs.insert(pid, p);
        self.stats.scanned += 1;
        self.stats.processes_seen += 1;
        // Bytes, not text: a path need not be UTF-8, and one that is not
        // must not hide the process's other mappings.
        if let Ok(maps) = fs::read(format!("{base}/maps")) {
            for entry in procfs::parse_maps(&maps).into_iter().flatten() {
                if entry.executable && entry.is_file() {
                    self.add_mapping(&NewMapping {
                        pid,
                        start: entry.start,
                        len: entry.end - entry.start,
                        pgoff: entry.offset,
                        major: entry.dev_major,
                        minor: entry.dev_minor,
                        inode: entry.inode,
                        path: &entry.path,
                        path_exact: entry.path_exact,
                    });
                }
            }
        }
        true
    }

    /// Makes sure `pid` is known, reading `/proc` if its creation was missed.
    pub fn ensure(&mut self, pid: u32) -> Option<&Process> {
        if !self.procs.contains_key(&pid) && pid != 0 && self.scan_pid(pid) {
            self.stats.late_discoveries += 1;
        }
        self.procs.get(&pid)
    }

    fn process_entry(&mut self, pid: u32) -> &mut Process {
        let stats = &mut self.stats;
        self.procs.entry(pid).or_insert_with(|| {
            stats.processes_seen += 1;
            Process::new(pid, Arc::from(""))
        })
    }

    /// An executable mapping appeared (MMAP2 with `PROT_EXEC`).
    pub fn add_mapping(&mut self, m: &NewMapping<'_>) {
        if m.len == 0 {
            return;
        }
        let path: Arc<str> = m.path.into();
        let binary = if m.path.starts_with('/') {
            let key = if m.inode != 0 {
                BinaryKey::Inode {
                    major: m.major,
                    minor: m.minor,
                    inode: m.inode,
                }
            } else {
                BinaryKey::Path(path.clone())
            };
            let candidates = self.candidate_paths(m, m.start.saturating_add(m.len));
            self.binaries.get(&key, &path, &candidates).ok()
        } else if m.path == "[vdso]" {
            self.binaries.vdso()
        } else {
            // Anonymous JIT code and the like.
            None
        };
        let bias = binary.as_ref().and_then(|b| b.load_bias(m.start, m.pgoff));
        self.stats.mappings += 1;
        self.process_entry(m.pid).insert_mapping(Mapping {
            start: m.start,
            end: m.start.saturating_add(m.len),
            pgoff: m.pgoff,
            path,
            binary,
            bias,
        });
    }

    /// Paths that may reach the mapped file, best first: the mapping itself
    /// (works even for deleted files), the file inside the process's mount
    /// namespace, then the host path. A name whose bytes were replaced
    /// reaches the file only through the mapping.
    fn candidate_paths(&self, m: &NewMapping<'_>, end: u64) -> Vec<String> {
        let (root, pid, start) = (&self.proc_root, m.pid, m.start);
        let mut paths = vec![format!("{root}/{pid}/map_files/{start:x}-{end:x}")];
        if m.path_exact {
            let clean = m.path.strip_suffix(" (deleted)").unwrap_or(m.path);
            paths.push(format!("{root}/{pid}/root{clean}"));
            paths.push(clean.to_string());
        }
        paths
    }

    /// A thread or process was named (COMM). With `exec`, the process image
    /// was replaced: its old mappings are gone.
    pub fn set_comm(&mut self, pid: u32, tid: u32, name: &[u8], exec: bool) {
        let name: Arc<str> = procfs::parse_comm(name).into();
        if exec {
            self.stats.execs += 1;
        }
        let p = self.process_entry(pid);
        if exec {
            p.mappings.clear();
            p.threads.clear();
            p.generation += 1;
            p.exited_at = None;
        }
        if pid == tid || exec {
            p.name = name.clone();
        }
        p.threads.insert(tid, name);
    }

    /// FORK: a new thread (same pid) or a new process (copy of the parent).
    pub fn fork(&mut self, pid: u32, ppid: u32, tid: u32, ptid: u32) {
        if pid == ppid {
            let p = self.process_entry(pid);
            let name = p
                .threads
                .get(&ptid)
                .cloned()
                .unwrap_or_else(|| p.name.clone());
            p.threads.insert(tid, name);
            return;
        }
        let child = match self.procs.get(&ppid) {
            Some(parent) => {
                let mut c = parent.clone();
                c.pid = pid;
                c.name = parent.thread_name(ptid);
                c.threads.clear();
                c.threads.insert(tid, c.name.clone());
                c.exited_at = None;
                c.generation += 1;
                c
            }
            None => Process::new(pid, Arc::from("")),
        };
        self.stats.processes_seen += 1;
        self.procs.insert(pid, child);
    }

    /// EXIT of a thread; the main thread's exit marks the process exited.
    pub fn exit(&mut self, pid: u32, tid: u32, time: u64) {
        if let Some(p) = self.procs.get_mut(&pid) {
            if pid == tid {
                p.exited_at = Some(time);
            }
        }
    }

    /// Forgets processes that exited more than the grace period before `now`.
    pub fn reap(&mut self, now: u64) -> usize {
        let grace = self.exit_grace_ns;
        let before = self.procs.len();
        self.procs
            .retain(|_, p| p.exited_at.is_none_or(|t| now.saturating_sub(t) < grace));
        before - self.procs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map<'a>(pid: u32, start: u64, len: u64, path: &'a str) -> NewMapping<'a> {
        NewMapping {
            pid,
            start,
            len,
            pgoff: 0,
            major: 0,
            minor: 0,
            inode: 0,
            path,
            path_exact: true,
        }
    }

    #[test]
    fn fork_exec_exit_lifecycle() {
        let mut t = ProcessTable::with_proc_root("/nonexistent-proc");
        t.set_comm(10, 10, b"shell", false);
        t.add_mapping(&map(10, 0x1000, 0x1000, "[vdso]"));
        t.add_mapping(&map(10, 0x4000, 0x1000, "/no/such/file"));
        assert_eq!(t.get(10).unwrap().mappings().len(), 2);
        // A new mapping over an old one replaces it.
        t.add_mapping(&map(10, 0x3800, 0x1000, "/no/such/other"));
        let p = t.get(10).unwrap();
        assert_eq!(p.mappings().len(), 2);
        assert_eq!(&*p.mapping_for(0x4000).unwrap().path, "/no/such/other");
        assert!(p.mapping_for(0x2800).is_none());
        assert!(p.mapping_for(0x1fff).is_some());

        // Thread and child process.
        t.fork(10, 10, 11, 10);
        assert_eq!(&*t.get(10).unwrap().thread_name(11), "shell");
        t.fork(20, 10, 20, 10);
        assert_eq!(
            t.get(20).unwrap().mappings().len(),
            2,
            "child inherits mappings"
        );
        t.set_comm(20, 20, b"child\n", true);
        let c = t.get(20).unwrap();
        assert_eq!((&*c.name, c.mappings().len()), ("child", 0));

        t.exit(20, 20, 1_000);
        assert_eq!(t.reap(1_000 + t.exit_grace_ns - 1), 0);
        assert_eq!(t.reap(1_000 + t.exit_grace_ns), 1);
        assert!(t.get(20).is_none() && t.get(10).is_some());
    }

    #[test]
    fn scans_this_process_from_proc() {
        let mut t = ProcessTable::new();
        let me = std::process::id();
        assert!(t.scan_pid(me));
        let p = t.get(me).unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let m = p
            .mappings()
            .iter()
            .find(|m| *m.path == *exe.to_str().unwrap())
            .expect("own executable mapped");
        assert!(m.binary.is_some() && m.bias.is_some());
        assert!(!t.scan_pid(u32::MAX - 1), "absent pid");
    }
}
