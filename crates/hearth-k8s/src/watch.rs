//! The list/watch of this node's pods that feeds a [`PodStore`].
//!
//! Only pods with `spec.nodeName=<node>` are listed and watched, so the API
//! server's work and the agent's memory grow with the pods of one node, not
//! of the cluster. The watcher relists on `410 Gone`, retries every error
//! with backoff (see [`crate::retry`]), and reports through a
//! [`FailureLog`]: one WARN line when the API server becomes unreachable or
//! forbids the list, a summary a minute while it stays so, one INFO line
//! when a list succeeds again. Profiling never waits for it: samples keep
//! their container ids meanwhile.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Client, Config};

use crate::attributes::AttributeConfig;
use crate::meta::PodMeta;
use crate::retry::{Backoff, RetryPolicy};
use crate::store::PodStore;
use hearth_telemetry::{FailureLog, LogLine};

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("no Kubernetes configuration: not in a cluster and no kubeconfig ({0})")]
    NoConfig(String),
    #[error("cannot read kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("cannot create the Kubernetes client: {0}")]
    Client(String),
    #[error("cannot start the Kubernetes watch thread: {0}")]
    Thread(std::io::Error),
}

/// One failure summary a minute while the API server fails.
pub const DEFAULT_SUMMARY_PERIOD: Duration = Duration::from_secs(60);

/// How long a connection to the API server may take: short, so that an API
/// server whose address drops packets still gets an attempt every few
/// seconds (kube's default is 30 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `hearth/<version>` on every request, so API server audit logs and
/// priority-and-fairness rules can tell Hearth's requests apart.
pub fn user_agent() -> String {
    format!("hearth/{}", env!("CARGO_PKG_VERSION"))
}

#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub node_name: String,
    pub delete_grace: Duration,
    /// At most one failure summary per this period.
    pub summary_period: Duration,
    /// Delays between attempts while the API server fails.
    pub retry: RetryPolicy,
    pub attributes: Arc<AttributeConfig>,
}

impl WatchConfig {
    pub fn new(node_name: impl Into<String>, attributes: Arc<AttributeConfig>) -> Self {
        WatchConfig {
            node_name: node_name.into(),
            delete_grace: crate::store::DEFAULT_DELETE_GRACE,
            summary_period: DEFAULT_SUMMARY_PERIOD,
            retry: RetryPolicy::default(),
            attributes,
        }
    }
}

/// Counters and state of the watch, for metrics and tests.
#[derive(Debug, Default)]
pub struct WatchStatus {
    /// True from a completed pod list (initial list or relist) until the
    /// next failed list or watch call; false before the first list.
    pub healthy: AtomicBool,
    pub events: AtomicU64,
    pub relists: AtomicU64,
    pub failures: AtomicU64,
    /// `410 Gone` answers (expected now and then; the watcher relists).
    pub expired: AtomicU64,
    /// Pods in the store (deleted ones within their grace period included).
    pub pods: AtomicU64,
}

/// Loads the client configuration: an explicit kubeconfig, else the
/// in-cluster service account or `KUBECONFIG` / `~/.kube/config`.
pub async fn load_config(kubeconfig: Option<&Path>) -> Result<Config, K8sError> {
    match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| K8sError::Kubeconfig {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| K8sError::Kubeconfig {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
        }
        None => Config::infer()
            .await
            .map_err(|e| K8sError::NoConfig(e.to_string())),
    }
}

/// The client for the watch: Hearth's User-Agent on every request, a
/// short connect timeout, and no retries inside the client (its default
/// retries 429/503/504 up to 15 times over minutes, hidden from the watch;
/// the watch's own backoff is the one retry policy).
pub fn build_client(mut config: Config) -> Result<Client, K8sError> {
    let agent =
        http::HeaderValue::from_str(&user_agent()).map_err(|e| K8sError::Client(e.to_string()))?;
    config
        .headers
        .retain(|(name, _)| name != http::header::USER_AGENT);
    config.headers.push((http::header::USER_AGENT, agent));
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.default_retry = false;
    Client::try_from(config).map_err(|e| K8sError::Client(e.to_string()))
}

/// Whether a cluster configuration is at hand without reading it: in a
/// pod (service account env) or with `KUBECONFIG` set.
pub fn cluster_configured() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some()
}

fn status_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::WatchError(s) => Some(s.code),
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        _ => None,
    }
}

/// A short cause for log lines.
fn describe(e: &watcher::Error) -> String {
    match status_code(e) {
        Some(403) => {
            format!("forbidden: check the ClusterRole allows list and watch on pods ({e})")
        }
        Some(401) => format!("unauthorized: check the service account token ({e})"),
        _ => e.to_string(),
    }
}

fn emit(line: LogLine, endpoint: &str, summary_period: Duration) {
    match line {
        LogLine::FirstFailure { cause } => tracing::warn!(
            %endpoint,
            event = "k8s_watch_failing",
            "Kubernetes pod watch failing, profiling continues with container ids only (no pod names) \
             until a pod list succeeds; retrying every few seconds, further failures summarized every {summary_period:.0?}: {cause}"
        ),
        LogLine::Summary {
            failures,
            last_cause,
            since,
        } => tracing::warn!(
            %endpoint,
            event = "k8s_watch_still_failing",
            "Kubernetes pod watch still failing after {since:.0?}: {failures} more failed attempts, last: {last_cause}"
        ),
        LogLine::Recovered { failures, after } => tracing::info!(
            %endpoint,
            event = "k8s_watch_recovered",
            "Kubernetes pod watch recovered: pod list succeeded after {after:.0?} and {failures} failed attempts"
        ),
    }
}

