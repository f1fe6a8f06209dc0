//! The agent's own metrics, in the Prometheus text format.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hearth_k8s::watch::WatchStatus;
use hearth_ui::{QueryStats, ServerStats};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Keeps a Prometheus counter equal to an external running total.
#[derive(Default)]
pub struct MirroredCounter {
    counter: Counter,
    last: AtomicU64,
}

impl MirroredCounter {
    /// Mirrors into `counter` (e.g. one of a family's).
    pub fn new(counter: Counter) -> Self {
        MirroredCounter {
            counter,
            last: AtomicU64::new(0),
        }
    }

    pub fn set_total(&self, total: u64) {
        let last = self.last.swap(total, Ordering::Relaxed);
        self.counter.inc_by(total.saturating_sub(last));
    }
}

/// Runs before every scrape, to copy figures kept elsewhere.
pub type ScrapeHook = Box<dyn Fn() + Send + Sync>;

/// Labels of the HTTP servers' metrics: `server="metrics"` or `"ui"`.
type ServerLabels = Vec<(String, String)>;

/// The HTTP servers' counters, one series per server.
#[derive(Default)]
struct HttpFamilies {
    connections: Family<ServerLabels, Counter>,
    refused: Family<ServerLabels, Counter>,
    evicted: Family<ServerLabels, Counter>,
    accept_errors: Family<ServerLabels, Counter>,
    header_timeouts: Family<ServerLabels, Counter>,
    headers_too_large: Family<ServerLabels, Counter>,
    write_timeouts: Family<ServerLabels, Counter>,
    open: Family<ServerLabels, Gauge>,
}

