//! The engine of `hearth record`: open the events, run the target, drain
//! and convert until a stop condition, then symbolize.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use hearth_k8s::attributes::AttributeConfig;
use hearth_k8s::watch::{BackgroundWatch, WatchConfig};
use hearth_proc::ProcessTable;
use hearth_profile::{GroupBy, Report};
use hearth_sampler::{Session, SessionConfig, Target};
use hearth_symbolize::{RecordingInfo, Symbolizer};

use crate::batch::{pump, Batch, FINAL_DRAIN};
use crate::capture::CaptureWriter;
use crate::converter::{Converter, ConverterStats, PidFilter};
use crate::enrich::{host_name, Enricher};

/// What to record.
#[derive(Debug, Clone)]
pub enum RecordTarget {
    /// The whole machine.
    System,
    /// Running processes, with their threads and future children.
    Pids(Vec<u32>),
    /// A command started by the recorder, with its children.
    Command(Vec<OsString>),
}

#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub target: RecordTarget,
    pub duration: Option<Duration>,
    pub frequency_hz: u64,
    pub user_stack_bytes: u32,
    pub ring_bytes_per_cpu: usize,
    /// Also write every raw record to this file.
    pub capture: Option<PathBuf>,
    pub group_by: GroupBy,
    /// Pod metadata from this cluster, when given.
    pub kubernetes: Option<KubernetesOptions>,
}

/// Where pod metadata comes from.
#[derive(Debug, Clone)]
pub struct KubernetesOptions {
    /// Explicit kubeconfig; else in-cluster credentials or `KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    pub node_name: String,
    pub attributes: Arc<AttributeConfig>,
    pub delete_grace: Duration,
}

/// What sampling gave, known as soon as it stops (before symbolizing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampled {
    pub samples: u64,
    pub processes_seen: u64,
    pub duration: Duration,
    pub frequency_hz: u64,
    /// Records of any kind the kernel dropped (its PERF_RECORD_LOST
    /// counts, which do not say how many of them were samples).
    pub lost_records: u64,
    /// Records taken from the rings but not processed, because the
    /// recording was stopped (or its final drain ran out of time) while
    /// the reader was behind.
    pub unprocessed_records: u64,
    /// Whether kernel stacks were sampled (false when privileges allowed
    /// only user-space sampling).
    pub kernel_stacks: bool,
}

pub struct Recording {
    pub report: Report,
    pub stats: ConverterStats,
    pub sampled: Sampled,
    pub child_status: Option<ExitStatus>,
}

/// A child held before `exec` until its events are open, so that not one
/// sample of it is missed.
///
/// `Command::spawn` returns only once the child has called `exec`, so the
/// spawn runs on a helper thread while the child, still a fork of us,
/// reports its pid through a pipe and waits on a second pipe (the gate).
struct GatedChild {
    pid: u32,
    gate: Option<File>,
    spawner: Option<std::thread::JoinHandle<std::io::Result<Child>>>,
    child: Option<Child>,
}

fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating a pipe");
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl GatedChild {
    fn spawn(argv: &[OsString]) -> Result<GatedChild> {
        let (program, args) = argv.split_first().context("no command given")?;
        let (pid_read, pid_write) = cloexec_pipe()?;
        let (gate_read, gate_write) = cloexec_pipe()?;
        let (pid_w, gate_r, gate_w) = (
            pid_write.as_raw_fd(),
            gate_read.as_raw_fd(),
            gate_write.as_raw_fd(),
        );
        let mut cmd = Command::new(program);
        cmd.args(args);
        // SAFETY: only async-signal-safe calls (getpid, write, close, read,
        // _exit) run in the forked child.
        unsafe {
            cmd.pre_exec(move || {
                libc::close(gate_w);
                let pid = libc::getpid().to_le_bytes();
                libc::write(pid_w, pid.as_ptr().cast(), pid.len());
                libc::close(pid_w);
                let mut byte = 0u8;
                // EOF instead of the go byte: the recorder gave up.
                if libc::read(gate_r, (&mut byte as *mut u8).cast(), 1) != 1 {
                    libc::_exit(127);
                }
                Ok(())
            });
        }
        let spawner = std::thread::Builder::new()
            .name("hearth-spawn".into())
            .spawn(move || {
                let result = cmd.spawn();
                // The child has its copies; ours must close so that reads
                // of the pid pipe see EOF if the fork itself failed.
                drop(pid_write);
                drop(gate_read);
                result
            })
            .context("starting the spawner thread")?;
        let mut pid_bytes = [0u8; 4];
        let mut pid_file = File::from(pid_read);
        if pid_file.read_exact(&mut pid_bytes).is_err() {
            let err = match spawner.join() {
                Ok(Err(e)) => anyhow::Error::new(e),
                _ => anyhow::anyhow!("the command did not start"),
            };
            return Err(err).with_context(|| format!("cannot start {}", program.to_string_lossy()));
        }
        Ok(GatedChild {
            pid: u32::from_le_bytes(pid_bytes),
            gate: Some(File::from(gate_write)),
            spawner: Some(spawner),
            child: None,
        })
    }

    /// Lets the command `exec`, and returns once it has (or failed to).
    fn release(&mut self, program: &OsString) -> Result<()> {
        if let Some(mut gate) = self.gate.take() {
            gate.write_all(&[1]).context("starting the command")?;
        }
        if let Some(spawner) = self.spawner.take() {
            let child = spawner
                .join()
                .map_err(|_| anyhow::anyhow!("the spawner thread panicked"))?
                .with_context(|| format!("cannot start {}", program.to_string_lossy()))?;
            self.child = Some(child);
        }
        Ok(())
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(c) => c.try_wait().context("waiting for the command"),
            None => Ok(None),
        }
    }
}

