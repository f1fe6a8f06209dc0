//! A fake Kubernetes API server for integration tests.
//!
//! It serves the core/v1 `pods` resource over plain HTTP/1.1 on
//! `127.0.0.1:<random port>`, with the wire behaviour a list/watch client
//! depends on:
//!
//! * `GET /api/v1/pods` and `GET /api/v1/namespaces/<ns>/pods`: list, with
//!   `fieldSelector` (`spec.nodeName`, `metadata.name`,
//!   `metadata.namespace`, `status.phase`; `=`, `==`, `!=`),
//!   equality-based `labelSelector`, `limit`/`continue` pagination over a
//!   consistent snapshot, and `resourceVersion` + `resourceVersionMatch`
//!   (unset, `0`, `NotOlderThan`, `Exact`). Items carry no kind/apiVersion.
//! * The same paths with `watch=true`: a chunked `200` stream of one JSON
//!   event per line (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`).
//!   A watch from a resourceVersion older than the compaction point gets a
//!   single `ERROR` event carrying a `410 Expired` Status, then the stream
//!   ends. `sendInitialEvents=true` (streaming list) is supported too.
//!   A pod that starts or stops matching a watch's selectors is delivered
//!   as `ADDED` or `DELETED`, as the real watch cache does.
//! * `GET /api/v1/namespaces/<ns>/pods/<name>` and `GET /version`.
//! * Bearer token authentication (`401` on a wrong or missing token), a
//!   `403 Forbidden` switch, a `503 Service Unavailable` switch and an
//!   outage switch that closes the listener (connections are refused) and
//!   later listens again on the same port.
//! * Every request is recorded ([`RecordedRequest`]: method, path and
//!   query, status, `User-Agent`).
//!
//! Everything is driven from the test through [`FakeApiServer`], whose
//! methods are synchronous and thread-safe, so they can be called from
//! plain `#[test]` functions and from inside `#[tokio::test]` alike: the
//! server runs on its own single-threaded tokio runtime on a background
//! thread.
//!
//! Include it from a test crate with
//!
//! ```ignore
//! #[path = "support/fake_apiserver.rs"]
//! mod fake_apiserver;
//! use fake_apiserver::FakeApiServer;
//! ```
//!
//! Fixtures live in `tests/support/pods/*.json` (see the README there) and
//! load with [`fixture`] or [`FakeApiServer::add_fixture`].
//!
//! Needs (dev-dependencies): `tokio` with `rt`, `net`, `sync`, `time`;
//! `hyper` 1 with `server` and `http1`; `hyper-util` with `tokio`;
//! `serde_json`.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, oneshot, watch};

/// The bearer token the fake accepts (and puts in its kubeconfig).
pub const FAKE_TOKEN: &str = "hearth-fake-token";
/// The user the 403 messages name, as a DaemonSet's service account.
pub const FAKE_USER: &str = "system:serviceaccount:hearth:hearth";
/// The resourceVersion of the empty store at start.
const INITIAL_RV: u64 = 1000;
/// Watch duration when the client gives no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// One request the fake received, in arrival order.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query exactly as sent (query still percent-encoded).
    pub path_and_query: String,
    pub at: Instant,
    /// What the fake made of it.
    pub kind: RequestKind,
    /// The HTTP status answered (`200` for a watch that was opened, even if
    /// it then delivered a `410` ERROR event).
    pub status: u16,
    /// The `User-Agent` header, if the client sent one.
    pub user_agent: Option<String>,
}

/// Classification of a [`RecordedRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    List,
    Watch,
    Get,
    Other,
}

impl RecordedRequest {
    pub fn is_list(&self) -> bool {
        self.kind == RequestKind::List
    }
    pub fn is_watch(&self) -> bool {
        self.kind == RequestKind::Watch
    }
    /// The decoded value of one query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.path_and_query.split_once('?')?.1;
        parse_query(query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Anything that can be turned into a pod object for
/// [`FakeApiServer::add_pod`]: a `serde_json::Value` or JSON text.
pub trait IntoPodJson {
    fn into_pod_json(self) -> Value;
}

impl IntoPodJson for Value {
    fn into_pod_json(self) -> Value {
        self
    }
}

impl IntoPodJson for &Value {
    fn into_pod_json(self) -> Value {
        self.clone()
    }
}

impl IntoPodJson for &str {
    fn into_pod_json(self) -> Value {
        serde_json::from_str(self).expect("pod JSON does not parse")
    }
}

impl IntoPodJson for String {
    fn into_pod_json(self) -> Value {
        self.as_str().into_pod_json()
    }
}

/// Directory of the pod fixtures (this module is also used by other
/// crates' tests, so the path goes through the workspace's crates folder).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hearth-k8s/tests/support/pods")
}

/// A fixture by name (`"deployment"` or `"deployment.json"`), parsed.
pub fn fixture(name: &str) -> Value {
    let file = if name.ends_with(".json") {
        name.to_string()
    } else {
        format!("{name}.json")
    };
    let path = fixtures_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("fixture {} does not parse: {e}", path.display()))
}

