//! The queue, the worker that drains it, and what it logs.
//!
//! `submit` only appends to a byte-bounded queue and wakes the worker: the
//! profiling path never waits for the network. One worker task sends one
//! request at a time, oldest first. When the collector is unreachable the
//! worker backs off (the delay belongs to the endpoint, not to a request),
//! the queue keeps the newest requests within its bound, and requests older
//! than `max_elapsed` are dropped: memory stays bounded however long the
//! outage lasts, and the profiler keeps running.
//!
//! Logging goes through [`FailureLog`]: the first failure of a streak gives
//! one WARN naming the endpoint and the cause, then at most one summary per
//! period with counts, then one INFO on recovery saying what was dropped
//! meanwhile. Refusals (the collector answered "no"), partial successes
//! and queue overflow each have their own log of the same kind, so that a
//! misconfigured endpoint that refuses every request does not flood the
//! log either.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hearth_telemetry::{FailureLog, LogLine};
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use prost::Message;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::instrument::WithSubscriber;
use tracing::{info, warn};

use crate::backoff::{self, BackoffState};
use crate::config::{Compression, ConfigError, ExporterConfig, Protocol};
use crate::retry::{Accepted, AttemptError};
use crate::stats::{ExportStats, StatsSnapshot};
use crate::transport::Transport;

/// Sends OTLP profiles requests in the background. See the crate docs.
pub struct Exporter {
    shared: Arc<Shared>,
    /// `Some(deadline)` asks the worker to drain until then. Dropping the
    /// sender stops the worker at once.
    drain: Option<watch::Sender<Option<Instant>>>,
    worker: Option<JoinHandle<()>>,
    endpoint: String,
}

/// A cheap, cloneable handle that only submits; give it to the threads
/// that produce profiles.
#[derive(Clone)]
pub struct Submitter {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    notify: Notify,
    stats: Arc<ExportStats>,
    cap: usize,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    bytes: usize,
    closed: bool,
}

struct Item {
    body: Bytes,
    submitted: Instant,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue stays consistent even if a holder panicked: every
        // critical section updates `items` and `bytes` together.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, q: &Queue) {
        let s = &self.stats;
        s.queue_bytes.store(q.bytes as u64, Ordering::Relaxed);
        s.queue_len.store(q.items.len() as u64, Ordering::Relaxed);
        s.queue_bytes_max
            .fetch_max(q.bytes as u64, Ordering::Relaxed);
    }

    fn submit(&self, body: Vec<u8>) {
        let len = body.len();
        let stats = &self.stats;
        ExportStats::add(&stats.submitted, 1);
        let mut overflow = 0u64;
        {
            let mut q = self.lock();
            if q.closed {
                drop(q);
                ExportStats::add(&stats.dropped_shutdown, 1);
                return;
            }
            if len > self.cap {
                // Could never fit: keep what is queued instead.
                overflow = 1;
            } else {
                while q.bytes + len > self.cap {
                    match q.items.pop_front() {
                        Some(old) => {
                            q.bytes -= old.body.len();
                            overflow += 1;
                        }
                        None => break,
                    }
                }
                q.items.push_back(Item {
                    body: Bytes::from(body),
                    submitted: Instant::now(),
                });
                q.bytes += len;
            }
            self.publish(&q);
        }
        if overflow > 0 {
            ExportStats::add(&stats.dropped_queue_overflow, overflow);
        }
        self.notify.notify_one();
    }

    fn pop(&self) -> Option<Item> {
        let mut q = self.lock();
        let item = q.items.pop_front();
        if let Some(i) = &item {
            q.bytes -= i.body.len();
        }
        self.publish(&q);
        item
    }

    /// Refuses further submissions and drops what is queued.
    fn close(&self) -> u64 {
        let mut q = self.lock();
        q.closed = true;
        let n = q.items.len() as u64;
        q.items.clear();
        q.bytes = 0;
        self.publish(&q);
        n
    }
}

impl Submitter {
    /// Queues an encoded `ExportProfilesServiceRequest`. Never blocks on
    /// the network and never fails: if the queue is full the oldest
    /// requests are dropped (and counted).
    pub fn submit(&self, request: Vec<u8>) {
        self.shared.submit(request);
    }

    /// Encodes and queues a request.
    pub fn submit_request(&self, request: &ExportProfilesServiceRequest) {
        self.shared.submit(request.encode_to_vec());
    }
}

