//! `hearth agent`: profiles the whole machine continuously.
//!
//! Three parts, each on its own thread so that none can stall another:
//! * the sampling thread ([`sampling`]) drains the perf rings, keeps the
//!   process table, unwinds, and every reporting interval hands the
//!   window's aggregate over. It never waits on the network or symbolizes;
//! * the reporter ([`reporter`]) symbolizes a window, attaches container
//!   and pod attributes, and passes the report to the sinks (the OTLP
//!   exporter when an endpoint is configured);
//! * a small server ([`server`]) answers `/metrics`, `/healthz` and
//!   `/readyz`, on loopback unless told otherwise;
//! * the local profile page ([`ui_sink`], the `hearth-ui` crate) keeps the
//!   recent windows in memory and serves them as flame graphs, on loopback
//!   unless told otherwise.

pub mod config_file;
pub mod memory;
pub mod metrics;
pub mod otlp_sink;
pub mod reporter;
pub mod sampling;
pub mod server;
pub mod ui_sink;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hearth_profile::Report;

use crate::recorder::KubernetesOptions;

/// Worker threads of the I/O runtime (servers, exports, the watch).
const IO_WORKERS: usize = 1;

/// Where finished reports go.
pub trait ReportSink: Send {
    fn name(&self) -> &'static str;
    fn accept(&mut self, report: &Report);
    /// Called once on shutdown: finish what is pending within `deadline`.
    fn shutdown(&mut self, deadline: Duration);
}

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub frequency_hz: u64,
    /// Reporting interval; each window's length varies by ±`jitter`.
    pub interval: Duration,
    pub jitter: f64,
    pub user_stack_bytes: u32,
    pub ring_bytes_per_cpu: usize,
    pub metrics_listen: Option<SocketAddr>,
    pub kubernetes: Option<KubernetesOptions>,
    /// Longest wait for the last window to be sent on shutdown.
    pub shutdown_deadline: Duration,
    /// Export to an OTLP collector; `None`: no connection is ever opened.
    pub otlp: Option<hearth_otlp::ExporterConfig>,
    /// Attributes added to every resource (`OTEL_RESOURCE_ATTRIBUTES`).
    pub extra_resource_attributes: Vec<(String, String)>,
    /// The local profile page; `None`: no history kept, nothing served.
    pub ui: Option<ui_sink::UiOptions>,
    /// What the parts' memory bounds are shares of (see [`memory`]).
    pub memory: memory::MemoryBudget,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            frequency_hz: 19,
            interval: Duration::from_secs(5),
            jitter: 0.1,
            user_stack_bytes: 16 * 1024,
            ring_bytes_per_cpu: 1 << 20,
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            kubernetes: None,
            shutdown_deadline: Duration::from_secs(10),
            otlp: None,
            extra_resource_attributes: Vec::new(),
            ui: None,
            memory: memory::MemoryBudget::default(),
        }
    }
}

impl AgentOptions {
    /// The name of the machine being profiled: in a pod the UTS name is the
    /// pod's, so the node name comes first when there is one.
    pub fn host_name(&self) -> Option<String> {
        self.kubernetes
            .as_ref()
            .map(|k| k.node_name.clone())
            .or_else(crate::enrich::host_name)
    }
}

/// Runs until `stop` is set (SIGTERM/SIGINT), then sends the last window
/// and returns.
pub fn run(
    opts: AgentOptions,
    mut sinks: Vec<Box<dyn ReportSink>>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let metrics = Arc::new(metrics::AgentMetrics::new());
    metrics
        .memory_budget
        .set(i64::try_from(opts.memory.total_bytes).unwrap_or(i64::MAX));
    // Every part shows, at 0 until it holds something.
    for part in memory::Part::ALL {
        metrics.set_memory(part, 0);
    }
    // Its worker answers /healthz: a crowded node must not delay it. The
    // workers start first, at build; threads started later are the
    // blocking pool's (page queries), which keep the default weight.
    let threads_started = std::sync::atomic::AtomicUsize::new(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(IO_WORKERS)
        .on_thread_start(move || {
            if threads_started.fetch_add(1, Ordering::Relaxed) < IO_WORKERS {
                crate::sched::raise_current_thread();
            } else {
                crate::sched::reset_current_thread();
            }
        })
        .thread_name("hearth-io")
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;

    if let Some(addr) = opts.metrics_listen {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| format!("listening for /metrics on {addr}"))?;
        tracing::info!("metrics and health on http://{addr}/metrics");
        runtime.spawn(server::serve(listener, metrics.clone()));
    }
    if let Some(ui) = &opts.ui {
        let sink = ui_sink::HistorySink::start(ui, opts.host_name(), &runtime, &metrics)?;
        sinks.push(Box::new(sink));
    }
    if let Some(config) = opts.otlp.clone() {
        let sink = otlp_sink::OtlpSink::start(config, runtime.handle(), &metrics)
            .context("configuring the OTLP exporter")?;
        sinks.push(Box::new(sink));
    }
    let watch = match &opts.kubernetes {
        Some(k) => {
            let mut config =
                hearth_k8s::watch::WatchConfig::new(k.node_name.clone(), k.attributes.clone());
            config.delete_grace = k.delete_grace;
            match hearth_k8s::watch::BackgroundWatch::start(k.kubeconfig.as_deref(), config) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!("no pod metadata, samples keep their container ids: {e}");
                    None
                }
            }
        }
        None => None,
    };
    if let Some(w) = &watch {
        metrics.set_watch_status(w.status.clone());
    }

    let (windows, received) = std::sync::mpsc::sync_channel::<sampling::Window>(4);
    let reporter = {
        let metrics = metrics.clone();
        let store = watch.as_ref().map(|w| w.store.clone());
        let opts = opts.clone();
        std::thread::Builder::new()
            .name("hearth-report".into())
            .spawn(move || reporter::run(received, sinks, store, opts, metrics))
            .context("starting the reporter thread")?
    };
    let sampling_result = sampling::run(&opts, windows, metrics.clone(), stop.clone());
    // The sampler dropped its sender: the reporter finishes the last window
    // and shuts the sinks down within the deadline.
    if reporter.join().is_err() {
        tracing::error!("the reporter thread panicked");
    }
    stop.store(true, Ordering::Relaxed);
    tracing::info!(
        samples_reported = metrics.samples_reported.get(),
        windows = metrics.windows.get(),
        "agent stopping"
    );
    drop(watch);
    runtime.shutdown_timeout(Duration::from_secs(1));
    sampling_result
}
