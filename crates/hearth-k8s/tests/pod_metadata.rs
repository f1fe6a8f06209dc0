//! Pod metadata end to end: a real kube client and watcher against a local
//! server that speaks the Kubernetes list/watch protocol, with pod objects
//! shaped like the API server's.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fake_apiserver::FakeApiServer;
use hearth_k8s::attributes::{resource_attributes, AttributeConfig, ExportRule};
use hearth_k8s::store::{PodStore, Resolved};
use hearth_k8s::watch::{BackgroundWatch, WatchConfig};

const APP: &str = "59ba1b0d5c9061582909406c2e416788f5ec52ed0108847512e1bc7656670b14";
const APP_BEFORE_RESTART: &str = "9a1e40b458151a9959e2d15364c7a5005d32fe61985fb4e72a095ee82bb29976";
const REPORT: &str = "78f6d82486ea0214b5c34e7e77ca4499e07cb5793e7fb97bfcc1c0c8b0cdf20a";
const INIT: &str = "2e460a9618949a23d9855162fd0b00ea4f859933fdf0a45f57e485b6761978dd";
const POSTGRES: &str = "64e752cc93a9b8b601f72b0a43c20f56310a853eec9a72f24ea9877af376bc25";
const AGENT: &str = "d38cf73419a7bae47df3bae7d3f2878338bf8cc279b58a73838e4a118913c782";
const APISERVER: &str = "fb474e95e2f04826ba9153bde3221553efdeed7f9f6f4756a0cda0172bac7c60";
const STATIC_HASH: &str = "980f951ce3923fcd76d4d9b1cac733f4";
const DEBUGGER: &str = "33c6a5a5b2b130da0f6592a5a30abf6588aaeb7cb3140f254e6833eb0bd47e27";
const SCRATCHPAD: &str = "14c7fc1c85f5547ab258c319f97bf1b82c75bf6145d1349a4ba170c9e6c39385";
const OTHER_NODE_APP: &str = "9ed89eddd6846325b600e6129ec04ece4350cc1721e52f212cd552a09ddbef12";
const HOSTILE_APP: &str = "42569925f61e86e9aa2264acc8daa038305a34bad517d4d03bbdae4687b112e8";

/// Log lines of the whole test binary (the watch logs from its own thread).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_env_filter("hearth_k8s=info")
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_lines_for(endpoint: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains(endpoint))
        .map(str::to_string)
        .collect()
}

