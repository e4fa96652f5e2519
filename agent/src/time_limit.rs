//! Timers of running tasks: the task's time limit and stall timeout ([`Deadline`]) and the
//! period of its memory samples ([`Ticker`]), which the job sets; and the grace between
//! SIGTERM and SIGKILL and the time output is still read after the task's exit
//! ([`Countdown`]), which every task has.
//!
//! A limit is a timerfd from furrow-sysfd on `CLOCK_MONOTONIC`, so setting the wall clock
//! neither fires nor delays it. The fd is created up front, before the task starts
//! (creating it can fail, for instance at the open-file limit), and armed later. Arming
//! or reading a live timerfd does not fail in practice; if it ever did, a deadline counts
//! as passed and a ticker falls back to tokio's timer, so a limit may end a task early but
//! never silently vanish.
//!
//! A countdown is on tokio's timer, monotonic too: it cannot fail, and it costs no file
//! descriptor and no system call, where a timerfd cost seven (create, register, arm,
//! deregister, close) on every task, however short.

use std::pin::Pin;
use std::time::Duration;

use furrow_sysfd::{AsyncTimerFd, TimerFd};
use tracing::error;

/// Longest delay a deadline is armed with. Longer ones are shortened to this: a century is
/// as good as never, and a second count beyond `time_t` would be refused.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not armed, or already fired: waiting never finishes.
    Disarmed,
    /// Armed on the timerfd.
    Armed,
    /// Arming the timer failed: the deadline counts as passed.
    Broken,
}

/// A one-shot deadline on its own timerfd. Waiting on a disarmed deadline never finishes,
/// which makes it a no-op branch in a `select!`.
pub(crate) struct Deadline {
    timer: AsyncTimerFd,
    state: State,
}

impl Deadline {
    /// A disarmed deadline. Needs a tokio runtime with IO enabled; fails when no timerfd
    /// can be created.
    pub fn new() -> Result<Self, furrow_sysfd::Error> {
        let timer = AsyncTimerFd::new(TimerFd::new()?)?;
        Ok(Self {
            timer,
            state: State::Disarmed,
        })
    }

    /// Arms the deadline `after` from now, replacing any earlier setting. Returns `false`
    /// when the timer could not be armed: the deadline then counts as passed.
    pub fn arm(&mut self, after: Duration) -> bool {
        self.state = match self.timer.set_one_shot(after.min(LONGEST)) {
            Ok(_) => State::Armed,
            Err(e) => {
                error!(error = %e, "cannot arm a task deadline; treating it as passed");
                State::Broken
            }
        };
        self.state == State::Armed
    }

    /// Time left until the deadline; `None` when it is not armed.
    #[cfg(test)]
    pub fn remaining(&self) -> Option<Duration> {
        let spec = self.timer.get().ok()?;
        (self.state == State::Armed && !spec.value.is_zero()).then_some(spec.value)
    }

    /// Waits until the deadline passes, then disarms it (so it fires once). Cancel-safe:
    /// an expiration is consumed only when this returns.
    pub async fn expired(&mut self) {
        match self.state {
            State::Disarmed => std::future::pending().await,
            State::Broken => {}
            State::Armed => {
                if let Err(e) = self.timer.expired().await {
                    error!(error = %e, "cannot read a task deadline's timer; treating it as passed");
                }
            }
        }
        self.state = State::Disarmed;
    }
}

/// A one-shot deadline on tokio's timer. Waiting on a disarmed countdown never finishes,
/// which makes it a no-op branch in a `select!`.
pub(crate) struct Countdown {
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

impl Countdown {
    /// A disarmed countdown. Needs a tokio runtime with timers enabled.
    pub fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: false,
        }
    }

    /// Arms the countdown to end `after` from now, replacing any earlier setting.
    pub fn arm(&mut self, after: Duration) {
        let at = tokio::time::Instant::now() + after.min(LONGEST);
        self.sleep.as_mut().reset(at);
        self.armed = true;
    }

    /// Disarms the countdown: waiting never finishes until it is armed again.
    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// Waits until the countdown ends, then disarms it (so it fires once). Cancel-safe.
    pub async fn expired(&mut self) {
        if !self.armed {
            std::future::pending::<()>().await;
        }
        self.sleep.as_mut().await;
        self.armed = false;
    }
}

/// A periodic tick on its own timerfd. Waiting on a ticker not yet started never finishes.
pub(crate) struct Ticker {
    timer: AsyncTimerFd,
    period: Duration,
    state: State,
}

impl Ticker {
    /// A ticker every `period` (at least a millisecond), not started. Needs a tokio
    /// runtime with IO enabled; fails when no timerfd can be created.
    pub fn new(period: Duration) -> Result<Self, furrow_sysfd::Error> {
        let timer = AsyncTimerFd::new(TimerFd::new()?)?;
        Ok(Self {
            timer,
            period: period.clamp(Duration::from_millis(1), LONGEST),
            state: State::Disarmed,
        })
    }

