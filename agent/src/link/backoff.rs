//! Jittered exponential backoff between reconnect attempts.

use std::time::Duration;

/// Delays that double from `start` up to `max`, each varied by ±50 % so that agents cut
/// off together (a master restart) do not all come back in the same instant.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    start: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff from `start` to `max`.
    pub fn new(start: Duration, max: Duration) -> Self {
        Self {
            start,
            max: max.max(start),
            current: start,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        base.mul_f64(0.5 + fastrand::f64())
    }

    /// Back to short delays, after a successful registration.
    pub fn reset(&mut self) {
        self.current = self.start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_and_resets() {
        let start = Duration::from_millis(200);
        let max = Duration::from_secs(10);
        let mut backoff = Backoff::new(start, max);
        let mut base = start;
        for _ in 0..12 {
            let delay = backoff.next_delay();
            assert!(
                delay >= base / 2 && delay <= base * 3 / 2,
                "{delay:?} around {base:?}"
            );
            base = (base * 2).min(max);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= start * 3 / 2);
    }
}
