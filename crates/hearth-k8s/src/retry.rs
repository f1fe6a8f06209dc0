//! When the watch tries again after a failure.
//!
//! Exponential from a fast start, with jitter, and back to the fast start
//! as soon as a list succeeds. The cap is low on purpose: after an outage
//! of any length the next attempt comes within [`RetryPolicy::max`] of the
//! API server's return, so a pod created meanwhile gets its metadata within
//! seconds (the acceptance asks for 10 s). kube-runtime's default (0.8 s
//! doubling to 30 s, reset by any event, the `Init` marker that precedes
//! every list attempt included) retried about once a second while the API
//! was down and could then wait 30 s after it returned.
//!
//! With the defaults a delay is drawn from the upper half of 1, 2, 4, 5,
//! 5 ... s: 0.5–1 s first, then 2.5–5 s apart, so a node's agent sends at
//! most two requests per 5 s to an API server that is down, and a
//! DaemonSet's agents do not retry in step.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// First delay before jitter (so the first retry comes after 0.5–1 s).
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_secs(1);
/// Largest delay before jitter (retries 2.5–5 s apart while failing).
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: DEFAULT_INITIAL_DELAY,
            max: DEFAULT_MAX_DELAY,
        }
    }
}

/// Delays for one streak of failures.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    next_base: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(policy: RetryPolicy) -> Self {
        // A random seed without a dependency: std's hasher keys are random
        // per process.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self::with_seed(policy, seed)
    }

    pub fn with_seed(policy: RetryPolicy, seed: u64) -> Self {
        Backoff {
            policy,
            next_base: policy.initial.min(policy.max),
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt: uniform in the upper half of the
    /// current step, which then doubles up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next_base;
        self.next_base = base.saturating_mul(2).min(self.policy.max);
        base / 2 + base.mul_f64(self.unit() / 2.0)
    }

    /// Back to the fast start (call when a list succeeds).
    pub fn reset(&mut self) {
        self.next_base = self.policy.initial.min(self.policy.max);
    }

    /// A number in [0, 1) (xorshift64*).
    fn unit(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_from_a_fast_start_to_the_cap_with_jitter() {
        let mut b = Backoff::with_seed(RetryPolicy::default(), 42);
        let delays: Vec<Duration> = (0..50).map(|_| b.next_delay()).collect();
        let bounds = [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0)];
        for (d, (lo, hi)) in delays.iter().zip(bounds) {
            assert!(d.as_secs_f64() >= lo && d.as_secs_f64() <= hi, "{delays:?}");
        }
        for d in &delays[3..] {
            assert!(
                d.as_secs_f64() >= 2.5 && d.as_secs_f64() <= 5.0,
                "{delays:?}"
            );
        }
        // Jittered: not all the same.
        assert!(delays[3..].windows(2).any(|w| w[0] != w[1]), "{delays:?}");
        // At most two attempts per 5 s once at the cap.
        let per_5s = 5.0 * 47.0 / delays[3..].iter().map(Duration::as_secs_f64).sum::<f64>();
        assert!(per_5s <= 2.0, "{per_5s}");
    }

    #[test]
    fn reset_returns_to_the_fast_start() {
        let mut b = Backoff::with_seed(RetryPolicy::default(), 7);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
