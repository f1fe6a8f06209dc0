//! The local profile page as a report sink: every window goes into the
//! page's history (see the `hearth-ui` crate), which the page's server
//! reads.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hearth_profile::Report;
use hearth_ui::{History, HistoryConfig, SharedHistory};

use super::metrics::AgentMetrics;
use super::ReportSink;

/// Where and how the page is served.
#[derive(Debug, Clone)]
pub struct UiOptions {
    pub listen: SocketAddr,
    /// Serve on an address other than loopback. The page has no
    /// authentication and shows every process's functions, so this must
    /// be asked for explicitly (`--ui-allow-remote`).
    pub allow_remote: bool,
    pub history: HistoryConfig,
}

impl Default for UiOptions {
    fn default() -> Self {
        UiOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            allow_remote: false,
            history: HistoryConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error(
        "refusing to serve the profile page on {0}, which is not a loopback address: \
         the page has no authentication and shows what every process runs; \
         add --ui-allow-remote to do it anyway"
    )]
    NotLoopback(SocketAddr),
    #[error("listening for the profile page on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct HistorySink {
    history: SharedHistory,
    metrics: Arc<AgentMetrics>,
}

impl HistorySink {
    /// Binds the page's listener and starts serving it on `runtime`.
    pub fn start(
        opts: &UiOptions,
        host: Option<String>,
        runtime: &tokio::runtime::Runtime,
        metrics: &Arc<AgentMetrics>,
    ) -> Result<HistorySink, UiError> {
        if !opts.listen.ip().is_loopback() && !opts.allow_remote {
            return Err(UiError::NotLoopback(opts.listen));
        }
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(opts.listen))
            .map_err(|source| UiError::Bind {
                addr: opts.listen,
                source,
            })?;
        let history: SharedHistory = Arc::new(RwLock::new(History::new(opts.history)));
        let queries = Arc::new(hearth_ui::QueryStats::default());
        metrics.add_ui_queries(queries.clone());
        let router = hearth_ui::router_with_limits(
            history.clone(),
            hearth_ui::PageInfo {
                host,
                allow_any_host: opts.allow_remote,
            },
            hearth_ui::QueryLimits::default(),
            queries,
        );
        let server_stats = Arc::new(hearth_ui::ServerStats::default());
        metrics.add_http_server("ui", server_stats.clone());
        let shown = listener.local_addr().unwrap_or(opts.listen);
        if opts.allow_remote {
            tracing::warn!("profile page on http://{shown}/ (reachable beyond this machine)");
        } else {
            tracing::info!("profile page on http://{shown}/");
        }
        runtime.spawn(hearth_ui::serve_with_limits(
            listener,
            router,
            hearth_ui::ServeLimits::default(),
            server_stats,
        ));
        Ok(HistorySink {
            history,
            metrics: metrics.clone(),
        })
    }

    pub fn history(&self) -> SharedHistory {
        self.history.clone()
    }
}

impl ReportSink for HistorySink {
    fn name(&self) -> &'static str {
        "ui"
    }

    fn accept(&mut self, report: &Report) {
        let mut h = self.history.write().unwrap_or_else(|e| e.into_inner());
        h.ingest(report);
        self.metrics
            .ui_history_bytes
            .set(i64::try_from(h.bytes()).unwrap_or(i64::MAX));
        self.metrics
            .set_memory(super::memory::Part::UiHistory, h.bytes() as u64);
        self.metrics
            .ui_history_windows
            .set(i64::try_from(h.windows().len()).unwrap_or(i64::MAX));
        self.metrics
            .ui_windows_evicted
            .set_total(h.stats().windows_evicted);
    }

    fn shutdown(&mut self, _deadline: Duration) {}
}
