//! Failure logging that says a thing once, then summarizes.
//!
//! A dependency that is down (an API server, a collector) must not flood
//! the logs. The first failure of a streak gives one line with its cause;
//! after that at most one summary per period with counts; the first
//! success after failures gives one line saying how long it took and how
//! many attempts failed. The state machine is pure (time is passed in) so
//! that it is tested without waiting.

use std::time::{Duration, Instant};

/// What the caller should log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLine {
    /// First failure of a streak (WARN).
    FirstFailure { cause: String },
    /// Failures continue (WARN, at most once per period).
    Summary {
        failures: u64,
        last_cause: String,
        since: Duration,
    },
    /// Working again (INFO).
    Recovered { failures: u64, after: Duration },
}

#[derive(Debug, Clone)]
enum State {
    Healthy,
    Failing {
        since: Instant,
        total: u64,
        unreported: u64,
        last_cause: String,
        last_line: Instant,
    },
}

#[derive(Debug, Clone)]
pub struct FailureLog {
    state: State,
    period: Duration,
}

impl FailureLog {
    pub fn new(period: Duration) -> Self {
        FailureLog {
            state: State::Healthy,
            period,
        }
    }

    pub fn is_failing(&self) -> bool {
        matches!(self.state, State::Failing { .. })
    }

    pub fn failure(&mut self, now: Instant, cause: &str) -> Option<LogLine> {
        match &mut self.state {
            State::Healthy => {
                self.state = State::Failing {
                    since: now,
                    total: 1,
                    unreported: 0,
                    last_cause: cause.to_string(),
                    last_line: now,
                };
                Some(LogLine::FirstFailure {
                    cause: cause.to_string(),
                })
            }
            State::Failing {
                total,
                unreported,
                last_cause,
                ..
            } => {
                *total += 1;
                *unreported += 1;
                if last_cause != cause {
                    *last_cause = cause.to_string();
                }
                self.tick(now)
            }
        }
    }

    /// Emits a due summary; call it now and then even when nothing happens.
    pub fn tick(&mut self, now: Instant) -> Option<LogLine> {
        let period = self.period;
        match &mut self.state {
            State::Failing {
                since,
                unreported,
                last_cause,
                last_line,
                ..
            } if *unreported > 0 && now.saturating_duration_since(*last_line) >= period => {
                let line = LogLine::Summary {
                    failures: *unreported,
                    last_cause: last_cause.clone(),
                    since: now.saturating_duration_since(*since),
                };
                *unreported = 0;
                *last_line = now;
                Some(line)
            }
            _ => None,
        }
    }

    pub fn success(&mut self, now: Instant) -> Option<LogLine> {
        match std::mem::replace(&mut self.state, State::Healthy) {
            State::Healthy => None,
            State::Failing { since, total, .. } => Some(LogLine::Recovered {
                failures: total,
                after: now.saturating_duration_since(since),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_minutes_of_failures_give_one_warning_and_one_summary_a_minute() {
        let mut log = FailureLog::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let mut lines = Vec::new();
        // A failure every 2 s for 5 minutes.
        for i in 0..150u64 {
            let now = t0 + Duration::from_secs(2 * i);
            lines.extend(log.failure(now, "connection refused"));
            lines.extend(log.tick(now));
        }
        let first = lines
            .iter()
            .filter(|l| matches!(l, LogLine::FirstFailure { .. }))
            .count();
        let summaries = lines
            .iter()
            .filter(|l| matches!(l, LogLine::Summary { .. }))
            .count();
        assert_eq!(first, 1);
        assert_eq!(summaries, 4, "{lines:?}");
        let recovered = log.success(t0 + Duration::from_secs(300));
        assert_eq!(
            recovered,
            Some(LogLine::Recovered {
                failures: 150,
                after: Duration::from_secs(300)
            })
        );
        assert_eq!(log.success(t0 + Duration::from_secs(301)), None);
        assert!(!log.is_failing());
    }
}