/// Names of all fixtures (without `.json`), sorted.
pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures directory")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One write, kept for watch replay and for consistent paged lists.
struct Change {
    rv: u64,
    key: String,
    kind: ChangeKind,
    /// The stored object before the write.
    old: Option<Value>,
    /// The object as delivered: the new state, or for a delete the last
    /// state with the deletion's resourceVersion.
    obj: Value,
}

struct WatchSub {
    id: u64,
    filter: Filter,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Bytes>,
}

struct State {
    rv: u64,
    /// Watches and exact lists from a resourceVersion below this get 410.
    compacted: u64,
    /// Pods by `<namespace>/<name>` (storage key order), without
    /// kind/apiVersion.
    pods: BTreeMap<String, Value>,
    /// Writes with rv > `compacted`, oldest first.
    history: Vec<Change>,
    watches: Vec<WatchSub>,
    next_watch_id: u64,
    next_uid: u64,
    forbidden: bool,
    unavailable: bool,
    requests: Vec<RecordedRequest>,
}

struct Shared {
    state: Mutex<State>,
    bytes_sent: AtomicU64,
    live_connections: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not wedge the server for the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The listener side, swapped by [`FakeApiServer::set_down`].
struct Net {
    down: bool,
    stop_accepting: Option<oneshot::Sender<()>>,
    accept_stopped: Option<std::sync::mpsc::Receiver<()>>,
    /// Bumped to drop every open connection.
    kill: watch::Sender<u64>,
}

/// The fake API server; dropping it stops the server.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    handle: tokio::runtime::Handle,
    net: Mutex<Net>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts an empty server on `127.0.0.1:<random port>`.
    pub fn start() -> FakeApiServer {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake apiserver runtime");
                handle_tx.send(rt.handle().clone()).unwrap();
                rt.block_on(async {
                    let _ = shutdown_rx.await;
                });
            })
            .expect("spawn fake apiserver thread");
        let handle = handle_rx.recv().expect("fake apiserver runtime handle");

        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: INITIAL_RV,
                compacted: 0,
                pods: BTreeMap::new(),
                history: Vec::new(),
                watches: Vec::new(),
                next_watch_id: 1,
                next_uid: 1,
                forbidden: false,
                unavailable: false,
                requests: Vec::new(),
            }),
            bytes_sent: AtomicU64::new(0),
            live_connections: AtomicUsize::new(0),
        });
        let (kill, _) = watch::channel(0u64);
        let mut net = Net {
            down: true,
            stop_accepting: None,
            accept_stopped: None,
            kill,
        };
        let addr = listen(&handle, &shared, &mut net, "127.0.0.1:0".parse().unwrap())
            .expect("bind fake apiserver");
        FakeApiServer {
            shared,
            addr,
            handle,
            net: Mutex::new(net),
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig with one cluster (this server), one token user and a
    /// current context using both.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {url}
contexts:
- name: fake
  context:
    cluster: fake
    user: hearth
    namespace: default
current-context: fake
users:
- name: hearth
  user:
    token: {FAKE_TOKEN}
preferences: {{}}
",
            url = self.url()
        )
    }

    /// Writes [`Self::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    // --- store ---------------------------------------------------------------

    /// Creates a pod (an `ADDED` event) and returns the new resourceVersion.
    /// `kind`/`apiVersion` are dropped, `metadata.resourceVersion` is set;
    /// namespace defaults to `default`, and a missing uid or
    /// creationTimestamp is filled in. Panics if the pod already exists.
    pub fn add_pod(&self, pod: impl IntoPodJson) -> u64 {
        let mut pod = pod.into_pod_json();
        let mut st = self.shared.lock();
        normalize(&mut st, &mut pod);
        let key = key_of(&pod);
        assert!(
            !st.pods.contains_key(&key),
            "pod {key} already exists (use replace_pod or modify_pod)"
        );
        commit(&mut st, key, ChangeKind::Added, None, pod)
    }

    /// [`Self::add_pod`] of a fixture from `tests/support/pods`.
    pub fn add_fixture(&self, name: &str) -> u64 {
        self.add_pod(fixture(name))
    }

    /// Replaces an existing pod as a whole (a `MODIFIED` event).
    pub fn replace_pod(&self, pod: impl IntoPodJson) -> u64 {
        let mut pod = pod.into_pod_json();
        let mut st = self.shared.lock();
        normalize(&mut st, &mut pod);
        let key = key_of(&pod);
        let old = st
            .pods
            .get(&key)
            .cloned()
            .unwrap_or_else(|| panic!("pod {key} does not exist"));
        commit(&mut st, key, ChangeKind::Modified, Some(old), pod)
    }

    /// Edits a pod in place (a `MODIFIED` event); returns the new
    /// resourceVersion. Panics if the pod does not exist.
    pub fn modify_pod(&self, namespace: &str, name: &str, edit: impl FnOnce(&mut Value)) -> u64 {
        let key = format!("{namespace}/{name}");
        let mut st = self.shared.lock();
        let old = st
            .pods
            .get(&key)
            .cloned()
            .unwrap_or_else(|| panic!("pod {key} does not exist"));
        let mut pod = old.clone();
        edit(&mut pod);
        normalize(&mut st, &mut pod);
        assert_eq!(key_of(&pod), key, "modify_pod must not rename the pod");
        commit(&mut st, key, ChangeKind::Modified, Some(old), pod)
    }

    /// Removes a pod at once (a `DELETED` event carrying its last state).
    /// A graceful deletion is `modify_pod` setting
    /// `metadata.deletionTimestamp` first. Panics if the pod does not exist.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> u64 {
        let key = format!("{namespace}/{name}");
        let mut st = self.shared.lock();
        let old = st
            .pods
            .get(&key)
            .cloned()
            .unwrap_or_else(|| panic!("pod {key} does not exist"));
        let obj = old.clone();
        commit(&mut st, key, ChangeKind::Deleted, Some(old), obj)
    }

    /// The stored pod (without kind/apiVersion), if any.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .pods
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }

    /// All stored pods, in storage key order.
    pub fn pods(&self) -> Vec<Value> {
        self.shared.lock().pods.values().cloned().collect()
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    // --- watch control -------------------------------------------------------

    /// Sends a `BOOKMARK` at the current resourceVersion to every open watch
    /// that asked for bookmarks.
    pub fn bookmark(&self) {
        let mut st = self.shared.lock();
        let line = bookmark_line(st.rv, false);
        st.watches
            .retain(|w| !w.bookmarks || w.tx.send(line.clone()).is_ok());
    }

    /// Drops the change history up to now, as an etcd compaction does, and
    /// advances the resourceVersion by one (as unrelated writes elsewhere in
    /// a cluster would), so that any client holding an older
    /// resourceVersion gets `410 Expired` on its next watch or exact list.
    /// Open watches are not touched: combine with [`Self::close_watches`].
    pub fn compact(&self) {
        let mut st = self.shared.lock();
        st.rv += 1;
        st.compacted = st.rv;
        st.history.clear();
    }

    /// Ends every open watch stream cleanly (the final chunk is sent), so
    /// that clients reconnect with their last resourceVersion.
    pub fn close_watches(&self) {
        self.shared.lock().watches.clear();
    }

    /// Number of watch streams currently open.
    pub fn open_watches(&self) -> usize {
        let mut st = self.shared.lock();
        st.watches.retain(|w| !w.tx.is_closed());
        st.watches.len()
    }

    /// Waits (on the caller's tokio runtime) until at least `n` watches are
    /// open; false on timeout.
    pub async fn wait_for_watches(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.open_watches() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// [`Self::wait_for_watches`] for synchronous tests (blocks the thread:
    /// don't call it from a single-threaded runtime that runs the client).
    pub fn wait_for_watches_blocking(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.open_watches() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    // --- failure switches ----------------------------------------------------

    /// While on, every new request gets `403 Forbidden` with a Status body
    /// naming [`FAKE_USER`]. Watches already open stay open (as with a real
    /// RBAC change): call [`Self::close_watches`] to make clients notice.
    pub fn set_forbidden(&self, forbidden: bool) {
        self.shared.lock().forbidden = forbidden;
    }

    /// While on, every new request gets `503 Service Unavailable` with a
    /// Status body, as from an API server that is starting or overloaded
    /// (open watches stay open: combine with [`Self::close_watches`]).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.lock().unavailable = unavailable;
    }

    /// Outage switch. `true`: stop listening and drop every open
    /// connection (watches included), so new connections are refused;
    /// returns once that is so. `false`: listen again on the same port;
    /// returns once connections are accepted again.
    pub fn set_down(&self, down: bool) {
        let mut net = self.net.lock().unwrap_or_else(|e| e.into_inner());
        if net.down == down {
            return;
        }
        if down {
            if let Some(stop) = net.stop_accepting.take() {
                let _ = stop.send(());
            }
            if let Some(stopped) = net.accept_stopped.take() {
                let _ = stopped.recv_timeout(Duration::from_secs(5));
            }
            net.kill.send_modify(|generation| *generation += 1);
            self.shared.lock().watches.clear();
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.shared.live_connections.load(Ordering::SeqCst) > 0
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            net.down = true;
        } else {
            // The port was ours a moment ago; retry briefly in case the
            // kernel is slow to release it.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match listen(&self.handle, &self.shared, &mut net, self.addr) {
                    Ok(_) => break,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => panic!("cannot listen again on {}: {e}", self.addr),
                }
            }
        }
    }

    // --- measurements --------------------------------------------------------

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Forgets the recorded requests (not the byte count).
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Number of list requests so far (each page counts).
    pub fn list_count(&self) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.is_list())
            .count()
    }

    /// Number of watch requests so far.
    pub fn watch_count(&self) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.is_watch())
            .count()
    }

    /// Response body bytes handed to the network so far (lists, gets, error
    /// bodies and watch events; HTTP headers and chunk framing excluded).
    pub fn bytes_sent(&self) -> u64 {
        self.shared.bytes_sent.load(Ordering::SeqCst)
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.lock().watches.clear();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds `addr` (SO_REUSEADDR, so a port we just closed can be taken
/// again) and starts accepting on the server's runtime.
fn listen(
    handle: &tokio::runtime::Handle,
    shared: &Arc<Shared>,
    net: &mut Net,
    addr: SocketAddr,
) -> std::io::Result<SocketAddr> {
    let _enter = handle.enter();
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(1024)?;
    let bound = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel();
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
    handle.spawn(accept_loop(
        shared.clone(),
        listener,
        net.kill.clone(),
        stop_rx,
        stopped_tx,
    ));
    net.stop_accepting = Some(stop_tx);
    net.accept_stopped = Some(stopped_rx);
    net.down = false;
    Ok(bound)
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    kill: watch::Sender<u64>,
    mut stop: oneshot::Receiver<()>,
    stopped: std::sync::mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let mut kill_rx = kill.subscribe();
                let shared = shared.clone();
                shared.live_connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _live = LiveConnection(shared.clone());
                    let service = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle_request(&shared, req)) }
                    });
                    let conn = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = kill_rx.changed() => {}
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stopped.send(());
}

