//! Opening per-CPU sampling events and draining their ring buffers.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use perf_event::events::Software;
use perf_event::{Builder, Clock, Counter, SampleFlag, Sampler};

use crate::format::SampleFormat;

/// What to sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every process on every online CPU (needs root, `CAP_PERFMON`, or
    /// `kernel.perf_event_paranoid` <= 0).
    AllProcesses,
    /// These processes with all their threads, and every thread or child
    /// process they create after the events are opened.
    Processes(Vec<u32>),
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub target: Target,
    pub frequency_hz: u64,
    /// Bytes of user stack copied with each sample (rounded down to 8).
    pub user_stack_bytes: u32,
    /// Ring buffer data size per CPU, in bytes (rounded up to a power of two).
    pub ring_bytes_per_cpu: usize,
}

impl SessionConfig {
    pub fn new(target: Target, frequency_hz: u64) -> Self {
        SessionConfig {
            target,
            frequency_hz,
            user_stack_bytes: 16 * 1024,
            ring_bytes_per_cpu: 1 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "not permitted to sample {what} (kernel.perf_event_paranoid = {paranoid}); \
         run as root, grant CAP_PERFMON (and CAP_SYS_PTRACE for other users' processes), \
         or lower kernel.perf_event_paranoid ({needed})"
    )]
    PermissionDenied {
        what: &'static str,
        paranoid: String,
        needed: &'static str,
    },
    #[error("process {0} does not exist (or exited before sampling started)")]
    NoSuchProcess(u32),
    #[error("this kernel does not support perf events for CPU-clock sampling: {0}")]
    Unsupported(io::Error),
    #[error(
        "could not map a {bytes}-byte ring buffer for CPU {cpu}: {source}; \
         lower the ring buffer size or raise kernel.perf_event_mlock_kb"
    )]
    RingBuffer {
        cpu: usize,
        bytes: usize,
        source: io::Error,
    },
    #[error("cannot read the online CPU list: {0}")]
    CpuList(String),
    #[error("perf_event_open failed for CPU {cpu}: {source}")]
    Other { cpu: usize, source: io::Error },
}

/// A record copied out of a ring buffer, as stored in capture files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub cpu: u32,
    pub record_type: u32,
    pub misc: u16,
    pub body: Vec<u8>,
}

/// How much one [`Session::drain`] takes from a ring: at most the ring's
/// own size. A reader slower than the kernel would otherwise never leave
/// the drain (the kernel refills the rings as fast as they are read) and
/// would hold ever more records in memory. With this bound a drain holds
/// no more than the rings themselves (what was in each when it started,
/// give or take), so records of all CPUs are still put in time order as a
/// whole; the caller checks for a stop request between and during drains,
/// and what the reader cannot keep up with is dropped by the kernel and
/// counted (PERF_RECORD_LOST).
/// What one [`Session::drain`] took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    pub records: usize,
    pub bytes: usize,
    /// Some ring still held records when its share was used up.
    pub more: bool,
}

/// Open sampling events: one ring buffer per online CPU.
pub struct Session {
    rings: Vec<(u32, Sampler)>,
    /// Events whose output is redirected into a ring of the same CPU.
    redirected: Vec<Counter>,
    format: SampleFormat,
    kernel_stacks: bool,
    scratch: Vec<u8>,
    /// Bytes one drain takes from one ring at most.
    drain_bytes_per_ring: usize,
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let lo: usize = lo
            .trim()
            .parse()
            .map_err(|_| format!("bad CPU number in {part:?}"))?;
        let hi: usize = hi
            .trim()
            .parse()
            .map_err(|_| format!("bad CPU number in {part:?}"))?;
        if hi < lo || hi - lo > 65_536 {
            return Err(format!("bad CPU range {part:?}"));
        }
        cpus.extend(lo..=hi);
    }
    if cpus.is_empty() {
        return Err("empty CPU list".into());
    }
    Ok(cpus)
}

pub fn online_cpus() -> Result<Vec<usize>, OpenError> {
    let text = fs::read_to_string("/sys/devices/system/cpu/online")
        .map_err(|e| OpenError::CpuList(e.to_string()))?;
    parse_cpu_list(&text).map_err(OpenError::CpuList)
}