impl Exporter {
    /// Checks the configuration (TLS files are read now), spawns the worker
    /// on `runtime`, and returns at once: nothing connects until the first
    /// request is submitted, so start-up never waits for a collector.
    pub fn start(
        config: ExporterConfig,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Exporter, ConfigError> {
        let target = config.target()?;
        backoff::validate(&config.backoff)?;
        if config.queue_bytes == 0 {
            return Err(ConfigError::ZeroQueue);
        }
        let transport = Transport::new(&config, &target)?;
        let endpoint = match config.protocol {
            Protocol::Grpc => target.uri.to_string().trim_end_matches('/').to_string(),
            Protocol::HttpProtobuf => target.uri.to_string(),
        };
        let tls_files = config.tls.ca_cert.is_some() || config.tls.client_cert.is_some();
        if tls_files && !target.tls {
            warn!(
                endpoint = %endpoint,
                "OTLP: TLS certificate files are configured but the endpoint is plaintext; they are not used"
            );
        }
        info!(
            endpoint = %endpoint,
            protocol = ?config.protocol,
            gzip = config.compression == Compression::Gzip,
            queue_bytes = config.queue_bytes,
            "OTLP profiles export configured (connects on the first export)"
        );

        let stats = Arc::new(ExportStats::default());
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            stats,
            cap: config.queue_bytes,
        });
        let (drain_tx, drain_rx) = watch::channel(None);
        let worker = Worker {
            shared: shared.clone(),
            transport,
            backoff: BackoffState::new(config.backoff.clone()),
            max_elapsed: config.backoff.max_elapsed,
            timeout: config.timeout,
            period: config.log_period,
            endpoint: endpoint.clone(),
            next_attempt: None,
            drain: drain_rx,
            stop_at: None,
            logs: Logs::new(config.log_period),
        };
        // The worker logs to the subscriber of whoever started it.
        let handle = runtime.spawn(worker.run().with_current_subscriber());
        Ok(Exporter {
            shared,
            drain: Some(drain_tx),
            worker: Some(handle),
            endpoint,
        })
    }

    /// See [`Submitter::submit`].
    pub fn submit(&self, request: Vec<u8>) {
        self.shared.submit(request);
    }

    /// See [`Submitter::submit_request`].
    pub fn submit_request(&self, request: &ExportProfilesServiceRequest) {
        self.shared.submit(request.encode_to_vec());
    }

    pub fn submitter(&self) -> Submitter {
        Submitter {
            shared: self.shared.clone(),
        }
    }

    pub fn stats(&self) -> Arc<ExportStats> {
        self.shared.stats.clone()
    }

    /// Where requests go, as logged.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends what is queued until `deadline` has passed, then drops (and
    /// counts) the rest. Submissions after this call are dropped.
    pub async fn shutdown(mut self, deadline: Duration) -> StatsSnapshot {
        let at = Instant::now() + deadline;
        if let Some(tx) = &self.drain {
            // The worker may be gone already; then there is nothing to wait for.
            let _ = tx.send(Some(at));
        }
        if let Some(worker) = self.worker.take() {
            // The worker stops itself at the deadline; the grace covers a
            // slow final bookkeeping step.
            let grace = deadline + Duration::from_secs(2);
            let _ = tokio::time::timeout(grace, worker).await;
        }
        let leftover = self.shared.close();
        ExportStats::add(&self.shared.stats.dropped_shutdown, leftover);
        self.shared.stats.snapshot()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // Dropping the sender tells the worker to stop now.
        self.drain.take();
    }
}

/// The logs of one worker, one per kind of trouble.
struct Logs {
    transient: QuietLog,
    refused: QuietLog,
    partial: QuietLog,
    overflow: QuietLog,
    /// Drop counters when the current outage began.
    outage_base: (u64, u64),
    overflow_seen: u64,
}

impl Logs {
    fn new(period: Duration) -> Self {
        Logs {
            transient: QuietLog::new(period),
            refused: QuietLog::new(period),
            partial: QuietLog::new(period),
            overflow: QuietLog::new(period),
            outage_base: (0, 0),
            overflow_seen: 0,
        }
    }
}

/// A [`FailureLog`] that also keeps a flapping dependency quiet: a new
/// streak that starts within one period of the previous first line gets
/// no line of its own (its failures reach the next summary or the stats),
/// and neither does its recovery within one period of the previous
/// recovery line. So each kind logs at most one first line, one summary
/// and one recovery line per period.
struct QuietLog {
    log: FailureLog,
    period: Duration,
    last_first: Option<Instant>,
    last_recovered: Option<Instant>,
    quiet_streak: bool,
}

