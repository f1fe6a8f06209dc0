//! Pods, not PIDs: `hearth record --group-by pod` against a local server
//! that speaks the Kubernetes list/watch protocol, with a workload moved
//! into the cgroup kubelet would make for a fixture pod's container.

mod common;

#[path = "../../hearth-k8s/tests/support/fake_apiserver.rs"]
mod fake_apiserver;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use prost::Message;

/// The `app` container of the deployment fixture (shop/checkout-...).
const APP_ID: &str = "59ba1b0d5c9061582909406c2e416788f5ec52ed0108847512e1bc7656670b14";
const POD_UID: &str = "1509bb0a-9bf1-4331-8a11-8783593942a4";

#[test]
fn record_groups_samples_by_pod_with_metadata_from_the_api() {
    let test = "record_groups_samples_by_pod_with_metadata_from_the_api";
    if !require_root_perf(test) {
        return;
    }
    if !require_cgroup_v2(test) {
        return;
    }
    let server = fake_apiserver::FakeApiServer::start();
    for f in ["deployment", "cronjob", "other-node"] {
        server.add_fixture(f);
    }
    let dir = TempDir::new("pods");
    let kubeconfig = dir.path("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");

    let bin = dir.path("checkout_app");
    std::fs::copy(workload("split_c"), &bin).expect("copy");
    let path = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{APP_ID}.scope",
        POD_UID.replace('-', "_")
    );
    let _placed = CgroupPlacement::new("/sys/fs/cgroup/unified", &path, &bin);
    std::thread::sleep(Duration::from_millis(200));

    let (folded, pprof) = (dir.path("p.folded"), dir.path("p.pb.gz"));
    let out = run(Command::new(hearth())
        .args([
            "record",
            "-d",
            "3",
            "-F",
            "199",
            "--group-by",
            "pod",
            "--node-name",
            "node1",
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("-o")
        .arg(&folded)
        .arg("-o")
        .arg(&pprof));
    assert!(out.status.success(), "{}", text(&out.stderr));

    let stacks = read_folded(&folded);
    let mine: u64 = stacks
        .iter()
        .filter(|s| {
            s.frames
                .get(..3)
                .is_some_and(|f| f == ["shop/checkout-7d4b9c8f6d-q2w9x", "app", "checkout_app"])
        })
        .map(|s| s.count)
        .sum();
    assert!(
        mine >= 100,
        "{mine} samples under shop/checkout-...;app;checkout_app"
    );
    assert!(
        stacks.iter().any(|s| s.frames[0] == "[host]"),
        "host processes are grouped as the host"
    );

    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&pprof).expect("pprof"))
        .read_to_end(&mut bytes)
        .expect("gunzip");
    let p = hearth_export::pprof::proto::Profile::decode(bytes.as_slice()).expect("decode");
    let s = |i: i64| p.string_table[i as usize].as_str();
    let sample = p
        .sample
        .iter()
        .find(|smp| {
            smp.label
                .iter()
                .any(|l| s(l.key) == "container.id" && s(l.str) == APP_ID)
        })
        .expect("a sample of the container");
    let label = |k: &str| {
        sample
            .label
            .iter()
            .find(|l| s(l.key) == k)
            .map(|l| s(l.str))
    };
    for (k, v) in [
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "checkout-7d4b9c8f6d-q2w9x"),
        ("k8s.pod.uid", POD_UID),
        ("k8s.container.name", "app"),
        ("k8s.deployment.name", "checkout"),
        ("k8s.node.name", "node1"),
        ("service.name", "checkout"),
        ("service.namespace", "shop"),
        ("container.runtime.name", "containerd"),
        ("container.image.name", "registry.example.com/shop/checkout"),
    ] {
        assert_eq!(label(k), Some(v), "{k}");
    }
    // Only this node's pods were asked for.
    assert!(server
        .requests()
        .iter()
        .all(|r| r.query_param("fieldSelector").as_deref() == Some("spec.nodeName=node1")));
}

/// Stopped (SIGKILL) if the test ends before it does.
struct Agent(Option<Child>);