pub struct AgentMetrics {
    registry: Mutex<Registry>,
    samples: Counter,
    /// Samples in windows handed to the reporter (idle samples excluded).
    pub samples_reported: Counter,
    lost_samples: Counter,
    pub windows: Counter,
    windows_dropped: Counter,
    pub report_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub exports_sent: Arc<MirroredCounter>,
    pub export_failures: Arc<MirroredCounter>,
    pub exports_dropped: Arc<MirroredCounter>,
    pub rejected_profiles: Arc<MirroredCounter>,
    pub export_queue_bytes: Gauge,
    pub ui_history_bytes: Gauge,
    pub ui_history_windows: Gauge,
    pub ui_windows_evicted: Arc<MirroredCounter>,
    ui_queries_refused: Arc<MirroredCounter>,
    http: HttpFamilies,
    watch_healthy: Gauge,
    watch_pods: Gauge,
    watch_failures: Arc<MirroredCounter>,
    watch_relists: Arc<MirroredCounter>,
    watch: Mutex<Option<Arc<WatchStatus>>>,
    /// Mappings parsed again because their file changed under them.
    pub remapped_files: Arc<MirroredCounter>,
    /// Pages of mapped files that vanished under a read (see fault_guard).
    mapped_file_zero_pages: MirroredCounter,
    /// Parsed binaries the process table holds, and descriptors they keep.
    pub binaries: Gauge,
    pub binary_descriptors: Gauge,
    /// The loader threads: loads waiting, loads that stalled, and frames
    /// counted before their binary was parsed.
    pub binary_loads_pending: Gauge,
    pub binary_load_stalls: Arc<MirroredCounter>,
    pub unparsed_frames: Arc<MirroredCounter>,
    /// Bytes per part of the agent (`part` label), the budget they share,
    /// and the agent's resident memory (`kind` anon or file).
    memory: Family<Vec<(String, String)>, Gauge>,
    pub memory_budget: Gauge,
    resident: Family<Vec<(String, String)>, Gauge>,
    hooks: Mutex<Vec<ScrapeHook>>,
    heartbeat: AtomicU64,
    started: AtomicBool,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> Self {
        let m = AgentMetrics {
            registry: Mutex::new(Registry::with_prefix("hearth")),
            samples: Counter::default(),
            samples_reported: Counter::default(),
            lost_samples: Counter::default(),
            windows: Counter::default(),
            windows_dropped: Counter::default(),
            report_seconds: Gauge::default(),
            exports_sent: Arc::default(),
            export_failures: Arc::default(),
            exports_dropped: Arc::default(),
            rejected_profiles: Arc::default(),
            export_queue_bytes: Gauge::default(),
            ui_history_bytes: Gauge::default(),
            ui_history_windows: Gauge::default(),
            ui_windows_evicted: Arc::default(),
            ui_queries_refused: Arc::default(),
            http: HttpFamilies::default(),
            watch_healthy: Gauge::default(),
            watch_pods: Gauge::default(),
            watch_failures: Arc::default(),
            watch_relists: Arc::default(),
            watch: Mutex::new(None),
            remapped_files: Arc::default(),
            mapped_file_zero_pages: MirroredCounter::default(),
            binaries: Gauge::default(),
            binary_descriptors: Gauge::default(),
            binary_loads_pending: Gauge::default(),
            binary_load_stalls: Arc::default(),
            unparsed_frames: Arc::default(),
            memory: Family::default(),
            memory_budget: Gauge::default(),
            resident: Family::default(),
            hooks: Mutex::new(Vec::new()),
            heartbeat: AtomicU64::new(0),
            started: AtomicBool::new(false),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register("samples", "CPU samples taken", m.samples.clone());
            r.register(
                "lost_samples",
                "Records the kernel dropped because a ring buffer was full",
                m.lost_samples.clone(),
            );
            r.register("windows", "Reporting windows completed", m.windows.clone());
            r.register(
                "windows_dropped",
                "Windows dropped because the reporter was behind",
                m.windows_dropped.clone(),
            );
            r.register(
                "report_seconds",
                "Time to symbolize and encode the last window",
                m.report_seconds.clone(),
            );
            r.register(
                "exports_sent",
                "Export requests the collector accepted",
                m.exports_sent.counter.clone(),
            );
            r.register(
                "export_failures",
                "Export attempts that failed",
                m.export_failures.counter.clone(),
            );
            r.register(
                "exports_dropped",
                "Export requests dropped (permanent error, queue overflow, or retries expired)",
                m.exports_dropped.counter.clone(),
            );
            r.register(
                "rejected_profiles",
                "Profiles the collector rejected in partial-success answers",
                m.rejected_profiles.counter.clone(),
            );
            r.register(
                "export_queue_bytes",
                "Bytes waiting in the export queue",
                m.export_queue_bytes.clone(),
            );
            r.register(
                "ui_history_bytes",
                "Estimated bytes of profile history kept for the local page",
                m.ui_history_bytes.clone(),
            );
            r.register(
                "ui_history_windows",
                "Reporting windows kept for the local page",
                m.ui_history_windows.clone(),
            );
            r.register(
                "ui_windows_evicted",
                "Windows dropped from the page's history before their time because of its memory bound",
                m.ui_windows_evicted.counter.clone(),
            );
            r.register(
                "ui_queries_refused",
                "Page queries answered 503 because the bound on queries at once was reached",
                m.ui_queries_refused.counter.clone(),
            );
            let h = &m.http;
            r.register(
                "http_connections",
                "HTTP connections accepted",
                h.connections.clone(),
            );
            r.register(
                "http_connections_refused",
                "HTTP connections closed at once: at the cap, with every connection busy",
                h.refused.clone(),
            );
            r.register(
                "http_connections_evicted",
                "Idle HTTP connections closed to make room under the cap",
                h.evicted.clone(),
            );
            r.register(
                "http_accept_errors",
                "Failed accepts (out of descriptors, memory...)",
                h.accept_errors.clone(),
            );
            r.register(
                "http_header_timeouts",
                "HTTP connections dropped for not sending a complete request head in time",
                h.header_timeouts.clone(),
            );
            r.register(
                "http_headers_too_large",
                "HTTP connections closed because their request head was too large",
                h.headers_too_large.clone(),
            );
            r.register(
                "http_write_timeouts",
                "HTTP connections dropped because their client stopped reading the answer",
                h.write_timeouts.clone(),
            );
            r.register(
                "http_connections_open",
                "HTTP connections open now",
                h.open.clone(),
            );
            r.register(
                "k8s_watch_healthy",
                "1 from a completed pod list until the next failed list/watch call; 0 before the first list and while failing",
                m.watch_healthy.clone(),
            );
            r.register(
                "k8s_pods",
                "Pods of this node in the metadata store (deleted ones within their grace period included)",
                m.watch_pods.clone(),
            );
            r.register(
                "k8s_watch_failures",
                "Failed pod list/watch calls",
                m.watch_failures.counter.clone(),
            );
            r.register(
                "k8s_watch_relists",
                "Full pod lists (start, expiry, reconnects)",
                m.watch_relists.counter.clone(),
            );
            r.register(
                "remapped_files",
                "Mappings parsed again because their file was truncated or rewritten under them",
                m.remapped_files.counter.clone(),
            );
            r.register(
                "mapped_file_zero_pages",
                "Reads of a mapped file past its end (truncated by its owner) answered with a zero page instead of a crash",
                m.mapped_file_zero_pages.counter.clone(),
            );
            r.register(
                "binaries",
                "Parsed executable files the process table holds (bounded)",
                m.binaries.clone(),
            );
            r.register(
                "memory_bytes",
                "Bytes held by each part of the agent (estimated where not counted)",
                m.memory.clone(),
            );
            r.register(
                "memory_budget_bytes",
                "The memory budget the parts share (--memory-mib)",
                m.memory_budget.clone(),
            );
            r.register(
                "resident_bytes",
                "The agent's resident memory, anonymous and file-backed",
                m.resident.clone(),
            );
            r.register(
                "binary_descriptors",
                "Descriptors those files keep open (bounded; the rest are reached through their mapping)",
                m.binary_descriptors.clone(),
            );
            r.register(
                "binary_loads_pending",
                "Binaries waiting to be opened and parsed on the loader threads",
                m.binary_loads_pending.clone(),
            );
            r.register(
                "binary_load_stalls",
                "Binary loads that took over 2 s; files on their file system are not read any more",
                m.binary_load_stalls.counter.clone(),
            );
            r.register(
                "unparsed_frames",
                "User frames counted before their binary was parsed (unwound without its tables)",
                m.unparsed_frames.counter.clone(),
            );
        }
        m
    }

