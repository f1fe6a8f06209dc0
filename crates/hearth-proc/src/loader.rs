//! Opening, parsing and checking binaries away from the sampling thread.
//!
//! The files a profiled process maps can live anywhere: on a FUSE or NFS
//! mount inside a container whose server stopped answering, an `open` of
//! them never returns. Nothing of that may reach the thread that drains
//! the perf rings, so every file operation on another process's binary
//! happens here, on loader threads: the process table sends a request and
//! goes on; results are applied when it next asks ([`Loader::poll`]).
//!
//! Reads of other processes' `/proc` files happen here too (see
//! [`crate::proc_read`]): they wait on the process's memory-map lock.
//!
//! A load (or change check) that takes longer than [`STALL`] marks its
//! file system (device) unresponsive: the stalled request is answered as
//! failed, later requests for files on that device are refused at once,
//! and a fresh loader thread takes over from the stuck one. Each hung
//! mount costs one thread, up to [`MAX_THREADS`] in all; past that, loads
//! wait until a stuck thread comes back. A thread that comes back clears
//! its device's mark (the file system answers again). A `/proc` read that
//! stalls marks its process instead: it is not read again until the stuck
//! thread comes back.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::binary::{open_candidates, Binary, BinaryKey, DescriptorBudget, LoadError, Opened};
use crate::proc_read::{self, ProcessFiles};

/// How long one load may take before its file system counts as hung.
pub const STALL: Duration = Duration::from_secs(2);
/// Most loader threads at once, stuck ones included.
pub const MAX_THREADS: usize = 8;
/// Requests waiting for a loader thread; past this, requests are refused
/// (and made again later by the process table).
pub const QUEUE: usize = 4096;

enum Request {
    Load {
        key: BinaryKey,
        path: Arc<str>,
        candidates: Vec<String>,
    },
    /// Which of these binaries changed since they were parsed?
    Check(Vec<(BinaryKey, Arc<Binary>)>),
    /// Read these `/proc` files of `pid`.
    Proc { pid: u32, read: ProcRead },
    /// Read `/proc/<pid>/cgroup` of each: one request (one wake-up) for
    /// all the processes first sampled since the last drain.
    Cgroups(Vec<u32>),
}

/// Which `/proc` files of a process to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcRead {
    /// Name, threads' names and maps ([`proc_read::read_process`]).
    Process,
    /// `cgroup`.
    Cgroup,
}

/// The answer to a `/proc` read.
pub enum ProcAnswer {
    /// `None`: the process is gone.
    Process(Option<Box<ProcessFiles>>),
    /// `None`: the process is gone.
    Cgroup(Option<String>),
    /// The read took longer than [`STALL`], or the process's files were
    /// not read because an earlier read of them is still stuck.
    Stalled(ProcRead),
}

/// A load or read that stalled, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stalled {
    /// A binary on this device (or known by path only).
    Binary(String),
    /// The `/proc` files of this process.
    Proc(u32),
}

/// What a loader thread sends back.
pub enum Outcome {
    Loaded {
        key: BinaryKey,
        /// Boxed: a parsed binary is large, and outcomes queue up.
        opened: Box<Opened>,
    },
    /// The binaries of a [`Loader::check`] whose file changed.
    Changed(Vec<(BinaryKey, Arc<Binary>)>),
    Proc {
        pid: u32,
        answer: ProcAnswer,
    },
}

/// What one loader thread is doing, for the stall watch.
#[derive(Default)]
struct ThreadState {
    /// Milliseconds since the loader started when the current file
    /// operation began, plus one; 0 while idle.
    busy_since: AtomicU64,
    /// Device of the current file, `major << 32 | minor`, plus one; 0 when
    /// unknown (a file known by path only).
    device: AtomicU64,
    stuck: AtomicBool,
    /// The request being served, so that a stall can be answered for it.
    current: Mutex<Option<Current>>,
}

#[derive(Clone)]
enum Current {
    Load { key: BinaryKey, path: Arc<str> },
    Check,
    Proc { pid: u32, read: ProcRead },
}

