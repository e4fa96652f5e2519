//! timerfd: the default clock really is monotonic, settings keep seconds and nanoseconds,
//! expiration counts, absolute timers, errors, async use as a time limit.

mod common;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{TestResult, limit_open_files, run_in_child, runtime};
use furrow_sysfd::{
    AsyncTimerFd, Clock, Error, EventSource, SetTimeFlags, TimerFd, TimerFdFlags, TimerSpec,
    clock_now, timerfd_create, timerfd_gettime, timerfd_read, timerfd_settime,
};
use futures::StreamExt;

fn kernel_clock_id(timer: &TimerFd) -> Result<i32, Box<dyn std::error::Error>> {
    let fd = timer.fd()?.as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    let line = info
        .lines()
        .find(|l| l.starts_with("clockid:"))
        .ok_or("no clockid in fdinfo")?;
    Ok(line["clockid:".len()..].trim().parse()?)
}

#[test]
fn default_clock_is_monotonic_in_the_kernel() -> TestResult {
    let timer = TimerFd::new()?;
    assert_eq!(timer.clock(), Clock::Monotonic);
    assert_eq!(kernel_clock_id(&timer)?, libc::CLOCK_MONOTONIC);
    let realtime = TimerFd::with_clock(Clock::Realtime)?;
    assert_eq!(kernel_clock_id(&realtime)?, libc::CLOCK_REALTIME);
    let boottime = TimerFd::with_clock(Clock::Boottime)?;
    assert_eq!(kernel_clock_id(&boottime)?, libc::CLOCK_BOOTTIME);
    Ok(())
}

#[test]
fn one_shot_keeps_seconds_and_nanoseconds() -> TestResult {
    let mut timer = TimerFd::new()?;
    timer.set_one_shot(Duration::new(100, 500_000_000))?;
    let left = timer.get()?;
    assert_eq!(left.interval, Duration::ZERO);
    // Just armed: between 99.5 s and 100.5 s left, i.e. seconds were not overwritten.
    assert!(left.value > Duration::new(99, 500_000_000), "{left:?}");
    assert!(left.value <= Duration::new(100, 500_000_000), "{left:?}");
    let old = timer.disarm()?;
    assert!(old.value > Duration::from_secs(99));
    assert_eq!(timer.get()?, TimerSpec::default());
    Ok(())
}

#[test]
fn one_shot_fires_once() -> TestResult {
    let mut timer = TimerFd::new()?;
    let start = Instant::now();
    timer.set_one_shot(Duration::from_millis(20))?;
    assert_err!(timer.read_event(), Error::WouldBlock { .. });
    assert!(timer.wait(Some(Duration::from_secs(10)))?);
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert_eq!(timer.read_event()?, 1);
    assert!(!timer.wait(Some(Duration::from_millis(50)))?);
    Ok(())
}

#[test]
fn zero_delay_fires_at_once_instead_of_disarming() -> TestResult {
    let mut timer = TimerFd::new()?;
    timer.set_one_shot(Duration::ZERO)?;
    assert!(timer.wait(Some(Duration::from_secs(10)))?);
    assert_eq!(timer.read_event()?, 1);
    Ok(())
}

#[test]
fn periodic_read_returns_the_expiration_count() -> TestResult {
    let mut timer = TimerFd::new()?;
    timer.set_periodic(Duration::from_millis(1), Duration::from_millis(1))?;
    // Let several periods pass unread, measured by the clock itself.
    let start = clock_now(Clock::Monotonic)?;
    while clock_now(Clock::Monotonic)? - start < Duration::from_millis(20) {
        std::thread::yield_now();
    }
    let count = timer.read_event()?;
    assert!(count >= 5, "only {count} expirations counted");
    assert_eq!(timer.get()?.interval, Duration::from_millis(1));
    assert_err!(
        timer.set_periodic(Duration::from_millis(1), Duration::ZERO),
        Error::InvalidArgument { .. }
    );
    Ok(())
}

#[test]
fn absolute_time_on_the_timer_clock() -> TestResult {
    let mut timer = TimerFd::new()?;
    let at = clock_now(Clock::Monotonic)? + Duration::from_millis(10);
    timer.set_absolute(at, None)?;
    assert!(timer.wait(Some(Duration::from_secs(10)))?);
    assert!(clock_now(Clock::Monotonic)? >= at);
    assert_eq!(timer.read_event()?, 1);
    // A time in the past fires at once.
    timer.set_absolute(Duration::from_secs(1), None)?;
    assert!(timer.wait(Some(Duration::from_secs(10)))?);
    assert_eq!(timer.read_event()?, 1);
    Ok(())
}