impl Drop for GatedChild {
    fn drop(&mut self) {
        // Closing the gate unreleased makes the child exit; reap it.
        self.gate.take();
        if let Some(spawner) = self.spawner.take() {
            if let Ok(Ok(mut child)) = spawner.join() {
                let _ = child.wait();
            }
        }
    }
}

/// A pidfd of `pid`, readable once the process has exited, where the
/// kernel has them (Linux 5.3 and later).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the fd was just created and is owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Longest wait between two drains of the ring buffers. Drains are
/// otherwise driven by the rings' wake-up mark, so this only matters on
/// quiet machines and for noticing a stop request (a signal) that did not
/// interrupt the wait.
const MAX_WAIT: Duration = Duration::from_millis(250);
/// Without a pidfd, a command's exit is noticed by polling it this often.
const CHILD_POLL: Duration = Duration::from_millis(20);
/// How often the processes of `--pid` are checked for being alive.
const PIDS_POLL: Duration = Duration::from_millis(200);

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// How long the end of a recording waits for binaries still being parsed.
const END_LOADS: std::time::Duration = std::time::Duration::from_secs(2);

/// Records until the target ends, `duration` passes, or `stop` is set.
/// `on_sampled` learns what was sampled the moment sampling stops, before
/// the (longer) symbolization.
pub fn record(
    opts: &RecordOptions,
    stop: Arc<AtomicBool>,
    on_sampled: impl FnOnce(&Sampled),
) -> Result<Recording> {
    if opts.frequency_hz == 0 {
        bail!("the sampling frequency must be at least 1 Hz");
    }
    let mut child = match &opts.target {
        RecordTarget::Command(argv) => Some(GatedChild::spawn(argv)?),
        _ => None,
    };
    let (target, filter) = match &opts.target {
        RecordTarget::System => (Target::AllProcesses, PidFilter::All),
        RecordTarget::Pids(pids) => {
            for &pid in pids {
                hearth_proc::access::check_readable("/proc", pid)?;
            }
            (
                Target::Processes(pids.clone()),
                PidFilter::Tree(pids.iter().copied().collect()),
            )
        }
        RecordTarget::Command(_) => {
            let pid = child.as_ref().map(|c| c.pid).unwrap_or(0);
            (
                Target::Processes(vec![pid]),
                PidFilter::Tree(HashSet::from([pid])),
            )
        }
    };
    let mut config = SessionConfig::new(target, opts.frequency_hz);
    config.user_stack_bytes = opts.user_stack_bytes;
    config.ring_bytes_per_cpu = opts.ring_bytes_per_cpu;
    let mut session = Session::open(&config)?;
    let format = session.format();

    let mut table = ProcessTable::new();
    // As the agent: binaries are opened on loader threads.
    // The command was forked already (it keeps the default weight); the
    // loader threads started next inherit this thread's.
    crate::sched::raise_current_thread();
    table.use_loader().context("starting the binary loader")?;
    match &opts.target {
        RecordTarget::System => table.scan_all(),
        RecordTarget::Pids(pids) => {
            for &pid in pids {
                table.scan_pid(pid);
            }
        }
        // The command is scanned when it is still the gated fork; its exec
        // then arrives as records.
        RecordTarget::Command(_) => {
            if let Some(c) = &child {
                table.scan_pid(c.pid);
            }
        }
    }
    table.settle(crate::agent::sampling::STARTUP_LOADS);
    let mut converter = Converter::new(format, table, filter);
    let mut capture = match &opts.capture {
        Some(path) => {
            let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
            Some(CaptureWriter::new(
                BufWriter::new(f),
                &format,
                opts.frequency_hz,
            )?)
        }
        None => None,
    };

    // Pod metadata arrives in the background; a cluster that cannot be
    // reached only costs the pod names, never the recording.
    let watch = match &opts.kubernetes {
        Some(k) => {
            let mut config = WatchConfig::new(k.node_name.clone(), k.attributes.clone());
            config.delete_grace = k.delete_grace;
            match BackgroundWatch::start(k.kubeconfig.as_deref(), config) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!("no pod metadata, samples keep their container ids: {e}");
                    None
                }
            }
        }
        None => None,
    };

    let start_unix_ns = now_unix_ns();
    let started = Instant::now();
    session.enable().context("enabling the sampling events")?;
    if let (Some(c), RecordTarget::Command(argv)) = (&mut child, &opts.target) {
        c.release(&argv[0])?;
    }
    let mut batch = Batch::new();
    let mut child_status = None;
    let mut last_alive_check = Instant::now();
    // The command's exit ends a wait at once, so waits can be long.
    let child_exit = child.as_ref().and_then(|c| pidfd_open(c.pid));
    let also: Vec<BorrowedFd<'_>> = child_exit.iter().map(|fd| fd.as_fd()).collect();
    let max_wait = match &opts.target {
        RecordTarget::Command(_) if child_exit.is_none() => CHILD_POLL,
        RecordTarget::Pids(_) => PIDS_POLL,
        _ => MAX_WAIT,
    };
    // Whether the last drain left records in the rings: then there is no
    // waiting (a full ring may wake no one again).
    let mut behind = false;
    let mut final_drain_until = None;
    let mut unprocessed_records = 0u64;
    loop {
        if !behind {
            let wait = match opts.duration {
                Some(d) => max_wait.min(d.saturating_sub(started.elapsed())),
                None => max_wait,
            };
            session.wait_or(wait, &also);
        }
        let finished = final_drain_until.is_some()
            || stop.load(Ordering::Relaxed)
            || opts.duration.is_some_and(|d| started.elapsed() >= d)
            || match &mut child {
                Some(c) => {
                    child_status = c.try_wait()?;
                    child_status.is_some()
                }
                None => false,
            }
            || match &opts.target {
                RecordTarget::Pids(pids) if last_alive_check.elapsed() >= PIDS_POLL => {
                    last_alive_check = Instant::now();
                    !pids.iter().any(|&p| pid_alive(p))
                }
                _ => false,
            };
        if finished && final_drain_until.is_none() {
            session.disable().context("disabling the sampling events")?;
            final_drain_until = Some(Instant::now() + FINAL_DRAIN);
        }
        let mut capture_error = None;
        // While sampling, a stop request interrupts the work at once; once
        // stopping, the final drain's deadline does.
        let interrupt = || match final_drain_until {
            Some(until) => Instant::now() >= until,
            None => stop.load(Ordering::Relaxed),
        };
        let pumped = pump(
            &mut session,
            &mut batch,
            &mut converter,
            |cpu, ty, misc, body| {
                if let Some(w) = &mut capture {
                    if let Err(e) = w.write(cpu, ty, misc, body) {
                        capture_error.get_or_insert(e);
                    }
                }
            },
            interrupt,
        );
        if let Some(e) = capture_error {
            return Err(e).context("writing the capture file");
        }
        unprocessed_records += pumped.unprocessed as u64;
        behind = pumped.drained.more || pumped.unprocessed > 0;
        if let Some(until) = final_drain_until {
            if !behind {
                break;
            }
            if Instant::now() >= until {
                tracing::warn!(
                    "stopped with records still in the ring buffers after {FINAL_DRAIN:?} of \
                     draining; they are not in the profile"
                );
                break;
            }
        }
    }
    let duration_ns = started.elapsed().as_nanos() as u64;
    if let Some(w) = capture {
        w.finish().context("writing the capture file")?;
    }
    // A command still running (stopped by duration or signal) is left
    // running, as its owner started it through us; wait only if it ended.
    if let (Some(c), None) = (&mut child, child_status) {
        child_status = c.try_wait().ok().flatten();
    }
    // Binaries still being parsed may still name this recording's frames.
    converter.table.settle(END_LOADS);
    let stats = converter.stats;
    let agg = converter.take_aggregate();
    let sampled = Sampled {
        samples: agg.total_samples,
        processes_seen: converter.table.stats.processes_seen,
        duration: Duration::from_nanos(duration_ns),
        frequency_hz: opts.frequency_hz,
        lost_records: agg.lost_samples,
        unprocessed_records,
        kernel_stacks: session.kernel_stacks(),
    };
    on_sampled(&sampled);
    let mut symbolizer = Symbolizer::new();
    // Each parsed file holds a descriptor: a share of the limit, as the
    // process table's binaries get.
    symbolizer.file_limit = hearth_proc::binary::descriptor_share();
    let mut report = symbolizer.report(
        &agg,
        RecordingInfo {
            start_unix_ns,
            duration_ns,
            frequency_hz: opts.frequency_hz,
        },
    );
    report.group_by = opts.group_by;
    let default_attributes = AttributeConfig::default();
    Enricher {
        store: watch.as_ref().map(|w| &w.store),
        config: opts
            .kubernetes
            .as_ref()
            .map(|k| k.attributes.as_ref())
            .unwrap_or(&default_attributes),
        node_name: opts.kubernetes.as_ref().map(|k| k.node_name.as_str()),
        host_name: host_name(),
        extra: &[],
    }
    .enrich(&mut report);
    Ok(Recording {
        report,
        stats,
        sampled,
        child_status,
    })
}