impl ThreadState {
    fn begin(&self, shared: &Shared, device: Option<u64>) {
        self.device
            .store(device.map_or(0, |d| d + 1), Ordering::Release);
        self.busy_since
            .store(elapsed_ms(shared) + 1, Ordering::Release);
    }

    /// The file operation ended; if it had been taken for stuck, its
    /// device answers again.
    fn end(&self, shared: &Shared) {
        self.busy_since.store(0, Ordering::Release);
        if self.stuck.swap(false, Ordering::AcqRel) {
            if let Some(Current::Proc { pid, .. }) = *lock(&self.current) {
                lock(&shared.stuck_pids).remove(&pid);
            } else if let Some(d) = self.device.load(Ordering::Acquire).checked_sub(1) {
                lock(&shared.unresponsive).remove(&d);
            }
        }
    }
}

struct Shared {
    queue: Mutex<Receiver<Request>>,
    outcomes: Sender<Outcome>,
    budget: Arc<DescriptorBudget>,
    /// Devices whose file system did not answer within [`STALL`].
    unresponsive: Mutex<HashSet<u64>>,
    /// Processes whose `/proc` files did not answer within [`STALL`].
    stuck_pids: Mutex<HashSet<u32>>,
    /// Where `/proc` is.
    proc_root: String,
    /// Requests refused because their device is in `unresponsive`.
    refused: AtomicU64,
    epoch: Instant,
}

fn device_of(key: &BinaryKey) -> Option<u64> {
    match key {
        BinaryKey::Inode { major, minor, .. } => {
            Some((u64::from(*major) << 32) | u64::from(*minor))
        }
        BinaryKey::Path(_) => None,
    }
}

/// Counters of the loader, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoaderStats {
    /// Requests refused because the queue was full.
    pub queue_full: u64,
    /// Loads that took longer than [`STALL`].
    pub stalls: u64,
    /// Requests refused because their file system is unresponsive.
    pub refused_unresponsive: u64,
}

pub struct Loader {
    requests: SyncSender<Request>,
    outcomes: Receiver<Outcome>,
    shared: Arc<Shared>,
    threads: Vec<Arc<ThreadState>>,
    check_pending: bool,
    /// Loads that stalled since the last [`Loader::take_stalled`].
    stalled: Vec<Stalled>,
    /// Failures made up for stalled loads, handed out by the next poll.
    stalled_outcomes: Vec<Outcome>,
    pub stats: LoaderStats,
}

impl Loader {
    /// Starts one loader thread; more start only to replace stuck ones.
    /// `/proc` reads go to `proc_root`.
    pub fn start(budget: Arc<DescriptorBudget>, proc_root: &str) -> std::io::Result<Loader> {
        let (requests, queue) = mpsc::sync_channel(QUEUE);
        let (outcomes_tx, outcomes) = mpsc::channel();
        let shared = Arc::new(Shared {
            queue: Mutex::new(queue),
            outcomes: outcomes_tx,
            budget,
            unresponsive: Mutex::new(HashSet::new()),
            stuck_pids: Mutex::new(HashSet::new()),
            proc_root: proc_root.to_string(),
            refused: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let mut loader = Loader {
            requests,
            outcomes,
            shared,
            threads: Vec::new(),
            check_pending: false,
            stalled: Vec::new(),
            stalled_outcomes: Vec::new(),
            stats: LoaderStats::default(),
        };
        loader.spawn()?;
        Ok(loader)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let state = Arc::new(ThreadState::default());
        let shared = self.shared.clone();
        let mine = state.clone();
        std::thread::Builder::new()
            .name("hearth-loader".into())
            .spawn(move || run(&shared, &mine))?;
        self.threads.push(state);
        Ok(())
    }

    /// Asks for `key` to be opened from `candidates`. False if the queue is
    /// full (ask again later).
    pub fn load(&mut self, key: BinaryKey, path: Arc<str>, candidates: Vec<String>) -> bool {
        self.send(Request::Load {
            key,
            path,
            candidates,
        })
    }

    /// Queues `request`; false (counted) if the queue is full.
    fn send(&mut self, request: Request) -> bool {
        match self.requests.try_send(request) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.queue_full += 1;
                false
            }
        }
    }

