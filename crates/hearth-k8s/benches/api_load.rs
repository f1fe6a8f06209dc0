//! API-server load and agent memory of the node-scoped pod watch.
//!
//! A cluster of 10,000 pods (110 on `node1`, the rest on 90 other nodes),
//! cloned from the API-shaped fixtures in `tests/support/pods`, is served by
//! the fake API server of the integration tests. The bench then measures:
//!
//! 1. the agent's watch ([`BackgroundWatch`], `spec.nodeName=node1`): list
//!    and watch requests, response bytes and time to the first full list;
//! 2. a churn of pod writes spread over the whole cluster (status updates,
//!    creations through scheduling, graceful deletions): the watch events
//!    and bytes that reach node1's watch, and the store's consistency,
//!    before and after the deletion grace;
//! 3. the same sync and churn for a cluster-wide `watcher` (no selector);
//! 4. heap held by the trimmed store against full `Pod` objects, counted by
//!    this binary's global allocator while no other thread runs.
//!
//! Run: `cargo bench -p hearth-k8s --bench api_load`.

#[path = "../tests/support/cluster.rs"]
mod cluster;
#[path = "../tests/support/fake_apiserver.rs"]
mod fake_apiserver;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{make_pod, node_name, node_pods, Rng, Shape, Templates};
use fake_apiserver::FakeApiServer;
use futures::StreamExt;
use hearth_k8s::attributes::AttributeConfig;
use hearth_k8s::meta::PodMeta;
use hearth_k8s::store::PodStore;
use hearth_k8s::watch::{load_config, BackgroundWatch, WatchConfig};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Client};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Heap accounting
// ---------------------------------------------------------------------------

/// Requested heap bytes currently allocated (allocator overhead excluded).
static HEAP_NET: AtomicIsize = AtomicIsize::new(0);

struct CountingAlloc;

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is only bookkeeping.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            HEAP_NET.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            HEAP_NET.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        HEAP_NET.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            HEAP_NET.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Runs `f` and returns its result with the heap bytes it left allocated
/// (what the result holds, temporaries excluded). Only meaningful while no
/// other thread allocates: checked through `/proc/self/status`.
fn retained<T>(f: impl FnOnce() -> T) -> (T, isize) {
    assert_eq!(
        proc_status("Threads:"),
        Some(1),
        "heap measurements need a single-threaded process"
    );
    let before = HEAP_NET.load(Ordering::SeqCst);
    let value = f();
    let after = HEAP_NET.load(Ordering::SeqCst);
    (value, after - before)
}

/// Live heap (counted) and resident set at named points of the run.
static TIMELINE: std::sync::Mutex<Vec<(&str, isize, u64)>> = std::sync::Mutex::new(Vec::new());

fn mark(label: &'static str) {
    let rss = proc_status("VmRSS:").unwrap_or(0);
    TIMELINE
        .lock()
        .unwrap()
        .push((label, HEAP_NET.load(Ordering::SeqCst), rss));
}

