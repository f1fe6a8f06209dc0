//! Sends OpenTelemetry Profiles (OTLP, proto `v1development`) to a
//! collector, like a good citizen of the machine it runs on.
//!
//! A profiler runs everywhere, including on machines with no collector. So:
//!
//! * **Nothing is sent unless asked for.** There is no default endpoint:
//!   [`ExporterConfig::from_env`] returns [`EnvConfig::NoEndpoint`] when no
//!   `OTEL_EXPORTER_OTLP_(PROFILES_)ENDPOINT` is set, and
//!   [`Exporter::start`] connects nowhere until the first request is
//!   submitted, so start-up never waits for a collector.
//! * **The profiler never waits for the network.** [`Exporter::submit`]
//!   appends to a queue and returns; one background task sends.
//! * **Memory stays bounded.** The queue is bounded in bytes
//!   ([`ExporterConfig::queue_bytes`], 64 MiB by default) and drops the
//!   oldest requests first; requests older than
//!   [`Backoff::max_elapsed`] are dropped rather than retried. Memory held
//!   is at most the bound plus the one request in flight.
//! * **Retries follow the OTLP spec.** Only gRPC `CANCELLED`,
//!   `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`, `UNAVAILABLE`,
//!   `DATA_LOSS`, `RESOURCE_EXHAUSTED` with a `google.rpc.RetryInfo`, HTTP
//!   429/502/503/504, failures to connect and per-attempt timeouts are
//!   retried, with exponential backoff and jitter (the collector's own
//!   defaults: 5 s, ×1.5, 30 s cap, ±50%, give up after 300 s). A
//!   server-given delay (`RetryInfo.retry_delay`, `Retry-After` in seconds
//!   or as an HTTP date) is honoured over the backoff. Everything else is
//!   a refusal: the request is dropped and counted. A partial success is
//!   never retried; its rejected profiles are counted.
//! * **The log stays readable.** One WARN naming the endpoint and cause
//!   when exporting starts to fail, at most one summary a minute while it
//!   goes on, one INFO when it works again saying what was dropped
//!   meanwhile (see `hearth_telemetry::FailureLog`).
//! * **Dead connections are not kept.** After a transport failure the
//!   client is rebuilt, so the next attempt resolves the name again.
//!
//! Both transports carry the submitted bytes as they are: gRPC through
//! tonic with a pass-through codec on
//! `opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export`,
//! HTTP through hyper as `POST <endpoint>` with
//! `Content-Type: application/x-protobuf`. Gzip, custom headers, TLS with a
//! custom CA and client certificates (rustls) work on both.
//!
//! Collectors older than v0.148 read the `Sample` messages of this proto
//! version wrongly without reporting an error; use v0.148 or later.
//!
//! ```no_run
//! # async fn demo(bytes: Vec<u8>) -> Result<(), hearth_otlp::ConfigError> {
//! use hearth_otlp::{EnvConfig, Exporter, ExporterConfig};
//! let EnvConfig::Export(config) = ExporterConfig::from_env(|k| std::env::var(k).ok())? else {
//!     return Ok(()); // nobody asked for export
//! };
//! let exporter = Exporter::start(config, &tokio::runtime::Handle::current())?;
//! exporter.submit(bytes);
//! let stats = exporter.shutdown(std::time::Duration::from_secs(5)).await;
//! println!("sent {}, dropped {}", stats.exports_sent, stats.dropped_total());
//! # Ok(()) }
//! ```

mod backoff;
mod config;
mod exporter;
mod retry;
mod stats;
mod transport;

pub use config::{
    http_signal_url, Backoff, Compression, ConfigError, EnvConfig, ExporterConfig, Protocol,
    TlsConfig, DEFAULT_LOG_PERIOD, DEFAULT_QUEUE_BYTES, DEFAULT_TIMEOUT, HTTP_PROFILES_PATH,
};
pub use exporter::{Exporter, Submitter};
pub use stats::{ExportStats, StatsSnapshot};
pub use transport::GRPC_EXPORT_PATH;
