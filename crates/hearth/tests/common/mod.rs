//! Helpers shared by the integration tests: locating the binary and the
//! workloads, skipping (or failing, in CI) where perf events or root are
//! missing, and reading folded output.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Set (to anything but "0") to turn every SKIP into a failure. CI sets it.
pub const REQUIRE_ENV: &str = "HEARTH_REQUIRE_PRIVILEGED";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

pub fn hearth() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hearth"))
}

/// A workload built by `scripts/setup-tests.sh`.
pub fn workload(name: &str) -> PathBuf {
    let p = repo_root().join("tests/workloads/build").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/setup-tests.sh` first",
        p.display()
    );
    p
}

/// Prints a SKIP line and returns false, or panics when CI requires
/// privileged tests (`HEARTH_REQUIRE_PRIVILEGED`).
pub fn skip_or_fail(test: &str, why: &str) -> bool {
    let required = std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
    if required {
        panic!("{test}: required capability missing ({why}) and {REQUIRE_ENV} is set");
    }
    eprintln!("SKIP {test}: {why}");
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether this process may sample its own threads with perf events.
fn perf_events_usable() -> Result<(), String> {
    let config = hearth_sampler::SessionConfig::new(
        hearth_sampler::Target::Processes(vec![std::process::id()]),
        10,
    );
    hearth_sampler::Session::open(&config)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// True if perf events work here; otherwise SKIP (or fail under CI).
pub fn require_perf(test: &str) -> bool {
    match perf_events_usable() {
        Ok(()) => true,
        Err(e) => skip_or_fail(test, &format!("perf events unavailable: {e}")),
    }
}

/// True if the cgroup v2 hierarchy of this machine is mounted where the
/// tests expect it; otherwise SKIP (or fail).
pub fn require_cgroup_v2(test: &str) -> bool {
    Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
        || skip_or_fail(test, "no cgroup v2 hierarchy at /sys/fs/cgroup/unified")
}

/// True if running as root with perf events; otherwise SKIP (or fail).
pub fn require_root_perf(test: &str) -> bool {
    if !is_root() {
        return skip_or_fail(test, "needs root");
    }
    require_perf(test)
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("hearth-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Clears every variable that could point an agent at a collector or a
/// cluster (`OTEL_*`, kubeconfig, in-cluster discovery, node name).
pub fn without_agent_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_")
            || k == "KUBECONFIG"
            || k == "KUBERNETES_SERVICE_HOST"
            || k == "KUBERNETES_NODE_NAME"
        {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Spawns `cmd`, retrying for up to a second while its executable is
/// "busy" (ETXTBSY). Tests copy workloads under names of their own, and a
/// process forked by another test thread while a copy was still open for
/// writing holds that file descriptor until it execs: starting the copy
/// then fails although the copy is complete.
pub fn spawn_copied(cmd: &mut Command) -> std::io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Starts a workload in the background for `secs` seconds.
pub fn spawn_workload(path: &Path, secs: &str) -> std::process::Child {
    let child =
        spawn_copied(Command::new(path).arg(secs).stdout(Stdio::null())).expect("start workload");
    // Let it reach its main loop.
    std::thread::sleep(Duration::from_millis(200));
    child
}

/// A child process that is killed and reaped when this goes out of scope,
/// a failing assertion included, so that no busy helper outlives its test.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run command");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "a panic:\n{stderr}");
    out
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One folded line: frames root first (process name first) and a count.
#[derive(Debug, Clone)]
pub struct Stack {
    pub frames: Vec<String>,
    pub count: u64,
}

pub fn read_folded(path: &Path) -> Vec<Stack> {
    let text = std::fs::read_to_string(path).expect("read folded output");
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (stack, count) = l.rsplit_once(' ').expect("folded line has a count");
            Stack {
                frames: stack.split(';').map(str::to_string).collect(),
                count: count.parse().expect("folded count"),
            }
        })
        .collect()
}

/// Parses the workloads' `truth leaf_seventy=0.7000 leaf_thirty=0.3000` line.
pub fn truth(stdout: &str) -> (f64, f64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("truth "))
        .unwrap_or_else(|| panic!("no truth line in {stdout:?}"));
    let value = |key: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    (value("leaf_seventy="), value("leaf_thirty="))
}

/// Creates a cgroup path, moves a process into it, and undoes both on drop.
pub struct CgroupPlacement {
    root: PathBuf,
    created: Vec<PathBuf>,
    child: Child,
}

impl CgroupPlacement {
    pub fn new(root: &str, relative: &str, workload: &Path) -> CgroupPlacement {
        let root = PathBuf::from(root);
        let mut created = Vec::new();
        let mut dir = root.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                created.push(dir.clone());
            }
        }
        let child = spawn_copied(Command::new(workload).arg("8").stdout(Stdio::null()))
            .expect("start workload");
        let placement = CgroupPlacement {
            root,
            created,
            child,
        };
        std::fs::write(dir.join("cgroup.procs"), placement.child.id().to_string())
            .unwrap_or_else(|e| panic!("move into {}: {e}", dir.display()));
        placement
    }
}

impl Drop for CgroupPlacement {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for dir in self.created.iter().rev() {
            // The process is gone; removal can race its exit briefly.
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = &self.root;
    }
}

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A metric's value from the agent's /metrics endpoint.
pub fn metric(port: u16, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    conn.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A `kB` figure of `/proc/<pid>/status` (`key` with its colon, such as
/// `"RssAnon:"`); 0 if the process is gone.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// How a child ended, with what the kernel accounted to it.
pub struct Finished {
    /// The raw wait status (see `libc::WIFEXITED` and friends).
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    /// Each line of stderr with when it arrived, since the spawn.
    pub stderr_lines: Vec<(Duration, String)>,
    /// Peak resident set size of the child (`ru_maxrss`), in KiB.
    pub max_rss_kib: u64,
    pub wall: Duration,
    /// Set when the child had to be killed at the time limit.
    pub timed_out: bool,
}

impl Finished {
    pub fn exit_code(&self) -> Option<i32> {
        libc::WIFEXITED(self.status).then(|| libc::WEXITSTATUS(self.status))
    }
}

/// A child reaped with `wait4`, for its resource use: killed (and reaped)
/// on drop if still running, so that no pid is ever signalled after reuse.
pub struct Reaped {
    child: Option<Child>,
    pub started: std::time::Instant,
    out: Option<std::thread::JoinHandle<Vec<(Duration, String)>>>,
    err: Option<std::thread::JoinHandle<Vec<(Duration, String)>>>,
}

impl Reaped {
    /// Spawns `cmd` with stdout and stderr captured.
    pub fn spawn(cmd: &mut Command) -> Reaped {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let started = std::time::Instant::now();
        let reader = |r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut lines = Vec::new();
                let mut r = std::io::BufReader::new(r);
                let mut line = Vec::new();
                while std::io::BufRead::read_until(&mut r, b'\n', &mut line).unwrap_or(0) > 0 {
                    lines.push((
                        started.elapsed(),
                        String::from_utf8_lossy(&line).into_owned(),
                    ));
                    line.clear();
                }
                lines
            })
        };
        let out = child.stdout.take().map(|o| reader(Box::new(o)));
        let err = child.stderr.take().map(|e| reader(Box::new(e)));
        Reaped {
            child: Some(child),
            started,
            out,
            err,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends `signal` to the child, which has not been reaped yet.
    pub fn signal(&self, signal: i32) {
        if self.child.is_some() {
            // SAFETY: kill with a pid this process has not reaped yet.
            unsafe { libc::kill(self.pid(), signal) };
        }
    }

    /// Waits for the child for at most `limit`; kills it at the limit.
    pub fn wait(mut self, limit: Duration) -> Finished {
        let pid = self.pid();
        let mut status = 0;
        // SAFETY: rusage is plain data, filled in by wait4.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let mut timed_out = false;
        loop {
            // SAFETY: valid pointers to a status and a rusage.
            let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if rc == pid {
                break;
            }
            assert!(rc == 0, "wait4: {}", std::io::Error::last_os_error());
            if self.started.elapsed() >= limit && !timed_out {
                timed_out = true;
                // SAFETY: the child is not reaped yet.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let wall = self.started.elapsed();
        // Reaped: the Child must neither be killed nor waited for again.
        self.child.take();
        let join = |h: Option<std::thread::JoinHandle<Vec<(Duration, String)>>>| {
            h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
        };
        let concat = |lines: &[(Duration, String)]| -> String {
            lines.iter().map(|(_, l)| l.as_str()).collect()
        };
        let stdout = concat(&join(self.out.take()));
        let stderr_lines = join(self.err.take());
        let stderr = concat(&stderr_lines);
        assert!(!stderr.contains("panicked"), "a panic:\n{stderr}");
        Finished {
            status,
            stdout,
            stderr,
            stderr_lines,
            max_rss_kib: usage.ru_maxrss as u64,
            wall,
            timed_out,
        }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A tmpfs mounted for a test (root only), unmounted on drop.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (e.g. `size=64k`) on a new directory.
    pub fn mount(dir: PathBuf, options: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "hearth-test"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs -o {options} failed");
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