struct LiveConnection(Arc<Shared>);

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.0.live_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------
// Response body: a whole buffer, or a stream of watch events.
// ---------------------------------------------------------------------------

enum FakeBodyKind {
    Full(Option<Bytes>),
    Stream(mpsc::UnboundedReceiver<Bytes>),
}

struct FakeBody {
    kind: FakeBodyKind,
    shared: Arc<Shared>,
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let chunk = match &mut this.kind {
            FakeBodyKind::Full(data) => data.take(),
            FakeBodyKind::Stream(rx) => match rx.poll_recv(cx) {
                Poll::Ready(chunk) => chunk,
                Poll::Pending => return Poll::Pending,
            },
        };
        Poll::Ready(chunk.map(|bytes| {
            this.shared
                .bytes_sent
                .fetch_add(bytes.len() as u64, Ordering::SeqCst);
            Ok(Frame::data(bytes))
        }))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, FakeBodyKind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            FakeBodyKind::Full(Some(data)) => SizeHint::with_exact(data.len() as u64),
            FakeBodyKind::Full(None) => SizeHint::with_exact(0),
            FakeBodyKind::Stream(_) => SizeHint::default(),
        }
    }
}

fn json_response(shared: &Arc<Shared>, status: StatusCode, body: String) -> Response<FakeBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(FakeBody {
            kind: FakeBodyKind::Full(Some(Bytes::from(body))),
            shared: shared.clone(),
        })
        .unwrap()
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// An error answered as a `Status` object.
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn status_json(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

enum Route {
    /// Pods, in a namespace or all; `name` for a single get.
    Pods {
        namespace: Option<String>,
        name: Option<String>,
    },
    Version,
    Unknown,
}

fn route(path: &str) -> Route {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["", "version"] => Route::Version,
        ["", "api", "v1", "pods"] => Route::Pods {
            namespace: None,
            name: None,
        },
        ["", "api", "v1", "namespaces", ns, "pods"] => Route::Pods {
            namespace: Some(percent_decode(ns)),
            name: None,
        },
        ["", "api", "v1", "namespaces", ns, "pods", name] => Route::Pods {
            namespace: Some(percent_decode(ns)),
            name: Some(percent_decode(name)),
        },
        _ => Route::Unknown,
    }
}