    /// Asks for `/proc` files of `pid` to be read. False if the queue is
    /// full (ask again later).
    pub fn read_proc(&mut self, pid: u32, read: ProcRead) -> bool {
        self.send(Request::Proc { pid, read })
    }

    /// Asks for the cgroup files of `pids` to be read, in one request.
    /// False if the queue is full (ask again later).
    pub fn read_cgroups(&mut self, pids: Vec<u32>) -> bool {
        self.send(Request::Cgroups(pids))
    }

    /// Asks which of `binaries` changed since they were parsed, unless the
    /// previous question is still unanswered.
    pub fn check(&mut self, binaries: Vec<(BinaryKey, Arc<Binary>)>) {
        if self.check_pending || binaries.is_empty() {
            return;
        }
        if self.requests.try_send(Request::Check(binaries)).is_ok() {
            self.check_pending = true;
        }
    }

    /// Outcomes that arrived since the last call; also notices loads that
    /// stalled, marks their file system unresponsive and replaces their
    /// thread. Never blocks.
    pub fn poll(&mut self) -> Vec<Outcome> {
        self.watch_stalls();
        let mut out = std::mem::take(&mut self.stalled_outcomes);
        while let Ok(o) = self.outcomes.try_recv() {
            if matches!(o, Outcome::Changed(_)) {
                self.check_pending = false;
            }
            out.push(o);
        }
        out
    }

    /// Waits up to `timeout` for the next outcome (start-up only: the
    /// sampling thread never waits here).
    pub fn wait(&mut self, timeout: Duration) -> Vec<Outcome> {
        let mut out = self.poll();
        if out.is_empty() {
            if let Ok(o) = self.outcomes.recv_timeout(timeout) {
                if matches!(o, Outcome::Changed(_)) {
                    self.check_pending = false;
                }
                out.push(o);
                out.extend(self.poll());
            }
        }
        out
    }

    /// Loads and reads that stalled since the last call, for the log.
    pub fn take_stalled(&mut self) -> Vec<Stalled> {
        std::mem::take(&mut self.stalled)
    }

    /// Loader threads, stuck ones included.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Whether a change check is under way (a new one would be dropped).
    pub fn check_pending(&self) -> bool {
        self.check_pending
    }

    /// Whether `key`'s file system is marked unresponsive: its files are
    /// not to be opened, by the symbolizer either.
    pub fn is_unresponsive(&self, key: &BinaryKey) -> bool {
        device_of(key).is_some_and(|d| lock(&self.shared.unresponsive).contains(&d))
    }