impl QuietLog {
    fn new(period: Duration) -> Self {
        QuietLog {
            log: FailureLog::new(period),
            period,
            last_first: None,
            last_recovered: None,
            quiet_streak: false,
        }
    }

    fn is_failing(&self) -> bool {
        self.log.is_failing()
    }

    fn failure(&mut self, now: Instant, cause: &str) -> Option<LogLine> {
        let line = self.log.failure(now, cause);
        if let Some(LogLine::FirstFailure { .. }) = line {
            let recent = self
                .last_first
                .is_some_and(|t| now.saturating_duration_since(t) < self.period);
            self.quiet_streak = recent;
            if recent {
                return None;
            }
            self.last_first = Some(now);
        }
        line
    }

    fn tick(&mut self, now: Instant) -> Option<LogLine> {
        self.log.tick(now)
    }

    fn success(&mut self, now: Instant) -> Option<LogLine> {
        let line = self.log.success(now)?;
        let recent = self
            .last_recovered
            .is_some_and(|t| now.saturating_duration_since(t) < self.period);
        if self.quiet_streak && recent {
            return None;
        }
        self.last_recovered = Some(now);
        Some(line)
    }
}

enum Woke {
    Time,
    Submitted,
    Deadline,
}

struct Worker {
    shared: Arc<Shared>,
    transport: Transport,
    backoff: BackoffState,
    max_elapsed: Duration,
    timeout: Duration,
    period: Duration,
    endpoint: String,
    /// The endpoint's backoff: no attempt before this.
    next_attempt: Option<Instant>,
    drain: watch::Receiver<Option<Instant>>,
    /// Set when the exporter was dropped without a shutdown.
    stop_at: Option<Instant>,
    logs: Logs,
}

/// The drain deadline, if any: the one shutdown asked for, or now if the
/// exporter was dropped.
fn deadline_of(
    drain: &mut watch::Receiver<Option<Instant>>,
    stop_at: &mut Option<Instant>,
) -> Option<Instant> {
    if stop_at.is_none() && drain.has_changed().is_err() {
        *stop_at = Some(Instant::now());
    }
    match (*stop_at, *drain.borrow_and_update()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn sleep_until(at: Instant) -> tokio::time::Sleep {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at))
}

impl Worker {
    fn deadline(&mut self) -> Option<Instant> {
        deadline_of(&mut self.drain, &mut self.stop_at)
    }

    async fn run(mut self) {
        loop {
            let now = Instant::now();
            self.tick_logs(now);
            let deadline = self.deadline();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            match self.shared.pop() {
                Some(item) => self.deliver(item).await,
                // Drained: done if shutting down, else wait for work.
                None if deadline.is_some() => break,
                None => {
                    self.overflow_recovered(now);
                    if let Woke::Deadline = self.wait(None, true).await {
                        break;
                    }
                }
            }
        }
        let leftover = self.shared.close();
        ExportStats::add(&self.shared.stats.dropped_shutdown, leftover);
    }

    /// Sleeps until `until` (forever if `None`), or a submission if
    /// `on_submit`, or the drain deadline; ticks the logs meanwhile.
    async fn wait(&mut self, until: Option<Instant>, on_submit: bool) -> Woke {
        enum Event {
            Timer,
            Submitted,
            DrainChanged,
        }
        loop {
            let now = Instant::now();
            let deadline = self.deadline();
            if deadline.is_some_and(|d| now >= d) {
                return Woke::Deadline;
            }
            if until.is_some_and(|u| now >= u) {
                return Woke::Time;
            }
            let mut wake = now + self.period;
            for t in [until, deadline].into_iter().flatten() {
                wake = wake.min(t);
            }
            let drain_open = self.stop_at.is_none();
            let event = tokio::select! {
                _ = sleep_until(wake) => Event::Timer,
                _ = self.shared.notify.notified(), if on_submit => Event::Submitted,
                _ = self.drain.changed(), if drain_open => Event::DrainChanged,
            };
            match event {
                Event::Submitted => return Woke::Submitted,
                Event::Timer => self.tick_logs(Instant::now()),
                Event::DrainChanged => {}
            }
        }
    }