fn handle_request(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<FakeBody> {
    let method = req.method().clone();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let path = req.uri().path().to_string();
    let params = parse_query(req.uri().query().unwrap_or(""));
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let is_watch = matches!(param("watch"), Some("true" | "1"));
    let user_agent = req
        .headers()
        .get("user-agent")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let route = route(&path);
    let kind = match (&route, method == Method::GET) {
        (Route::Pods { name: Some(_), .. }, true) => RequestKind::Get,
        (Route::Pods { name: None, .. }, true) if is_watch => RequestKind::Watch,
        (Route::Pods { name: None, .. }, true) => RequestKind::List,
        _ => RequestKind::Other,
    };

    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {FAKE_TOKEN}"));

    let mut st = shared.lock();
    let result: Result<Response<FakeBody>, ApiError> = if !authorized {
        Err(ApiError::new(401, "Unauthorized", "Unauthorized"))
    } else if st.unavailable {
        Err(ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ))
    } else if st.forbidden {
        Err(forbidden(&route, kind, &path))
    } else {
        match (&route, kind) {
            (Route::Version, _) if method == Method::GET => Ok(json_response(
                shared,
                StatusCode::OK,
                json!({
                    "major": "1",
                    "minor": "35",
                    "gitVersion": "v1.35.0",
                    "gitCommit": "0000000000000000000000000000000000000000",
                    "gitTreeState": "clean",
                    "buildDate": "2026-01-01T00:00:00Z",
                    "goVersion": "go1.25.0",
                    "compiler": "gc",
                    "platform": "linux/amd64"
                })
                .to_string(),
            )),
            (Route::Pods { namespace, name }, RequestKind::Get) => {
                get_pod(&st, namespace.as_deref().unwrap(), name.as_deref().unwrap())
                    .map(|body| json_response(shared, StatusCode::OK, body))
            }
            (Route::Pods { namespace, .. }, RequestKind::List) => {
                list_pods(&st, namespace.clone(), &params)
                    .map(|body| json_response(shared, StatusCode::OK, body))
            }
            (Route::Pods { namespace, .. }, RequestKind::Watch) => {
                start_watch(shared, &mut st, namespace.clone(), &params)
            }
            (Route::Pods { .. }, _) => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("the fake API server does not support {method} on pods"),
            )),
            _ => Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )),
        }
    };
    let response = result.unwrap_or_else(|e| {
        let status = StatusCode::from_u16(e.code).unwrap();
        json_response(shared, status, e.status_json().to_string())
    });
    st.requests.push(RecordedRequest {
        method: method.to_string(),
        path_and_query,
        at: Instant::now(),
        kind,
        status: response.status().as_u16(),
        user_agent,
    });
    response
}

