//! Replay benchmark of the unwind + aggregate path, on one thread.
//!
//! Usage: `replay [CAPTURE [ITERATIONS]]`, or the environment variables
//! `HEARTH_CAPTURE` (default `/tmp/hearth-replay.cap`) and
//! `HEARTH_REPLAY_ITERATIONS` (default 5). Make a capture with
//!
//! ```text
//! hearth record --capture /tmp/hearth-replay.cap -F 999 -- tests/workloads/build/split_c 10
//! ```
//!
//! (`scripts/bench-replay.sh` does both). The capture is read into memory
//! first; then every iteration feeds all of its records, in order, through a
//! new [`Converter`] (empty process table, binary cache and unwind caches),
//! which tracks the processes, opens and parses the binaries, unwinds every
//! sample's user stack with DWARF CFI and counts the normalized stacks.
//! Symbolization is not part of this path (it runs once per profile, on the
//! distinct addresses, after recording).
//!
//! * iteration 1 is "cold": the first time this process opens the binaries
//!   (the files may also be out of the page cache);
//! * iterations 2.. are "warm": a new converter each time, so the binaries
//!   are opened and parsed again, but from the page cache;
//! * "steady" feeds the capture once more through the last converter, whose
//!   binary cache, unwind-rule cache and stack table are already filled: the
//!   cost per sample of a long recording once every binary is known.
//!
//! Time is the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so other load
//! on the machine changes wall time but hardly the figures.

use std::fs::File;
use std::process::ExitCode;
use std::time::Instant;

use hearth::capture::Capture;
use hearth::converter::{Converter, PidFilter};
use hearth_proc::ProcessTable;

/// Samples per second of thread CPU time the path must sustain.
const TARGET_SAMPLES_PER_SEC: f64 = 100_000.0;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Run {
    /// Sample records handled (idle ones included: they are parsed too).
    samples: u64,
    cpu_ns: u64,
    wall_ns: u64,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.samples as f64 / (self.cpu_ns.max(1) as f64 / 1e9)
    }

    fn ns_per_sample(&self) -> f64 {
        self.cpu_ns as f64 / self.samples.max(1) as f64
    }
}

/// Feeds every record of `capture` to `converter`, timed.
fn replay(capture: &Capture, converter: &mut Converter) -> Run {
    let samples_before = converter.stats.samples;
    let wall = Instant::now();
    let cpu = thread_cpu_ns();
    capture
        .for_each(|_cpu, ty, misc, body| converter.handle(ty, misc, body))
        .expect("the capture was checked before timing");
    let cpu_ns = thread_cpu_ns() - cpu;
    let wall_ns = wall.elapsed().as_nanos() as u64;
    Run {
        samples: converter.stats.samples - samples_before,
        cpu_ns,
        wall_ns,
    }
}

fn print_row(label: &str, r: &Run) {
    println!(
        "{label:<8} {:>9} {:>10.1} {:>10.1} {:>12.0} {:>10.0}",
        r.samples,
        r.cpu_ns as f64 / 1e6,
        r.wall_ns as f64 / 1e6,
        r.per_sec(),
        r.ns_per_sample()
    );
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .or_else(|| std::env::var("HEARTH_CAPTURE").ok())
        .unwrap_or_else(|| "/tmp/hearth-replay.cap".to_string());
    let iterations: usize = match args
        .next()
        .or_else(|| std::env::var("HEARTH_REPLAY_ITERATIONS").ok())
        .map(|s| s.parse())
    {
        None => 5,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            eprintln!("replay: ITERATIONS must be a positive integer");
            return ExitCode::from(2);
        }
    };
    let capture = match File::open(&path)
        .map_err(|e| e.to_string())
        .and_then(|f| Capture::read(f).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("replay: cannot read capture {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let records = match capture.for_each(|_, _, _, _| {}) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("replay: malformed capture {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "capture {path}: {records} records, {:.1} MiB, recorded at {} Hz",
        size as f64 / (1 << 20) as f64,
        capture.frequency_hz
    );

    let new_converter = || Converter::new(capture.format, ProcessTable::new(), PidFilter::All);
    println!(
        "{:<8} {:>9} {:>10} {:>10} {:>12} {:>10}",
        "run", "samples", "cpu_ms", "wall_ms", "samples/s", "ns/sample"
    );
    let mut runs = Vec::with_capacity(iterations);
    let mut last = None;
    for i in 0..iterations {
        let mut converter = new_converter();
        let run = replay(&capture, &mut converter);
        print_row(if i == 0 { "cold" } else { "warm" }, &run);
        runs.push(run);
        // The previous converter is dropped here, outside the timed part.
        last = Some(converter);
    }
    let mut converter = last.expect("at least one iteration");
    let before = converter.stats;
    let counted_before = converter.aggregate().total_samples;
    let steady = replay(&capture, &mut converter);
    print_row("steady", &steady);

    let agg = converter.aggregate();
    let stats = converter.stats;
    let per_pass = |v: u64, b: u64| v - b;
    println!(
        "per pass: {} sample records ({} idle, {} filtered), {} counted, {} truncated user stacks, \
         {} parse errors, {} lost; {} distinct stacks, {} binaries loaded",
        per_pass(stats.samples, before.samples),
        per_pass(stats.idle_samples, before.idle_samples),
        per_pass(stats.filtered_samples, before.filtered_samples),
        agg.total_samples - counted_before,
        per_pass(stats.truncated_user_stacks, before.truncated_user_stacks),
        per_pass(stats.parse_errors, before.parse_errors),
        per_pass(stats.lost_records, before.lost_records),
        agg.distinct(),
        converter.table.binaries.stats.loaded,
    );

    let warm: Vec<&Run> = runs.iter().skip(1).collect();
    let summary = |label: &str, rs: &[&Run]| -> Option<f64> {
        if rs.is_empty() {
            return None;
        }
        let samples: u64 = rs.iter().map(|r| r.samples).sum();
        let cpu: u64 = rs.iter().map(|r| r.cpu_ns).sum();
        let rate = samples as f64 / (cpu.max(1) as f64 / 1e9);
        let best = rs.iter().map(|r| r.per_sec()).fold(0.0, f64::max);
        println!(
            "{label}: {rate:.0} samples/s ({:.0} ns/sample), best run {best:.0} samples/s",
            cpu as f64 / samples.max(1) as f64
        );
        Some(rate)
    };
    let cold = summary("cold  ", &[&runs[0]]).unwrap_or(0.0);
    let warm_rate = summary("warm  ", &warm);
    let steady_rate = summary("steady", &[&steady]).unwrap_or(0.0);
    let checked = warm_rate.unwrap_or(cold);
    let verdict = if checked >= TARGET_SAMPLES_PER_SEC {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "target >= {TARGET_SAMPLES_PER_SEC:.0} samples/s on one core ({} runs): {verdict} \
         (cold {cold:.0}, steady {steady_rate:.0})",
        if warm_rate.is_some() { "warm" } else { "cold" }
    );
    ExitCode::SUCCESS
}