    fn watch_stalls(&mut self) {
        let now = elapsed_ms(&self.shared);
        for t in &self.threads {
            let since = t.busy_since.load(Ordering::Acquire);
            let busy_for = now.saturating_sub(since.saturating_sub(1));
            if since == 0 || busy_for < STALL.as_millis() as u64 {
                continue;
            }
            if !t.stuck.swap(true, Ordering::AcqRel) {
                self.stats.stalls += 1;
                let device = t.device.load(Ordering::Acquire).checked_sub(1);
                let on = || match device {
                    Some(d) => format!("device {}:{}", d >> 32, d & 0xffff_ffff),
                    None => "a file known by path only".to_string(),
                };
                // Answer the stalled request now: its key must not stay
                // pending (and counted) for as long as the thread is stuck.
                match lock(&t.current).clone() {
                    Some(Current::Proc { pid, read }) => {
                        lock(&self.shared.stuck_pids).insert(pid);
                        self.stalled.push(Stalled::Proc(pid));
                        self.stalled_outcomes.push(Outcome::Proc {
                            pid,
                            answer: ProcAnswer::Stalled(read),
                        });
                    }
                    Some(Current::Load { key, path }) => {
                        if let Some(d) = device {
                            lock(&self.shared.unresponsive).insert(d);
                        }
                        self.stalled
                            .push(Stalled::Binary(format!("{} ({path})", on())));
                        self.stalled_outcomes.push(Outcome::Loaded {
                            key,
                            opened: Box::new(Opened {
                                result: Err(LoadError::Unresponsive {
                                    path: path.to_string(),
                                }),
                                inode_mismatch: false,
                            }),
                        });
                    }
                    Some(Current::Check) => {
                        if let Some(d) = device {
                            lock(&self.shared.unresponsive).insert(d);
                        }
                        self.stalled.push(Stalled::Binary(on()));
                        self.check_pending = false;
                    }
                    None => self.stalled.push(Stalled::Binary(on())),
                }
            }
        }
        // Threads that came back are no longer stuck; count the live ones.
        let live = self
            .threads
            .iter()
            .filter(|t| !t.stuck.load(Ordering::Acquire))
            .count();
        if live == 0 && self.threads.len() < MAX_THREADS {
            let _ = self.spawn();
        }
        self.stats.refused_unresponsive = self.shared.refused.load(Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn elapsed_ms(shared: &Shared) -> u64 {
    u64::try_from(shared.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One `/proc` read, watched for stalls; a process whose earlier read is
/// still stuck is not read.
fn read_proc(shared: &Shared, state: &ThreadState, pid: u32, read: ProcRead) -> ProcAnswer {
    if lock(&shared.stuck_pids).contains(&pid) {
        return ProcAnswer::Stalled(read);
    }
    *lock(&state.current) = Some(Current::Proc { pid, read });
    state.begin(shared, None);
    let root = &shared.proc_root;
    let answer = match read {
        ProcRead::Process => ProcAnswer::Process(proc_read::read_process(root, pid).map(Box::new)),
        ProcRead::Cgroup => ProcAnswer::Cgroup(proc_read::read_cgroup(root, pid)),
    };
    state.end(shared);
    *lock(&state.current) = None;
    answer
}

fn run(shared: &Shared, state: &ThreadState) {
    loop {
        // Only the receive holds the lock, never a load: a stuck thread
        // does not keep the others from taking requests.
        let request = match lock(&shared.queue).recv() {
            Ok(r) => r,
            Err(_) => return,
        };
        let outcome = match request {
            Request::Load {
                key,
                path,
                candidates,
            } => {
                let device = device_of(&key);
                if device.is_some_and(|d| lock(&shared.unresponsive).contains(&d)) {
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                    Outcome::Loaded {
                        key,
                        opened: Box::new(Opened {
                            result: Err(LoadError::Unresponsive {
                                path: path.to_string(),
                            }),
                            inode_mismatch: false,
                        }),
                    }
                } else {
                    *lock(&state.current) = Some(Current::Load {
                        key: key.clone(),
                        path: path.clone(),
                    });
                    state.begin(shared, device);
                    let opened =
                        Box::new(open_candidates(&key, &path, &candidates, &shared.budget));
                    state.end(shared);
                    Outcome::Loaded { key, opened }
                }
            }
            Request::Check(binaries) => {
                *lock(&state.current) = Some(Current::Check);
                let mut changed = Vec::new();
                for (key, b) in binaries {
                    let device = device_of(&key);
                    if device.is_some_and(|d| lock(&shared.unresponsive).contains(&d)) {
                        continue;
                    }
                    state.begin(shared, device);
                    let moved = b.changed();
                    state.end(shared);
                    if moved {
                        changed.push((key, b));
                    }
                }
                Outcome::Changed(changed)
            }
            Request::Proc { pid, read } => Outcome::Proc {
                pid,
                answer: read_proc(shared, state, pid, read),
            },
            Request::Cgroups(pids) => {
                // One outcome each, sent as read.
                for pid in pids {
                    let answer = read_proc(shared, state, pid, ProcRead::Cgroup);
                    if shared.outcomes.send(Outcome::Proc { pid, answer }).is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        *lock(&state.current) = None;
        if shared.outcomes.send(outcome).is_err() {
            return;
        }
    }
}