impl Agent {
    /// SIGTERM, then its stderr and whether it exited cleanly.
    fn stop(mut self) -> (bool, String) {
        let Some(child) = self.0.take() else {
            return (false, String::new());
        };
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().expect("agent output");
        (out.status.success(), text(&out.stderr))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Acceptance point 4 of issue 9 against the real agent: started with the
/// API server down for 5 minutes (`HEARTH_K8S_OUTAGE_SECS` shortens it for
/// a quick local run), then back. At the agent's default log level: one
/// WARN, at most one summary a minute, one recovery line, and not one line
/// from the client libraries; `hearth_k8s_watch_healthy` 0 until the first
/// good list; a pod created during the outage in the store within 10 s of
/// the API's return.
#[test]
fn agent_started_during_api_outage_logs_once_and_recovers_within_seconds() {
    let test = "agent_started_during_api_outage_logs_once_and_recovers_within_seconds";
    if !require_root_perf(test) {
        return;
    }
    let outage = Duration::from_secs(
        std::env::var("HEARTH_K8S_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300),
    );
    let server = fake_apiserver::FakeApiServer::start();
    server.add_fixture("deployment");
    server.set_down(true);
    let dir = TempDir::new("pods-outage");
    let kubeconfig = dir.path("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut cmd = Command::new(hearth());
    without_agent_env(&mut cmd)
        .args(["agent", "--interval", "1", "--ui-listen", "off"])
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .args(["--node-name", "node1", "--kubeconfig"])
        .arg(&kubeconfig)
        // The default level: no RUST_LOG, no --log-level.
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut agent = Agent(Some(cmd.spawn().expect("start agent")));
    let healthy = || metric(port, "hearth_k8s_watch_healthy");
    let pods = || metric(port, "hearth_k8s_pods");

    let started = Instant::now();
    let mut answered = 0;
    let mut late_added = false;
    while started.elapsed() < outage {
        if let Some(h) = healthy() {
            answered += 1;
            assert_eq!(h, 0.0, "healthy after {:?} of outage", started.elapsed());
        }
        if !late_added && started.elapsed() >= outage / 2 {
            let mut pod = fake_apiserver::fixture("bare");
            pod["metadata"]["name"] = serde_json::json!("late-pod");
            pod["metadata"]["uid"] = serde_json::json!("11111111-2222-4333-8444-555555555555");
            server.add_pod(pod);
            late_added = true;
        }
        let child = agent.0.as_mut().expect("agent");
        assert!(child.try_wait().expect("wait").is_none(), "agent exited");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(answered > 0, "/metrics never answered during the outage");

    server.set_down(false);
    let back = Instant::now();
    while !(pods() == Some(2.0) && healthy() == Some(1.0)) {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "not recovered 10 s after the API's return: healthy {:?}, pods {:?}",
            healthy(),
            pods()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let recovery = back.elapsed();
    let failures = metric(port, "hearth_k8s_watch_failures_total").unwrap_or(-1.0);
    std::thread::sleep(Duration::from_secs(1));
    let total = started.elapsed();
    let (clean, log) = agent.stop();
    assert!(clean, "agent exit: {log}");

    let lines: Vec<&str> = log.lines().collect();
    let k8s: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("hearth_k8s"))
        .collect();
    let count = |needle: &str| k8s.iter().filter(|l| l.contains(needle)).count();
    let (first, summaries, recovered) = (
        count("pod watch failing"),
        count("pod watch still failing"),
        count("pod watch recovered"),
    );
    eprintln!(
        "agent, API down {outage:?}: {failures} failed attempts; {} stderr lines in all, {} from \
         the watch: {first} WARN, {summaries} summaries, {recovered} recovery; metadata back \
         {recovery:?} after the API's return\n{log}",
        lines.len(),
        k8s.len()
    );
    let libraries = [
        "kube_client",
        "kube_runtime",
        "hyper",
        "tower",
        "rustls",
        "h2::",
    ];
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("ERROR") || libraries.iter().any(|t| l.contains(t))),
        "{log}"
    );
    assert_eq!(first, 1, "{log}");
    assert!(summaries as u64 <= total.as_secs() / 60, "{log}");
    assert_eq!(recovered, 1, "{log}");
    assert_eq!(k8s.len(), first + summaries + recovered, "{log}");
    // Every other line is the agent's own (start, stop; a warning about
    // some other process on a shared machine may be among them).
    assert!(
        lines.iter().all(|l| l
            .split_whitespace()
            .nth(2)
            .is_some_and(|t| t.starts_with("hearth"))),
        "{log}"
    );
}
