//! The reconnect schedule: exponential backoff with jitter, as a plain value. It reads no clock
//! and owns no random source (the caller passes one in), so tests drive it with a seeded generator.
//! It must never return a delay longer than its cap.

use std::time::Duration;

use rand::{Rng, RngExt};

/// Delays `initial · 2ⁿ` capped at `max`, each scaled by a random factor in `[1 − jitter, 1 + jitter]`
/// (so that many edges losing the line at once do not all retry in step), and never above `max`.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// Fraction of the delay, in `[0, 1]`.
    pub jitter: f64,
    attempt: u32,
}

impl Default for Backoff {
    /// 100 ms doubling to 5 s, ±50 %.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5), 0.5)
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, jitter: f64) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            jitter: jitter.clamp(0.0, 1.0),
            attempt: 0,
        }
    }

    /// The delay before the next attempt; each call moves one step along the schedule.
    pub fn next_delay<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let base = self.base(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let factor = if self.jitter > 0.0 {
            rng.random_range(1.0 - self.jitter..=1.0 + self.jitter)
        } else {
            1.0
        };
        base.mul_f64(factor).min(self.max)
    }

    /// Back to the first step (after a connection came up).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays have been taken since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    fn base(&self, attempt: u32) -> Duration {
        // 2^attempt overflows long after the cap is reached; stop doubling at 2^20.
        let factor = 1u32 << attempt.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn without_jitter_doubles_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5), 0.0);
        let mut rng = StdRng::seed_from_u64(1);
        let got: Vec<u64> = (0..9)
            .map(|_| b.next_delay(&mut rng).as_millis() as u64)
            .collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(&mut rng), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_half_and_under_the_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let mut b = Backoff::default();
            for step in 0..12u32 {
                let base = Duration::from_millis(100)
                    .saturating_mul(1 << step)
                    .min(Duration::from_secs(5));
                let d = b.next_delay(&mut rng);
                assert!(
                    d >= base.mul_f64(0.5) && d <= base.mul_f64(1.5),
                    "step {step}: {d:?} vs {base:?}"
                );
                assert!(d <= Duration::from_secs(5));
            }
        }
    }

    #[test]
    fn jitter_actually_spreads_and_is_reproducible() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut b = Backoff::default();
            (0..5).map(|_| b.next_delay(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn survives_many_attempts() {
        let mut b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(0);
        for _ in 0..10_000 {
            assert!(b.next_delay(&mut rng) <= Duration::from_secs(5));
        }
    }
}