#[test]
fn low_level_calls_and_their_errors() -> TestResult {
    let fd = timerfd_create(
        Clock::Monotonic,
        TimerFdFlags::NONBLOCK | TimerFdFlags::CLOEXEC,
    )?;
    let spec = TimerSpec {
        value: Duration::new(3, 7),
        interval: Duration::new(1, 9),
    };
    assert_eq!(
        timerfd_settime(&fd, SetTimeFlags::empty(), spec)?,
        TimerSpec::default()
    );
    let now = timerfd_gettime(&fd)?;
    assert_eq!(now.interval, Duration::new(1, 9));
    assert!(now.value <= Duration::new(3, 7) && now.value > Duration::from_secs(2));
    assert_err!(timerfd_read(&fd), Error::WouldBlock { .. });
    // Unknown clock and flags.
    assert_err!(
        timerfd_create(Clock::Other(1234), TimerFdFlags::empty()),
        Error::InvalidArgument { .. }
    );
    assert_err!(
        timerfd_create(Clock::Monotonic, TimerFdFlags::from_bits_retain(0x10)),
        Error::InvalidArgument { .. }
    );
    assert_err!(
        timerfd_settime(&fd, SetTimeFlags::from_bits_retain(0x100), spec),
        Error::InvalidArgument { .. }
    );
    // Seconds beyond time_t.
    let huge = TimerSpec {
        value: Duration::from_secs(u64::MAX),
        interval: Duration::ZERO,
    };
    assert_err!(
        timerfd_settime(&fd, SetTimeFlags::empty(), huge),
        Error::InvalidArgument { .. }
    );
    // Not a timerfd.
    let file = tempfile::tempfile()?;
    assert_err!(
        timerfd_settime(&file, SetTimeFlags::empty(), spec),
        Error::InvalidArgument { .. }
    );
    assert_err!(timerfd_gettime(&file), Error::InvalidArgument { .. });
    assert_err!(timerfd_read(&file), Error::InvalidArgument { .. });
    assert_err!(clock_now(Clock::Other(1234)), Error::InvalidArgument { .. });
    Ok(())
}

#[test]
fn closed_timer_reports_closed() -> TestResult {
    let mut timer = TimerFd::new()?;
    timer.close();
    assert_err!(
        timer.set_one_shot(Duration::from_secs(1)),
        Error::Closed { .. }
    );
    assert_err!(timer.get(), Error::Closed { .. });
    assert_err!(timer.disarm(), Error::Closed { .. });
    assert_err!(timer.read_event(), Error::Closed { .. });
    Ok(())
}

#[test]
fn limits_and_privileges() {
    run_in_child(|| {
        limit_open_files(3)?;
        assert_err!(TimerFd::new(), Error::ResourceLimit { .. });
        Ok(())
    });
    run_in_child(|| {
        common::become_nobody()?;
        // Alarm clocks need CAP_WAKE_ALARM.
        assert_err!(
            TimerFd::with_clock(Clock::BoottimeAlarm),
            Error::PermissionDenied { .. }
        );
        Ok(())
    });
}

#[test]
fn async_one_shot_as_a_time_limit() -> TestResult {
    runtime().block_on(async {
        let limit = AsyncTimerFd::one_shot(Duration::from_millis(20))?;
        let slow_task = std::future::pending::<()>();
        let start = Instant::now();
        let fired = tokio::select! {
            count = limit.expired() => count?,
            _ = slow_task => 0,
        };
        assert_eq!(fired, 1);
        assert!(start.elapsed() >= Duration::from_millis(20));
        // Re-armed far away: the limit does not fire while a fast task finishes.
        limit.set_one_shot(Duration::from_secs(3600))?;
        assert!(limit.get()?.value > Duration::from_secs(3500));
        let outcome = tokio::select! {
            _ = limit.expired() => "limit",
            _ = tokio::task::yield_now() => "task",
        };
        assert_eq!(outcome, "task");
        limit.disarm()?;
        Ok(())
    })
}

#[test]
fn async_periodic_stream() -> TestResult {
    runtime().block_on(async {
        let ticks = AsyncTimerFd::periodic(Duration::from_millis(2))?;
        let counts: Vec<u64> = ticks.take(3).map(|c| c.unwrap_or(0)).collect().await;
        assert_eq!(counts.len(), 3);
        assert!(counts.iter().all(|c| *c >= 1));
        let other = AsyncTimerFd::new(TimerFd::new()?)?;
        other.set_periodic(Duration::ZERO, Duration::from_millis(1))?;
        assert!(other.expired().await? >= 1);
        Ok(())
    })
}