fn forbidden(route: &Route, kind: RequestKind, path: &str) -> ApiError {
    let (verb, namespace, name) = match (route, kind) {
        (Route::Pods { namespace, name }, RequestKind::Get) => {
            ("get", namespace.clone(), name.clone())
        }
        (Route::Pods { namespace, .. }, RequestKind::Watch) => ("watch", namespace.clone(), None),
        (Route::Pods { namespace, .. }, _) => ("list", namespace.clone(), None),
        _ => {
            return ApiError::new(
                403,
                "Forbidden",
                format!("forbidden: User \"{FAKE_USER}\" cannot get path \"{path}\""),
            )
        }
    };
    let subject = match &name {
        Some(name) => format!("pods \"{name}\" is forbidden"),
        None => "pods is forbidden".to_string(),
    };
    let scope = match &namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let mut err = ApiError::new(
        403,
        "Forbidden",
        format!(
            "{subject}: User \"{FAKE_USER}\" cannot {verb} resource \"pods\" in API group \"\" {scope}"
        ),
    );
    err.details = Some(match name {
        Some(name) => json!({"name": name, "kind": "pods"}),
        None => json!({"kind": "pods"}),
    });
    err
}

fn get_pod(st: &State, namespace: &str, name: &str) -> Result<String, ApiError> {
    match st.pods.get(&format!("{namespace}/{name}")) {
        Some(pod) => Ok(with_type_meta(pod)),
        None => {
            let mut err = ApiError::new(404, "NotFound", format!("pods \"{name}\" not found"));
            err.details = Some(json!({"name": name, "kind": "pods"}));
            Err(err)
        }
    }
}

fn expired(message: String) -> ApiError {
    ApiError::new(410, "Expired", message)
}

fn too_large(requested: u64, current: u64) -> ApiError {
    let mut err = ApiError::new(
        504,
        "Timeout",
        format!("Too large resource version: {requested}, current: {current}"),
    );
    err.details = Some(json!({
        "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
        "retryAfterSeconds": 1
    }));
    err
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "BadRequest", message)
}

fn parse_rv(value: &str) -> Result<u64, ApiError> {
    value
        .parse()
        .map_err(|_| bad_request(format!("invalid resource version \"{value}\"")))
}