/// A numeric field of `/proc/self/status` (kB for memory fields).
fn proc_status(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------

const NODE: &str = "node1";
const NODE_PODS: usize = 110;
const CLUSTER_PODS: usize = 10_000;
const OTHER_NODES: usize = 90;
const STATUS_UPDATES: usize = 2_000;
const CREATIONS: usize = 100;
const DELETIONS: usize = 100;
/// Share of status updates that are container restarts (new container id,
/// previous one in `lastState.terminated`); the rest flip readiness.
const RESTART_PERCENT: u64 = 10;
/// Deletion grace of the node watch: long enough to check the deleted pods
/// are still held after the churn, short enough to see them expire.
const GRACE: Duration = Duration::from_secs(8);

/// The whole cluster: node1 first, then ~110 pods on each of 90 nodes, each
/// node with one static pod and four DaemonSet pods.
fn build_cluster(t: &Templates, rng: &mut Rng) -> Vec<Value> {
    let mut pods = Vec::with_capacity(CLUSTER_PODS);
    let mut serial = 0;
    let others = CLUSTER_PODS - NODE_PODS;
    for node in 1..=OTHER_NODES + 1 {
        let count = if node == 1 {
            NODE_PODS
        } else {
            let i = node - 2;
            others / OTHER_NODES + usize::from(i < others % OTHER_NODES)
        };
        pods.extend(node_pods(t, node, count, &mut serial, rng));
    }
    assert_eq!(pods.len(), CLUSTER_PODS);
    pods
}

fn node_of(pod: &Value) -> Option<&str> {
    pod["spec"]["nodeName"].as_str()
}

fn key_of(pod: &Value) -> (String, String) {
    (
        pod["metadata"]["namespace"].as_str().unwrap().to_string(),
        pod["metadata"]["name"].as_str().unwrap().to_string(),
    )
}

// ---------------------------------------------------------------------------
// The churn
// ---------------------------------------------------------------------------

enum Op {
    /// A kubelet status update: a restart (new id) or a readiness flip.
    Status {
        ns: String,
        name: String,
        restart: Option<String>,
        at: String,
    },
    /// Created unscheduled, bound to a node, then running: three writes.
    Create {
        pending: Value,
        node: String,
        running: Value,
        at: String,
    },
    /// Marked terminating, then removed: two writes.
    Delete {
        ns: String,
        name: String,
        at: String,
    },
}

#[derive(Default)]
struct Plan {
    ops: Vec<Op>,
    /// Writes to the API server.
    writes: u64,
    /// Watch events a `spec.nodeName=node1` watch must receive.
    node_events: u64,
    node_status_updates: u64,
    node_created: Vec<String>,
    node_deleted: Vec<String>,
    /// Pods on node1 after the churn (uids).
    node_live: HashSet<String>,
    /// Every pod ever on another node (uids), for the "nothing leaks" check.
    other_uids: Vec<String>,
}

fn timestamp(i: usize) -> String {
    format!(
        "2026-11-21T{:02}:{:02}:{:02}Z",
        12 + i / 3600,
        i / 60 % 60,
        i % 60
    )
}

fn uid_of(pod: &Value) -> String {
    pod["metadata"]["uid"].as_str().unwrap().to_string()
}

fn plan_churn(t: &Templates, cluster: &[Value], rng: &mut Rng) -> Plan {
    struct Live {
        ns: String,
        name: String,
        node: String,
        uid: String,
    }
    let mut live: Vec<Live> = cluster
        .iter()
        .map(|p| {
            let (ns, name) = key_of(p);
            Live {
                ns,
                name,
                node: node_of(p).unwrap().to_string(),
                uid: uid_of(p),
            }
        })
        .collect();
    let mut plan = Plan {
        other_uids: live
            .iter()
            .filter(|l| l.node != NODE)
            .map(|l| l.uid.clone())
            .collect(),
        ..Plan::default()
    };
    // 0 = status update, 1 = creation, 2 = deletion; shuffled.
    let mut kinds: Vec<u8> = std::iter::repeat_n(0, STATUS_UPDATES)
        .chain(std::iter::repeat_n(1, CREATIONS))
        .chain(std::iter::repeat_n(2, DELETIONS))
        .collect();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i + 1));
    }
    let mut serial = CLUSTER_PODS;
    for (i, kind) in kinds.into_iter().enumerate() {
        let at = timestamp(i);
        match kind {
            0 => {
                let target = &live[rng.below(live.len())];
                let restart = (rng.next() % 100 < RESTART_PERCENT).then(|| rng.hex(64));
                plan.writes += 1;
                if target.node == NODE {
                    plan.node_events += 1;
                    plan.node_status_updates += 1;
                }
                plan.ops.push(Op::Status {
                    ns: target.ns.clone(),
                    name: target.name.clone(),
                    restart,
                    at,
                });
            }
            1 => {
                let node = 1 + rng.below(OTHER_NODES + 1);
                let running = make_pod(t, Shape::workload(rng), serial, node, 0, rng);
                serial += 1;
                let mut pending = running.clone();
                pending["spec"].as_object_mut().unwrap().remove("nodeName");
                pending["status"] = json!({
                    "phase": "Pending",
                    "qosClass": running["status"]["qosClass"].clone(),
                });
                let (ns, name) = key_of(&running);
                let uid = uid_of(&running);
                plan.writes += 3;
                if node == 1 {
                    // Binding arrives as ADDED, the running status as MODIFIED.
                    plan.node_events += 2;
                    plan.node_created.push(uid.clone());
                } else {
                    plan.other_uids.push(uid.clone());
                }
                live.push(Live {
                    ns,
                    name,
                    node: node_name(node),
                    uid,
                });
                plan.ops.push(Op::Create {
                    pending,
                    node: node_name(node),
                    running,
                    at,
                });
            }
            _ => {
                let target = live.swap_remove(rng.below(live.len()));
                plan.writes += 2;
                if target.node == NODE {
                    plan.node_events += 2;
                    plan.node_deleted.push(target.uid.clone());
                }
                plan.ops.push(Op::Delete {
                    ns: target.ns,
                    name: target.name,
                    at,
                });
            }
        }
    }
    plan.node_live = live
        .iter()
        .filter(|l| l.node == NODE)
        .map(|l| l.uid.clone())
        .collect();
    plan
}

