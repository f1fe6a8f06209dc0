//! The OTLP exporter as a report sink.
//!
//! Encoding happens on the reporter thread; the exporter only queues bytes
//! (never blocking) and sends them from the I/O runtime.

use std::sync::Arc;
use std::time::Duration;

use hearth_otlp::{Exporter, ExporterConfig};
use hearth_profile::Report;

use super::metrics::AgentMetrics;
use super::ReportSink;

pub struct OtlpSink {
    exporter: Option<Exporter>,
    runtime: tokio::runtime::Handle,
}

impl OtlpSink {
    pub fn start(
        config: ExporterConfig,
        runtime: &tokio::runtime::Handle,
        metrics: &Arc<AgentMetrics>,
    ) -> Result<OtlpSink, hearth_otlp::ConfigError> {
        let exporter = Exporter::start(config, runtime)?;
        tracing::info!(endpoint = exporter.endpoint(), "exporting OTLP profiles");
        let stats = exporter.stats();
        let m = metrics.clone();
        metrics.add_scrape_hook(Box::new(move || {
            let s = stats.snapshot();
            m.exports_sent.set_total(s.exports_sent);
            m.export_failures.set_total(s.attempts_failed);
            m.exports_dropped.set_total(s.dropped_total());
            m.rejected_profiles.set_total(s.rejected_profiles);
            m.export_queue_bytes
                .set(i64::try_from(s.queue_bytes).unwrap_or(i64::MAX));
            m.set_memory(super::memory::Part::ExportQueue, s.queue_bytes);
        }));
        Ok(OtlpSink {
            exporter: Some(exporter),
            runtime: runtime.clone(),
        })
    }
}

impl ReportSink for OtlpSink {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn accept(&mut self, report: &Report) {
        if report.samples.is_empty() {
            return;
        }
        if let Some(e) = &self.exporter {
            e.submit_request(&hearth_export::otlp::build_request(report));
        }
    }

    fn shutdown(&mut self, deadline: Duration) {
        if let Some(e) = self.exporter.take() {
            let s = self.runtime.block_on(e.shutdown(deadline));
            tracing::info!(
                sent = s.exports_sent,
                dropped = s.dropped_total(),
                "exporter stopped"
            );
        }
    }
}