fn list_pods(
    st: &State,
    namespace: Option<String>,
    params: &[(String, String)],
) -> Result<String, ApiError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let filter = Filter::parse(namespace, param("fieldSelector"), param("labelSelector"))?;
    let limit: usize = match param("limit") {
        None | Some("") => 0,
        Some(v) => v
            .parse()
            .map_err(|_| bad_request(format!("invalid limit \"{v}\"")))?,
    };
    let rv_param = param("resourceVersion").filter(|v| !v.is_empty());
    let rv_match = param("resourceVersionMatch").filter(|v| !v.is_empty());
    if rv_match.is_some() && rv_param.is_none() {
        return Err(ApiError::new(
            422,
            "Invalid",
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }

    let (snapshot_rv, start_after) = match param("continue").filter(|v| !v.is_empty()) {
        Some(token) => {
            if rv_param.is_some_and(|rv| rv != "0") {
                return Err(bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (rv, start) =
                decode_continue(token).ok_or_else(|| bad_request("continue key is not valid"))?;
            if rv < st.compacted {
                return Err(expired(
                    "The provided continue parameter is too old to display a consistent list result. \
                     Start a new list without the continue parameter."
                        .to_string(),
                ));
            }
            (rv, Some(start))
        }
        None => {
            let rv = match (rv_param, rv_match) {
                // Most recent, or any (served from the "cache": ours is
                // always current).
                (None, _) | (Some("0"), None | Some("NotOlderThan")) => st.rv,
                (Some(v), Some("Exact")) => exact_rv(st, parse_rv(v)?)?,
                // A non-zero version without a match is exact when paging,
                // not-older-than otherwise.
                (Some(v), None) if limit > 0 => exact_rv(st, parse_rv(v)?)?,
                (Some(v), None | Some("NotOlderThan")) => {
                    let requested = parse_rv(v)?;
                    if requested > st.rv {
                        return Err(too_large(requested, st.rv));
                    }
                    st.rv
                }
                (Some(_), Some(other)) => {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        format!("unsupported resourceVersionMatch value: \"{other}\""),
                    ))
                }
            };
            (rv, None)
        }
    };

    let snapshot = snapshot_at(st, snapshot_rv);
    let matching: Vec<(&String, &Value)> = snapshot
        .iter()
        .filter(|(key, _)| {
            start_after
                .as_ref()
                .is_none_or(|s| key.as_str() > s.as_str())
        })
        .filter(|(_, pod)| filter.matches(pod))
        .collect();
    let (page, rest) = if limit > 0 && matching.len() > limit {
        matching.split_at(limit)
    } else {
        (&matching[..], &[][..])
    };

    let mut metadata = serde_json::Map::new();
    metadata.insert("resourceVersion".into(), json!(snapshot_rv.to_string()));
    if let Some((last_key, _)) = page.last().filter(|_| !rest.is_empty()) {
        metadata.insert(
            "continue".into(),
            json!(encode_continue(snapshot_rv, last_key)),
        );
        // The real server can only count what is left without selectors.
        if filter.fields.is_empty() && filter.labels.is_empty() {
            metadata.insert("remainingItemCount".into(), json!(rest.len()));
        }
    }
    let items: Vec<String> = page
        .iter()
        .map(|(_, pod)| serde_json::to_string(pod).unwrap())
        .collect();
    Ok(format!(
        "{{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{},\"items\":[{}]}}\n",
        Value::Object(metadata),
        items.join(",")
    ))
}

fn exact_rv(st: &State, rv: u64) -> Result<u64, ApiError> {
    if rv > st.rv {
        Err(too_large(rv, st.rv))
    } else if rv < st.compacted {
        Err(expired(
            "The resourceVersion for the provided list is too old.".to_string(),
        ))
    } else {
        Ok(rv)
    }
}

/// The store as of `rv` (which must be >= the compaction point), by
/// undoing later writes.
fn snapshot_at(st: &State, rv: u64) -> std::borrow::Cow<'_, BTreeMap<String, Value>> {
    if rv >= st.rv {
        return std::borrow::Cow::Borrowed(&st.pods);
    }
    let mut pods = st.pods.clone();
    for change in st.history.iter().rev().take_while(|c| c.rv > rv) {
        match &change.old {
            Some(old) => pods.insert(change.key.clone(), old.clone()),
            None => pods.remove(&change.key),
        };
    }
    std::borrow::Cow::Owned(pods)
}

