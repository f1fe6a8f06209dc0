//! Exponential backoff with jitter.
//!
//! The delay belongs to the endpoint, not to a request: while the collector
//! is down, every queued request waits its turn behind the same growing
//! delay, so an outage costs one attempt per delay whatever the queue holds.

use std::time::{Duration, SystemTime};

use crate::config::{Backoff, ConfigError};

pub(crate) fn validate(b: &Backoff) -> Result<(), ConfigError> {
    let err = |m: &str| Err(ConfigError::InvalidBackoff(m.to_string()));
    if b.initial.is_zero() {
        return err("initial must be positive");
    }
    if !(b.multiplier.is_finite() && b.multiplier >= 1.0) {
        return err("multiplier must be at least 1");
    }
    if b.max < b.initial {
        return err("max must be at least initial");
    }
    if !(0.0..=1.0).contains(&b.jitter) {
        return err("jitter must be within 0..=1");
    }
    if b.max_elapsed.is_zero() {
        return err("max_elapsed must be positive");
    }
    Ok(())
}

#[derive(Debug)]
pub(crate) struct BackoffState {
    config: Backoff,
    next: Duration,
    rng: u64,
}

impl BackoffState {
    pub fn new(config: Backoff) -> Self {
        // Agents started together must not retry together: seed from the
        // clock and the process id.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self::with_seed(config, nanos ^ (u64::from(std::process::id()) << 32))
    }

    pub fn with_seed(config: Backoff, seed: u64) -> Self {
        BackoffState {
            next: config.initial,
            config,
            rng: seed,
        }
    }

    /// The delay before the next attempt; grows the one after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = base.mul_f64(self.config.multiplier).min(self.config.max);
        // Uniform in [1 - jitter, 1 + jitter].
        let factor = 1.0 + self.config.jitter * (2.0 * self.uniform() - 1.0);
        base.mul_f64(factor.max(0.0))
    }

    pub fn reset(&mut self) {
        self.next = self.config.initial;
    }

    /// SplitMix64 step mapped to [0, 1).
    fn uniform(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_within_jitter_and_resets() {
        let config = Backoff::default();
        let mut b = BackoffState::with_seed(config.clone(), 42);
        let mut base = 5.0f64;
        for _ in 0..20 {
            let d = b.next_delay().as_secs_f64();
            assert!(
                d >= base * 0.5 - 1e-9 && d <= base * 1.5 + 1e-9,
                "{d} vs {base}"
            );
            base = (base * 1.5).min(30.0);
        }
        b.reset();
        let d = b.next_delay().as_secs_f64();
        assert!((2.5..=7.5).contains(&d));
    }

    #[test]
    fn jitter_spreads() {
        let config = Backoff::default();
        let mut b = BackoffState::with_seed(config, 7);
        let mut seen = Vec::new();
        for _ in 0..200 {
            b.reset();
            seen.push(b.next_delay().as_secs_f64());
        }
        let min = seen.iter().cloned().fold(f64::MAX, f64::min);
        let max = seen.iter().cloned().fold(f64::MIN, f64::max);
        assert!(min < 3.0 && max > 7.0, "{min}..{max}");
    }

    #[test]
    fn no_jitter_is_exact() {
        let config = Backoff {
            jitter: 0.0,
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_millis(500),
            ..Backoff::default()
        };
        let mut b = BackoffState::with_seed(config, 1);
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 500, 500]);
    }

    #[test]
    fn validation() {
        assert!(validate(&Backoff::default()).is_ok());
        let bad = [
            Backoff {
                initial: Duration::ZERO,
                ..Backoff::default()
            },
            Backoff {
                multiplier: 0.5,
                ..Backoff::default()
            },
            Backoff {
                multiplier: f64::NAN,
                ..Backoff::default()
            },
            Backoff {
                jitter: 1.5,
                ..Backoff::default()
            },
            Backoff {
                max: Duration::from_secs(1),
                ..Backoff::default()
            },
        ];
        for b in bad {
            assert!(validate(&b).is_err(), "{b:?}");
        }
    }
}