    /// Attempts one request until it is accepted, refused, too old, or the
    /// drain deadline passes.
    async fn deliver(&mut self, item: Item) {
        let stats = self.shared.stats.clone();
        let mut attempts = 0u64;
        loop {
            if let Some(at) = self.next_attempt {
                if let Woke::Deadline = self.wait(Some(at), false).await {
                    ExportStats::add(&stats.dropped_shutdown, 1);
                    return;
                }
            }
            let now = Instant::now();
            if now.saturating_duration_since(item.submitted) > self.max_elapsed {
                ExportStats::add(&stats.dropped_retry_expired, 1);
                return;
            }
            if attempts > 0 {
                ExportStats::add(&stats.retries, 1);
            }
            attempts += 1;

            let Some(outcome) = self.attempt(&item.body).await else {
                // The drain deadline passed during the attempt.
                ExportStats::add(&stats.dropped_shutdown, 1);
                return;
            };
            let now = Instant::now();
            match outcome {
                Ok(accepted) => {
                    self.on_accepted(now, accepted);
                    return;
                }
                Err(AttemptError::Permanent { cause }) => {
                    ExportStats::add(&stats.attempts_failed, 1);
                    ExportStats::add(&stats.dropped_permanent, 1);
                    // The collector answered: it is reachable.
                    self.backoff.reset();
                    self.next_attempt = None;
                    self.transient_recovered(now);
                    let line = self.logs.refused.failure(now, &cause);
                    self.log_refused(line);
                    return;
                }
                Err(AttemptError::Retryable {
                    cause,
                    retry_after,
                    reconnect,
                }) => {
                    ExportStats::add(&stats.attempts_failed, 1);
                    if reconnect {
                        self.transport.reset();
                    }
                    self.transient_failed(now, &cause);
                    // The server's word over our schedule, but never past
                    // the point where the request is dropped anyway.
                    let delay = match retry_after {
                        Some(d) => d.min(self.max_elapsed),
                        None => self.backoff.next_delay(),
                    };
                    let at = now + delay;
                    self.next_attempt = Some(at);
                    if at.saturating_duration_since(item.submitted) > self.max_elapsed {
                        ExportStats::add(&stats.dropped_retry_expired, 1);
                        return;
                    }
                }
            }
        }
    }

    /// One attempt within the per-attempt timeout; `None` if the drain
    /// deadline passed first.
    async fn attempt(&mut self, body: &Bytes) -> Option<Result<Accepted, AttemptError>> {
        let timeout = self.timeout;
        let send = tokio::time::timeout(timeout, self.transport.send(body));
        tokio::pin!(send);
        loop {
            let deadline = deadline_of(&mut self.drain, &mut self.stop_at);
            let drain_open = self.stop_at.is_none();
            let far = Instant::now() + Duration::from_secs(24 * 3600);
            tokio::select! {
                r = &mut send => {
                    return Some(r.unwrap_or_else(|_| Err(AttemptError::Retryable {
                        cause: format!("no answer within {timeout:.1?} (deadline exceeded)"),
                        retry_after: None,
                        reconnect: true,
                    })));
                }
                _ = sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => return None,
                _ = self.drain.changed(), if drain_open => {}
            }
        }
    }

    fn on_accepted(&mut self, now: Instant, accepted: Accepted) {
        let stats = self.shared.stats.clone();
        ExportStats::add(&stats.exports_sent, 1);
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        stats.last_success_unix.store(unix, Ordering::Relaxed);
        self.backoff.reset();
        self.next_attempt = None;
        self.transient_recovered(now);
        let line = self.logs.refused.success(now);
        self.log_refused(line);
        if accepted.is_partial() {
            ExportStats::add(&stats.partial_successes, 1);
            ExportStats::add(
                &stats.rejected_profiles,
                u64::try_from(accepted.rejected_profiles).unwrap_or(0),
            );
            let cause = format!(
                "{} profiles rejected: {}",
                accepted.rejected_profiles,
                crate::retry::truncate(&accepted.error_message, 200)
            );
            let line = self.logs.partial.failure(now, &cause);
            self.log_partial(line);
        } else {
            let line = self.logs.partial.success(now);
            self.log_partial(line);
        }
    }

    fn drops(&self) -> (u64, u64) {
        let s = self.shared.stats.snapshot();
        (s.dropped_queue_overflow, s.dropped_retry_expired)
    }

    fn transient_failed(&mut self, now: Instant, cause: &str) {
        if !self.logs.transient.is_failing() {
            self.logs.outage_base = self.drops();
        }
        let line = self.logs.transient.failure(now, cause);
        self.log_transient(line);
    }

    fn transient_recovered(&mut self, now: Instant) {
        let line = self.logs.transient.success(now);
        self.log_transient(line);
    }

