//! Counters the agent can expose about its own exporting.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, updated by the exporter; read them with
/// [`ExportStats::snapshot`]. Every dropped request lands in exactly one
/// `dropped_*` counter.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub(crate) submitted: AtomicU64,
    pub(crate) exports_sent: AtomicU64,
    pub(crate) attempts_failed: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) dropped_permanent: AtomicU64,
    pub(crate) dropped_queue_overflow: AtomicU64,
    pub(crate) dropped_retry_expired: AtomicU64,
    pub(crate) dropped_shutdown: AtomicU64,
    pub(crate) partial_successes: AtomicU64,
    pub(crate) rejected_profiles: AtomicU64,
    pub(crate) queue_bytes: AtomicU64,
    pub(crate) queue_len: AtomicU64,
    pub(crate) queue_bytes_max: AtomicU64,
    pub(crate) last_success_unix: AtomicU64,
}

/// One reading of [`ExportStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Requests handed to [`crate::Exporter::submit`].
    pub submitted: u64,
    /// Requests the collector accepted (partial successes included).
    pub exports_sent: u64,
    /// Attempts that failed, retryable or not.
    pub attempts_failed: u64,
    /// Attempts that repeated an earlier failed one.
    pub retries: u64,
    /// Requests the collector refused for good (HTTP 400, INVALID_ARGUMENT, ...).
    pub dropped_permanent: u64,
    /// Requests dropped, oldest first, to keep the queue within its bound.
    pub dropped_queue_overflow: u64,
    /// Requests dropped because they were older than `max_elapsed` by the
    /// time another attempt was due.
    pub dropped_retry_expired: u64,
    /// Requests still unsent when shutdown's deadline passed (or submitted
    /// after shutdown).
    pub dropped_shutdown: u64,
    /// Accepted requests whose response reported rejected profiles or a
    /// warning.
    pub partial_successes: u64,
    /// Sum of `rejected_profiles` over partial successes.
    pub rejected_profiles: u64,
    /// Bytes waiting in the queue (the request in flight not included).
    pub queue_bytes: u64,
    /// Requests waiting in the queue.
    pub queue_len: u64,
    /// Largest `queue_bytes` seen.
    pub queue_bytes_max: u64,
    /// Unix seconds of the last accepted request; 0 if none yet.
    pub last_success_unix: u64,
}

impl StatsSnapshot {
    pub fn dropped_total(&self) -> u64 {
        self.dropped_permanent
            + self.dropped_queue_overflow
            + self.dropped_retry_expired
            + self.dropped_shutdown
    }
}

impl ExportStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            submitted: r(&self.submitted),
            exports_sent: r(&self.exports_sent),
            attempts_failed: r(&self.attempts_failed),
            retries: r(&self.retries),
            dropped_permanent: r(&self.dropped_permanent),
            dropped_queue_overflow: r(&self.dropped_queue_overflow),
            dropped_retry_expired: r(&self.dropped_retry_expired),
            dropped_shutdown: r(&self.dropped_shutdown),
            partial_successes: r(&self.partial_successes),
            rejected_profiles: r(&self.rejected_profiles),
            queue_bytes: r(&self.queue_bytes),
            queue_len: r(&self.queue_len),
            queue_bytes_max: r(&self.queue_bytes_max),
            last_success_unix: r(&self.last_success_unix),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
