//! The agent's sampling thread: drain, convert, and cut windows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use hearth_proc::ProcessTable;
use hearth_profile::Aggregate;
use hearth_sampler::{Session, SessionConfig, Target};

use super::memory::Part;
use super::metrics::AgentMetrics;
use super::AgentOptions;
use crate::batch::{pump, Batch, FINAL_DRAIN};
use crate::converter::{Converter, PidFilter};

/// How long start-up waits for the binaries of the processes already
/// running to be parsed.
pub const STARTUP_LOADS: Duration = Duration::from_secs(5);

/// Longest wait for the rings between drains. They also wake the thread
/// when an eighth full, so this only bounds how late a quiet machine's
/// records are read: every wake-up costs a drain, a sort and a poll of the
/// loader, which at 19 Hz is most of the thread's own cost.
const IDLE_WAIT: Duration = Duration::from_millis(250);

/// One reporting interval's samples.
pub struct Window {
    pub aggregate: Aggregate,
    pub start_unix_ns: u64,
    pub duration_ns: u64,
    pub frequency_hz: u64,
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A window length within ±`jitter` of `interval`, so that many agents
/// started together do not report in lockstep.
fn jittered(interval: Duration, jitter: f64, seed: &mut u64) -> Duration {
    // xorshift64: statistical quality is irrelevant here.
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let unit = (*seed >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
    let factor = 1.0 + jitter.clamp(0.0, 0.9) * (2.0 * unit - 1.0);
    interval.mul_f64(factor)
}

pub fn run(
    opts: &AgentOptions,
    windows: SyncSender<Window>,
    metrics: Arc<AgentMetrics>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut config = SessionConfig::new(Target::AllProcesses, opts.frequency_hz);
    config.user_stack_bytes = opts.user_stack_bytes;
    config.ring_bytes_per_cpu = opts.ring_bytes_per_cpu;
    let mut session = Session::open(&config)?;
    let mut table = ProcessTable::new();
    // Binaries are opened on loader threads: a file on a hung mount must
    // not stall this thread. The first ones get a few seconds to arrive.
    // The loader threads started next inherit this thread's weight.
    crate::sched::raise_current_thread();
    table.use_loader().context("starting the binary loader")?;
    table.scan_all();
    table.settle(STARTUP_LOADS);
    let mut converter = Converter::new(session.format(), table, PidFilter::All);
    session.enable().context("enabling the sampling events")?;
    metrics.sampling_started();
    tracing::info!(
        cpus = session.cpu_count(),
        frequency_hz = opts.frequency_hz,
        kernel_stacks = session.kernel_stacks(),
        "sampling every CPU"
    );

    let mut seed = now_unix_ns() | 1;
    let mut batch = Batch::new();
    let mut window_start = Instant::now();
    let mut window_start_unix = now_unix_ns();
    let mut window_len = jittered(opts.interval, opts.jitter, &mut seed);
    let mut last_stats = converter.stats;
    let mut last_memory = Instant::now();
    // Whether the last drain left records in the rings: then there is no
    // waiting (a full ring may wake no one again).
    let mut behind = false;
    loop {
        if !behind {
            session.wait(IDLE_WAIT);
        }
        let stopping = stop.load(Ordering::Relaxed);
        if stopping {
            let _ = session.disable();
            // What the rings still hold goes into the last window, for as
            // long as FINAL_DRAIN allows.
            let until = Instant::now() + FINAL_DRAIN;
            let past = || Instant::now() >= until;
            while pump(
                &mut session,
                &mut batch,
                &mut converter,
                |_, _, _, _| {},
                past,
            )
            .drained
            .more
                && !past()
            {}
        } else {
            let stopped = || stop.load(Ordering::Relaxed);
            let pumped = pump(
                &mut session,
                &mut batch,
                &mut converter,
                |_, _, _, _| {},
                stopped,
            );
            behind = pumped.drained.more || pumped.unprocessed > 0;
        }
        metrics.heartbeat();
        let stats = converter.stats;
        metrics.add_samples(
            stats.samples.saturating_sub(last_stats.samples),
            stats.lost_records.saturating_sub(last_stats.lost_records),
        );
        metrics.remapped_files.set_total(stats.remapped_files);
        metrics.unparsed_frames.set_total(stats.unparsed_frames);
        metrics
            .binary_loads_pending
            .set(i64::try_from(converter.table.pending_loads()).unwrap_or(i64::MAX));
        if let Some(loader) = converter.table.loader() {
            metrics.binary_load_stalls.set_total(loader.stats.stalls);
        }
        let binaries = &converter.table.binaries;
        metrics
            .binaries
            .set(i64::try_from(binaries.len()).unwrap_or(i64::MAX));
        metrics
            .binary_descriptors
            .set(i64::try_from(binaries.descriptors().open()).unwrap_or(i64::MAX));
        last_stats = stats;
        if last_memory.elapsed() >= Duration::from_secs(1) {
            last_memory = Instant::now();
            metrics.set_memory(Part::Binaries, binaries.unwind_bytes());
            metrics.set_memory(Part::Processes, converter.process_bytes());
        }
        if stopping || window_start.elapsed() >= window_len {
            let window = Window {
                aggregate: converter.take_aggregate(),
                start_unix_ns: window_start_unix,
                duration_ns: window_start.elapsed().as_nanos() as u64,
                frequency_hz: opts.frequency_hz,
            };
            window_start = Instant::now();
            window_start_unix = now_unix_ns();
            window_len = jittered(opts.interval, opts.jitter, &mut seed);
            let reported = window.aggregate.total_samples;
            // Ok(true): handed to the reporter; Ok(false): dropped.
            let delivered = if stopping {
                // The last window may wait for room: the reporter is
                // finishing the one before it.
                windows.send(window).map(|()| true).map_err(|_| ())
            } else {
                match windows.try_send(window) {
                    Ok(()) => Ok(true),
                    // The reporter is behind: drop this window rather
                    // than let memory grow or sampling stall.
                    Err(TrySendError::Full(_)) => {
                        metrics.window_dropped();
                        Ok(false)
                    }
                    Err(TrySendError::Disconnected(_)) => Err(()),
                }
            };
            match delivered {
                Ok(true) => {
                    metrics.samples_reported.inc_by(reported);
                }
                Ok(false) => {}
                Err(()) => anyhow::bail!("the reporter thread stopped"),
            }
        }
        if stopping {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_bounds_and_varies() {
        let mut seed = 42;
        let lens: Vec<Duration> = (0..1000)
            .map(|_| jittered(Duration::from_secs(5), 0.1, &mut seed))
            .collect();
        assert!(lens
            .iter()
            .all(|d| *d >= Duration::from_millis(4500) && *d <= Duration::from_millis(5500)));
        let min = lens.iter().min().unwrap();
        let max = lens.iter().max().unwrap();
        assert!(*max - *min > Duration::from_millis(800), "{min:?}..{max:?}");
    }
}