    pub fn add_samples(&self, samples: u64, lost: u64) {
        self.samples.inc_by(samples);
        self.lost_samples.inc_by(lost);
    }

    pub fn window_dropped(&self) {
        self.windows_dropped.inc();
    }

    pub fn heartbeat(&self) {
        self.heartbeat.store(unix_secs(), Ordering::Relaxed);
    }

    pub fn sampling_started(&self) {
        self.heartbeat();
        self.started.store(true, Ordering::Relaxed);
    }

    /// Alive: the sampling thread went round its loop recently.
    pub fn healthy(&self) -> bool {
        unix_secs().saturating_sub(self.heartbeat.load(Ordering::Relaxed)) < 30
    }

    pub fn ready(&self) -> bool {
        self.started.load(Ordering::Relaxed) && self.healthy()
    }

    pub fn set_watch_status(&self, status: Arc<WatchStatus>) {
        *self.watch.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
    }

    /// Sets the bytes `part` holds now.
    pub fn set_memory(&self, part: super::memory::Part, bytes: u64) {
        self.memory
            .get_or_create(&vec![("part".into(), part.label().into())])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn add_scrape_hook(&self, hook: ScrapeHook) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
    }

    /// Shows one HTTP server's counters, labelled `server="<name>"`.
    pub fn add_http_server(&self, name: &str, stats: Arc<ServerStats>) {
        type Pick = fn(&ServerStats) -> &AtomicU64;
        let labels: ServerLabels = vec![("server".into(), name.into())];
        let h = &self.http;
        let picks: [(&Family<ServerLabels, Counter>, Pick); 7] = [
            (&h.connections, |s| &s.accepted),
            (&h.refused, |s| &s.refused),
            (&h.evicted, |s| &s.evicted),
            (&h.accept_errors, |s| &s.accept_errors),
            (&h.header_timeouts, |s| &s.header_timeouts),
            (&h.headers_too_large, |s| &s.headers_too_large),
            (&h.write_timeouts, |s| &s.write_timeouts),
        ];
        let mirrors: Vec<(MirroredCounter, Pick)> = picks
            .iter()
            .map(|(family, pick)| {
                let counter = family.get_or_create(&labels).clone();
                (MirroredCounter::new(counter), *pick)
            })
            .collect();
        let open = h.open.get_or_create(&labels).clone();
        self.add_scrape_hook(Box::new(move || {
            for (mirror, pick) in &mirrors {
                mirror.set_total(pick(&stats).load(Ordering::Relaxed));
            }
            open.set(i64::try_from(stats.open.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        }));
    }

    /// Shows the page's refused queries.
    pub fn add_ui_queries(&self, stats: Arc<QueryStats>) {
        let refused = self.ui_queries_refused.clone();
        self.add_scrape_hook(Box::new(move || {
            refused.set_total(stats.refused.load(Ordering::Relaxed));
        }));
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        self.mapped_file_zero_pages
            .set_total(hearth_proc::fault_guard::faults());
        if let Some((anon, file)) = super::memory::resident_bytes() {
            for (kind, bytes) in [("anon", anon), ("file", file)] {
                self.resident
                    .get_or_create(&vec![("kind".into(), kind.into())])
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
        }
        for hook in self.hooks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            hook();
        }
        if let Some(w) = self
            .watch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            self.watch_healthy
                .set(i64::from(w.healthy.load(Ordering::Relaxed)));
            self.watch_pods
                .set(i64::try_from(w.pods.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
            self.watch_failures
                .set_total(w.failures.load(Ordering::Relaxed));
            self.watch_relists
                .set_total(w.relists.load(Ordering::Relaxed));
        }
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_mirrors_totals() {
        let m = AgentMetrics::new();
        m.add_samples(10, 2);
        m.exports_sent.set_total(3);
        m.exports_sent.set_total(5);
        let text = m.render();
        assert!(text.contains("hearth_samples_total 10"), "{text}");
        assert!(text.contains("hearth_lost_samples_total 2"));
        assert!(text.contains("hearth_exports_sent_total 5"));
        assert!(!m.ready());
        m.sampling_started();
        assert!(m.ready());
    }
}