fn start_watch(
    shared: &Arc<Shared>,
    st: &mut State,
    namespace: Option<String>,
    params: &[(String, String)],
) -> Result<Response<FakeBody>, ApiError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let filter = Filter::parse(namespace, param("fieldSelector"), param("labelSelector"))?;
    let bookmarks = param("allowWatchBookmarks") == Some("true");
    let send_initial = param("sendInitialEvents") == Some("true");
    let timeout = match param("timeoutSeconds") {
        None | Some("") => DEFAULT_WATCH_TIMEOUT,
        Some(v) => Duration::from_secs(
            v.parse()
                .map_err(|_| bad_request(format!("invalid timeoutSeconds \"{v}\"")))?,
        ),
    };
    let rv_param = param("resourceVersion").filter(|v| !v.is_empty());
    if send_initial && (!bookmarks || param("resourceVersionMatch") != Some("NotOlderThan")) {
        return Err(ApiError::new(
            422,
            "Invalid",
            "sendInitialEvents requires allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan",
        ));
    }

    let (tx, rx) = mpsc::unbounded_channel();
    let mut keep_open = true;
    match rv_param {
        _ if send_initial => {
            for pod in st.pods.values().filter(|p| filter.matches(p)) {
                let _ = tx.send(event_line("ADDED", pod));
            }
            let _ = tx.send(bookmark_line(st.rv, true));
        }
        // Start at most recent / any: the current state as synthetic ADDs.
        None | Some("0") => {
            for pod in st.pods.values().filter(|p| filter.matches(p)) {
                let _ = tx.send(event_line("ADDED", pod));
            }
        }
        Some(v) => {
            let from = parse_rv(v)?;
            if from < st.compacted {
                let status = expired(format!(
                    "too old resource version: {from} ({})",
                    st.compacted
                ))
                .status_json();
                let _ = tx.send(Bytes::from(format!(
                    "{{\"type\":\"ERROR\",\"object\":{status}}}\n"
                )));
                keep_open = false;
            } else {
                for change in st.history.iter().filter(|c| c.rv > from) {
                    if let Some(line) = filter.event_for(change) {
                        let _ = tx.send(line);
                    }
                }
            }
        }
    }

    if keep_open {
        let id = st.next_watch_id;
        st.next_watch_id += 1;
        st.watches.push(WatchSub {
            id,
            filter,
            bookmarks,
            tx,
        });
        let expiry_shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            expiry_shared.lock().watches.retain(|w| w.id != id);
        });
    } else {
        drop(tx);
    }

    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(FakeBody {
            kind: FakeBodyKind::Stream(rx),
            shared: shared.clone(),
        })
        .unwrap())
}

// ---------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------

fn key_of(pod: &Value) -> String {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = pod["metadata"]["name"]
        .as_str()
        .expect("pod has no metadata.name");
    format!("{ns}/{name}")
}

fn normalize(st: &mut State, pod: &mut Value) {
    let obj = pod.as_object_mut().expect("a pod is a JSON object");
    obj.remove("kind");
    obj.remove("apiVersion");
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("metadata is an object");
    meta.entry("namespace").or_insert_with(|| json!("default"));
    if !meta.contains_key("uid") {
        let n = st.next_uid;
        st.next_uid += 1;
        meta.insert(
            "uid".into(),
            json!(format!("00000000-0000-4000-8000-{n:012x}")),
        );
    }
    meta.entry("creationTimestamp")
        .or_insert_with(|| json!("2026-11-21T00:00:00Z"));
}

/// Applies a write under the lock, records it and fans it out.
fn commit(
    st: &mut State,
    key: String,
    kind: ChangeKind,
    old: Option<Value>,
    mut obj: Value,
) -> u64 {
    st.rv += 1;
    let rv = st.rv;
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    match kind {
        ChangeKind::Deleted => {
            st.pods.remove(&key);
        }
        _ => {
            st.pods.insert(key.clone(), obj.clone());
        }
    }
    let change = Change {
        rv,
        key,
        kind,
        old,
        obj,
    };
    st.watches.retain(|w| match w.filter.event_for(&change) {
        Some(line) => w.tx.send(line).is_ok(),
        None => !w.tx.is_closed(),
    });
    st.history.push(change);
    rv
}

// ---------------------------------------------------------------------------
// Wire encoding
// ---------------------------------------------------------------------------

/// The pod with `kind`/`apiVersion` first, as single objects and watch
/// events carry them (list items don't).
fn with_type_meta(pod: &Value) -> String {
    let body = serde_json::to_string(pod).unwrap();
    let rest = body.strip_prefix('{').expect("object");
    if rest == "}" {
        "{\"kind\":\"Pod\",\"apiVersion\":\"v1\"}".to_string()
    } else {
        format!("{{\"kind\":\"Pod\",\"apiVersion\":\"v1\",{rest}")
    }
}

fn event_line(kind: &str, pod: &Value) -> Bytes {
    Bytes::from(format!(
        "{{\"type\":\"{kind}\",\"object\":{}}}\n",
        with_type_meta(pod)
    ))
}

/// A bookmark as a real server encodes it for pods: an empty Pod whose
/// only set field is the resourceVersion (the empty spec and status still
/// appear, `containers` as null).
fn bookmark_line(rv: u64, initial_events_end: bool) -> Bytes {
    let annotations = if initial_events_end {
        ",\"annotations\":{\"k8s.io/initial-events-end\":\"true\"}"
    } else {
        ""
    };
    Bytes::from(format!(
        "{{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\
         \"metadata\":{{\"resourceVersion\":\"{rv}\"{annotations}}},\
         \"spec\":{{\"containers\":null}},\"status\":{{}}}}}}\n"
    ))
}

// ---------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct FieldReq {
    field: String,
    value: String,
    equal: bool,
}

