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

/// Anonymous memory the agent (a debug build here) may use in these cases:
/// what it allocates itself, which a hostile process must not inflate.
const ANON_BUDGET_KIB: u64 = 192 * 1024;
/// All resident memory, file pages of the binaries it reads included.
const RSS_BUDGET_KIB: u64 = 384 * 1024;

/// Resident anonymous memory of a process, in KiB.
fn rss_anon_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

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
        let port = free_port();
        let mut cmd = Command::new(hearth());
        cmd.args([
            "agent",
            "-F",
            "199",
            "--interval",
            "1",
            "--ui-listen",
            "off",
        ])
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        without_agent_env(&mut cmd);
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

/// What a hostile case saw of the agent while it ran.
#[derive(Debug)]
struct Watch {
    rate_before: f64,
    rate_during: f64,
    slowest_health: Duration,
    failed_health: u32,
    peak_rss_kib: u64,
    peak_anon_kib: u64,
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
    loop {
        let (code, took) = get(agent.port, "/healthz", Duration::from_secs(2));
        slowest_health = slowest_health.max(took);
        if code != Some(200) {
            failed_health += 1;
        }
        peak_rss_kib = peak_rss_kib.max(rss_kib(agent.pid()));
        peak_anon_kib = peak_anon_kib.max(rss_anon_kib(agent.pid()));
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
