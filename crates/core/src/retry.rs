//! The retry policy: how many attempts a task gets and how long to wait between them (exponential
//! backoff with a cap and jitter). Only errors a task marks retryable are retried; see
//! [`crate::engine::TaskError`].

use std::fmt;
use std::time::Duration;

use rand::RngExt;

use crate::spec::Jitter;
use crate::units::format_duration;

/// A validated retry policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (1 = no retries).
    pub max_attempts: u32,
    /// The wait before the first retry, before jitter.
    pub initial_delay: Duration,
    /// How much longer each further wait is.
    pub multiplier: f64,
    /// The longest wait, before jitter.
    pub max_delay: Duration,
    /// How waits are randomised.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    /// Built-in defaults: 3 attempts, 1s doubling up to 1m, full jitter.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(60),
            jitter: Jitter::Full,
        }
    }
}

impl RetryPolicy {
    /// The backoff before attempt `next_attempt` (2 for the first retry), before jitter:
    /// `initial_delay * multiplier^(next_attempt - 2)`, capped at `max_delay`.
    pub fn backoff(&self, next_attempt: u32) -> Duration {
        let exponent = next_attempt.saturating_sub(2) as i32;
        let secs = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = secs.min(self.max_delay.as_secs_f64());
        Duration::from_secs_f64(capped.max(0.0))
    }

    /// The actual wait before attempt `next_attempt`, with jitter drawn from `rng`.
    pub fn delay(&self, next_attempt: u32, rng: &mut impl rand::Rng) -> Duration {
        let backoff = self.backoff(next_attempt);
        match self.jitter {
            Jitter::None => backoff,
            Jitter::Full => backoff.mul_f64(rng.random_range(0.0..=1.0)),
            Jitter::Equal => backoff / 2 + (backoff / 2).mul_f64(rng.random_range(0.0..=1.0)),
        }
    }
}

impl fmt::Display for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.max_attempts <= 1 {
            return f.write_str("no retries");
        }
        write!(
            f,
            "{} attempts, backoff {} x{} up to {}, {} jitter",
            self.max_attempts,
            format_duration(self.initial_delay),
            trim_float(self.multiplier),
            format_duration(self.max_delay),
            self.jitter
        )
    }
}

fn trim_float(x: f64) -> String {
    if x.fract() == 0.0 { format!("{x:.0}") } else { format!("{x}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 6,
            initial_delay: Duration::from_secs(1),
            multiplier: 3.0,
            max_delay: Duration::from_secs(10),
            jitter: Jitter::None,
        };
        let delays: Vec<u64> = (2..=6).map(|n| policy.backoff(n).as_secs()).collect();
        assert_eq!(delays, vec![1, 3, 9, 10, 10]);
    }

    #[test]
    fn full_jitter_stays_between_zero_and_the_backoff() {
        let policy = RetryPolicy { jitter: Jitter::Full, ..RetryPolicy::default() };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut seen_below_half = false;
        for _ in 0..200 {
            let d = policy.delay(3, &mut rng);
            assert!(d <= Duration::from_secs(2));
            seen_below_half |= d < Duration::from_secs(1);
        }
        assert!(seen_below_half, "full jitter should sometimes wait less than half");
    }

    #[test]
    fn equal_jitter_waits_at_least_half() {
        let policy = RetryPolicy { jitter: Jitter::Equal, ..RetryPolicy::default() };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let d = policy.delay(2, &mut rng);
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_secs(1));
        }
    }

    #[test]
    fn displays_as_one_line() {
        assert_eq!(RetryPolicy::default().to_string(), "3 attempts, backoff 1s x2 up to 1m, full jitter");
    }
}
