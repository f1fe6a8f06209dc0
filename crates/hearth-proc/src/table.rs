//! The live process table.
//!
//! Filled by a `/proc` scan at start and kept current from the kernel's
//! records: MMAP2 (executable mappings), COMM (names; `exec` replaces the
//! image), FORK (threads and child processes) and EXIT. Exited processes are
//! kept for a grace period, because samples taken just before an exit can be
//! processed after it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::binary::{Binary, BinaryCache, BinaryKey};
use crate::loader::{Loader, Outcome, ProcAnswer, ProcRead, Stalled};
use crate::proc_read::{self, ProcessFiles};
use crate::procfs;

/// An executable, file-backed mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub pgoff: u64,
    pub path: Arc<str>,
    /// Identity of the mapped file, for files (not anonymous or vDSO).
    pub key: Option<BinaryKey>,
    /// Whether `path` is the file's name byte for byte (see
    /// [`NewMapping::path_exact`]).
    pub path_exact: bool,
    /// The parsed file, when it could be opened (and, with a loader, once
    /// it has been).
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
    /// Sorted by start, non-overlapping. Shared with the parent at fork
    /// (most children exec at once, which replaces them), copied when
    /// either changes.
    mappings: Arc<Vec<Mapping>>,
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
            mappings: Arc::default(),
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
        let mappings = Arc::make_mut(&mut self.mappings);
        if mappings.capacity() == 0 {
            // A new image maps a dozen or so files: grow once, not per file.
            mappings.reserve(16);
        }
        // A new mapping replaces whatever it overlaps (as mmap does).
        mappings.retain(|o| o.end <= m.start || o.start >= m.end);
        let i = mappings.partition_point(|o| o.start < m.start);
        mappings.insert(i, m);
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
    /// Mappings whose file changed under them and were parsed again.
    pub remapped: u64,
    /// Mappings given their binary when a loader thread had parsed it.
    pub loaded_later: u64,
    /// `/proc` reads asked of the loader that it could not take (its queue
    /// was full) or that stalled.
    pub proc_reads_failed: u64,
}

