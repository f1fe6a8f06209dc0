//! From kernel records to an aggregate of normalized stacks.
//!
//! One synchronous struct with a handler per record kind, shared by live
//! recording and capture replay. It keeps the process table current,
//! unwinds each sample's user stack right away (so the stack copy need not
//! be kept), and counts the resulting normalized stack. Symbolization
//! happens later, elsewhere.

use std::collections::HashMap;
use std::sync::Arc;

use hearth_proc::container::{classify_cgroup, Classification};
use hearth_proc::fault_guard;
use hearth_proc::loader::Stalled;
use hearth_proc::table::NewMapping;
use hearth_proc::{BinaryKey, CgroupRead, ProcessTable};
use hearth_profile::{Aggregate, BinaryId, BinaryInfo, ContainerKey, RawFrame, ThreadInfo};
use hearth_sampler::format::{X86_REG_BP, X86_REG_IP, X86_REG_SP};
use hearth_sampler::{parse_record, Record, SampleFormat, SampleRecord};
use hearth_unwind::{Outcome, StackUnwinder, UserRegs};

/// `PROT_EXEC` in MMAP2 records.
const PROT_EXEC: u32 = 4;

/// Which processes' samples to keep.
#[derive(Debug, Clone, Default)]
pub enum PidFilter {
    /// Every process except the idle task (pid 0).
    #[default]
    All,
    /// Only these processes (and only while they are known to the table as
    /// descendants of them: children are added on FORK).
    Tree(std::collections::HashSet<u32>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConverterStats {
    pub records: u64,
    pub samples: u64,
    pub parse_errors: u64,
    /// Samples of the idle task, not counted as CPU use.
    pub idle_samples: u64,
    pub filtered_samples: u64,
    /// Samples whose user stack ended before its outermost frame.
    pub truncated_user_stacks: u64,
    pub lost_records: u64,
    /// Processes whose maps were re-read because a sample was unmapped.
    pub rescans: u64,
    /// Mappings parsed again because their file changed under them.
    pub remapped_files: u64,
    /// User frames counted while their file was not parsed (yet): unwound
    /// without its unwind tables, named at the window's end if parsed by
    /// then.
    pub unparsed_frames: u64,
}

/// The container of a process, and whether it must be read again.
struct ContainerOf {
    key: Option<Arc<ContainerKey>>,
    stale: bool,
}

/// How often (kernel time) every process's cgroup is read again, since
/// processes can be moved between cgroups.
const CGROUP_REFRESH_NS: u64 = 10_000_000_000;

pub struct Converter {
    format: SampleFormat,
    pub table: ProcessTable,
    unwinder: StackUnwinder,
    agg: Aggregate,
    /// Binary (by address of its shared value) to its id in `agg`.
    binary_ids: HashMap<usize, BinaryId>,
    path_ids: HashMap<Arc<str>, BinaryId>,
    /// Binaries of this window's frames that were not parsed yet when the
    /// frames were counted: given their file at the window's end if the
    /// loader has parsed it by then.
    unparsed_ids: HashMap<BinaryKey, BinaryId>,
    filter: PidFilter,
    addrs: Vec<u64>,
    frames: Vec<RawFrame>,
    pub stats: ConverterStats,
    last_time: u64,
    last_reap: u64,
    containers: HashMap<u32, ContainerOf>,
    /// Processes whose cgroup was asked of the loader in this window: when
    /// the answer comes, the window's samples of them get it.
    cgroups_asked: std::collections::HashSet<u32>,
    /// Answers for those, to give the window's samples when it ends.
    cgroups_learned: HashMap<u32, Option<Arc<ContainerKey>>>,
    last_cgroup_refresh: u64,
    /// Last time (kernel clock) each process's maps were re-read because a
    /// sample fell outside every known mapping (records were lost).
    rescanned: HashMap<u32, u64>,
    /// [`fault_guard::faults`] when files were last checked for changes.
    faults_seen: u64,
    changed_files_log: ChangedFilesLog,
}

/// What the symbolizer gets of a parsed binary; `open` false (its file
/// system stopped answering) keeps it from opening the file at all.
fn binary_info(b: &hearth_proc::Binary, open: bool) -> BinaryInfo {
    BinaryInfo {
        path: b.path.clone(),
        open_path: open.then(|| b.fd_path().into()),
        build_id: b.build_id.clone(),
        symbol_bytes: b.symbol_bytes(),
        file_id: b.identity(),
    }
}

/// Says that files changed under their mappings: once when it first
/// happens, then at most one summary a minute while it goes on.
#[derive(Default)]
struct ChangedFilesLog {
    last_line: Option<std::time::Instant>,
    logged_remaps: u64,
    logged_faults: u64,
}

impl ChangedFilesLog {
    const PERIOD: std::time::Duration = std::time::Duration::from_secs(60);

    fn note(&mut self, remapped_total: u64, faults_total: u64) {
        if remapped_total == self.logged_remaps && faults_total == self.logged_faults {
            return;
        }
        let now = std::time::Instant::now();
        if self
            .last_line
            .is_some_and(|t| now.duration_since(t) < Self::PERIOD)
        {
            return;
        }
        tracing::warn!(
            remapped = remapped_total - self.logged_remaps,
            zero_pages = faults_total - self.logged_faults,
            "files changed under the mappings of profiled processes (truncated or rewritten \
             by their owners); they were parsed again, and reads of vanished pages saw zeros \
             (said at most once a minute)"
        );
        self.last_line = Some(now);
        self.logged_remaps = remapped_total;
        self.logged_faults = faults_total;
    }
}

impl Converter {
    pub fn new(format: SampleFormat, table: ProcessTable, filter: PidFilter) -> Self {
        Converter {
            format,
            table,
            unwinder: StackUnwinder::new(),
            agg: Aggregate::new(),
            binary_ids: HashMap::new(),
            path_ids: HashMap::new(),
            unparsed_ids: HashMap::new(),
            filter,
            addrs: Vec::with_capacity(256),
            frames: Vec::with_capacity(320),
            stats: ConverterStats::default(),
            last_time: 0,
            last_reap: 0,
            containers: HashMap::new(),
            cgroups_asked: std::collections::HashSet::new(),
            cgroups_learned: HashMap::new(),
            last_cgroup_refresh: 0,
            rescanned: HashMap::new(),
            faults_seen: fault_guard::faults(),
            changed_files_log: ChangedFilesLog::default(),
        }
    }

    /// The container of `pid`, from its cgroup. A process that is gone
    /// keeps what was known of it (inherited at fork, or read earlier).
    /// With a loader the file is read there: until its answer, the process
    /// keeps what was known (or none).
    fn container_of(&mut self, pid: u32) -> Option<Arc<ContainerKey>> {
        if let Some(c) = self.containers.get(&pid) {
            if !c.stale {
                return c.key.clone();
            }
        }
        match self.table.read_cgroup(pid) {
            CgroupRead::Now(text) => self.set_cgroup(pid, text),
            CgroupRead::Asked => {
                self.cgroups_asked.insert(pid);
                // Not asked again until the periodic refresh, answered or not.
                self.keep_known_container(pid)
            }
            CgroupRead::Busy => self.containers.get(&pid).and_then(|c| c.key.clone()),
        }
    }

    /// What is known of `pid`'s container (none if nothing), marked fresh
    /// until the next periodic refresh.
    fn keep_known_container(&mut self, pid: u32) -> Option<Arc<ContainerKey>> {
        let entry = self.containers.entry(pid).or_insert(ContainerOf {
            key: None,
            stale: false,
        });
        entry.stale = false;
        entry.key.clone()
    }

    /// Records what `/proc/<pid>/cgroup` said (`None`: the process is gone,
    /// it keeps what was known).
    fn set_cgroup(&mut self, pid: u32, text: Option<String>) -> Option<Arc<ContainerKey>> {
        let Some(text) = text else {
            return self.keep_known_container(pid);
        };
        let key = match classify_cgroup(&text) {
            Classification::Container(c) => Some(Arc::new(ContainerKey {
                id: Arc::from(c.id.as_str()),
                runtime: c.runtime.map(|r| Arc::from(r.as_str())),
                pod_uid: c.pod_uid.as_deref().map(Arc::from),
            })),
            // Runtime monitors (conmon) are not the workload.
            Classification::Host | Classification::RuntimeMonitor { .. } => None,
        };
        self.containers.insert(
            pid,
            ContainerOf {
                key: key.clone(),
                stale: false,
            },
        );
        key
    }

    /// Estimated heap bytes of the process table, the per-process
    /// unwinders and the per-process bookkeeping here.
    pub fn process_bytes(&self) -> u64 {
        let per_pid = std::mem::size_of::<(u32, ContainerOf)>() as u64 + 8;
        self.table.approx_bytes()
            + self.unwinder.approx_bytes()
            + (self.containers.len() + self.rescanned.len()) as u64 * per_pid
    }

    pub fn aggregate(&self) -> &Aggregate {
        &self.agg
    }

    /// Applies what the loader threads finished (see
    /// [`ProcessTable::apply_loaded`]); never blocks.
    pub fn poll_loads(&mut self) {
        self.table.apply_loaded();
        for (pid, text) in self.table.take_cgroups() {
            // Only for processes still known: a late answer must not bring
            // back an entry for a process reaped since.
            if self.containers.contains_key(&pid) || self.table.get(pid).is_some() {
                let key = self.set_cgroup(pid, text);
                if self.cgroups_asked.remove(&pid) {
                    self.cgroups_learned.insert(pid, key);
                }
            }
        }
    }

    /// Hands over the aggregate built so far and starts a new one.
    pub fn take_aggregate(&mut self) -> Aggregate {
        self.poll_loads();
        // Samples counted while their process's cgroup was being read get
        // what it said; reads still out keep what was known.
        self.agg.set_containers(&self.cgroups_learned);
        self.cgroups_learned.clear();
        for (key, id) in self.unparsed_ids.drain() {
            if let Some(Ok(b)) = self.table.binaries.lookup(&key) {
                let open = !self.table.is_unresponsive(&key);
                self.agg.set_binary_info(id, binary_info(&b, open));
                self.agg.keep_alive.0.push(b);
            }
        }
        self.binary_ids.clear();
        self.path_ids.clear();
        std::mem::take(&mut self.agg)
    }

    /// Processes one raw record.
    pub fn handle(&mut self, record_type: u32, misc: u16, body: &[u8]) {
        self.stats.records += 1;
        let record = match parse_record(&self.format, record_type, misc, body) {
            Ok(r) => r,
            Err(_) => {
                self.stats.parse_errors += 1;
                return;
            }
        };
        if let Some(t) = record.time() {
            self.last_time = self.last_time.max(t);
        }
        match record {
            Record::Sample(s) => self.handle_sample(&s),
            Record::Mmap2(m) => {
                // pid -1 is the kernel itself (modules, BPF).
                if m.prot & PROT_EXEC != 0 && m.pid != u32::MAX {
                    // A name that is not UTF-8 is kept with its odd bytes
                    // replaced; the file is then reached by the mapping.
                    let path = String::from_utf8_lossy(m.filename);
                    let path_exact = matches!(path, std::borrow::Cow::Borrowed(_));
                    self.table.add_mapping(&NewMapping {
                        pid: m.pid,
                        start: m.addr,
                        len: m.len,
                        pgoff: m.pgoff,
                        major: m.maj,
                        minor: m.min,
                        inode: m.ino,
                        path: &path,
                        path_exact,
                    });
                }
            }
            Record::Comm(c) => {
                if c.exec {
                    // Runtimes place a container's first process in its
                    // cgroup just before exec.
                    if let Some(entry) = self.containers.get_mut(&c.pid) {
                        entry.stale = true;
                    }
                }
                self.table.set_comm(c.pid, c.tid, c.comm, c.exec)
            }
            Record::Fork(f) => {
                if let PidFilter::Tree(pids) = &mut self.filter {
                    if pids.contains(&f.ppid) {
                        pids.insert(f.pid);
                    }
                }
                if f.pid != f.ppid {
                    // A child starts in its parent's cgroup; read it again
                    // on its first sample, in case it was moved since.
                    if let Some(parent) = self.containers.get(&f.ppid) {
                        let key = parent.key.clone();
                        self.containers
                            .insert(f.pid, ContainerOf { key, stale: true });
                    }
                }
                self.table.fork(f.pid, f.ppid, f.tid, f.ptid);
            }
            Record::Exit(e) => self.table.exit(e.pid, e.tid, e.time),
            Record::Lost(l) => {
                self.stats.lost_records = self.stats.lost_records.saturating_add(l.lost);
                self.agg.lost_samples = self.agg.lost_samples.saturating_add(l.lost);
            }
            Record::LostSamples(l) => {
                self.agg.lost_samples = self.agg.lost_samples.saturating_add(l.lost)
            }
            Record::Other(_) => {}
        }
        // Exited processes are forgotten a grace period after their exit,
        // and files that changed under their mappings are parsed again
        // (one fstat per open file a second).
        // A read past the end of a mapped file means some file was cut
        // under Hearth: look for it at once rather than within the second.
        let faults = fault_guard::faults();
        let second = self.last_time.saturating_sub(self.last_reap) > 1_000_000_000;
        if second {
            self.last_reap = self.last_time;
            if self.table.reap(self.last_time) > 0 {
                let table = &self.table;
                self.unwinder.retain(|pid| table.get(pid).is_some());
                self.containers.retain(|pid, _| table.get(*pid).is_some());
                self.cgroups_asked.retain(|pid| table.get(*pid).is_some());
            }
        }
        if second {
            // Cgroup reads go to the loader once a second, in one request.
            self.table.flush_cgroup_reads();
        }
        if second || faults != self.faults_seen {
            self.faults_seen = faults;
            self.table.reload_changed_binaries();
            self.stats.remapped_files = self.table.stats.remapped;
            self.changed_files_log
                .note(self.stats.remapped_files, faults);
        }
        let periodic = self.last_time.saturating_sub(self.last_cgroup_refresh) > CGROUP_REFRESH_NS;
        for stalled in self.table.take_stalled_loads() {
            match stalled {
                Stalled::Binary(on) => tracing::warn!(
                    "reading a binary on {on} took over {:?}: files on that file system are \
                     not read any more (their frames keep file offsets, unnamed)",
                    hearth_proc::loader::STALL
                ),
                Stalled::Proc(pid) => tracing::warn!(
                    "reading /proc/{pid} took over {:?} (the process is likely stuck on a hung \
                     file system): its files are not read again until that read returns",
                    hearth_proc::loader::STALL
                ),
            }
        }
        if periodic {
            self.last_cgroup_refresh = self.last_time;
            // Mappings still without their binary (the loader's queue was
            // full) are asked for again.
            self.table.request_missing();
            // Binaries no process maps any more (and no pending window
            // needs) are closed; failures are tried again.
            self.table.binaries.evict_unused();
            for c in self.containers.values_mut() {
                c.stale = true;
            }
        }
    }

    /// An instruction pointer outside every known mapping means mmap
    /// records were lost (ring buffer overrun) or came late: read the
    /// process's maps again, at most once a second per process.
    fn rescan_if_unmapped(&mut self, pid: u32, ip: u64, now: u64) {
        let mapped = self
            .table
            .get(pid)
            .is_some_and(|p| p.mapping_for(ip).is_some());
        if mapped {
            return;
        }
        let last = self.rescanned.get(&pid).copied();
        if last.is_some_and(|t| now.saturating_sub(t) < 1_000_000_000) {
            return;
        }
        self.rescanned.insert(pid, now);
        if self.rescanned.len() > 4096 {
            self.rescanned
                .retain(|_, t| now.saturating_sub(*t) < 1_000_000_000);
        }
        self.stats.rescans += 1;
        self.table.scan_pid(pid);
    }

    fn handle_sample(&mut self, s: &SampleRecord<'_>) {
        self.stats.samples += 1;
        if s.pid == 0 {
            self.stats.idle_samples += 1;
            return;
        }
        if let PidFilter::Tree(pids) = &self.filter {
            if !pids.contains(&s.pid) {
                self.stats.filtered_samples += 1;
                return;
            }
        }
        self.frames.clear();
        // Kernel frames, leaf first. Entries after the first are return
        // addresses: look them up one byte earlier, inside the call.
        for (i, ip) in s.kernel_callchain().enumerate() {
            self.frames.push(RawFrame::Kernel(if i == 0 {
                ip
            } else {
                ip.wrapping_sub(1)
            }));
        }
        let container = self.container_of(s.pid);
        if self.table.ensure(s.pid).is_none() {
            // The process is gone and was never seen: keep what we have.
            let thread = ThreadInfo {
                pid: s.pid,
                tid: s.tid,
                process_name: Arc::from("[unknown]"),
                thread_name: Arc::from("[unknown]"),
                container,
            };
            self.agg.add(thread, &self.frames, 1);
            return;
        }
        let regs = (
            self.format
                .reg_index(X86_REG_IP)
                .and_then(|i| s.user_reg(i)),
            self.format
                .reg_index(X86_REG_SP)
                .and_then(|i| s.user_reg(i)),
            self.format
                .reg_index(X86_REG_BP)
                .and_then(|i| s.user_reg(i)),
        );
        self.addrs.clear();
        if let Some(ip) = regs.0 {
            self.rescan_if_unmapped(s.pid, ip, s.time);
        }
        if let (Some(ip), Some(sp), Some(bp)) = regs {
            if let Some(process) = self.table.get(s.pid) {
                let outcome = self.unwinder.unwind(
                    process,
                    UserRegs { ip, sp, bp },
                    s.user_stack,
                    &mut self.addrs,
                );
                if outcome != Outcome::Complete {
                    self.stats.truncated_user_stacks += 1;
                    self.agg.truncated_stacks += 1;
                }
            }
        }
        // Field-level borrows: the table is read while the aggregate grows.
        let process = self.table.get(s.pid);
        for &addr in &self.addrs {
            let frame = match process.and_then(|p| p.mapping_for(addr)) {
                Some(m) => {
                    let file_offset = m.file_offset(addr);
                    let binary = match &m.binary {
                        Some(b) => *self
                            .binary_ids
                            .entry(Arc::as_ptr(b) as usize)
                            .or_insert_with(|| {
                                // The file must stay open until this window
                                // is symbolized, even if every process that
                                // maps it exits and the table forgets it.
                                self.agg.keep_alive.0.push(b.clone());
                                let open = !m
                                    .key
                                    .as_ref()
                                    .is_some_and(|k| self.table.is_unresponsive(k));
                                self.agg.binary(binary_info(b, open))
                            }),
                        None => {
                            let info = || BinaryInfo {
                                path: m.path.clone(),
                                open_path: None,
                                build_id: None,
                                symbol_bytes: 0,
                                file_id: 0,
                            };
                            match &m.key {
                                Some(key) => {
                                    self.stats.unparsed_frames += 1;
                                    *self
                                        .unparsed_ids
                                        .entry(key.clone())
                                        .or_insert_with(|| self.agg.binary_unshared(info()))
                                }
                                None => *self
                                    .path_ids
                                    .entry(m.path.clone())
                                    .or_insert_with(|| self.agg.binary(info())),
                            }
                        }
                    };
                    RawFrame::User {
                        binary,
                        file_offset,
                    }
                }
                None => RawFrame::Unknown(addr),
            };
            self.frames.push(frame);
        }
        let (process_name, thread_name) = match self.table.get(s.pid) {
            Some(p) => (p.name.clone(), p.thread_name(s.tid)),
            None => (Arc::from("[unknown]"), Arc::from("[unknown]")),
        };
        let thread = ThreadInfo {
            pid: s.pid,
            tid: s.tid,
            process_name,
            thread_name,
            container,
        };
        self.agg.add(thread, &self.frames, 1);
    }
}
