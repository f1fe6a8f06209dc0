//! The agent end to end: real sampling of workloads in real container
//! cgroups, exported to a receiver built from the official protos (Python
//! `opentelemetry-proto` + `grpcio`), which decodes every request and
//! checks the protocol's invariants on its own.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn python() -> Option<PathBuf> {
    let p = repo_root().join(".venv-tests/bin/python");
    p.exists().then_some(p)
}

fn require_python(test: &str) -> Option<PathBuf> {
    let p = python();
    if p.is_none() {
        skip_or_fail(test, ".venv-tests is missing (run scripts/setup-tests.sh)");
    }
    p
}

struct Receiver {
    child: Child,
    /// The receiver exits when its stdin closes: held open for its life.
    _stdin: std::process::ChildStdin,
    out: PathBuf,
    grpc: u16,
    http: u16,
}

impl Receiver {
    fn start(python: &Path, dir: &TempDir) -> Receiver {
        Self::start_on(python, dir, free_port(), free_port(), "received.jsonl")
    }

    fn start_on(python: &Path, dir: &TempDir, grpc: u16, http: u16, out_name: &str) -> Receiver {
        let (out, ready, control) = (
            dir.path(out_name),
            dir.path(&format!("{out_name}.ready")),
            dir.path("control.json"),
        );
        let _ = std::fs::remove_file(&ready);
        let mut child = Command::new(python)
            .arg(repo_root().join("tests/otlp/receiver.py"))
            .args([
                "--grpc-port",
                &grpc.to_string(),
                "--http-port",
                &http.to_string(),
            ])
            .arg("--control")
            .arg(&control)
            .arg("--out")
            .arg(&out)
            .arg("--ready")
            .arg(&ready)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start receiver");
        let stdin = child.stdin.take().expect("receiver stdin");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "receiver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Receiver {
            child,
            _stdin: stdin,
            out,
            grpc,
            http,
        }
    }

    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("receiver output line"))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ID_A: &str = "c0ffee0000000000000000000000000000000000000000000000000000000a11";
const UID_A: &str = "5a7e1d2c-3b4a-4c5d-8e6f-708192a3b4c5";

fn run_agent(endpoint: &str, protocol: &str, receiver: &Receiver) -> (String, u64) {
    let agent = Command::new(hearth())
        .args([
            "agent",
            "-F",
            "99",
            "--interval",
            "1",
            "--ui-listen",
            "off",
            "--metrics-listen",
            "off",
        ])
        .args([
            "--otlp-endpoint",
            endpoint,
            "--otlp-protocol",
            protocol,
            "--otlp-header",
            "x-hearth-test=yes",
        ])
        .args(["--shutdown-timeout", "60"])
        .env("RUST_LOG", "hearth=debug,hearth_otlp=info")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agent");
    // Let a few windows through (at least 6 s, at most 3 minutes).
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) || receiver.requests().len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "fewer than 3 exports in 3 minutes"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let out = agent.wait_with_output().expect("agent output");
    let log = text(&out.stderr);
    assert!(out.status.success(), "agent exit {:?}: {log}", out.status);
    // Bounded: the exporter gets 60 s (--shutdown-timeout) for the last
    // windows; the rest is a margin for a loaded machine and a debug build.
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(!log.contains("panicked"), "{log}");
    let reported = logged_count(&log, "agent stopping", "samples_reported=")
        .unwrap_or_else(|| panic!("no final counts in the agent log: {log}"));
    (log, reported)
}