fn status_update(pod: &mut Value, restart: Option<&str>, at: &str) {
    let c = &mut pod["status"]["containerStatuses"][0];
    if let Some(id) = restart {
        let old = c["containerID"].clone();
        let runtime = old
            .as_str()
            .and_then(|s| s.split_once("://"))
            .map_or("containerd", |(r, _)| r)
            .to_string();
        let started = c["state"]["running"]["startedAt"].clone();
        c["lastState"] = json!({"terminated": {
            "containerID": old,
            "exitCode": 137,
            "reason": "OOMKilled",
            "startedAt": started,
            "finishedAt": at,
        }});
        c["containerID"] = json!(format!("{runtime}://{id}"));
        c["restartCount"] = json!(c["restartCount"].as_i64().unwrap_or(0) + 1);
        c["state"] = json!({"running": {"startedAt": at}});
        c["ready"] = json!(true);
    } else {
        let ready = !c["ready"].as_bool().unwrap_or(true);
        c["ready"] = json!(ready);
        let value = if ready { "True" } else { "False" };
        if let Some(conds) = pod["status"]["conditions"].as_array_mut() {
            for cond in conds {
                if matches!(cond["type"].as_str(), Some("Ready" | "ContainersReady")) {
                    cond["status"] = json!(value);
                    cond["lastTransitionTime"] = json!(at);
                }
            }
        }
    }
}