    fn overflow_recovered(&mut self, now: Instant) {
        let line = self.logs.overflow.success(now);
        if let Some(LogLine::Recovered { .. }) = line {
            info!(
                endpoint = %self.endpoint,
                event = "queue_recovered",
                "OTLP profiles export queue drained; dropped so far: {} requests (queue full)",
                self.shared.stats.snapshot().dropped_queue_overflow
            );
        }
    }

    fn tick_logs(&mut self, now: Instant) {
        // Overflow without an outage: the collector is slower than we
        // produce. During an outage the outage summaries report it.
        let overflow = self.shared.stats.snapshot().dropped_queue_overflow;
        if overflow > self.logs.overflow_seen {
            let delta = overflow - self.logs.overflow_seen;
            self.logs.overflow_seen = overflow;
            if !self.logs.transient.is_failing() {
                let line = self
                    .logs
                    .overflow
                    .failure(now, &format!("{delta} requests dropped"));
                if let Some(line) = line {
                    let cap = self.shared.cap;
                    match line {
                        LogLine::FirstFailure { .. } => warn!(
                            endpoint = %self.endpoint,
                            event = "queue_full",
                            "OTLP profiles export queue full ({cap} bytes): dropping the oldest requests, the collector accepts them slower than they are produced"
                        ),
                        LogLine::Summary { .. } => warn!(
                            endpoint = %self.endpoint,
                            event = "queue_still_full",
                            "OTLP profiles export queue still overflowing: {overflow} requests dropped so far"
                        ),
                        LogLine::Recovered { .. } => {}
                    }
                }
            }
        }
        let line = self.logs.transient.tick(now);
        self.log_transient(line);
        let line = self.logs.refused.tick(now);
        self.log_refused(line);
        let line = self.logs.partial.tick(now);
        self.log_partial(line);
        let _ = self.logs.overflow.tick(now);
    }

    fn log_transient(&self, line: Option<LogLine>) {
        let Some(line) = line else { return };
        let s = self.shared.stats.snapshot();
        let (base_overflow, base_expired) = self.logs.outage_base;
        let overflow = s.dropped_queue_overflow.saturating_sub(base_overflow);
        let expired = s.dropped_retry_expired.saturating_sub(base_expired);
        let period = self.period;
        match line {
            LogLine::FirstFailure { cause } => warn!(
                endpoint = %self.endpoint,
                event = "export_failing",
                "OTLP profiles export to {} failed: {cause}; retrying with backoff, keeping at most {} bytes queued (further failures summarized every {period:.0?})",
                self.endpoint, self.shared.cap
            ),
            LogLine::Summary {
                failures,
                last_cause,
                since,
            } => warn!(
                endpoint = %self.endpoint,
                event = "export_still_failing",
                "OTLP profiles export to {} still failing after {since:.0?}: {failures} more failed attempts; dropped so far: {overflow} (queue full), {expired} (too old to retry); queued: {} requests, {} bytes; last cause: {last_cause}",
                self.endpoint, s.queue_len, s.queue_bytes
            ),
            LogLine::Recovered { failures, after } => info!(
                endpoint = %self.endpoint,
                event = "export_recovered",
                "OTLP profiles export to {} working again after {after:.0?} and {failures} failed attempts; dropped meanwhile: {overflow} (queue full), {expired} (too old to retry)",
                self.endpoint
            ),
        }
    }

    fn log_refused(&self, line: Option<LogLine>) {
        let Some(line) = line else { return };
        match line {
            LogLine::FirstFailure { cause } => warn!(
                endpoint = %self.endpoint,
                event = "export_refused",
                "OTLP profiles export: {} refused a request, dropped without retry: {cause}",
                self.endpoint
            ),
            LogLine::Summary {
                failures,
                last_cause,
                since,
            } => warn!(
                endpoint = %self.endpoint,
                event = "export_still_refused",
                "OTLP profiles export: {failures} more requests refused by {} and dropped (refusals began {since:.0?} ago); last cause: {last_cause}",
                self.endpoint
            ),
            LogLine::Recovered { failures, after } => info!(
                endpoint = %self.endpoint,
                event = "export_accepted_again",
                "OTLP profiles export: {} accepts requests again after {failures} refused ones in {after:.0?}",
                self.endpoint
            ),
        }
    }