struct Setup {
    server: FakeApiServer,
    watch: BackgroundWatch,
    config: AttributeConfig,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup(tag: &str, config: AttributeConfig, grace: Duration, summary: Duration) -> Setup {
    logs();
    let server = FakeApiServer::start();
    for name in [
        "deployment",
        "cronjob",
        "init",
        "daemonset",
        "static",
        "ephemeral",
        "bare",
        "other-node",
        "hostile",
    ] {
        server.add_fixture(name);
    }
    let dir = std::env::temp_dir().join(format!("hearth-k8s-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let config_arc = Arc::new(config.clone());
    let mut wc = WatchConfig::new("node1", config_arc);
    wc.delete_grace = grace;
    wc.summary_period = summary;
    let watch = BackgroundWatch::start(Some(&kubeconfig), wc).expect("start watch");
    assert!(
        watch.wait_synced(Duration::from_secs(10)),
        "pod list never synced"
    );
    Setup {
        server,
        watch,
        config,
        _dir: TempDir(dir),
    }
}

fn attrs(store: &PodStore, config: &AttributeConfig, id: &str) -> Vec<(String, String)> {
    let r: Resolved = store
        .by_container_id(id)
        .unwrap_or_else(|| panic!("{id} not resolved"));
    let c = r.container.and_then(|i| r.pod.containers.get(i));
    resource_attributes(&r.pod, c, Some(id), None, Some("node1"), config)
}

fn get<'a>(a: &'a [(String, String)], k: &str) -> Option<&'a str> {
    a.iter().find(|(ak, _)| ak == k).map(|(_, v)| v.as_str())
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_attribute_resolves_from_the_api() {
    let config = AttributeConfig {
        label_rules: vec![ExportRule::parse("app.kubernetes.io/part-of=shop.part").unwrap()],
        annotation_rules: vec![],
        use_well_known_labels: false,
    };
    let s = setup(
        "attrs",
        config,
        Duration::from_secs(2),
        Duration::from_secs(60),
    );
    let store = &s.watch.store;

    // Deployment, derived from the ReplicaSet name and pod-template-hash.
    let a = attrs(store, &s.config, APP);
    for (k, v) in [
        ("service.name", "checkout"),
        ("service.namespace", "shop"),
        ("service.instance.id", "shop.checkout-7d4b9c8f6d-q2w9x.app"),
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "checkout-7d4b9c8f6d-q2w9x"),
        ("k8s.pod.uid", "1509bb0a-9bf1-4331-8a11-8783593942a4"),
        ("k8s.node.name", "node1"),
        ("k8s.deployment.name", "checkout"),
        ("k8s.replicaset.name", "checkout-7d4b9c8f6d"),
        ("k8s.container.name", "app"),
        ("container.id", APP),
        ("container.runtime.name", "containerd"),
        ("container.image.name", "registry.example.com/shop/checkout"),
        ("container.image.tag", "2.4.1"),
        ("shop.part", "shop"),
    ] {
        assert_eq!(get(&a, k), Some(v), "{k} in {a:?}");
    }
    // Labels are exported only through rules; well-known labels are opt-in.
    assert!(
        a.iter().all(|(k, _)| !k.starts_with("k8s.pod.label.")),
        "{a:?}"
    );
    // The id before the container restarted still resolves to it.
    assert_eq!(
        get(
            &attrs(store, &s.config, APP_BEFORE_RESTART),
            "k8s.container.name"
        ),
        Some("app")
    );

    // A CronJob's Job; an init container of a StatefulSet; a DaemonSet.
    let a = attrs(store, &s.config, REPORT);
    assert_eq!(get(&a, "k8s.job.name"), Some("nightly-report-29012345"));
    assert_eq!(get(&a, "k8s.cronjob.name"), Some("nightly-report"));
    assert_eq!(get(&a, "service.name"), Some("nightly-report"));
    let a = attrs(store, &s.config, INIT);
    assert_eq!(get(&a, "k8s.container.name"), Some("init-permissions"));
    assert_eq!(get(&a, "k8s.statefulset.name"), Some("db"));
    assert_eq!(
        get(&attrs(store, &s.config, POSTGRES), "service.name"),
        Some("db")
    );
    assert_eq!(
        get(&attrs(store, &s.config, AGENT), "k8s.daemonset.name"),
        Some("node-agent")
    );

    // Static pod: the cgroup path carries the config hash, not the API UID.
    let r = store
        .by_pod_uid(STATIC_HASH)
        .expect("static pod by config hash");
    assert_eq!(&*r.pod.name, "kube-apiserver-node1");
    assert_eq!(
        get(&attrs(store, &s.config, APISERVER), "k8s.namespace.name"),
        Some("kube-system")
    );

    // Ephemeral container; annotation-named service; hostile but valid pod.
    assert_eq!(
        get(&attrs(store, &s.config, DEBUGGER), "k8s.container.name"),
        Some("debugger-r8tzq")
    );
    assert_eq!(
        get(&attrs(store, &s.config, SCRATCHPAD), "service.name"),
        Some("custom-svc")
    );
    assert_eq!(
        get(
            &attrs(store, &s.config, HOSTILE_APP),
            "container.runtime.name"
        ),
        Some("cri-o")
    );
    // Only this node's pods are listed.
    assert!(store.by_container_id(OTHER_NODE_APP).is_none());

    // A restart seen through the watch: new id, old id kept.
    let new_id = "0".repeat(63) + "1";
    s.server.modify_pod("data", "db-0", |pod| {
        let st = &mut pod["status"]["containerStatuses"][0];
        st["lastState"] = serde_json::json!({"terminated": {"containerID": format!("containerd://{POSTGRES}"), "exitCode": 137, "reason": "OOMKilled"}});
        st["containerID"] = serde_json::json!(format!("containerd://{new_id}"));
        st["restartCount"] = serde_json::json!(1);
    });
    wait_until("the restart", Duration::from_secs(5), || {
        store.by_container_id(&new_id).is_some()
    });
    assert_eq!(
        get(&attrs(store, &s.config, &new_id), "k8s.container.name"),
        Some("postgres")
    );
    assert_eq!(
        get(&attrs(store, &s.config, POSTGRES), "k8s.container.name"),
        Some("postgres")
    );

    // A deleted pod resolves during the grace period, then not.
    s.server
        .delete_pod("reports", "nightly-report-29012345-h7k4m");
    wait_until("the deletion", Duration::from_secs(5), || {
        store.by_container_id(REPORT).is_some_and(|r| r.deleted)
    });
    assert_eq!(
        get(&attrs(store, &s.config, REPORT), "k8s.cronjob.name"),
        Some("nightly-report")
    );
    wait_until("the grace period to end", Duration::from_secs(6), || {
        store.by_container_id(REPORT).is_none()
    });

    // Trimming: no managedFields or unused labels are kept.
    let r = store.by_container_id(APP).unwrap();
    assert!(
        r.pod
            .labels
            .keys()
            .all(|k| k == "pod-template-hash" || k == "app.kubernetes.io/part-of"),
        "{:?}",
        r.pod.labels
    );
}

#[test]
fn well_known_labels_are_used_only_when_enabled() {
    let config = AttributeConfig {
        use_well_known_labels: true,
        ..Default::default()
    };
    let s = setup(
        "wellknown",
        config,
        Duration::from_secs(120),
        Duration::from_secs(60),
    );
    let a = attrs(&s.watch.store, &s.config, APP);
    assert_eq!(
        get(&a, "service.name"),
        Some("checkout-prod"),
        "app.kubernetes.io/instance first"
    );
    assert_eq!(get(&a, "service.version"), Some("2.4.1"));
}

#[test]
fn outage_forbidden_and_expiry_keep_metadata_and_log_quietly() {
    let s = setup(
        "outage",
        AttributeConfig::default(),
        Duration::from_secs(120),
        Duration::from_secs(2),
    );
    let endpoint = s.server.url();
    let store = &s.watch.store;
    let lines = || log_lines_for(endpoint.trim_end_matches('/'));
    let count = |needle: &str| lines().iter().filter(|l| l.contains(needle)).count();

    // 410 Gone: relist, no warning.
    let relists = s
        .watch
        .status
        .relists
        .load(std::sync::atomic::Ordering::Relaxed);
    s.server.compact();
    s.server.close_watches();
    wait_until("a relist after 410", Duration::from_secs(10), || {
        s.watch
            .status
            .relists
            .load(std::sync::atomic::Ordering::Relaxed)
            > relists
    });
    assert_eq!(count("WARN"), 0, "{:?}", lines());

    // API server gone for 7 s: metadata stays, one warning, summaries at
    // most every 2 s, one line on recovery.
    s.server.set_down(true);
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(7) {
        assert!(
            store.by_container_id(APP).is_some(),
            "metadata lost during the outage"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A pod created during the outage arrives after it.
    let late_id = "7".repeat(64);
    let mut late = fake_apiserver::fixture("bare");
    late["metadata"]["name"] = serde_json::json!("late-pod");
    late["metadata"]["uid"] = serde_json::json!("11111111-2222-4333-8444-555555555555");
    late["status"]["containerStatuses"][0]["containerID"] =
        serde_json::json!(format!("containerd://{late_id}"));
    s.server.add_pod(late);
    s.server.set_down(false);
    wait_until("recovery", Duration::from_secs(40), || {
        count("recovered") == 1
    });
    wait_until(
        "the pod created during the outage",
        Duration::from_secs(10),
        || store.by_container_id(&late_id).is_some(),
    );
    let warn_first = count("pod watch failing");
    let summaries = count("still failing");
    eprintln!(
        "outage: {warn_first} first-failure line(s), {summaries} summaries, lines: {:#?}",
        lines()
    );
    assert_eq!(warn_first, 1);
    assert!(
        summaries <= 4,
        "{summaries} summaries in 7 s with a 2 s period"
    );
    assert!(store.by_container_id(OTHER_NODE_APP).is_none());

    // RBAC forbids the list: profiling keeps the metadata it has, one
    // warning naming the cause, one recovery line.
    s.server.set_forbidden(true);
    s.server.close_watches();
    wait_until("the forbidden warning", Duration::from_secs(10), || {
        count("forbidden") >= 1
    });
    assert!(
        lines()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("ClusterRole")),
        "{:?}",
        lines()
    );
    assert!(store.by_container_id(APP).is_some());
    s.server.set_forbidden(false);
    wait_until("recovery from 403", Duration::from_secs(40), || {
        count("recovered") == 2
    });
}

/// The outage of acceptance point 4 ("API down for 5 minutes, one summary
/// a minute"), scaled down 1:15 by default: a 20 s outage with a 4 s
/// summary period. `HEARTH_K8S_OUTAGE_SECS=300` runs it at full length
/// (the summary period stays a fifth of the outage).
fn outage_length() -> Duration {
    let secs = std::env::var("HEARTH_K8S_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s >= 5)
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// A pod of this node with one running container `id`.
fn pod_with_container(name: &str, uid: &str, id: &str) -> serde_json::Value {
    let mut pod = fake_apiserver::fixture("bare");
    pod["metadata"]["name"] = serde_json::json!(name);
    pod["metadata"]["uid"] = serde_json::json!(uid);
    pod["status"]["containerStatuses"][0]["containerID"] =
        serde_json::json!(format!("containerd://{id}"));
    pod
}

#[test]
fn watch_started_during_outage_logs_once_and_recovers_within_seconds() {
    use std::sync::atomic::Ordering::Relaxed;
    logs();
    let outage = outage_length();
    let summary_period = outage / 5;
    let server = FakeApiServer::start();
    server.add_fixture("deployment");
    server.set_down(true);
    let dir = std::env::temp_dir().join(format!("hearth-k8s-cold-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _dir = TempDir(dir.clone());
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let mut wc = WatchConfig::new("node1", Arc::new(AttributeConfig::default()));
    wc.summary_period = summary_period;
    let watch = BackgroundWatch::start(Some(&kubeconfig), wc).expect("start watch");
    let endpoint = server.url();
    let lines = || log_lines_for(endpoint.trim_end_matches('/'));

    // Down: never healthy, however often the watcher retries.
    let started = Instant::now();
    let late_id = "7".repeat(64);
    let mut late_added = false;
    while started.elapsed() < outage {
        assert!(
            !watch.status.healthy.load(Relaxed),
            "healthy after {:?} with the API server down; lines: {:#?}",
            started.elapsed(),
            lines()
        );
        if !late_added && started.elapsed() >= outage / 2 {
            // A pod created during the outage.
            server.add_pod(pod_with_container(
                "late-pod",
                "11111111-2222-4333-8444-555555555555",
                &late_id,
            ));
            late_added = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let failures = watch.status.failures.load(Relaxed);
    assert!(!watch.store.synced());

    // Back: the pod created meanwhile resolves within 10 s.
    server.set_down(false);
    let back = Instant::now();
    while watch.store.by_container_id(&late_id).is_none() {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "the pod created during the outage did not resolve within 10 s of the API's return; lines: {:#?}",
            lines()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let recovery = back.elapsed();
    assert!(watch.status.healthy.load(Relaxed));
    assert!(watch.store.by_container_id(APP).is_some());
    // Let any late line arrive before counting.
    std::thread::sleep(Duration::from_millis(500));
    let all = lines();
    let count = |needle: &str| all.iter().filter(|l| l.contains(needle)).count();
    let (first, summaries, recovered) = (
        count("pod watch failing"),
        count("pod watch still failing"),
        count("pod watch recovered"),
    );
    eprintln!(
        "outage of {outage:?} (summary every {summary_period:?}): {failures} failed attempts, \
         {first} first-failure, {summaries} summary and {recovered} recovery line(s), \
         {} lines in all; pod resolved {recovery:?} after the API's return; lines: {all:#?}",
        all.len()
    );
    assert_eq!(first, 1, "{all:#?}");
    // One summary per period at most, from the first failure on.
    let periods = started.elapsed().as_secs_f64() / summary_period.as_secs_f64();
    assert!(
        summaries as f64 <= periods.floor(),
        "{summaries} summaries in {periods:.1} periods: {all:#?}"
    );
    assert_eq!(recovered, 1, "{all:#?}");
    assert_eq!(all.len(), first + summaries + recovered, "{all:#?}");
    assert!(
        all.iter()
            .all(|l| l.contains("WARN") || l.contains("pod watch recovered")),
        "{all:#?}"
    );
    // A few attempts per 5 s at most, not one a second.
    let per_5s = failures as f64 * 5.0 / outage.as_secs_f64();
    assert!(
        per_5s <= 3.0,
        "{failures} failed attempts in {outage:?}: {per_5s:.1} per 5 s"
    );
}

#[test]
fn list_and_watch_requests_carry_a_hearth_user_agent() {
    let s = setup(
        "user-agent",
        AttributeConfig::default(),
        Duration::from_secs(120),
        Duration::from_secs(60),
    );
    assert!(s
        .server
        .wait_for_watches_blocking(1, Duration::from_secs(10)));
    let want = format!("hearth/{}", env!("CARGO_PKG_VERSION"));
    let requests = s.server.requests();
    let (lists, watches): (Vec<_>, Vec<_>) = requests
        .iter()
        .filter(|r| r.is_list() || r.is_watch())
        .partition(|r| r.is_list());
    assert!(!lists.is_empty() && !watches.is_empty(), "{requests:?}");
    for r in lists.iter().chain(&watches) {
        assert_eq!(r.user_agent.as_deref(), Some(want.as_str()), "{r:?}");
    }
}

#[test]
fn api_answering_503_recovers_within_seconds_not_minutes() {
    use std::sync::atomic::Ordering::Relaxed;
    let s = setup(
        "unavailable",
        AttributeConfig::default(),
        Duration::from_secs(120),
        Duration::from_secs(60),
    );
    assert!(s.watch.status.healthy.load(Relaxed));
    s.server.set_unavailable(true);
    s.server.close_watches();
    wait_until("a failure on 503", Duration::from_secs(10), || {
        !s.watch.status.healthy.load(Relaxed)
    });
    let id = "8".repeat(64);
    s.server.add_pod(pod_with_container(
        "during-503",
        "22222222-3333-4444-8555-666666666666",
        &id,
    ));
    std::thread::sleep(Duration::from_secs(8));
    let answered_503 = s
        .server
        .requests()
        .iter()
        .filter(|r| r.status == 503)
        .count();
    s.server.set_unavailable(false);
    let back = Instant::now();
    // kube's client retried 503 by itself up to 15 times over ~160 s.
    wait_until(
        "the pod created while the API answered 503",
        Duration::from_secs(10),
        || s.watch.store.by_container_id(&id).is_some(),
    );
    eprintln!(
        "503 for 8 s: {answered_503} requests answered 503, pod resolved {:?} after",
        back.elapsed()
    );
    assert!(s.watch.status.healthy.load(Relaxed));
    assert!(
        answered_503 <= 8,
        "{answered_503} requests in 8 s of 503 answers"
    );
}