fn apply_churn(server: &FakeApiServer, plan: &Plan) {
    for op in &plan.ops {
        match op {
            Op::Status {
                ns,
                name,
                restart,
                at,
            } => {
                server.modify_pod(ns, name, |p| status_update(p, restart.as_deref(), at));
            }
            Op::Create {
                pending,
                node,
                running,
                at,
            } => {
                let (ns, name) = key_of(pending);
                server.add_pod(pending);
                server.modify_pod(&ns, &name, |p| {
                    p["spec"]["nodeName"] = json!(node);
                    p["status"]["conditions"] = json!([{
                        "type": "PodScheduled",
                        "status": "True",
                        "lastProbeTime": null,
                        "lastTransitionTime": at,
                    }]);
                });
                server.replace_pod(running);
            }
            Op::Delete { ns, name, at } => {
                server.modify_pod(ns, name, |p| {
                    p["metadata"]["deletionTimestamp"] = json!(at);
                    p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
                });
                server.delete_pod(ns, name);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Runs against the fake API server
// ---------------------------------------------------------------------------

/// The cluster as list items (compact JSON, no kind/apiVersion): all pods,
/// and node1's.
struct Cluster {
    all: Vec<String>,
    node: Vec<String>,
}

impl Cluster {
    fn from_values(pods: Vec<Value>) -> Cluster {
        let node = pods
            .iter()
            .filter(|p| node_of(p) == Some(NODE))
            .map(|p| serde_json::to_string(p).unwrap())
            .collect();
        let all = pods
            .into_iter()
            .map(|p| serde_json::to_string(&p).unwrap())
            .collect();
        Cluster { all, node }
    }
}

fn loaded_server(cluster: &Cluster) -> FakeApiServer {
    let server = FakeApiServer::start();
    for pod in &cluster.all {
        server.add_pod(pod.as_str());
    }
    // Drop the creation history: the fake keeps a copy of every write for
    // watch replay, which nobody needs here.
    server.compact();
    server
}

#[derive(Default)]
struct Run {
    sync_time: Duration,
    sync_lists: usize,
    sync_watches: usize,
    sync_bytes: u64,
    sync_items: u64,
    list_queries: Vec<String>,
    /// From the start to the first request's and to the last list's answer.
    first_request: Duration,
    lists_done: Duration,
    churn_apply: Duration,
    churn_delivered: Duration,
    churn_events: u64,
    churn_bytes: u64,
    churn_requests: usize,
    /// Times to sync of further watches started after the churn.
    resyncs: Vec<Duration>,
}

const NODE_SYNC_REPEATS: usize = 5;
const CLUSTER_SYNC_REPEATS: usize = 3;

fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

fn list_query(server: &FakeApiServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .map(|r| {
            let kind = if r.is_watch() { "watch" } else { "list" };
            let field = r.query_param("fieldSelector").unwrap_or_default();
            let limit = r.query_param("limit").unwrap_or_default();
            format!("{kind} fieldSelector={field:?} limit={limit:?}")
        })
        .collect()
}

/// From `start` to the first request and to the last list answered.
fn request_times(server: &FakeApiServer, start: Instant) -> (Duration, Duration) {
    let requests = server.requests();
    let first = requests[0].at.duration_since(start);
    let last_list = requests
        .iter()
        .rev()
        .find(|r| r.is_list())
        .expect("a list request")
        .at
        .duration_since(start);
    (first, last_list)
}

struct Checks(Vec<(String, bool)>);

impl Checks {
    fn check(&mut self, what: impl Into<String>, ok: bool) {
        self.0.push((what.into(), ok));
    }
}

/// The agent's own watch for node1.
fn node_scoped(cluster: &Cluster, plan: &Plan, dir: &Path, checks: &mut Checks) -> Run {
    let server = loaded_server(cluster);
    mark("node run: fake server loaded");
    let kubeconfig = dir.join("kubeconfig-node");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let mut run = Run::default();

    let (watch, start, sync_time) = start_node_watch(&kubeconfig);
    run.sync_time = sync_time;
    assert!(server.wait_for_watches_blocking(1, Duration::from_secs(10)));
    run.sync_lists = server.list_count();
    run.sync_watches = server.watch_count();
    run.sync_bytes = server.bytes_sent();
    run.sync_items = watch.store.len() as u64;
    run.list_queries = list_query(&server);
    (run.first_request, run.lists_done) = request_times(&server, start);
    let events_at_sync = watch.status.events.load(Ordering::SeqCst);
    mark("node run: synced");
    checks.check(
        format!("node watch: store holds node1's {NODE_PODS} pods after sync"),
        watch.store.len() == NODE_PODS,
    );

    let churn_start = Instant::now();
    apply_churn(&server, plan);
    run.churn_apply = churn_start.elapsed();
    let delivered = wait_for(Duration::from_secs(30), || {
        watch.status.events.load(Ordering::SeqCst) - events_at_sync >= plan.node_events
    });
    run.churn_delivered = churn_start.elapsed();
    // Anything beyond node1's share would show up here.
    std::thread::sleep(Duration::from_millis(300));
    run.churn_events = watch.status.events.load(Ordering::SeqCst) - events_at_sync;
    run.churn_bytes = server.bytes_sent() - run.sync_bytes;
    run.churn_requests =
        server.list_count() + server.watch_count() - run.sync_lists - run.sync_watches;
    checks.check(
        format!(
            "node watch: exactly node1's share of events ({} expected, {} received)",
            plan.node_events, run.churn_events
        ),
        delivered && run.churn_events == plan.node_events,
    );
    checks.check(
        "node watch: no relist or failure during the churn",
        watch.status.relists.load(Ordering::SeqCst) == 1
            && watch.status.failures.load(Ordering::SeqCst) == 0,
    );

    // Consistency, while the deleted pods are within their grace period.
    let within_grace = churn_start.elapsed() < GRACE;
    let expected_len = plan.node_live.len() + plan.node_deleted.len();
    checks.check(
        format!(
            "node watch: store size {} == node1 pods {} + deleted within grace {}",
            watch.store.len(),
            plan.node_live.len(),
            plan.node_deleted.len()
        ),
        within_grace && watch.store.len() == expected_len,
    );
    let live_ok = plan
        .node_live
        .iter()
        .all(|uid| watch.store.by_pod_uid(uid).is_some_and(|r| !r.deleted));
    checks.check("node watch: every node1 pod resolves, not deleted", live_ok);
    let deleted_ok = plan
        .node_deleted
        .iter()
        .all(|uid| watch.store.by_pod_uid(uid).is_some_and(|r| r.deleted));
    checks.check(
        "node watch: node1's deleted pods resolve as deleted during grace",
        within_grace && deleted_ok,
    );
    let leaked = plan
        .other_uids
        .iter()
        .filter(|uid| watch.store.by_pod_uid(uid).is_some())
        .count();
    checks.check(
        format!(
            "node watch: none of the {} other-node pods is in the store ({leaked} found)",
            plan.other_uids.len()
        ),
        leaked == 0,
    );
    // Every current container id of node1 resolves to its pod.
    let keep = AttributeConfig::default();
    let final_node_pods: Vec<Value> = server
        .pods()
        .into_iter()
        .filter(|p| node_of(p) == Some(NODE))
        .collect();
    let mut ids_ok = final_node_pods.len() == plan.node_live.len();
    for pod in &final_node_pods {
        let pod: Pod = serde_json::from_value(pod.clone()).unwrap();
        let meta = PodMeta::from_pod(&pod, &keep).unwrap();
        for c in &meta.containers {
            for id in &c.ids {
                ids_ok &= watch
                    .store
                    .by_container_id(&id.id)
                    .is_some_and(|r| r.pod.uid == meta.uid);
            }
        }
    }
    checks.check(
        "node watch: every container id of node1 (restarts included) resolves to its pod",
        ids_ok,
    );

    // After the grace period (plus a housekeeping tick) the deleted pods
    // must be gone.
    let expired = wait_for(GRACE + Duration::from_secs(5), || {
        watch.store.len() == plan.node_live.len()
    });
    let gone = plan
        .node_deleted
        .iter()
        .all(|uid| watch.store.by_pod_uid(uid).is_none());
    checks.check(
        format!(
            "node watch: deleted pods forgotten after the {}s grace (store size {} == {}, after {:.1}s)",
            GRACE.as_secs(),
            watch.store.len(),
            plan.node_live.len(),
            churn_start.elapsed().as_secs_f64()
        ),
        expired && gone,
    );
    drop(watch);
    for _ in 0..NODE_SYNC_REPEATS {
        run.resyncs.push(start_node_watch(&kubeconfig).2);
    }
    drop(server);
    run
}

/// Starts the agent's watch; returns it with its start and time to sync.
fn start_node_watch(kubeconfig: &Path) -> (BackgroundWatch, Instant, Duration) {
    let mut config = WatchConfig::new(NODE, Arc::new(AttributeConfig::default()));
    config.delete_grace = GRACE;
    let start = Instant::now();
    let watch = BackgroundWatch::start(Some(kubeconfig), config).expect("start the watch");
    assert!(
        wait_for(Duration::from_secs(60), || watch.store.synced()),
        "node watch never synced"
    );
    let synced = start.elapsed();
    (watch, start, synced)
}

#[derive(Default)]
struct Counters {
    synced: AtomicBool,
    init_items: AtomicU64,
    events: AtomicU64,
    failures: AtomicU64,
}

/// What a cluster-wide agent would do: kube's watcher with no selector.
fn cluster_wide(cluster: &Cluster, plan: &Plan, dir: &Path, checks: &mut Checks) -> Run {
    let server = loaded_server(cluster);
    mark("cluster run: fake server loaded");
    let kubeconfig = dir.join("kubeconfig-cluster");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let mut run = Run::default();
    let (wide, start, sync_time) = start_cluster_watch(&kubeconfig);
    let counters = wide.counters.clone();
    run.sync_time = sync_time;
    assert!(server.wait_for_watches_blocking(1, Duration::from_secs(10)));
    run.sync_lists = server.list_count();
    run.sync_watches = server.watch_count();
    run.sync_bytes = server.bytes_sent();
    run.sync_items = counters.init_items.load(Ordering::SeqCst);
    mark("cluster run: synced");
    run.list_queries = list_query(&server);
    (run.first_request, run.lists_done) = request_times(&server, start);
    checks.check(
        format!("cluster watch: initial list delivered all {CLUSTER_PODS} pods"),
        run.sync_items == CLUSTER_PODS as u64,
    );

    let churn_start = Instant::now();
    apply_churn(&server, plan);
    run.churn_apply = churn_start.elapsed();
    let delivered = wait_for(Duration::from_secs(60), || {
        counters.events.load(Ordering::SeqCst) >= plan.writes
    });
    run.churn_delivered = churn_start.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    run.churn_events = counters.events.load(Ordering::SeqCst);
    run.churn_bytes = server.bytes_sent() - run.sync_bytes;
    run.churn_requests =
        server.list_count() + server.watch_count() - run.sync_lists - run.sync_watches;
    mark("cluster run: churn delivered");
    checks.check(
        format!(
            "cluster watch: one event per write ({} expected, {} received, {} errors)",
            plan.writes,
            run.churn_events,
            counters.failures.load(Ordering::SeqCst)
        ),
        delivered && run.churn_events == plan.writes,
    );
    drop(wide);
    for _ in 0..CLUSTER_SYNC_REPEATS {
        run.resyncs.push(start_cluster_watch(&kubeconfig).2);
    }
    drop(server);
    run
}

/// kube's watcher over all pods on its own thread, counting events.
struct WideWatch {
    counters: Arc<Counters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WideWatch {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

fn start_cluster_watch(kubeconfig: &Path) -> (WideWatch, Instant, Duration) {
    let kubeconfig = kubeconfig.to_path_buf();
    let counters = Arc::new(Counters::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();

    let start = Instant::now();
    let c = counters.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let config = load_config(Some(&kubeconfig)).await.unwrap();
            let client = Client::try_from(config).unwrap();
            let api: Api<Pod> = Api::all(client);
            let mut events = watcher(api, watcher::Config::default()).boxed();
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    event = events.next() => match event {
                        None => break,
                        Some(Ok(Event::InitApply(_))) => {
                            c.init_items.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(Ok(Event::InitDone)) => c.synced.store(true, Ordering::SeqCst),
                        Some(Ok(Event::Apply(_) | Event::Delete(_))) => {
                            c.events.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(Ok(Event::Init)) => {}
                        Some(Err(_)) => {
                            c.failures.fetch_add(1, Ordering::SeqCst);
                        }
                    },
                }
            }
        });
    });
    assert!(
        wait_for(Duration::from_secs(60), || counters
            .synced
            .load(Ordering::SeqCst)),
        "cluster-wide watch never synced"
    );
    let synced = start.elapsed();
    let watch = WideWatch {
        counters,
        stop: Some(stop),
        thread: Some(thread),
    };
    (watch, start, synced)
}

// ---------------------------------------------------------------------------
// Memory of the stores
// ---------------------------------------------------------------------------

struct Memory {
    node_json_bytes: usize,
    cluster_json_bytes: usize,
    trimmed_node: isize,
    full_node_vec: isize,
    full_node_reflector: isize,
    full_cluster_reflector: isize,
    trimmed_cluster: isize,
    restarts: usize,
    restart_growth: isize,
    ids_after_restarts: usize,
    residual_after_expiry: isize,
}

fn trimmed_store(texts: &[String], keep: &AttributeConfig) -> PodStore {
    let store = PodStore::new();
    for text in texts {
        let pod: Pod = serde_json::from_str(text).unwrap();
        if let Some(meta) = PodMeta::from_pod(&pod, keep) {
            store.apply(meta);
        }
    }
    store
}

fn reflector_store(texts: &[String]) -> Writer<Pod> {
    let mut writer = Writer::<Pod>::default();
    for text in texts {
        let pod: Pod = serde_json::from_str(text).unwrap();
        writer.apply_watcher_event(&Event::Apply(pod));
    }
    writer
}

fn measure_memory(cluster: &Cluster, checks: &mut Checks) -> Memory {
    let (all, node) = (&cluster.all, &cluster.node);
    let keep = AttributeConfig::default();

    let (store, trimmed_node) = retained(|| trimmed_store(node, &keep));
    checks.check(
        "memory: trimmed store holds 110 pods",
        store.len() == NODE_PODS,
    );
    let (vec, full_node_vec) = retained(|| {
        node.iter()
            .map(|t| serde_json::from_str::<Pod>(t).unwrap())
            .collect::<Vec<Pod>>()
    });
    drop(vec);
    let (w, full_node_reflector) = retained(|| reflector_store(node));
    checks.check(
        "memory: reflector store holds 110 pods",
        w.as_reader().len() == NODE_PODS,
    );
    drop(w);
    let (w, full_cluster_reflector) = retained(|| reflector_store(all));
    checks.check(
        "memory: reflector store holds 10,000 pods",
        w.as_reader().len() == CLUSTER_PODS,
    );
    drop(w);
    let (s, trimmed_cluster) = retained(|| trimmed_store(all, &keep));
    drop(s);

    // One pod of node1 restarting over and over (a crash loop): how much
    // the store holds for it after each restart.
    let restarts = 200;
    let mut crashing: Value = serde_json::from_str(&node[5]).unwrap();
    let uid = uid_of(&crashing);
    let mut rng = Rng(7);
    let ((), restart_growth) = retained(|| {
        for i in 0..restarts {
            status_update(&mut crashing, Some(&rng.hex(64)), &timestamp(i));
            let pod: Pod = serde_json::from_value(crashing.clone()).unwrap();
            store.apply(PodMeta::from_pod(&pod, &keep).unwrap());
        }
    });
    let ids_after_restarts = store
        .by_pod_uid(&uid)
        .map(|r| r.pod.containers[0].ids.len())
        .unwrap_or(0);
    drop(store);

    // Every pod deleted, then expired after the grace period: what is left
    // of a store that held node1's pods.
    let uids: Vec<String> = node
        .iter()
        .map(|t| uid_of(&serde_json::from_str(t).unwrap()))
        .collect();
    let t0 = Instant::now();
    let (store, residual_after_expiry) = retained(|| {
        let store = trimmed_store(node, &keep);
        for uid in &uids {
            store.delete(uid, t0);
        }
        store.expire(t0 + GRACE, GRACE);
        store
    });
    checks.check(
        "memory: store empty after deletion and expiry",
        store.is_empty(),
    );
    drop(store);

    Memory {
        node_json_bytes: node.iter().map(String::len).sum(),
        cluster_json_bytes: all.iter().map(String::len).sum(),
        trimmed_node,
        full_node_vec,
        full_node_reflector,
        full_cluster_reflector,
        trimmed_cluster,
        restarts,
        restart_growth,
        ids_after_restarts,
        residual_after_expiry,
    }
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

fn kib(bytes: impl Into<f64>) -> String {
    let b: f64 = bytes.into();
    if b.abs() >= 10.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "—".to_string()
    } else {
        format!("{:.0}×", a / b)
    }
}

/// `median ms (min–max)` of some durations.
fn spread(times: &[Duration]) -> String {
    let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    format!(
        "{:.0} ms ({:.0}–{:.0}), n={}",
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1],
        ms.len()
    )
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let total = Instant::now();
    let dir: PathBuf =
        std::env::temp_dir().join(format!("hearth-k8s-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut checks = Checks(Vec::new());

    let t = Instant::now();
    let templates = Templates::load();
    let mut rng = Rng(0x4865_6172_7468);
    let pods = build_cluster(&templates, &mut rng);
    let plan = plan_churn(&templates, &pods, &mut rng);
    let cluster = Cluster::from_values(pods);
    let built = t.elapsed();
    mark("cluster built (10,000 pods as JSON text) and churn planned");

    let memory = measure_memory(&cluster, &mut checks);
    mark("heap measurements done");
    let node = node_scoped(&cluster, &plan, &dir, &mut checks);
    mark("node run done (watch and fake server dropped)");
    let wide = cluster_wide(&cluster, &plan, &dir, &mut checks);
    mark("cluster run done (watch and fake server dropped)");
    let hwm = proc_status("VmHWM:").unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);

    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "machine: {threads} CPUs (nproc), kernel {}, {}",
        kernel.trim(),
        cpu_model()
    );
    println!(
        "cluster: {CLUSTER_PODS} pods on {} nodes, {NODE_PODS} on {NODE}; built with churn plan in {:.2}s",
        OTHER_NODES + 1,
        built.as_secs_f64()
    );
    println!(
        "churn: {STATUS_UPDATES} status updates ({RESTART_PERCENT}% restarts), {CREATIONS} creations (3 writes: unscheduled, bound, running), {DELETIONS} deletions (2 writes: terminating, deleted) = {} writes; on {NODE}: {} status updates, {} created, {} deleted",
        plan.writes,
        plan.node_status_updates,
        plan.node_created.len(),
        plan.node_deleted.len()
    );
    println!();
    println!("requests, node watch:    {:?}", node.list_queries);
    println!(
        "requests, cluster watch: {} requests: {:?} ...",
        wide.list_queries.len(),
        &wide.list_queries[..2.min(wide.list_queries.len())]
    );
    println!();
    println!("| API load | node watch (`spec.nodeName={NODE}`) | cluster-wide watch | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| initial sync: list requests (pages of 500) + watch requests | {} + {} | {} + {} | |",
        node.sync_lists, node.sync_watches, wide.sync_lists, wide.sync_watches
    );
    println!(
        "| initial sync: pods received | {} | {} | {} |",
        node.sync_items,
        wide.sync_items,
        ratio(wide.sync_items as f64, node.sync_items as f64)
    );
    println!(
        "| initial sync: response bytes | {} | {} | {} |",
        kib(node.sync_bytes as f64),
        kib(wide.sync_bytes as f64),
        ratio(wide.sync_bytes as f64, node.sync_bytes as f64)
    );
    println!(
        "| first sync: time to synced store / InitDone | {:.0} ms | {:.0} ms | {} |",
        node.sync_time.as_secs_f64() * 1e3,
        wide.sync_time.as_secs_f64() * 1e3,
        ratio(wide.sync_time.as_secs_f64(), node.sync_time.as_secs_f64())
    );
    println!(
        "| time to sync of further watches started after the churn: median (min–max) | {} | {} | |",
        spread(&node.resyncs),
        spread(&wide.resyncs)
    );
    println!(
        "| first sync: start to first request / to last list answered | {:.1} / {:.1} ms | {:.1} / {:.1} ms | |",
        node.first_request.as_secs_f64() * 1e3,
        node.lists_done.as_secs_f64() * 1e3,
        wide.first_request.as_secs_f64() * 1e3,
        wide.lists_done.as_secs_f64() * 1e3
    );
    println!(
        "| churn ({} writes): watch events received | {} | {} | {} |",
        plan.writes,
        node.churn_events,
        wide.churn_events,
        ratio(wide.churn_events as f64, node.churn_events as f64)
    );
    println!(
        "| churn: watch response bytes | {} | {} | {} |",
        kib(node.churn_bytes as f64),
        kib(wide.churn_bytes as f64),
        ratio(wide.churn_bytes as f64, node.churn_bytes as f64)
    );
    println!(
        "| churn: new list/watch requests | {} | {} | |",
        node.churn_requests, wide.churn_requests
    );
    println!(
        "| churn: writes applied in / all events delivered after | {:.0} / {:.0} ms | {:.0} / {:.0} ms | |",
        node.churn_apply.as_secs_f64() * 1e3,
        node.churn_delivered.as_secs_f64() * 1e3,
        wide.churn_apply.as_secs_f64() * 1e3,
        wide.churn_delivered.as_secs_f64() * 1e3
    );
    println!();
    println!("| Memory (heap bytes requested, allocator overhead excluded) | bytes | per pod |");
    println!("| --- | ---: | ---: |");
    let row = |what: &str, bytes: isize, pods: usize| {
        println!(
            "| {what} | {} | {:.0} B |",
            kib(bytes as f64),
            bytes as f64 / pods as f64
        );
    };
    row(
        "node1's 110 pods as JSON list items (wire size, for scale)",
        memory.node_json_bytes as isize,
        NODE_PODS,
    );
    row(
        "all 10,000 pods as JSON list items (wire size, for scale)",
        memory.cluster_json_bytes as isize,
        CLUSTER_PODS,
    );
    row(
        "**trimmed `PodStore`, node1's 110 pods (the agent)**",
        memory.trimmed_node,
        NODE_PODS,
    );
    row(
        "110 full `Pod`s in a `Vec`",
        memory.full_node_vec,
        NODE_PODS,
    );
    row(
        "110 full `Pod`s in a kube reflector `Store`",
        memory.full_node_reflector,
        NODE_PODS,
    );
    row(
        "10,000 full `Pod`s in a kube reflector `Store` (cluster-wide reflector)",
        memory.full_cluster_reflector,
        CLUSTER_PODS,
    );
    row(
        "trimmed `PodStore` of all 10,000 pods (cluster-wide watch, trimmed)",
        memory.trimmed_cluster,
        CLUSTER_PODS,
    );
    println!(
        "| store growth over {} restarts of one container | {} | {:.0} B per restart; the container now holds {} ids |",
        memory.restarts,
        kib(memory.restart_growth as f64),
        memory.restart_growth as f64 / memory.restarts as f64,
        memory.ids_after_restarts
    );
    println!(
        "| left after deleting all 110 pods and expiring them | {} | (empty maps keep their capacity) |",
        kib(memory.residual_after_expiry as f64)
    );
    println!();
    println!(
        "ratios: full/trimmed at 110 pods (reflector) {}, cluster reflector/trimmed node store {}",
        ratio(
            memory.full_node_reflector as f64,
            memory.trimmed_node as f64
        ),
        ratio(
            memory.full_cluster_reflector as f64,
            memory.trimmed_node as f64
        )
    );
    println!();
    println!("| Process memory at | live heap (counted) | VmRSS |");
    println!("| --- | ---: | ---: |");
    for (label, heap, rss) in TIMELINE.lock().unwrap().iter() {
        println!(
            "| {label} | {:.0} MiB | {} MiB |",
            *heap as f64 / (1024.0 * 1024.0),
            rss / 1024
        );
    }
    println!(
        "| **peak RSS (VmHWM) at the end** | | **{} MiB** |",
        hwm / 1024
    );
    println!("total time {:.1}s", total.elapsed().as_secs_f64());
    println!();
    let mut failed = 0;
    for (what, ok) in &checks.0 {
        println!("[{}] {what}", if *ok { "ok" } else { "FAIL" });
        failed += usize::from(!ok);
    }
    if failed > 0 {
        eprintln!("{failed} checks failed");
        std::process::exit(1);
    }
}