    fn log_partial(&self, line: Option<LogLine>) {
        let Some(line) = line else { return };
        match line {
            LogLine::FirstFailure { cause } => warn!(
                endpoint = %self.endpoint,
                event = "export_partial",
                "OTLP profiles export: {} accepted a request only in part ({cause}); not retried",
                self.endpoint
            ),
            LogLine::Summary {
                failures,
                last_cause,
                since,
            } => warn!(
                endpoint = %self.endpoint,
                event = "export_still_partial",
                "OTLP profiles export: {failures} more partial successes from {} (since {since:.0?}); last: {last_cause}",
                self.endpoint
            ),
            LogLine::Recovered { failures, after } => info!(
                endpoint = %self.endpoint,
                event = "export_full_again",
                "OTLP profiles export: {} accepts whole requests again after {failures} partial successes in {after:.0?}",
                self.endpoint
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(cap: usize) -> Shared {
        Shared {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            stats: Arc::new(ExportStats::default()),
            cap,
        }
    }

    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Exporter>();
        send_sync::<Submitter>();
        send_sync::<ExportStats>();
    }

    #[test]
    fn queue_drops_oldest_to_stay_within_bytes() {
        let s = shared(100);
        for i in 0..10u8 {
            s.submit(vec![i; 30]);
        }
        let st = s.stats.snapshot();
        assert_eq!(st.submitted, 10);
        assert_eq!(st.queue_len, 3);
        assert_eq!(st.queue_bytes, 90);
        assert_eq!(st.dropped_queue_overflow, 7);
        assert!(st.queue_bytes_max <= 100);
        // The newest survive, in order.
        let firsts: Vec<u8> = std::iter::from_fn(|| s.pop()).map(|i| i.body[0]).collect();
        assert_eq!(firsts, vec![7, 8, 9]);
        assert_eq!(s.stats.snapshot().queue_bytes, 0);
    }

    #[test]
    fn oversized_request_is_dropped_not_the_queue() {
        let s = shared(100);
        s.submit(vec![1; 60]);
        s.submit(vec![2; 101]);
        let st = s.stats.snapshot();
        assert_eq!(st.queue_len, 1);
        assert_eq!(st.dropped_queue_overflow, 1);
    }

    #[test]
    fn closed_queue_counts_late_submissions() {
        let s = shared(100);
        s.submit(vec![1; 10]);
        assert_eq!(s.close(), 1);
        s.submit(vec![1; 10]);
        let st = s.stats.snapshot();
        assert_eq!(st.dropped_shutdown, 1);
        assert_eq!(st.queue_len, 0);
    }

    #[test]
    fn quiet_log_keeps_a_flapping_dependency_to_few_lines() {
        let period = Duration::from_secs(60);
        let mut log = QuietLog::new(period);
        let t0 = Instant::now();
        let mut lines = Vec::new();
        // Fail, recover, fail, recover... every second for 5 minutes.
        for i in 0..300u64 {
            let now = t0 + Duration::from_secs(i);
            if i % 2 == 0 {
                lines.extend(log.failure(now, "refused"));
            } else {
                lines.extend(log.success(now));
            }
            lines.extend(log.tick(now));
        }
        // At most one first line and one recovery per period (5 periods).
        let firsts = lines
            .iter()
            .filter(|l| matches!(l, LogLine::FirstFailure { .. }))
            .count();
        let recovered = lines
            .iter()
            .filter(|l| matches!(l, LogLine::Recovered { .. }))
            .count();
        assert!(firsts <= 5, "{lines:?}");
        assert!(recovered <= 5, "{lines:?}");
        assert!(firsts >= 1 && recovered >= 1);
    }

    #[test]
    fn quiet_log_reports_an_ordinary_outage_in_full() {
        let period = Duration::from_secs(60);
        let mut log = QuietLog::new(period);
        let t0 = Instant::now();
        assert!(matches!(
            log.failure(t0, "refused"),
            Some(LogLine::FirstFailure { .. })
        ));
        assert!(log
            .failure(t0 + Duration::from_secs(10), "refused")
            .is_none());
        assert!(matches!(
            log.tick(t0 + Duration::from_secs(61)),
            Some(LogLine::Summary { failures: 1, .. })
        ));
        assert!(matches!(
            log.success(t0 + Duration::from_secs(70)),
            Some(LogLine::Recovered { failures: 2, .. })
        ));
        // A new outage ten minutes later is reported again.
        assert!(matches!(
            log.failure(t0 + Duration::from_secs(670), "refused"),
            Some(LogLine::FirstFailure { .. })
        ));
    }
}
