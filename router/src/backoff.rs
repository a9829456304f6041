//! Bounded exponential backoff with jitter between retries of one request.
//!
//! The n-th delay is drawn from `[base/2, base]` where `base = min(initial · 2ⁿ, max)`, so
//! concurrent retries spread out while the worst case stays `max`.

use std::time::Duration;

/// Backoff bounds, from `retry_initial_backoff_ms` / `retry_max_backoff_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
}

/// The backoff state of one request.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    /// The base of the next delay, in `[initial, max]`.
    next_base: Duration,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        let max = config.max.max(config.initial);
        Backoff {
            config: BackoffConfig {
                initial: config.initial,
                max,
            },
            next_base: config.initial,
        }
    }

    /// The next delay with a random jitter.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(rand::random::<f64>())
    }

    /// The next delay for a jitter drawn in `[0, 1)`: `base/2 + jitter · base/2`.
    pub fn next_delay_with(&mut self, jitter: f64) -> Duration {
        let base = self.next_base;
        self.next_base = base.saturating_mul(2).min(self.config.max);
        let half = base / 2;
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let delay = half + half.mul_f64(jitter);
        debug_assert!(delay <= self.config.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: BackoffConfig = BackoffConfig {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(200),
    };

    /// Delays grow exponentially from initial and never exceed max, whatever the jitter.
    #[test]
    fn delays_are_bounded_and_grow() {
        for jitter in [0.0, 0.5, 0.999_999, 1.0, -3.0, f64::NAN] {
            let mut backoff = Backoff::new(CONFIG);
            let mut previous_base = Duration::ZERO;
            for step in 0..20 {
                let delay = backoff.next_delay_with(jitter);
                let base = (CONFIG.initial * 2u32.pow(step.min(10))).min(CONFIG.max);
                assert!(delay >= base / 2, "step {step}: {delay:?} < {:?}", base / 2);
                assert!(delay <= base, "step {step}: {delay:?} > {base:?}");
                assert!(base >= previous_base);
                previous_base = base;
            }
        }
    }

    /// Random jitter stays within bounds.
    #[test]
    fn random_jitter_stays_bounded() {
        let mut backoff = Backoff::new(CONFIG);
        assert!(backoff.next_delay() <= CONFIG.initial);
        for _ in 0..100 {
            let delay = backoff.next_delay();
            assert!(delay >= CONFIG.initial / 2 && delay <= CONFIG.max);
        }
    }
}
