//! The highest sampling frequency Hearth asks the kernel for.
//!
//! Two limits apply. The kernel refuses frequencies above
//! `kernel.perf_event_max_sample_rate` (and lowers that value itself when
//! sampling interrupts take too long). Below it, what bounds a useful
//! frequency is what the reader can drain: each sample carries a copy of
//! the user stack, and past a rate the reader cannot keep up with, the
//! ring buffers overflow and the kernel drops records instead.
//!
//! Hearth clamps rather than refuses: a request above either limit is
//! lowered to it, and the caller says so once (a recording is rarely worth
//! failing for a frequency that cannot be had).

use std::fmt;
use std::fs;

/// Where the kernel publishes its limit.
pub const KERNEL_MAX_SAMPLE_RATE_PATH: &str = "/proc/sys/kernel/perf_event_max_sample_rate";

/// Hearth's own ceiling: samples per second, all CPUs together, that its
/// reader drains without loss (one thread unwinds every sample). Measured
/// with the release build, the default 16 KiB stack copies and both CPUs
/// of a 2-CPU virtual machine busy, while other builds shared the machine
/// (README.md, "Sampling frequency"): 5,000 Hz per CPU lost nothing in
/// any run, 10,000 Hz lost 15% of the records in one run of three, 20,000
/// Hz a third. A request above `this / CPUs` per CPU is lowered to it:
/// more would only fill the ring buffers and be lost.
pub const MAX_SAMPLES_PER_SECOND: u64 = 10_000;

/// The per-CPU ceiling on a machine with `cpus` CPUs.
pub fn max_frequency_hz(cpus: usize) -> u64 {
    (MAX_SAMPLES_PER_SECOND / (cpus.max(1) as u64)).max(1)
}

/// Which limit lowered a frequency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `kernel.perf_event_max_sample_rate`.
    Kernel(u64),
    /// [`MAX_SAMPLES_PER_SECOND`] shared by this many CPUs.
    Hearth { cpus: usize },
}

/// A requested frequency and the one that will be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frequency {
    pub requested_hz: u64,
    pub hz: u64,
    /// Set when `hz` is below `requested_hz`.
    pub lowered_by: Option<Limit>,
}

impl fmt::Display for Frequency {
    /// The one line that says what was done, e.g. `-F 100000 lowered to
    /// 5000 Hz: ...`; empty when nothing was lowered.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lowered_by {
            None => Ok(()),
            Some(Limit::Kernel(max)) => write!(
                f,
                "-F {} lowered to {} Hz: the kernel allows at most {max} samples per second \
                 (kernel.perf_event_max_sample_rate)",
                self.requested_hz, self.hz
            ),
            Some(Limit::Hearth { cpus }) => write!(
                f,
                "-F {} lowered to {} Hz: Hearth drains at most {MAX_SAMPLES_PER_SECOND} \
                 samples per second without loss, shared by {cpus} CPUs",
                self.requested_hz, self.hz
            ),
        }
    }
}

/// The kernel's current limit, when it can be read.
pub fn kernel_max_sample_rate() -> Option<u64> {
    fs::read_to_string(KERNEL_MAX_SAMPLE_RATE_PATH)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&max| max > 0)
}

/// `requested` bounded by both limits (and raised to at least 1 Hz), on
/// this machine's online CPUs.
pub fn bound_frequency(requested: u64) -> Frequency {
    let cpus = crate::session::online_cpus().map_or(1, |c| c.len());
    bound_frequency_with(requested, cpus, kernel_max_sample_rate())
}

/// [`bound_frequency`] for `cpus` CPUs and the kernel's limit given
/// (`None`: unknown).
pub fn bound_frequency_with(requested: u64, cpus: usize, kernel_max: Option<u64>) -> Frequency {
    let requested = requested.max(1);
    let mut out = Frequency {
        requested_hz: requested,
        hz: requested,
        lowered_by: None,
    };
    let ceiling = max_frequency_hz(cpus);
    if out.hz > ceiling {
        out.hz = ceiling;
        out.lowered_by = Some(Limit::Hearth { cpus });
    }
    if let Some(max) = kernel_max {
        if out.hz > max {
            out.hz = max;
            out.lowered_by = Some(Limit::Kernel(max));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_limit_wins_and_says_so() {
        let f = bound_frequency_with(99, 2, Some(100_000));
        assert_eq!((f.hz, f.lowered_by), (99, None));
        assert_eq!(f.to_string(), "");

        let f = bound_frequency_with(100_000, 2, Some(100_000));
        assert_eq!(
            (f.hz, f.lowered_by),
            (5_000, Some(Limit::Hearth { cpus: 2 }))
        );
        assert_eq!(
            f.to_string(),
            "-F 100000 lowered to 5000 Hz: Hearth drains at most 10000 samples per second \
             without loss, shared by 2 CPUs"
        );
        // More CPUs share the same reader.
        assert_eq!(bound_frequency_with(1_000, 64, None).hz, 156);
        assert_eq!(bound_frequency_with(19, 1 << 20, None).hz, 1);

        let f = bound_frequency_with(1_500, 2, Some(1_000));
        assert_eq!((f.hz, f.lowered_by), (1_000, Some(Limit::Kernel(1_000))));
        assert!(f.to_string().contains("kernel.perf_event_max_sample_rate"));

        let f = bound_frequency_with(0, 0, None);
        assert_eq!((f.hz, f.lowered_by), (1, None));
    }

    #[test]
    fn this_kernel_publishes_a_limit() {
        // Every kernel with perf events has the sysctl.
        if std::path::Path::new(KERNEL_MAX_SAMPLE_RATE_PATH).exists() {
            assert!(kernel_max_sample_rate().is_some());
        }
    }
}
