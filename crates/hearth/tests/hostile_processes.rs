//! Processes that do to Hearth what a hostile or careless process on the
//! node can do, each against a real `hearth agent` and a real
//! `hearth record` running side by side. Every case asks the same of both:
//! no crash, `/healthz` answers within a second throughout, sampling goes
//! on at the rate it had before, and memory stays within the budget.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The memory budget the agent runs with here (its default), and so the
/// anonymous memory it may use: what it allocates itself, which a hostile
/// process must not inflate.
const BUDGET_MIB: u64 = hearth::agent::memory::DEFAULT_MEMORY_MIB;
const ANON_BUDGET_KIB: u64 = BUDGET_MIB * 1024;
/// All resident memory, file pages of the binaries it reads included (5,000
/// memfd files are mapped pages too).
const RSS_BUDGET_KIB: u64 = 384 * 1024;

/// `GET path` on loopback; the status line's code and how long it took.
fn get(port: u16, path: &str, timeout: Duration) -> (Option<u16>, Duration) {
    let started = Instant::now();
    let code = (|| {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        conn.set_read_timeout(Some(timeout)).ok()?;
        conn.set_write_timeout(Some(timeout)).ok()?;
        write!(conn, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut head = [0u8; 12];
        conn.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    })();
    (code, started.elapsed())
}

/// A real agent sampling the whole machine, its metrics on a port of its own.
struct Agent {
    child: KillOnDrop,
    port: u16,
}

impl Agent {
    fn start() -> Agent {
        Self::start_with_nofile(None)
    }

    /// Starts the agent, under a limit on open descriptors if given.
    fn start_with_nofile(nofile: Option<u64>) -> Agent {
        let port = free_port();
        let mut cmd = Command::new(hearth());
        cmd.args(["agent", "-F", "199", "--interval", "1"])
            .args(["--memory-mib", &BUDGET_MIB.to_string()])
            .args(["--ui-listen", "off"])
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        without_agent_env(&mut cmd);
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe; it runs in the child
            // between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = KillOnDrop(cmd.spawn().expect("start agent"));
        let agent = Agent { child, port };
        let started = Instant::now();
        while get(port, "/readyz", Duration::from_secs(1)).0 != Some(200) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the agent did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        agent
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Descriptors the agent has open now.
    fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn metric(&self, name: &str) -> f64 {
        metric(self.port, name).unwrap_or_else(|| panic!("no {name} on /metrics"))
    }

    /// Samples per second over `period`.
    fn sample_rate(&self, period: Duration) -> f64 {
        let before = self.metric("hearth_samples_total");
        std::thread::sleep(period);
        (self.metric("hearth_samples_total") - before) / period.as_secs_f64()
    }

    /// Stops the agent with SIGTERM and returns its log.
    fn stop(mut self) -> String {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let mut log = String::new();
        if let Some(mut e) = self.child.0.stderr.take() {
            let _ = e.read_to_string(&mut log);
        }
        let status = self.child.0.wait().expect("wait for the agent");
        assert!(status.success(), "agent exit {status:?}:\n{log}");
        assert!(!log.contains("panicked"), "{log}");
        log
    }
}

/// One case at a time: each measures the machine-wide sample rate, which
/// another case's agent, recording and load beside it would skew.
static ONE_CASE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_CASE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a hostile case saw of the agent while it ran.
#[derive(Debug)]
struct Watch {
    rate_before: f64,
    rate_during: f64,
    slowest_health: Duration,
    failed_health: u32,
    peak_rss_kib: u64,
    peak_anon_kib: u64,
    peak_descriptors: usize,
}

/// Measures the agent's sample rate, starts `hostile` and runs it to its
/// end while polling the agent's `/healthz` every
/// 200 ms, with a steady CPU load beside it so that sample rates compare.
fn watch_agent(agent: &Agent, hostile: impl FnOnce() -> Child) -> (Watch, std::process::Output) {
    let rate_before = agent.sample_rate(Duration::from_secs(3));
    let mut hostile = hostile();
    let samples_start = agent.metric("hearth_samples_total");
    let started = Instant::now();
    let mut slowest_health = Duration::ZERO;
    let mut failed_health = 0;
    let mut peak_rss_kib = 0;
    let mut peak_anon_kib = 0;
    let mut peak_descriptors = 0;
    loop {
        let (code, took) = get(agent.port, "/healthz", Duration::from_secs(2));
        slowest_health = slowest_health.max(took);
        if code != Some(200) {
            failed_health += 1;
        }
        peak_rss_kib = peak_rss_kib.max(rss_kib(agent.pid()));
        peak_anon_kib = peak_anon_kib.max(status_kib(agent.pid(), "RssAnon:"));
        peak_descriptors = peak_descriptors.max(agent.open_descriptors());
        if hostile.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the hostile process did not finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rate_during =
        (agent.metric("hearth_samples_total") - samples_start) / started.elapsed().as_secs_f64();
    let out = hostile.wait_with_output().expect("hostile output");
    (
        Watch {
            rate_before,
            rate_during,
            slowest_health,
            failed_health,
            peak_rss_kib,
            peak_anon_kib,
            peak_descriptors,
        },
        out,
    )
}

/// Two CPU-bound processes for the length of a case: with every CPU busy
/// before and during it, samples per second compare between the two.
fn steady_load() -> Vec<KillOnDrop> {
    (0..2)
        .map(|_| {
            KillOnDrop(
                Command::new("yes")
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("start yes"),
            )
        })
        .collect()
}

fn start_record(duration_s: u32, out: &Path) -> Child {
    Command::new(hearth())
        .args(["record", "-F", "199", "--duration", &duration_s.to_string()])
        .arg("-o")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hearth record")
}

fn check_agent(case: &str, w: &Watch) {
    eprintln!("{case}: {w:?}");
    assert_eq!(w.failed_health, 0, "{case}: /healthz failed");
    assert!(
        w.slowest_health < Duration::from_secs(1),
        "{case}: /healthz took {:?}",
        w.slowest_health
    );
    assert!(
        w.rate_during >= 0.8 * w.rate_before,
        "{case}: sampling slowed from {:.0}/s to {:.0}/s",
        w.rate_before,
        w.rate_during
    );
    assert!(
        w.peak_anon_kib < ANON_BUDGET_KIB,
        "{case}: agent anonymous RSS {} KiB over the budget",
        w.peak_anon_kib
    );
    assert!(
        w.peak_rss_kib < RSS_BUDGET_KIB,
        "{case}: agent RSS {} KiB over the budget",
        w.peak_rss_kib
    );
}

/// A process truncates (and rewrites) the shared library it runs in, 20
/// rounds, during and after its use. Hearth keeps the library mapped, so
/// without care its next read of a vanished page is a SIGBUS that kills it.
#[test]
fn library_truncated_or_rewritten_under_its_mapping_kills_nothing() {
    let case = "library_truncated_or_rewritten_under_its_mapping_kills_nothing";
    if !require_root_perf(case) {
        return;
    }
    let _one = exclusive();
    let dir = TempDir::new("cut");
    let _load = steady_load();
    let agent = Agent::start();
    // Each round takes about 1.2 s; the recording outlasts them all.
    let rounds = 20;
    let record_out = dir.path("machine.folded");
    let mut record = None;
    let (w, out) = watch_agent(&agent, || {
        record = Some(start_record(26, &record_out));
        Command::new(workload("cutter"))
            .arg(workload("libcut.so"))
            .arg(rounds.to_string())
            .arg(&dir.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cutter")
    });
    let cutter_log = text(&out.stdout);
    assert!(
        cutter_log.contains(&format!("rounds {rounds} ")),
        "cutter: {cutter_log}{}",
        text(&out.stderr)
    );
    check_agent(case, &w);
    // Without these the case proved nothing: the agent did read pages that
    // had vanished, and did notice the changed files.
    let zero_pages = agent.metric("hearth_mapped_file_zero_pages_total");
    let remapped = agent.metric("hearth_remapped_files_total");
    eprintln!("{case}: zero pages {zero_pages}, remapped {remapped}");
    assert!(zero_pages >= 1.0, "no read of a cut file happened");
    assert!(remapped >= 1.0, "no changed file was parsed again");
    let log = agent.stop();
    assert!(log.contains("files changed under the mappings"), "{log}");

    let record = record.expect("record started");
    let out = record.wait_with_output().expect("record output");
    let log = text(&out.stderr);
    assert!(out.status.success(), "record exit {:?}:\n{log}", out.status);
    let stacks = read_folded(&record_out);
    assert!(
        stacks
            .iter()
            .any(|s| s.frames.iter().any(|f| f == "cutter_callback")),
        "the recording has no stack of the cutter"
    );
}

/// One process maps 5,000 distinct executable memory files while the
/// agent may open only 1,024 descriptors: a profiler that keeps every
/// mapped file open runs out, and its own ports go dead with it.
#[test]
fn five_thousand_memfd_mappings_do_not_exhaust_descriptors() {
    let case = "five_thousand_memfd_mappings_do_not_exhaust_descriptors";
    if !require_root_perf(case) {
        return;
    }
    let _one = exclusive();
    let _load = steady_load();
    let agent = Agent::start_with_nofile(Some(1024));
    let dir = TempDir::new("memfds");
    let record_out = dir.path("machine.folded");
    let mut record = None;
    let (w, out) = watch_agent(&agent, || {
        record = Some(start_record(12, &record_out));
        Command::new(workload("memfds"))
            .arg(workload("libcut.so"))
            .args(["5000", "8"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start memfds")
    });
    assert!(
        text(&out.stdout).contains("mapped 5000"),
        "memfds: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    check_agent(case, &w);
    let binaries = agent.metric("hearth_binaries");
    let kept = agent.metric("hearth_binary_descriptors");
    eprintln!("{case}: {binaries} binaries held, {kept} descriptors kept");
    assert!(
        w.peak_descriptors < 512,
        "{} descriptors open under a limit of 1024",
        w.peak_descriptors
    );
    assert!(binaries >= 1000.0, "the mappings were not parsed");
    assert!(kept <= 128.0, "{kept} descriptors kept under a 1024 limit");
    agent.stop();

    let record = record.expect("record started");
    let out = record.wait_with_output().expect("record output");
    assert!(
        out.status.success(),
        "record exit {:?}:\n{}",
        out.status,
        text(&out.stderr)
    );
    let stacks = read_folded(&record_out);
    assert!(
        stacks
            .iter()
            .any(|s| s.frames.iter().any(|f| f == "memfds_spin")),
        "the recording has no stack of the memfds process"
    );
}

/// Unmounts a FUSE file system and ends its server, also on failure.
struct Mount {
    server: KillOnDrop,
    point: std::path::PathBuf,
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Killing the server aborts the requests that wait for it.
        let _ = self.server.0.kill();
        let _ = Command::new("umount").arg("-l").arg(&self.point).status();
    }
}

/// A program runs from a FUSE mount whose server stops answering: every
/// open of its file after the exec hangs, as with a network mount whose
/// server went away. Sampling must not wait for it.
#[test]
fn binary_on_a_hung_fuse_mount_does_not_stall_sampling() {
    let case = "binary_on_a_hung_fuse_mount_does_not_stall_sampling";
    if !require_root_perf(case) {
        return;
    }
    if !Path::new("/dev/fuse").exists() {
        skip_or_fail(case, "no /dev/fuse");
        return;
    }
    let _one = exclusive();
    let dir = TempDir::new("fuse");
    let point = dir.path("mnt");
    std::fs::create_dir_all(&point).expect("mount point");
    let server = Command::new(workload("hangfs"))
        .arg(workload("split_c"))
        .arg(&point)
        .arg("-f")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hangfs");
    let mount = Mount {
        server: KillOnDrop(server),
        point: point.clone(),
    };
    let app = point.join("app");
    let started = Instant::now();
    while std::fs::metadata(&app).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the FUSE file system did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _load = steady_load();
    let agent = Agent::start();
    let record_out = dir.path("machine.folded");
    let mut record = None;
    let (w, out) = watch_agent(&agent, || {
        record = Some(start_record(10, &record_out));
        Command::new(&app)
            .arg("8")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the program on the FUSE mount")
    });
    assert!(out.status.success(), "app: {}", text(&out.stderr));
    check_agent(case, &w);
    let stalls = agent.metric("hearth_binary_load_stalls_total");
    eprintln!("{case}: load stalls {stalls}");
    assert!(stalls >= 1.0, "no load of the hung file happened");
    // The recording ends on time: it writes its output although one of its
    // threads still waits for the file system.
    let record_end = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&record_out).map_or(true, |m| m.len() == 0) {
        assert!(
            Instant::now() < record_end,
            "the recording did not end on time"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A thread blocked in a FUSE request the server took cannot be woken
    // (the kernel waits uninterruptibly once a request was read), so no
    // process, Hearth included, can finish exiting until the server goes.
    drop(mount);
    let log = agent.stop();
    assert!(log.contains("took over"), "{log}");
    let record = record.expect("record started");
    let out = record.wait_with_output().expect("record output");
    assert!(
        out.status.success(),
        "record exit {:?}:\n{}",
        out.status,
        text(&out.stderr)
    );
    // The program's frames are counted (in the hung binary, so unnamed).
    let stacks = read_folded(&record_out);
    let app_samples: u64 = stacks
        .iter()
        .filter(|s| s.frames.first().is_some_and(|f| f == "app"))
        .map(|s| s.count)
        .sum();
    assert!(app_samples > 100, "{app_samples} samples of the program");
}

/// Runs `program` as a hostile case: the agent and a recording beside it,
/// the usual checks, and the recording must show `frame`.
fn case_with_recording(case: &str, program: impl FnOnce() -> Child, record_s: u32, frame: &str) {
    let _one = exclusive();
    let _load = steady_load();
    let agent = Agent::start();
    let dir = TempDir::new("case");
    let record_out = dir.path("machine.folded");
    let mut record = None;
    let (w, out) = watch_agent(&agent, || {
        record = Some(start_record(record_s, &record_out));
        program()
    });
    assert!(
        out.status.success(),
        "{case}: the program failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    eprintln!("{case}: program said {}", text(&out.stdout).trim());
    check_agent(case, &w);
    agent.stop();
    let record = record.expect("record started");
    let out = record.wait_with_output().expect("record output");
    assert!(
        out.status.success(),
        "{case}: record exit {:?}:\n{}",
        out.status,
        text(&out.stderr)
    );
    let stacks = read_folded(&record_out);
    let hits: u64 = stacks
        .iter()
        .filter(|s| s.frames.iter().any(|f| f == frame))
        .map(|s| s.count)
        .sum();
    eprintln!("{case}: {hits} recorded samples hold {frame}");
    assert!(hits > 0, "{case}: the recording has no {frame} frame");
}

/// One process with 5,000 threads, every one of them waking and spinning.
#[test]
fn five_thousand_threads_in_one_process() {
    let case = "five_thousand_threads_in_one_process";
    if !require_root_perf(case) {
        return;
    }
    case_with_recording(
        case,
        || {
            Command::new(workload("threads"))
                .args(["5000", "8"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start threads")
        },
        10,
        "threads_spin",
    );
}

/// Thousands of execs a second: each brings mmap, comm, fork and exit
/// records and new processes to look up.
#[test]
fn exec_storm() {
    let case = "exec_storm";
    if !require_root_perf(case) {
        return;
    }
    case_with_recording(
        case,
        || {
            Command::new(workload("execstorm"))
                .arg("8")
                .arg(workload("shortlived"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start execstorm")
        },
        10,
        "short_leaf",
    );
}

/// A process in pid and mount namespaces of its own, running a binary that
/// exists only inside its mount namespace (a private tmpfs): reached only
/// through /proc/<pid>/map_files or /proc/<pid>/root, named all the same.
#[test]
fn process_in_its_own_pid_and_mount_namespace() {
    let case = "process_in_its_own_pid_and_mount_namespace";
    if !require_root_perf(case) {
        return;
    }
    if Command::new("unshare")
        .args(["--pid", "--mount", "--fork", "true"])
        .status()
        .map_or(true, |s| !s.success())
    {
        skip_or_fail(case, "unshare --pid --mount does not work here");
        return;
    }
    let split = workload("split_c");
    case_with_recording(
        case,
        || {
            // Inside: a tmpfs over /mnt that only this namespace sees,
            // a copy of the workload there, run as pid 1's child.
            let script = format!(
                "mount -t tmpfs none /mnt && cp '{}' /mnt/nsapp && exec /mnt/nsapp 8",
                split.display()
            );
            Command::new("unshare")
                .args(["--pid", "--mount", "--fork", "--propagation", "private"])
                .args(["sh", "-c", &script])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start unshare")
        },
        10,
        "leaf_seventy",
    );
}

/// A program whose path is not UTF-8 (a directory named with bytes that
/// are no text): its stacks must not be lost, and the name must not hide
/// the process's other mappings.
#[test]
fn binary_whose_path_is_not_utf8() {
    let case = "binary_whose_path_is_not_utf8";
    if !require_root_perf(case) {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new("odd-path");
    let odd_dir = dir
        .0
        .join(std::ffi::OsStr::from_bytes(b"odd\xff\xfe\x80name"));
    std::fs::create_dir_all(&odd_dir).expect("odd directory");
    let program = odd_dir.join("split_app");
    std::fs::copy(workload("split_c"), &program).expect("copy");
    assert!(program.to_str().is_none(), "the path must not be UTF-8");
    case_with_recording(
        case,
        || {
            Command::new(&program)
                .arg("8")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start the oddly named program")
        },
        10,
        "leaf_seventy",
    );
}