    /// Starts ticking: the first tick comes one period from now.
    pub fn start(&mut self) {
        self.state = match self.timer.set_periodic(self.period, self.period) {
            Ok(_) => State::Armed,
            Err(e) => {
                error!(error = %e, "cannot arm a task's periodic timer; using tokio's timer instead");
                State::Broken
            }
        };
    }

    /// Waits for the next tick. Ticks missed while nobody waited collapse into one.
    /// Cancel-safe.
    pub async fn tick(&mut self) {
        match self.state {
            State::Disarmed => std::future::pending().await,
            State::Broken => tokio::time::sleep(self.period).await,
            State::Armed => {
                if let Err(e) = self.timer.expired().await {
                    error!(error = %e, "cannot read a task's periodic timer; using tokio's timer instead");
                    self.state = State::Broken;
                    tokio::time::sleep(self.period).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Bounds every wait, so a deadline that never fires fails the test instead of
    /// hanging it.
    async fn expires(deadline: &mut Deadline) {
        tokio::time::timeout(Duration::from_secs(20), deadline.expired())
            .await
            .expect("the deadline did not fire");
    }

    #[tokio::test]
    async fn fires_once_after_its_delay_then_is_disarmed() {
        let mut deadline = Deadline::new().unwrap();
        assert_eq!(deadline.remaining(), None, "a new deadline is disarmed");
        let started = Instant::now();
        deadline.arm(Duration::from_millis(50));
        let left = deadline.remaining().unwrap();
        assert!(left <= Duration::from_millis(50) && left > Duration::ZERO);
        expires(&mut deadline).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(deadline.remaining(), None, "a fired deadline is disarmed");
    }

    #[tokio::test]
    async fn rearming_replaces_the_earlier_setting() {
        let mut deadline = Deadline::new().unwrap();
        deadline.arm(Duration::from_secs(3600));
        let started = Instant::now();
        deadline.arm(Duration::from_millis(20));
        expires(&mut deadline).await;
        assert!(started.elapsed() >= Duration::from_millis(20));
    }

    #[tokio::test]
    async fn huge_delays_are_clamped_instead_of_refused() {
        let mut deadline = Deadline::new().unwrap();
        deadline.arm(Duration::from_secs(u64::MAX));
        assert_eq!(deadline.state, State::Armed);
        let left = deadline.remaining().unwrap();
        assert!(left > Duration::from_secs(99 * 365 * 24 * 3600), "{left:?}");
    }

    #[tokio::test]
    async fn a_countdown_fires_once_can_be_rearmed_or_disarmed_and_clamps_huge_delays() {
        async fn bounded(countdown: &mut Countdown) -> Duration {
            let started = Instant::now();
            tokio::time::timeout(Duration::from_secs(20), countdown.expired())
                .await
                .expect("the countdown did not end");
            started.elapsed()
        }
        let mut countdown = Countdown::new();
        let idle = tokio::time::timeout(Duration::from_millis(50), countdown.expired()).await;
        assert!(idle.is_err(), "a new countdown is disarmed");
        countdown.arm(Duration::from_secs(3600));
        countdown.arm(Duration::from_millis(30));
        assert!(bounded(&mut countdown).await >= Duration::from_millis(30));
        let again = tokio::time::timeout(Duration::from_millis(50), countdown.expired()).await;
        assert!(again.is_err(), "an ended countdown is disarmed");
        countdown.arm(Duration::from_millis(10));
        countdown.disarm();
        let disarmed = tokio::time::timeout(Duration::from_millis(50), countdown.expired()).await;
        assert!(disarmed.is_err(), "a disarmed countdown never ends");
        countdown.arm(Duration::from_secs(u64::MAX));
        let huge = tokio::time::timeout(Duration::from_millis(50), countdown.expired()).await;
        assert!(huge.is_err(), "a huge delay is clamped, not wrapped to now");
    }

    #[tokio::test]
    async fn a_ticker_ticks_every_period_once_started() {
        let mut ticker = Ticker::new(Duration::from_millis(30)).unwrap();
        let not_started = tokio::time::timeout(Duration::from_millis(100), ticker.tick()).await;
        assert!(not_started.is_err(), "a ticker not started never ticks");
        let started = Instant::now();
        ticker.start();
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(20), ticker.tick())
                .await
                .expect("the ticker did not tick");
        }
        assert!(started.elapsed() >= Duration::from_millis(90));
    }

    #[tokio::test]
    async fn a_disarmed_deadline_loses_every_race() {
        let mut never = Deadline::new().unwrap();
        let mut soon = Deadline::new().unwrap();
        soon.arm(Duration::from_millis(10));
        let never_won = tokio::select! {
            () = never.expired() => true,
            () = expires(&mut soon) => false,
        };
        assert!(!never_won);
    }
}