/// Runs until `shutdown` resolves.
///
/// The watcher's own retry (`default_backoff`) is not used: it resets on
/// the `Init` marker that precedes every list attempt, so it retried about
/// once a second and looked healthy between attempts. Instead a failure
/// drops the watcher, and after [`Backoff`]'s delay a fresh one lists
/// again: the watch is healthy exactly from a completed list (`InitDone`)
/// to the next failure, and a list that succeeds resets the backoff.
pub async fn run(
    client: Client,
    endpoint: String,
    config: WatchConfig,
    store: PodStore,
    status: Arc<WatchStatus>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let api: Api<Pod> = Api::all(client);
    let selector = format!("spec.nodeName={}", config.node_name);
    let watcher_config = watcher::Config::default().fields(&selector);
    let start = || watcher(api.clone(), watcher_config.clone()).boxed();
    // `None` while backing off after a failure.
    let mut events = Some(start());
    let mut backoff = Backoff::new(config.retry);
    let retry = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(retry);
    let mut log = FailureLog::new(config.summary_period);
    let emit = |line: LogLine| emit(line, &endpoint, config.summary_period);
    // Often enough to honour short grace periods and summary periods,
    // rarely enough to be free.
    let tick = (config.delete_grace / 4)
        .min(config.summary_period / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut housekeeping = tokio::time::interval(tick);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = housekeeping.tick() => {
                let now = Instant::now();
                store.expire(now, config.delete_grace);
                status.pods.store(store.len() as u64, Ordering::Relaxed);
                if let Some(line) = log.tick(now) {
                    emit(line);
                }
            }
            _ = &mut retry, if events.is_none() => events = Some(start()),
            event = async { events.as_mut()?.next().await }, if events.is_some() => {
                let now = Instant::now();
                match event {
                    None => break,
                    Some(Ok(event)) => {
                        status.events.fetch_add(1, Ordering::Relaxed);
                        let listed = matches!(event, Event::InitDone);
                        apply(&store, &config, event, now, &status);
                        status.pods.store(store.len() as u64, Ordering::Relaxed);
                        if listed {
                            // The store holds the whole list by now.
                            status.healthy.store(true, Ordering::Relaxed);
                            backoff.reset();
                            if let Some(line) = log.success(now) {
                                emit(line);
                            }
                        }
                    }
                    Some(Err(e)) if status_code(&e) == Some(410) => {
                        // The resource version is too old: the watcher
                        // relists by itself. Nothing is wrong.
                        status.expired.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("pod watch expired, relisting: {e}");
                    }
                    Some(Err(e)) => {
                        status.healthy.store(false, Ordering::Relaxed);
                        status.failures.fetch_add(1, Ordering::Relaxed);
                        if let Some(line) = log.failure(now, &describe(&e)) {
                            emit(line);
                        }
                        let delay = backoff.next_delay();
                        tracing::debug!("pod watch failed, next list in {delay:?}: {e}");
                        events = None;
                        retry.as_mut().reset(tokio::time::Instant::now() + delay);
                    }
                }
            }
        }
    }
}

fn apply(
    store: &PodStore,
    config: &WatchConfig,
    event: Event<Pod>,
    now: Instant,
    status: &WatchStatus,
) {
    let keep = config.attributes.as_ref();
    match event {
        Event::Init => {
            status.relists.fetch_add(1, Ordering::Relaxed);
            store.begin_relist();
        }
        Event::InitApply(pod) | Event::Apply(pod) => {
            if let Some(meta) = PodMeta::from_pod(&pod, keep) {
                store.apply(meta);
            }
        }
        Event::InitDone => store.end_relist(now),
        Event::Delete(pod) => {
            if let Some(uid) = pod.metadata.uid.as_deref() {
                store.delete(uid, now);
            }
        }
    }
}

/// A watch running on its own thread (for synchronous callers such as
/// `hearth record`); stops when dropped.
pub struct BackgroundWatch {
    pub store: PodStore,
    pub status: Arc<WatchStatus>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundWatch {
    /// Starts the watch. Fails only if no configuration can be loaded or
    /// the client cannot be built; an unreachable API server is reported by
    /// the watch itself and retried.
    pub fn start(
        kubeconfig: Option<&Path>,
        config: WatchConfig,
    ) -> Result<BackgroundWatch, K8sError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(K8sError::Thread)?;
        let kube_config = runtime.block_on(load_config(kubeconfig))?;
        let endpoint = kube_config.cluster_url.to_string();
        let client = {
            let _guard = runtime.enter();
            build_client(kube_config)?
        };
        let store = PodStore::new();
        let status = Arc::new(WatchStatus::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (s, st) = (store.clone(), status.clone());
        let thread = std::thread::Builder::new()
            .name("hearth-k8s".into())
            .spawn(move || {
                runtime.block_on(run(client, endpoint, config, s, st, async {
                    let _ = stopped.await;
                }));
            })
            .map_err(K8sError::Thread)?;
        Ok(BackgroundWatch {
            store,
            status,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Waits up to `timeout` for the first full list.
    pub fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.store.synced() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.store.synced()
    }
}

impl Drop for BackgroundWatch {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