fn paranoid_level() -> String {
    fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Thread ids of a process, from `/proc/<pid>/task`.
fn threads_of(pid: u32) -> Vec<u32> {
    match fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

impl Session {
    /// Opens disabled events; call [`Session::enable`] to start sampling.
    pub fn open(config: &SessionConfig) -> Result<Session, OpenError> {
        let cpus = online_cpus()?;
        // Kernel stacks need more privilege than user-only sampling of one's
        // own processes; when sampling chosen processes, fall back to
        // user-only rather than fail.
        match Self::open_with(config, &cpus, true) {
            Err(OpenError::PermissionDenied { .. })
                if matches!(config.target, Target::Processes(_)) =>
            {
                Self::open_with(config, &cpus, false)
            }
            other => other,
        }
    }

    fn builder(config: &SessionConfig, format: &SampleFormat, kernel: bool) -> Builder<'static> {
        let mut b = Builder::new(Software::CPU_CLOCK);
        b.sample_frequency(config.frequency_hz.max(1))
            .sample(SampleFlag::from_bits_retain(format.sample_type))
            .sample_regs_user(format.regs_user_mask)
            .sample_stack_user(config.user_stack_bytes & !7)
            // User stacks are unwound from the copied stack with DWARF, so
            // the kernel's frame-pointer walk of user space is not needed.
            .exclude_callchain_user(true)
            .exclude_kernel(!kernel)
            .exclude_hv(true)
            .mmap(true)
            .mmap2(true)
            .comm(true)
            .comm_exec(true)
            .task(true)
            .sample_id_all(format.sample_id_all)
            .clockid(Clock::MONOTONIC)
            // Readers sleep until a ring is an eighth full (see `wait_or`):
            // few wake-ups, and seven eighths of the ring left for the time
            // the reader needs to be scheduled on a loaded machine.
            .wakeup_watermark((config.ring_bytes_per_cpu / 8).max(4096))
            .enabled(false);
        b
    }

    fn open_with(
        config: &SessionConfig,
        cpus: &[usize],
        kernel: bool,
    ) -> Result<Session, OpenError> {
        let format = SampleFormat::hearth_default();
        let mut session = Session {
            rings: Vec::with_capacity(cpus.len()),
            redirected: Vec::new(),
            format,
            kernel_stacks: kernel,
            scratch: Vec::new(),
            // The data size the mapping rounds the ring up to.
            drain_bytes_per_ring: config.ring_bytes_per_cpu.next_power_of_two(),
        };
        match &config.target {
            Target::AllProcesses => {
                for &cpu in cpus {
                    let mut b = Self::builder(config, &format, kernel);
                    b.one_cpu(cpu).any_pid();
                    let counter = b
                        .build()
                        .map_err(|e| classify(e, cpu, None, "all processes"))?;
                    session.add_ring(config, cpu, counter)?;
                }
            }
            Target::Processes(pids) => {
                let mut opened = std::collections::HashSet::new();
                for &pid in pids {
                    // Threads started while we open events are not covered
                    // by inheritance yet: list again until nothing is new.
                    loop {
                        let mut tids = threads_of(pid);
                        if tids.is_empty() && opened.is_empty() {
                            return Err(OpenError::NoSuchProcess(pid));
                        }
                        tids.retain(|t| !opened.contains(t));
                        if tids.is_empty() {
                            break;
                        }
                        for tid in tids {
                            for &cpu in cpus {
                                let mut b = Self::builder(config, &format, kernel);
                                b.one_cpu(cpu).observe_pid(tid as i32).inherit(true);
                                match b.build() {
                                    Ok(counter) => session.add_task_event(config, cpu, counter)?,
                                    // The thread exited meanwhile.
                                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => break,
                                    Err(e) => {
                                        return Err(classify(e, cpu, Some(tid), "these processes"))
                                    }
                                }
                            }
                            opened.insert(tid);
                        }
                    }
                }
            }
        }
        Ok(session)
    }

    fn add_ring(
        &mut self,
        config: &SessionConfig,
        cpu: usize,
        counter: Counter,
    ) -> Result<(), OpenError> {
        let sampler = counter
            .sampled(config.ring_bytes_per_cpu)
            .map_err(|source| OpenError::RingBuffer {
                cpu,
                bytes: config.ring_bytes_per_cpu,
                source,
            })?;
        self.rings.push((cpu as u32, sampler));
        Ok(())
    }

    /// The first event of a CPU gets the ring; later ones write into it.
    fn add_task_event(
        &mut self,
        config: &SessionConfig,
        cpu: usize,
        counter: Counter,
    ) -> Result<(), OpenError> {
        let Some((_, ring)) = self.rings.iter().find(|(c, _)| *c as usize == cpu) else {
            return self.add_ring(config, cpu, counter);
        };
        // SAFETY: both are valid perf event fds owned by this session.
        let rc = unsafe {
            perf_event_open_sys::ioctls::SET_OUTPUT(counter.as_raw_fd(), ring.as_raw_fd())
        };
        if rc != 0 {
            return Err(OpenError::Other {
                cpu,
                source: io::Error::last_os_error(),
            });
        }
        self.redirected.push(counter);
        Ok(())
    }

    pub fn format(&self) -> SampleFormat {
        self.format
    }

    /// Whether kernel stacks are sampled (false after a fallback to
    /// user-only sampling for lack of privilege).
    pub fn kernel_stacks(&self) -> bool {
        self.kernel_stacks
    }

    pub fn cpu_count(&self) -> usize {
        self.rings.len()
    }

    pub fn enable(&mut self) -> io::Result<()> {
        for (_, ring) in &mut self.rings {
            ring.enable()?;
        }
        for counter in &mut self.redirected {
            counter.enable()?;
        }
        Ok(())
    }

    pub fn disable(&mut self) -> io::Result<()> {
        for (_, ring) in &mut self.rings {
            ring.disable()?;
        }
        for counter in &mut self.redirected {
            counter.disable()?;
        }
        Ok(())
    }

    /// Waits until a ring buffer passes its wake-up mark, or `timeout`.
    pub fn wait(&self, timeout: Duration) {
        self.wait_or(timeout, &[]);
    }

    /// Waits until a ring buffer passes its wake-up mark (an eighth of
    /// its size), one of `also` is readable (a pidfd of a process whose
    /// exit should end the wait, for instance), or `timeout`.
    ///
    /// Waking on the mark rather than at short fixed intervals keeps the
    /// number of wake-ups low: at 99 Hz with 16 KiB stack copies a busy
    /// CPU's 1 MiB ring reaches it about every 80 ms.
    pub fn wait_or(&self, timeout: Duration, also: &[BorrowedFd<'_>]) {
        let mut fds: Vec<libc::pollfd> = self
            .rings
            .iter()
            .map(|(_, r)| r.as_raw_fd())
            .chain(also.iter().map(|fd| fd.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // Round up, so that a wait for what remains of a duration does not
        // return just before it and spin.
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        // An error (EINTR) only means we drain a little early.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    }

    /// Hands the records in the ring buffers to `f` as `(cpu, record type,
    /// misc, body)`, and frees the space they used: from each ring, what it
    /// holds up to the ring's size (and at least one record). `more` in the
    /// result says whether a ring's share was used up, so that records may
    /// be left.
    pub fn drain(&mut self, mut f: impl FnMut(u32, u32, u16, &[u8])) -> Drained {
        let mut out = Drained::default();
        for (cpu, ring) in &mut self.rings {
            let mut taken = 0usize;
            while taken < self.drain_bytes_per_ring {
                let Some(record) = ring.next_record() else {
                    break;
                };
                let (ty, misc) = (record.ty(), record.misc());
                let len = match record.data() {
                    [one] => {
                        f(*cpu, ty, misc, one);
                        one.len()
                    }
                    parts => {
                        // The record wraps around the end of the ring.
                        self.scratch.clear();
                        for p in parts {
                            self.scratch.extend_from_slice(p);
                        }
                        f(*cpu, ty, misc, &self.scratch);
                        self.scratch.len()
                    }
                };
                // The 8-byte header counts too.
                taken += len + 8;
                out.records += 1;
            }
            out.bytes += taken;
            // A ring may be exactly empty at its share; looking would
            // consume a record, so assume more.
            out.more |= taken >= self.drain_bytes_per_ring;
        }
        out
    }
}

fn classify(e: io::Error, cpu: usize, tid: Option<u32>, what: &'static str) -> OpenError {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => OpenError::PermissionDenied {
            what,
            paranoid: paranoid_level(),
            needed: if what == "all processes" {
                "to 0 or below for whole-machine sampling"
            } else {
                "to 2 or below for your own processes, 1 or below with kernel stacks"
            },
        },
        Some(libc::ESRCH) => OpenError::NoSuchProcess(tid.unwrap_or(0)),
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
            OpenError::Unsupported(e)
        }
        _ => OpenError::Other { cpu, source: e },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a-b").is_err());
        assert!(parse_cpu_list("0-99999999").is_err());
    }
}
