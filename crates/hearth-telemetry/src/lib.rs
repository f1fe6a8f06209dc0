//! The agent's own telemetry, shared by everything that talks to the
//! outside (the Kubernetes API, the OTLP collector).
//!
//! * [`failure_log`]: a failure log that says a thing once, then
//!   summarizes, then says when it recovered.

pub mod failure_log;

use std::time::Duration;

/// How often a [`FailureLog`] summarizes a streak of failures.
pub const SUMMARY_PERIOD: Duration = Duration::from_secs(60);

pub use failure_log::{FailureLog, LogLine};