/// The number after `key` on the first log line containing `line` where
/// one follows.
fn logged_count(log: &str, line: &str, key: &str) -> Option<u64> {
    log.lines().filter(|l| l.contains(line)).find_map(|l| {
        l.split(key)
            .nth(1)?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

fn check_export(transport: &str) {
    let test = format!("agent_exports_over_{transport}");
    if !require_root_perf(&test) {
        return;
    }
    let Some(python) = require_python(&test) else {
        return;
    };
    if !require_cgroup_v2(&test) {
        return;
    }
    let dir = TempDir::new(&format!("otlp-{transport}"));
    let receiver = Receiver::start(&python, &dir);
    // One busy workload in a container (systemd driver, containerd), one
    // on the host.
    let in_container = dir.path("split_in_pod");
    std::fs::copy(workload("split_c"), &in_container).expect("copy");
    let path = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID_A}.scope",
        UID_A.replace('-', "_")
    );
    let _placed = CgroupPlacement::new("/sys/fs/cgroup/unified", &path, &in_container);
    let mut host = Command::new(workload("split_c"))
        .arg("8")
        .stdout(Stdio::null())
        .spawn()
        .expect("host workload");

    let (endpoint, protocol) = match transport {
        "grpc" => (format!("http://127.0.0.1:{}", receiver.grpc), "grpc"),
        _ => (
            format!("http://127.0.0.1:{}", receiver.http),
            "http/protobuf",
        ),
    };
    let (log, reported) = run_agent(&endpoint, protocol, &receiver);
    let _ = host.kill();
    let _ = host.wait();

    // The receiver writes a request down after answering it: wait until
    // it has written as many as the agent says it sent.
    let sent = logged_count(&log, "exporter stopped", "sent=")
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or_else(|| panic!("no exporter totals in the agent log: {log}"));
    let waited = Instant::now();
    while receiver.requests().len() < sent && waited.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let requests = receiver.requests();
    assert_eq!(
        requests.len(),
        sent,
        "requests the receiver wrote vs the agent sent"
    );
    assert!(requests.len() >= 3, "{} requests: {log}", requests.len());
    let mut received = 0u64;
    let mut saw_container = false;
    let mut saw_host = false;
    for r in &requests {
        assert_eq!(r["transport"], transport, "{r}");
        assert_eq!(r["accepted"], true);
        let summary = &r["summary"];
        assert_eq!(
            summary["ok"], true,
            "receiver found protocol errors: {}",
            summary["errors"]
        );
        let headers = r["headers"].to_string();
        assert!(
            headers.contains("x-hearth-test"),
            "custom header missing: {headers}"
        );
        let mut ids = Vec::new();
        for res in summary["resources"].as_array().expect("resources") {
            received += res["samples"].as_u64().expect("samples");
            let attrs = &res["attributes"];
            assert_eq!(attrs["deployment.environment"], "test");
            assert!(attrs["host.name"].is_string(), "{attrs}");
            match attrs["container.id"].as_str() {
                Some(id) => {
                    ids.push(id.to_string());
                    if id == ID_A {
                        saw_container = true;
                        assert_eq!(attrs["container.runtime.name"], "containerd");
                        assert_eq!(attrs["k8s.pod.uid"], UID_A);
                    }
                }
                None => saw_host = true,
            }
        }
        let before = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(before, ids.len(), "one ResourceProfiles per container");
    }
    let windows: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("window reported"))
        .map(|l| l.rsplit("samples=").next().unwrap_or(""))
        .collect();
    let per_request: Vec<u64> = requests
        .iter()
        .map(|r| {
            r["summary"]["resources"]
                .as_array()
                .map(|a| a.iter().map(|x| x["samples"].as_u64().unwrap_or(0)).sum())
                .unwrap_or(0)
        })
        .collect();
    eprintln!("{transport}: windows {windows:?} requests {per_request:?}");
    eprintln!(
        "{transport}: {} requests, {received} samples received, {reported} reported",
        requests.len()
    );
    assert!(
        saw_container && saw_host,
        "container resource {saw_container}, host resource {saw_host}"
    );
    assert_eq!(
        received,
        reported,
        "samples received differ from samples recorded: {}",
        log.lines()
            .filter(|l| l.contains(" INFO ") || l.contains(" WARN "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn agent_exports_over_grpc() {
    check_export("grpc");
}

#[test]
fn agent_exports_over_http() {
    check_export("http");
}

/// The collector disappears for five minutes and comes back: the agent
/// logs one warning and at most one summary a minute, keeps its memory
/// within the queue bound, and everything produced after the collector's
/// return arrives.
#[test]
fn collector_gone_for_five_minutes_then_back() {
    let test = "collector_gone_for_five_minutes_then_back";
    if !require_root_perf(test) {
        return;
    }
    let Some(python) = require_python(test) else {
        return;
    };
    let dir = TempDir::new("outage");
    let receiver = Receiver::start(&python, &dir);
    let grpc = receiver.grpc;
    let mut busy = Command::new(workload("split_c"))
        .arg("400")
        .stdout(Stdio::null())
        .spawn()
        .expect("workload");
    let log_path = dir.path("agent.log");
    let metrics_port = free_port();
    let mut agent = Command::new(hearth())
        .args([
            "agent",
            "-F",
            "99",
            "--interval",
            "1",
            "--otlp-queue-mib",
            "1",
        ])
        .args([
            "--ui-listen",
            "off",
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .args(["--otlp-endpoint", &format!("http://127.0.0.1:{grpc}")])
        .env("RUST_LOG", "hearth=info,hearth_otlp=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("start agent");
    let pid = agent.id();
    // Warm up: symbol caches filled, exports flowing (the first window of
    // a whole machine takes a while in a debug build on a busy machine).
    let warm = Instant::now();
    while receiver.requests().len() < 3 {
        assert!(
            warm.elapsed() < Duration::from_secs(180),
            "nothing exported before the outage"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(5));
    let baseline = rss_kib(pid);

    drop(receiver);
    let outage = Instant::now();
    let mut peak = baseline;
    let mut queue_peak = 0f64;
    while outage.elapsed() < Duration::from_secs(300) {
        peak = peak.max(rss_kib(pid));
        if let Some(q) = metric(metrics_port, "hearth_export_queue_bytes") {
            queue_peak = queue_peak.max(q);
        }
        assert!(
            agent.try_wait().expect("wait").is_none(),
            "agent exited during the outage"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let during = std::fs::read_to_string(&log_path).unwrap_or_default();
    let back = Receiver::start_on(&python, &dir, grpc, free_port(), "after.jsonl");
    let returned = Instant::now();
    // The next retry comes within the backoff's cap (30 s, +50% jitter):
    // wait for it rather than a fixed time that jitter can outlast.
    while back.requests().is_empty() && returned.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert!(agent.wait().expect("agent").success());
    let _ = busy.kill();
    let _ = busy.wait();

    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let warns: Vec<&str> = during.lines().filter(|l| l.contains("WARN")).collect();
    let first = warns
        .iter()
        .filter(|l| l.contains("event=\"export_failing\""))
        .count();
    let summaries = warns
        .iter()
        .filter(|l| l.contains("event=\"export_still_failing\""))
        .count();
    let other_warnings = warns.len() - first - summaries;
    let recovered = log
        .lines()
        .filter(|l| l.contains("event=\"export_recovered\""))
        .count();
    let after = back.requests();
    let windows_after = after.len();
    eprintln!(
        "outage: {first} warning(s), {summaries} summaries in 5 min; export queue peak {queue_peak} bytes; \
         RSS {baseline} KiB before, peak {peak} KiB; {windows_after} requests after the return, \
         {recovered} recovery line(s)"
    );
    assert_eq!(first, 1, "{during}");
    assert_eq!(other_warnings, 0, "{during}");
    assert!(
        summaries <= 5,
        "{summaries} summaries in 5 minutes: {during}"
    );
    assert_eq!(recovered, 1, "{log}");
    // The queue holds at most its 1 MiB bound, the request in flight apart.
    assert!(
        queue_peak > 0.0,
        "the queue never filled: was the collector really gone?"
    );
    assert!(
        queue_peak <= (1 << 20) as f64,
        "export queue reached {queue_peak} bytes"
    );
    // RSS is reported, not asserted: on a machine that keeps starting new
    // programs it also follows the symbol caches (bounded by entry and
    // file counts), which have nothing to do with the outage.

    // One window a second after the return: all of them arrive (the
    // first seconds go to reconnecting and draining the queue).
    assert!(after.iter().all(|r| r["summary"]["ok"] == true));
    assert!(
        windows_after as u64 >= returned.elapsed().as_secs().saturating_sub(5),
        "only {windows_after} requests in {:?} after the return",
        returned.elapsed()
    );
}
