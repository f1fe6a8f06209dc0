//! The agent's reporter thread: symbolize, enrich, hand to the sinks.

use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use hearth_k8s::attributes::AttributeConfig;
use hearth_k8s::store::PodStore;
use hearth_symbolize::{RecordingInfo, Symbolizer};

use super::memory::Part;
use super::metrics::AgentMetrics;
use super::sampling::Window;
use super::{AgentOptions, ReportSink};
use crate::enrich::Enricher;

pub fn run(
    windows: Receiver<Window>,
    mut sinks: Vec<Box<dyn ReportSink>>,
    store: Option<PodStore>,
    opts: AgentOptions,
    metrics: Arc<AgentMetrics>,
) {
    // Symbol caches live as long as the agent: each address is resolved once.
    let mut symbolizer = Symbolizer::new();
    // Each parsed file holds a descriptor: a share of the limit, as the
    // process table's binaries get.
    symbolizer.file_limit = hearth_proc::binary::descriptor_share();
    // Bounded by bytes too: large binaries keep appearing on a busy node.
    if let Some(b) = opts.memory.share(Part::SymbolizerFiles) {
        symbolizer.files_byte_limit = b;
    }
    if let Some(b) = opts.memory.share(Part::SymbolizerCache) {
        symbolizer.cache_byte_limit = b;
    }
    let default_attributes = AttributeConfig::default();
    let host = opts.host_name();
    for window in windows {
        let started = Instant::now();
        let mut report = symbolizer.report(
            &window.aggregate,
            RecordingInfo {
                start_unix_ns: window.start_unix_ns,
                duration_ns: window.duration_ns,
                frequency_hz: window.frequency_hz,
            },
        );
        Enricher {
            store: store.as_ref(),
            config: opts
                .kubernetes
                .as_ref()
                .map(|k| k.attributes.as_ref())
                .unwrap_or(&default_attributes),
            node_name: opts.kubernetes.as_ref().map(|k| k.node_name.as_str()),
            host_name: host.clone(),
            extra: &opts.extra_resource_attributes,
        }
        .enrich(&mut report);
        for sink in &mut sinks {
            sink.accept(&report);
        }
        let held = symbolizer.memory();
        metrics.set_memory(Part::SymbolizerFiles, held.files);
        metrics.set_memory(Part::SymbolizerCache, held.cache);
        metrics.windows.inc();
        metrics.report_seconds.set(started.elapsed().as_secs_f64());
        tracing::debug!(
            samples = report.total_samples(),
            resources = report.resources.len(),
            "window reported in {:?}",
            started.elapsed()
        );
    }
    for sink in &mut sinks {
        sink.shutdown(opts.shutdown_deadline);
    }
}
