//! Deadlines of running tasks: the task's time limit and the grace between SIGTERM and
//! SIGKILL.
//!
//! The one place that knows how a deadline is timed. Today that is a tokio timer; it is
//! meant to become a timerfd from furrow-sysfd, which only changes this file.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::Sleep;

/// A deadline that may be unset. Waiting on an unset deadline never finishes, which makes
/// it a no-op branch in a `select!`.
pub(crate) struct Deadline {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    /// A deadline that never expires.
    pub fn never() -> Self {
        Self { sleep: None }
    }

    /// A deadline `after` from now.
    pub fn after(after: Duration) -> Self {
        Self {
            sleep: Some(Box::pin(tokio::time::sleep(after))),
        }
    }

    /// `after` from now when given, never otherwise.
    pub fn maybe_after(after: Option<Duration>) -> Self {
        after.map_or_else(Self::never, Self::after)
    }

    /// Waits until the deadline passes, then disarms it (so it fires once). Cancel-safe.
    pub async fn expired(&mut self) {
        match self.sleep.as_mut() {
            Some(sleep) => {
                sleep.as_mut().await;
                self.sleep = None;
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_once_then_never() {
        let mut deadline = Deadline::after(Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        deadline.expired().await;
        assert!(started.elapsed() >= Duration::from_secs(5));
        let again = tokio::time::timeout(Duration::from_secs(3600), deadline.expired()).await;
        assert!(again.is_err(), "a fired deadline must not fire again");
        let mut never = Deadline::never();
        let waited = tokio::time::timeout(Duration::from_secs(3600), never.expired()).await;
        assert!(waited.is_err());
    }
}