#[derive(Clone, Debug)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    Exists(String),
    NotExists(String),
}

#[derive(Clone, Debug)]
struct Filter {
    namespace: Option<String>,
    fields: Vec<FieldReq>,
    labels: Vec<LabelReq>,
}

const SUPPORTED_FIELDS: &[&str] = &[
    "spec.nodeName",
    "metadata.name",
    "metadata.namespace",
    "status.phase",
];

impl Filter {
    fn parse(
        namespace: Option<String>,
        fields: Option<&str>,
        labels: Option<&str>,
    ) -> Result<Filter, ApiError> {
        let mut filter = Filter {
            namespace,
            fields: Vec::new(),
            labels: Vec::new(),
        };
        for term in fields.unwrap_or("").split(',').filter(|t| !t.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, true)
            } else {
                return Err(bad_request(format!(
                    "invalid field selector: invalid selector: '{term}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            if !SUPPORTED_FIELDS.contains(&field) {
                return Err(bad_request(format!("field label not supported: {field}")));
            }
            filter.fields.push(FieldReq {
                field: field.to_string(),
                value: value.trim().to_string(),
                equal,
            });
        }
        for term in labels.unwrap_or("").split(',').map(str::trim) {
            if term.is_empty() {
                continue;
            }
            let req = if let Some((k, v)) = term.split_once("!=") {
                LabelReq::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==") {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once('=') {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if term.contains(' ') || term.contains('(') {
                return Err(bad_request(format!(
                    "set-based label selectors are not supported by the fake: {term}"
                )));
            } else if let Some(k) = term.strip_prefix('!') {
                LabelReq::NotExists(k.trim().into())
            } else {
                LabelReq::Exists(term.into())
            };
            filter.labels.push(req);
        }
        Ok(filter)
    }

    fn matches(&self, pod: &Value) -> bool {
        let meta = &pod["metadata"];
        if let Some(ns) = &self.namespace {
            if meta["namespace"].as_str() != Some(ns.as_str()) {
                return false;
            }
        }
        let fields_ok = self.fields.iter().all(|f| {
            let actual = match f.field.as_str() {
                "spec.nodeName" => pod["spec"]["nodeName"].as_str(),
                "metadata.name" => meta["name"].as_str(),
                "metadata.namespace" => meta["namespace"].as_str(),
                "status.phase" => pod["status"]["phase"].as_str(),
                _ => None,
            }
            .unwrap_or("");
            (actual == f.value) == f.equal
        });
        let labels = &meta["labels"];
        let labels_ok = self.labels.iter().all(|l| match l {
            LabelReq::Eq(k, v) => labels[k.as_str()].as_str() == Some(v.as_str()),
            LabelReq::NotEq(k, v) => labels[k.as_str()].as_str() != Some(v.as_str()),
            LabelReq::Exists(k) => labels.get(k.as_str()).is_some(),
            LabelReq::NotExists(k) => labels.get(k.as_str()).is_none(),
        });
        fields_ok && labels_ok
    }

    /// What a watch with this filter sees of a write, if anything.
    fn event_for(&self, change: &Change) -> Option<Bytes> {
        let was = change.old.as_ref().is_some_and(|o| self.matches(o));
        match change.kind {
            ChangeKind::Added => self
                .matches(&change.obj)
                .then(|| event_line("ADDED", &change.obj)),
            ChangeKind::Deleted => was.then(|| event_line("DELETED", &change.obj)),
            ChangeKind::Modified => match (was, self.matches(&change.obj)) {
                (true, true) => Some(event_line("MODIFIED", &change.obj)),
                (false, true) => Some(event_line("ADDED", &change.obj)),
                (true, false) => {
                    // Leaving the selection reads as a deletion of the last
                    // matching state, stamped with the new version.
                    let mut last = change.old.clone().unwrap();
                    last["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                    Some(event_line("DELETED", &last))
                }
                (false, false) => None,
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Small codecs
// ---------------------------------------------------------------------------

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match hex_pair(bytes[i + 1], bytes[i + 2]) {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_pair(hi: u8, lo: u8) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    Some((digit(hi)? * 16 + digit(lo)?) as u8)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Continue tokens: base64url of `{"v":"meta.k8s.io/v1","rv":N,"start":KEY}`
/// where KEY is the storage key of the last item returned.
fn encode_continue(rv: u64, last_key: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{last_key}\u{0}")});
    base64url_encode(token.to_string().as_bytes())
}

fn decode_continue(token: &str) -> Option<(u64, String)> {
    let token: Value = serde_json::from_slice(&base64url_decode(token)?).ok()?;
    if token["v"] != "meta.k8s.io/v1" {
        return None;
    }
    let rv = token["rv"].as_u64()?;
    let start = token["start"].as_str()?.strip_suffix('\u{0}')?.to_string();
    Some((rv, start))
}
