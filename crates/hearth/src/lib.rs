//! The `hearth` binary's library half: the pieces that wire the pipeline
//! together, kept here so that tests and benchmarks can drive them.
//!
//! * [`converter`]: turns kernel records into an aggregate (process
//!   tracking, unwinding, normalization), one `handle_*` per record kind.
//! * [`batch`]: orders records drained from several CPUs by time.
//! * [`capture`]: a file of raw records, to replay samples in benchmarks.
//! * [`enrich`]: Kubernetes and host attributes for a report's resources.
//! * [`outputs`]: `hearth record`'s output files, claimed before recording
//!   and put in place only when complete.
//! * [`recorder`]: the `hearth record` engine (targets, stop conditions).
//! * [`sched`]: the CPU weight of the sampling and I/O threads.
//! * [`log_filter`]: the binary's tracing filter (client libraries quiet).

pub mod agent;
pub mod batch;
pub mod capture;
pub mod converter;
pub mod enrich;
pub mod log_filter;
pub mod outputs;
pub mod recorder;
pub mod sched;
