//! A real `hearth agent`, run under a limit of
//! 1,024 descriptors, against hostile clients of both its ports: idle
//! connections past that limit, 1,000 slow partial headers each heading
//! for 380 KB, and 64 parallel heavy page queries. Throughout, /healthz
//! answers within 1 s, windows keep being reported with none dropped, and
//! the agent's memory stays under its budget; after the clients go, it
//! comes back within a minute to a control agent's (started beside it, with
//! no clients), plus a margin.
//!
//! Memory is judged by its anonymous part (`RssAnon`): that is what
//! clients can make the agent allocate. The file-backed rest is the
//! binaries the agent maps to symbolize this machine's processes, which
//! varies with whatever else runs here (other builds, their test binaries
//! of hundreds of MB), not with the clients; total RSS is printed, and only
//! held under the DaemonSet's 512 MiB limit.
//!
//! The queries run over a full 15-minute history: the agents first gather
//! 15 minutes of two-second windows of this machine with 500 extra
//! processes running varied stacks (`many`), so the heaviest queries the
//! page has (the last 900 s, everything) are as heavy as they get.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Descriptors the agent may have open (RLIMIT_NOFILE).
const AGENT_FD_LIMIT: u64 = 1024;
/// Idle connections opened to each port: together well past the limit.
const IDLE_PER_PORT: usize = 1100;
/// Slow partial request heads, split between the ports.
const SLOW_HEADS: usize = 1000;
/// What each slow head would send if not cut off.
const SLOW_HEAD_BYTES: usize = 380 << 10;
const SLOW_CHUNK: usize = 4 << 10;
const PARALLEL_QUERIES: usize = 64;
/// The agent's memory budget (`--memory-mib`, its default): its anonymous
/// memory may not pass it at any time.
const BUDGET_MIB: u64 = hearth::agent::memory::DEFAULT_MEMORY_MIB;
const ANON_BUDGET_KIB: u64 = BUDGET_MIB << 10;
/// How much history the queries run over.
const HISTORY: Duration = Duration::from_secs(15 * 60);
/// The agents' reporting interval and frequency: 450 windows of 500-odd
/// processes in the history, which a debug build on a busy machine still
/// reports in time.
const INTERVAL_S: u64 = 2;
const FREQUENCY: &str = "49";
/// Processes running beside the agents while the history fills.
const PROCESSES: usize = 500;
/// Nor its whole RSS the DaemonSet's memory limit.
const RSS_LIMIT_KIB: u64 = 512 << 10;
/// After the clients go, anonymous memory must be back within this of a
/// control agent's (both grow their history and symbol caches meanwhile).
const ANON_MARGIN_KIB: u64 = 32 << 10;

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.0 GET; status, lower-cased head and body.
fn get(port: u16, path: &str, timeout: Duration) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut c = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)?;
    c.set_read_timeout(Some(timeout))?;
    c.set_write_timeout(Some(timeout))?;
    write!(c, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of head"))?;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    Ok((status, head, raw[end + 4..].to_vec()))
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(key, _)| *key == name || key.starts_with(&format!("{name}{{")))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// RSS and the page history's estimated size now, in MiB, for the log.
fn memory_now(pid: u32, metrics_port: u16) -> String {
    let history = get(metrics_port, "/metrics", Duration::from_secs(5))
        .map(|(_, _, b)| metric(&String::from_utf8_lossy(&b), "hearth_ui_history_bytes"))
        .unwrap_or(0);
    format!(
        "RSS {} MiB (anon {} MiB), history {} MiB",
        status_kib(pid, "VmRSS:") >> 10,
        status_kib(pid, "RssAnon:") >> 10,
        history >> 20
    )
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// Starts `hearth agent` with both servers on loopback ports, under the
/// descriptor limit, its log in `log_path`.
fn start_agent(metrics_port: u16, ui_port: u16, log_path: &std::path::Path) -> Agent {
    let log = std::fs::File::create(log_path).expect("agent log file");
    let mut cmd = Command::new(hearth());
    cmd.args([
        "agent",
        "--interval",
        &INTERVAL_S.to_string(),
        "-F",
        FREQUENCY,
    ])
    .args(["--memory-mib", &BUDGET_MIB.to_string()])
    .args(["--ui-history", &format!("{}s", HISTORY.as_secs())])
    .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
    .args(["--ui-listen", &format!("127.0.0.1:{ui_port}")])
    .stdout(Stdio::null())
    .stderr(log);
    without_agent_env(&mut cmd);
    // SAFETY: only setrlimit(2) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: AGENT_FD_LIMIT,
                rlim_max: AGENT_FD_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Agent(cmd.spawn().expect("start the agent"))
}

/// Panics with the agent's exit status and log if it has exited.
fn assert_alive(agent: &mut Agent, log_path: &std::path::Path) {
    if let Ok(Some(status)) = agent.0.try_wait() {
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        panic!("the agent exited ({status}); its log:\n{log}");
    }
}

/// What the watcher saw while the clients did their worst.
#[derive(Default, Debug)]
struct Watch {
    health_checks: u64,
    health_failures: Vec<String>,
    max_health: Duration,
    peak_rss_kib: u64,
    peak_anon_kib: u64,
    peak_fds: u64,
    /// (seconds since start, windows reported, windows dropped)
    windows: Vec<(f64, u64, u64)>,
}

/// Checks /healthz, RSS and descriptors every 200 ms, and the windows
/// counters every second, until `stop`.
fn watch(pid: u32, metrics_port: u16, stop: Arc<AtomicBool>, out: Arc<Mutex<Watch>>) {
    let started = Instant::now();
    let mut last_scrape = None::<Instant>;
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let health = get(metrics_port, "/healthz", Duration::from_secs(1));
        let took = t.elapsed();
        let rss = status_kib(pid, "VmRSS:");
        let anon = status_kib(pid, "RssAnon:");
        let fds = open_fds(pid);
        let scrape = if last_scrape.is_none_or(|s| s.elapsed() >= Duration::from_secs(1)) {
            last_scrape = Some(Instant::now());
            get(metrics_port, "/metrics", Duration::from_secs(5)).ok()
        } else {
            None
        };
        {
            let mut w = out.lock().unwrap();
            w.health_checks += 1;
            w.max_health = w.max_health.max(took);
            match health {
                Ok((200, _, _)) if took <= Duration::from_secs(1) => {}
                Ok((status, _, _)) => w
                    .health_failures
                    .push(format!("status {status} after {took:?}")),
                Err(e) => w.health_failures.push(format!("{e} after {took:?}")),
            }
            w.peak_rss_kib = w.peak_rss_kib.max(rss);
            w.peak_anon_kib = w.peak_anon_kib.max(anon);
            w.peak_fds = w.peak_fds.max(fds);
            if let Some((200, _, body)) = scrape {
                let text = String::from_utf8_lossy(&body);
                w.windows.push((
                    started.elapsed().as_secs_f64(),
                    metric(&text, "hearth_windows_total"),
                    metric(&text, "hearth_windows_dropped_total"),
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(200).saturating_sub(t.elapsed()));
    }
}

/// Opens `n` connections to `port` that never send a byte.
fn idle_connections(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect()
}

/// Sends each of `SLOW_HEADS` request heads a chunk per round, 100 ms
/// apart, until the server cuts it off or the 380 KB are out. Returns how
/// many were cut off and the most bytes any one got out.
fn slow_heads(ports: [u16; 2]) -> (usize, usize) {
    let mut conns: Vec<(TcpStream, usize)> = (0..SLOW_HEADS)
        .filter_map(|i| {
            let c = TcpStream::connect(("127.0.0.1", ports[i % 2])).ok()?;
            c.set_nonblocking(true).ok()?;
            Some((c, 0))
        })
        .collect();
    let opened = conns.len();
    let start = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Pad: ", ports[0]);
    let chunk = vec![b'a'; SLOW_CHUNK];
    let mut cut = 0;
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !conns.is_empty() && Instant::now() < deadline {
        let mut i = 0;
        while i < conns.len() {
            let (c, sent) = &mut conns[i];
            let bytes: &[u8] = if *sent == 0 { start.as_bytes() } else { &chunk };
            match c.write(bytes) {
                Ok(n) => {
                    *sent += n;
                    most = most.max(*sent);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {
                    cut += 1;
                    conns.swap_remove(i);
                    continue;
                }
            }
            if conns[i].1 >= SLOW_HEAD_BYTES {
                conns.swap_remove(i);
                continue;
            }
            i += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "slow heads: {opened} opened, {cut} cut off by the agent, {} still open at the end, \
         at most {most} bytes sent on one",
        conns.len()
    );
    (cut, most)
}

#[test]
fn hostile_clients_leave_the_agent_healthy_sampling_and_small() {
    let test = "hostile_clients_leave_the_agent_healthy_sampling_and_small";
    if !require_root_perf(test) {
        return;
    }
    let dir = TempDir::new("hostile-clients");
    // Many processes with varied stacks, for as long as the test runs.
    let _many = KillOnDrop(
        Command::new(workload("many"))
            .args([&PROCESSES.to_string(), "1500", "200", "100"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start many"),
    );
    let log_path = dir.path("agent.log");
    let (metrics_port, ui_port) = (free_port(), free_port());
    let mut agent = start_agent(metrics_port, ui_port, &log_path);
    // The same agent with no clients beside it: this busy machine grows
    // both agents' symbol caches and history alike, and the difference is
    // what the clients cost.
    let control_log = dir.path("control.log");
    let (control_port, control_ui) = (free_port(), free_port());
    let mut control = start_agent(control_port, control_ui, &control_log);
    let pid = agent.0.id();
    let control_pid = control.0.id();

    // Ready, with a few windows of history, and one query answered.
    let started = Instant::now();
    loop {
        let windows = |port| {
            get(port, "/metrics", Duration::from_secs(2))
                .map(|(_, _, b)| metric(&String::from_utf8_lossy(&b), "hearth_windows_total"))
                .unwrap_or(0)
        };
        if windows(metrics_port) >= 5 && windows(control_port) >= 5 {
            break;
        }
        assert_alive(&mut agent, &log_path);
        assert_alive(&mut control, &control_log);
        assert!(
            // Its first windows symbolize the whole machine: slow in a
            // debug build on a busy machine.
            started.elapsed() < Duration::from_secs(90),
            "the agent reported no 5 windows in 90 s:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The full history: 15 minutes of windows held by both agents.
    let span_ms = |port| -> u64 {
        let Ok((200, _, body)) = get(port, "/api/overview", Duration::from_secs(30)) else {
            return 0;
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        v["newest_ms"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(v["oldest_ms"].as_u64().unwrap_or(u64::MAX))
    };
    let full = HISTORY.as_millis() as u64 - 5_000;
    loop {
        let (a, c) = (span_ms(ui_port), span_ms(control_ui));
        if a >= full && c >= full {
            println!(
                "history full after {:?}: {a} ms and {c} ms held",
                started.elapsed()
            );
            break;
        }
        assert_alive(&mut agent, &log_path);
        assert_alive(&mut control, &control_log);
        assert!(
            started.elapsed() < HISTORY + Duration::from_secs(180),
            "the history holds only {a} ms and {c} ms after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    for port in [ui_port, control_ui] {
        let (status, _, _) =
            get(port, "/api/flame?last=900", Duration::from_secs(30)).expect("a first query");
        assert_eq!(status, 200);
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = status_kib(pid, "VmRSS:");
    let anon_before = status_kib(pid, "RssAnon:");
    let control_before = status_kib(control_pid, "RssAnon:");
    let fds_before = open_fds(pid);
    let dropped_before = get(metrics_port, "/metrics", Duration::from_secs(5))
        .map(|(_, _, b)| metric(&String::from_utf8_lossy(&b), "hearth_windows_dropped_total"))
        .unwrap_or(u64::MAX);
    println!("windows dropped while the history filled: {dropped_before}");
    println!(
        "agent ready in {:?}: {}",
        started.elapsed(),
        memory_now(pid, metrics_port)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Watch::default()));
    let watcher = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || watch(pid, metrics_port, stop, seen))
    };

    // 1. Idle connections past the descriptor limit, to both ports.
    let t = Instant::now();
    let mut idle = idle_connections(metrics_port, IDLE_PER_PORT);
    idle.extend(idle_connections(ui_port, IDLE_PER_PORT));
    let idle_opened = idle.len();
    std::thread::sleep(Duration::from_secs(3));
    let fds_idle = open_fds(pid);
    drop(idle);
    println!(
        "idle: {idle_opened} connections opened in {:?}; agent descriptors {fds_before} before, \
         {fds_idle} with them open (limit {AGENT_FD_LIMIT})",
        t.elapsed()
    );
    assert!(idle_opened > AGENT_FD_LIMIT as usize);
    assert_alive(&mut agent, &log_path);
    println!(
        "after the idle connections: {}",
        memory_now(pid, metrics_port)
    );

    // 2. Slow partial heads.
    let (cut, most) = slow_heads([metrics_port, ui_port]);
    assert!(
        most < SLOW_HEAD_BYTES,
        "a slow head got all {most} bytes out: nothing cut it off"
    );
    assert!(cut > 0);
    assert_alive(&mut agent, &log_path);
    println!("after the slow heads: {}", memory_now(pid, metrics_port));

    // 3. Parallel heavy queries, of every kind the page has.
    let paths = [
        "/api/flame?last=900",
        "/api/top?last=900&limit=5000",
        "/api/diff?last=900&base_last=900",
        "/api/pprof?last=900",
    ];
    let t = Instant::now();
    let answers: Vec<std::io::Result<(u16, String, Vec<u8>)>> = (0..PARALLEL_QUERIES)
        .map(|i| {
            let path = paths[i % paths.len()];
            std::thread::spawn(move || get(ui_port, path, Duration::from_secs(60)))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("query thread"))
        .collect();
    let ok = answers
        .iter()
        .filter(|a| matches!(a, Ok((200, _, _))))
        .count();
    let busy = answers
        .iter()
        .filter(|a| matches!(a, Ok((503, head, _)) if head.contains("retry-after:")))
        .count();
    println!(
        "queries: {PARALLEL_QUERIES} in {:?}: {ok} answered, {busy} got 503 with Retry-After",
        t.elapsed()
    );
    assert_eq!(
        ok + busy,
        PARALLEL_QUERIES,
        "answers other than 200 or 503 + Retry-After: {:?}",
        answers
            .iter()
            .filter(|a| !matches!(a, Ok((200 | 503, _, _))))
            .map(|a| a.as_ref().map(|(s, _, _)| *s).map_err(|e| e.to_string()))
            .collect::<Vec<_>>()
    );
    assert!(ok > 0);
    assert_alive(&mut agent, &log_path);
    println!("after the queries: {}", memory_now(pid, metrics_port));

    // 4. The clients are gone: memory must come back within a minute, to
    //    where the control agent's is, plus the margin.
    let excess = |anon: u64, control: u64| anon as i64 - control as i64;
    let excess_before = excess(anon_before, control_before);
    let margin = ANON_MARGIN_KIB as i64;
    let t = Instant::now();
    let (anon_after, control_after) = loop {
        let anon = status_kib(pid, "RssAnon:");
        let control = status_kib(control_pid, "RssAnon:");
        if excess(anon, control) <= excess_before + margin || t.elapsed() > Duration::from_secs(60)
        {
            break (anon, control);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_alive(&mut control, &control_log);
    let rss_after = status_kib(pid, "VmRSS:");
    let returned_in = t.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher thread");

    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let metrics = match get(metrics_port, "/metrics", Duration::from_secs(5)) {
        Ok((_, _, b)) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => panic!(
            "no final scrape ({e}); the agent's state: {:?}; its log:\n{}",
            agent.0.try_wait(),
            log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
        ),
    };
    let w = seen.lock().unwrap();
    println!(
        "RssAnon: before {} MiB, peak {} MiB, after {} MiB ({returned_in:?} after the clients \
         went; budget {} MiB, margin {} MiB)",
        anon_before >> 10,
        w.peak_anon_kib >> 10,
        anon_after >> 10,
        ANON_BUDGET_KIB >> 10,
        ANON_MARGIN_KIB >> 10,
    );
    println!(
        "control agent (no clients) RssAnon: before {} MiB, after {} MiB",
        control_before >> 10,
        control_after >> 10
    );
    println!(
        "VmRSS: before {} MiB, peak {} MiB, after {} MiB; agent descriptors peak {}",
        rss_before >> 10,
        w.peak_rss_kib >> 10,
        rss_after >> 10,
        w.peak_fds
    );
    println!(
        "/healthz: {} checks, slowest {:?}, {} failed",
        w.health_checks,
        w.max_health,
        w.health_failures.len()
    );
    for name in [
        "hearth_http_connections_total",
        "hearth_http_connections_evicted_total",
        "hearth_http_connections_refused_total",
        "hearth_http_accept_errors_total",
        "hearth_http_header_timeouts_total",
        "hearth_http_headers_too_large_total",
        "hearth_http_write_timeouts_total",
        "hearth_ui_queries_refused_total",
        "hearth_windows_total",
        "hearth_windows_dropped_total",
    ] {
        println!("{name} {}", metric(&metrics, name));
    }
    let cap_lines = log.lines().filter(|l| l.contains("connection cap")).count();
    println!("log lines about the connection cap: {cap_lines}");

    assert!(
        w.health_failures.is_empty(),
        "/healthz failed or took over 1 s: {:?}",
        w.health_failures
    );
    assert!(
        w.peak_anon_kib < ANON_BUDGET_KIB,
        "anonymous memory passed its budget"
    );
    assert!(
        w.peak_rss_kib < RSS_LIMIT_KIB,
        "RSS passed the DaemonSet's limit"
    );
    assert!(
        excess(anon_after, control_after) <= excess_before + margin,
        "a minute after the clients went, anonymous memory stayed at {anon_after} KiB \
         against the control's {control_after} KiB (before: {anon_before} against \
         {control_before} KiB)"
    );
    assert!(w.peak_fds < AGENT_FD_LIMIT);
    // Windows kept coming, none dropped: never three intervals without one.
    assert!(w.windows.len() >= 5, "{:?}", w.windows);
    let (mut last_t, mut last_n) = (w.windows[0].0, w.windows[0].1);
    let mut longest_without = 0f64;
    for &(t, n, _) in &w.windows {
        assert!(n >= last_n);
        if n > last_n {
            (last_t, last_n) = (t, n);
        }
        longest_without = longest_without.max(t - last_t);
    }
    println!("longest time without a new window: {longest_without:.1} s");
    assert!(longest_without < 3.0 * INTERVAL_S as f64, "{:?}", w.windows);
    assert_eq!(
        metric(&metrics, "hearth_windows_dropped_total"),
        dropped_before,
        "windows were dropped while the clients ran"
    );
    assert!(metric(&metrics, "hearth_http_connections_evicted_total") > 0);
    assert!(metric(&metrics, "hearth_http_headers_too_large_total") > 0);
    // Rate limited: a first line per server, summaries at most once a minute.
    assert!(cap_lines <= 6, "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