/// What [`ProcessTable::read_cgroup`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupRead {
    /// Read in place (no loader): the file's text, `None` if gone.
    Now(Option<String>),
    /// Asked of a loader thread: the answer comes from
    /// [`ProcessTable::take_cgroups`].
    Asked,
    /// The loader's queue is full: ask again later.
    Busy,
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
    /// Where binaries are opened: here when `None` (tests, replays), else on
    /// loader threads, never on the caller's.
    loader: Option<Loader>,
    /// Keys asked of the loader and not answered yet.
    pending: HashSet<BinaryKey>,
    /// Processes whose `/proc` files were asked of the loader and not
    /// answered yet.
    pending_scans: HashSet<u32>,
    /// `/proc/<pid>/cgroup` texts read by the loader, not taken yet.
    cgroups: Vec<(u32, Option<String>)>,
    /// Paths of mappings, each held once (most processes map the same few
    /// files); paths no mapping holds any more go at [`ProcessTable::reap`].
    paths: HashSet<Arc<str>>,
    /// Processes whose cgroup is to be asked of the loader, in one request
    /// at the next [`ProcessTable::apply_loaded`].
    cgroups_wanted: Vec<u32>,
    /// Cgroup reads sent and not answered yet.
    cgroups_out: usize,
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
            loader: None,
            pending: HashSet::new(),
            pending_scans: HashSet::new(),
            cgroups: Vec::new(),
            cgroups_wanted: Vec::new(),
            cgroups_out: 0,
            paths: HashSet::new(),
            stats: TableStats::default(),
            proc_root: root.trim_end_matches('/').to_string(),
            exit_grace_ns: 2_000_000_000,
        }
    }

    /// Estimated heap bytes of the table: processes, their threads' names
    /// and their mappings.
    pub fn approx_bytes(&self) -> u64 {
        // Hash table slots cost about a pointer beyond their entry.
        let per_thread = std::mem::size_of::<(u32, Arc<str>)>() as u64 + 8;
        let per_mapping = std::mem::size_of::<Mapping>() as u64;
        self.procs
            .values()
            .map(|p| {
                std::mem::size_of::<(u32, Process)>() as u64
                    + 8
                    + p.name.len() as u64
                    + p.threads.len() as u64 * per_thread
                    + p.mappings
                        .iter()
                        .map(|m| per_mapping + m.path.len() as u64 + 16)
                        .sum::<u64>()
                        / Arc::strong_count(&p.mappings) as u64
            })
            .sum()
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

    /// Reads every process currently in `/proc` (with a loader: asks for
    /// them to be read, see [`ProcessTable::settle`]). Processes that
    /// vanish while being read are skipped.
    pub fn scan_all(&mut self) {
        for pid in proc_read::list_pids(&self.proc_root) {
            self.scan_pid(pid);
        }
    }

    /// Loads one process from `/proc`, replacing what was known: in place
    /// without a loader (false if it is gone), else asked of a loader
    /// thread and applied when the answer comes (false if it could not be
    /// asked).
    pub fn scan_pid(&mut self, pid: u32) -> bool {
        if let Some(loader) = &mut self.loader {
            if self.pending_scans.contains(&pid) {
                return true;
            }
            if !loader.read_proc(pid, ProcRead::Process) {
                self.stats.proc_reads_failed += 1;
                return false;
            }
            self.pending_scans.insert(pid);
            return true;
        }
        match proc_read::read_process(&self.proc_root, pid) {
            Some(files) => {
                self.apply_scan(pid, &files);
                true
            }
            None => false,
        }
    }

    /// Whether `/proc` files of `pid` were asked for and not answered yet.
    pub fn scan_pending(&self, pid: u32) -> bool {
        self.pending_scans.contains(&pid)
    }

    /// Replaces what was known of `pid` by what its `/proc` files say.
    fn apply_scan(&mut self, pid: u32, files: &ProcessFiles) {
        let mut p = Process::new(pid, procfs::parse_comm(&files.comm).into());
        for (tid, comm) in &files.threads {
            p.threads.insert(*tid, procfs::parse_comm(comm).into());
        }
        // Generations only grow, so that unwinders never mistake the new
        // mappings for the ones they were built from.
        if let Some(old) = self.procs.get(&pid) {
            p.generation = old.generation + 1;
        }
        self.procs.insert(pid, p);
        self.stats.scanned += 1;
        self.stats.processes_seen += 1;
        if files.cgroup.is_some() {
            self.cgroups.push((pid, files.cgroup.clone()));
        }
        // Bytes, not text: a path need not be UTF-8, and one that is not
        // must not hide the process's other mappings.
        for entry in procfs::parse_maps(&files.maps).into_iter().flatten() {
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

    /// Makes sure `pid` is known, reading `/proc` if its creation was
    /// missed. With a loader the read is asked for and `None` returned
    /// until it is answered.
    pub fn ensure(&mut self, pid: u32) -> Option<&Process> {
        if !self.procs.contains_key(&pid)
            && pid != 0
            && !self.pending_scans.contains(&pid)
            && self.scan_pid(pid)
        {
            self.stats.late_discoveries += 1;
        }
        self.procs.get(&pid)
    }

    /// `/proc/<pid>/cgroup`: read in place without a loader, else asked of
    /// a loader thread (see [`CgroupRead`]).
    pub fn read_cgroup(&mut self, pid: u32) -> CgroupRead {
        if self.loader.is_none() {
            return CgroupRead::Now(proc_read::read_cgroup(&self.proc_root, pid));
        }
        if self.cgroups_wanted.len() >= crate::loader::QUEUE {
            self.stats.proc_reads_failed += 1;
            return CgroupRead::Busy;
        }
        self.cgroups_wanted.push(pid);
        CgroupRead::Asked
    }

    /// Sends the cgroup reads asked since the last call to the loader, in
    /// one request: the caller does so about once a second, since every
    /// request wakes a loader thread (the answers are given to the samples
    /// of the window they were asked in, see the converter).
    pub fn flush_cgroup_reads(&mut self) {
        let Some(loader) = &mut self.loader else {
            return;
        };
        if self.cgroups_wanted.is_empty() {
            return;
        }
        let mut pids = std::mem::take(&mut self.cgroups_wanted);
        // A process that exited since has no cgroup file left to read
        // (most of them under process churn).
        let procs = &self.procs;
        pids.retain(|pid| procs.get(pid).is_some_and(|p| p.exited_at.is_none()));
        if pids.is_empty() {
            return;
        }
        let n = pids.len();
        if loader.read_cgroups(pids) {
            self.cgroups_out += n;
        } else {
            // Asked again at the converter's next periodic refresh.
            self.stats.proc_reads_failed += n as u64;
        }
    }

    /// The cgroup files read since the last call, by the loader or with a
    /// process's scan (`None`: the process is gone).
    pub fn take_cgroups(&mut self) -> Vec<(u32, Option<String>)> {
        std::mem::take(&mut self.cgroups)
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
        let path: Arc<str> = match self.paths.get(m.path) {
            Some(p) => p.clone(),
            None => {
                let p: Arc<str> = m.path.into();
                self.paths.insert(p.clone());
                p
            }
        };
        // The kernel names anonymous shared executable memory `//anon`.
        let file = m.path.starts_with('/') && !m.path.starts_with("//anon");
        let (key, binary) = if file {
            let key = if m.inode != 0 {
                BinaryKey::Inode {
                    major: m.major,
                    minor: m.minor,
                    inode: m.inode,
                }
            } else {
                BinaryKey::Path(path.clone())
            };
            let end = m.start.saturating_add(m.len);
            let binary = self.binary_for(&key, &path, m.path_exact, m.pid, m.start, end);
            (Some(key), binary)
        } else if m.path == "[vdso]" {
            // Copied from Hearth's own memory: no file to wait for.
            (None, self.binaries.vdso())
        } else {
            // Anonymous JIT code and the like.
            (None, None)
        };
        let bias = binary.as_ref().and_then(|b| b.load_bias(m.start, m.pgoff));
        self.stats.mappings += 1;
        self.process_entry(m.pid).insert_mapping(Mapping {
            start: m.start,
            end: m.start.saturating_add(m.len),
            pgoff: m.pgoff,
            path,
            key,
            path_exact: m.path_exact,
            binary,
            bias,
        });
    }

    /// Opens binaries on loader threads from now on (see [`crate::loader`]).
    pub fn use_loader(&mut self) -> std::io::Result<()> {
        if self.loader.is_none() {
            self.loader = Some(Loader::start(
                self.binaries.descriptor_budget().clone(),
                &self.proc_root,
            )?);
        }
        Ok(())
    }

    pub fn loader(&self) -> Option<&Loader> {
        self.loader.as_ref()
    }

    /// Loads and `/proc` reads that stalled since the last call (their
    /// file system, or process, is now skipped), for the log.
    pub fn take_stalled_loads(&mut self) -> Vec<Stalled> {
        self.loader
            .as_mut()
            .map(|l| l.take_stalled())
            .unwrap_or_default()
    }

    /// Whether the file system of `key` stopped answering (see
    /// [`Loader::is_unresponsive`]); never without a loader.
    pub fn is_unresponsive(&self, key: &BinaryKey) -> bool {
        self.loader.as_ref().is_some_and(|l| l.is_unresponsive(key))
    }

    /// Loads and `/proc` reads asked for and not answered yet.
    pub fn pending_loads(&self) -> usize {
        self.pending.len() + self.pending_scans.len()
    }

    /// The binary of a mapping of `key`: from the cache, else opened here
    /// (no loader) or asked of the loader (and `None` until it answers).
    fn binary_for(
        &mut self,
        key: &BinaryKey,
        path: &Arc<str>,
        path_exact: bool,
        pid: u32,
        start: u64,
        end: u64,
    ) -> Option<Arc<Binary>> {
        if let Some(entry) = self.binaries.lookup(key) {
            return entry.ok();
        }
        let candidates = candidate_paths(&self.proc_root, pid, start, end, path, path_exact);
        let Some(loader) = &mut self.loader else {
            return self.binaries.get(key, path, &candidates).ok();
        };
        if self.pending.contains(key) || self.binaries.check_room(path, self.pending.len()).is_err()
        {
            return None;
        }
        if loader.load(key.clone(), path.clone(), candidates) {
            self.pending.insert(key.clone());
        }
        None
    }

    /// Applies what the loader threads finished: parsed binaries go to the
    /// cache and to every mapping waiting for them; binaries found changed
    /// are let go and loaded again. Never blocks. Returns the mappings that
    /// got a binary.
    pub fn apply_loaded(&mut self) -> usize {
        let Some(loader) = &mut self.loader else {
            return 0;
        };
        let outcomes = loader.poll();
        self.apply(outcomes)
    }

    /// At start: waits up to `timeout` in all for the loads asked so far,
    /// so that the first samples find their binaries parsed.
    pub fn settle(&mut self, timeout: std::time::Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        let mut applied = 0;
        self.flush_cgroup_reads();
        while !self.pending.is_empty() || !self.pending_scans.is_empty() || self.cgroups_out > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let Some(loader) = &mut self.loader else {
                break;
            };
            let outcomes = loader.wait(left.min(std::time::Duration::from_millis(100)));
            applied += self.apply(outcomes);
        }
        applied
    }

    fn apply(&mut self, outcomes: Vec<Outcome>) -> usize {
        if outcomes.is_empty() {
            return 0;
        }
        let mut ready: HashMap<BinaryKey, Arc<Binary>> = HashMap::new();
        let mut changed: HashMap<*const Binary, BinaryKey> = HashMap::new();
        let mut scanned = Vec::new();
        for o in outcomes {
            match o {
                Outcome::Proc { pid, answer } => match answer {
                    ProcAnswer::Process(files) => {
                        // A late answer of a read already given up is
                        // dropped: a newer one may have been applied.
                        if self.pending_scans.remove(&pid) {
                            if let Some(files) = files {
                                scanned.push((pid, files));
                            }
                        }
                    }
                    ProcAnswer::Cgroup(text) => {
                        self.cgroups_out = self.cgroups_out.saturating_sub(1);
                        self.cgroups.push((pid, text));
                    }
                    ProcAnswer::Stalled(read) => {
                        self.stats.proc_reads_failed += 1;
                        if read == ProcRead::Cgroup {
                            self.cgroups_out = self.cgroups_out.saturating_sub(1);
                        }
                        if read == ProcRead::Process {
                            self.pending_scans.remove(&pid);
                        }
                    }
                },
                Outcome::Loaded { key, opened } => {
                    self.pending.remove(&key);
                    if let Ok(b) = self.binaries.insert(key.clone(), *opened) {
                        ready.insert(key, b);
                    }
                }
                Outcome::Changed(list) => {
                    for (key, b) in list {
                        // Still the cached one? Then it goes.
                        if self
                            .binaries
                            .lookup(&key)
                            .is_some_and(|e| e.is_ok_and(|c| Arc::ptr_eq(&c, &b)))
                        {
                            self.binaries.forget_changed(&key);
                            changed.insert(Arc::as_ptr(&b), key);
                        }
                    }
                }
            }
        }
        // Scanned mappings find their binaries in the cache, or ask for
        // them (after this round's binaries are in).
        for (pid, files) in scanned {
            self.apply_scan(pid, &files);
        }
        if ready.is_empty() && changed.is_empty() {
            // Only /proc answers: no mapping to revisit.
            return 0;
        }
        let mut applied = 0;
        let mut remapped = 0;
        for p in self.procs.values_mut() {
            let concerned = |m: &Mapping| match &m.binary {
                Some(b) => changed.contains_key(&Arc::as_ptr(b)),
                None => m.key.as_ref().is_some_and(|k| ready.contains_key(k)),
            };
            if !p.mappings.iter().any(concerned) {
                continue;
            }
            let mut touched = false;
            for m in Arc::make_mut(&mut p.mappings).iter_mut() {
                if let Some(b) = &m.binary {
                    if changed.contains_key(&Arc::as_ptr(b)) {
                        m.binary = None;
                        m.bias = None;
                        touched = true;
                        remapped += 1;
                    }
                }
                if m.binary.is_none() {
                    if let Some(b) = m.key.as_ref().and_then(|k| ready.get(k)) {
                        m.bias = b.load_bias(m.start, m.pgoff);
                        m.binary = Some(b.clone());
                        touched = true;
                        applied += 1;
                    }
                }
            }
            if touched {
                p.generation += 1;
            }
        }
        self.stats.loaded_later += applied as u64;
        self.stats.remapped += remapped as u64;
        if !changed.is_empty() {
            // Parsed again from the file as it is now.
            self.request_missing();
        }
        applied
    }

    /// Asks the loader again for mappings of live processes that have no
    /// binary although nothing is known against their file (the queue was
    /// full, or the file changed). With no loader, does nothing.
    pub fn request_missing(&mut self) {
        if self.loader.is_none() {
            return;
        }
        let mut wanted: Vec<(BinaryKey, Arc<str>, bool, u32, u64, u64)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for p in self.procs.values() {
            if p.exited_at.is_some() {
                continue;
            }
            for m in p.mappings.iter() {
                let Some(key) = &m.key else { continue };
                if m.binary.is_some()
                    || self.pending.contains(key)
                    || self.binaries.lookup(key).is_some()
                    || !seen.insert(key.clone())
                {
                    continue;
                }
                wanted.push((
                    key.clone(),
                    m.path.clone(),
                    m.path_exact,
                    p.pid,
                    m.start,
                    m.end,
                ));
            }
        }
        for (key, path, exact, pid, start, end) in wanted {
            self.binary_for(&key, &path, exact, pid, start, end);
        }
    }

    /// Parses again the files that changed under their mappings (truncated
    /// or written by their owner since Hearth parsed them), so that no
    /// process keeps being unwound from contents that are gone. Mappings of
    /// exited processes just lose their binary. Returns how many mappings
    /// changed; their processes' generations move, so unwinders rebuild.
    pub fn reload_changed_binaries(&mut self) -> usize {
        if let Some(loader) = &mut self.loader {
            // Checked on a loader thread (an fstat can hang too); what
            // changed is let go and loaded again by `apply_loaded`.
            if !loader.check_pending() {
                loader.check(self.binaries.loaded());
            }
            return 0;
        }
        let changed = self.binaries.take_changed();
        if changed.is_empty() {
            return 0;
        }
        let by_ptr: HashMap<*const Binary, BinaryKey> = changed
            .iter()
            .map(|(k, b)| (Arc::as_ptr(b), k.clone()))
            .collect();
        let mut remapped = 0;
        for p in self.procs.values_mut() {
            let concerned = |m: &Mapping| {
                m.binary
                    .as_ref()
                    .is_some_and(|b| by_ptr.contains_key(&Arc::as_ptr(b)))
            };
            if !p.mappings.iter().any(concerned) {
                continue;
            }
            let exited = p.exited_at.is_some();
            let pid = p.pid;
            let mut touched = false;
            for m in Arc::make_mut(&mut p.mappings).iter_mut() {
                let Some(key) = m.binary.as_ref().and_then(|b| by_ptr.get(&Arc::as_ptr(b))) else {
                    continue;
                };
                m.binary = if exited {
                    None
                } else {
                    let candidates = candidate_paths(
                        &self.proc_root,
                        pid,
                        m.start,
                        m.end,
                        &m.path,
                        m.path_exact,
                    );
                    self.binaries.get(key, &m.path, &candidates).ok()
                };
                m.bias = m
                    .binary
                    .as_ref()
                    .and_then(|b| b.load_bias(m.start, m.pgoff));
                touched = true;
                remapped += 1;
            }
            if touched {
                p.generation += 1;
            }
        }
        self.stats.remapped += remapped as u64;
        remapped
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
            p.mappings = Arc::default();
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
        // Above any earlier process of this pid (its exit may have been
        // lost), so unwinders never reuse its tables.
        let old = self.procs.get(&pid).map(|o| o.generation);
        let child = match self.procs.get(&ppid) {
            Some(parent) => {
                let name = parent.thread_name(ptid);
                let mut threads = HashMap::new();
                threads.insert(tid, name.clone());
                Process {
                    pid,
                    name,
                    threads,
                    mappings: parent.mappings.clone(),
                    generation: parent.generation.max(old.unwrap_or(0)) + 1,
                    exited_at: None,
                }
            }
            None => {
                let mut p = Process::new(pid, Arc::from(""));
                p.generation = old.map_or(0, |g| g + 1);
                p
            }
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
        let reaped = before - self.procs.len();
        if reaped > 0 {
            self.paths.retain(|p| Arc::strong_count(p) > 1);
        }
        reaped
    }
}

/// Paths that may reach the mapped file, best first: the mapping itself
/// (works even for deleted files), the file inside the process's mount
/// namespace, then the host path. A name whose bytes were replaced
/// (`exact` false) reaches the file only through the mapping.
fn candidate_paths(
    root: &str,
    pid: u32,
    start: u64,
    end: u64,
    path: &str,
    exact: bool,
) -> Vec<String> {
    let mut paths = vec![format!("{root}/{pid}/map_files/{start:x}-{end:x}")];
    if exact {
        let clean = path.strip_suffix(" (deleted)").unwrap_or(path);
        paths.push(format!("{root}/{pid}/root{clean}"));
        paths.push(clean.to_string());
    }
    paths
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
