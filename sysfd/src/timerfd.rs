//! timerfd: timers delivered through an fd, one-shot or periodic, relative or absolute.
//!
//! Low level: [`timerfd_create`], [`timerfd_settime`], [`timerfd_gettime`], [`timerfd_read`]
//! (which keeps the expiration count) and [`clock_now`]. High level: [`TimerFd`], on
//! `CLOCK_MONOTONIC` unless asked otherwise; each event is the number of expirations since the
//! previous read. Async: [`AsyncTimerFd`], e.g. as a task time limit:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), furrow_sysfd::Error> {
//! use std::time::Duration;
//! use furrow_sysfd::AsyncTimerFd;
//! let limit = AsyncTimerFd::one_shot(Duration::from_millis(5))?;
//! tokio::select! {
//!     expired = limit.expired() => assert_eq!(expired?, 1),
//!     _ = std::future::pending::<()>() => unreachable!(),
//! }
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::error::{Error, Result, cvt};
use crate::fd::{live_fd, owned_fd, read_retry};
use crate::source::{AsyncSource, EventSource};

/// A clock a timer can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// `CLOCK_MONOTONIC`: not affected by changes of the wall clock; does not count suspend.
    /// The default.
    #[default]
    Monotonic,
    /// `CLOCK_REALTIME`: the wall clock; jumps when the time is set.
    Realtime,
    /// `CLOCK_BOOTTIME`: monotonic, counting time spent suspended.
    Boottime,
    /// `CLOCK_REALTIME_ALARM`: like `Realtime`, wakes the system from suspend.
    RealtimeAlarm,
    /// `CLOCK_BOOTTIME_ALARM`: like `Boottime`, wakes the system from suspend.
    BoottimeAlarm,
    /// Any other clock id, passed to the kernel as is.
    Other(libc::clockid_t),
}

impl Clock {
    /// The kernel's clock id.
    pub fn raw(self) -> libc::clockid_t {
        match self {
            Clock::Monotonic => libc::CLOCK_MONOTONIC,
            Clock::Realtime => libc::CLOCK_REALTIME,
            Clock::Boottime => libc::CLOCK_BOOTTIME,
            Clock::RealtimeAlarm => libc::CLOCK_REALTIME_ALARM,
            Clock::BoottimeAlarm => libc::CLOCK_BOOTTIME_ALARM,
            Clock::Other(id) => id,
        }
    }
}

bitflags::bitflags! {
    /// Flags of [`timerfd_create`] (`TFD_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct TimerFdFlags: i32 {
        /// `TFD_CLOEXEC`.
        const CLOEXEC = libc::TFD_CLOEXEC;
        /// `TFD_NONBLOCK`.
        const NONBLOCK = libc::TFD_NONBLOCK;
    }

    /// Flags of [`timerfd_settime`] (`TFD_TIMER_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SetTimeFlags: i32 {
        /// `TFD_TIMER_ABSTIME`: the value is an absolute time on the timer's clock.
        const ABSTIME = libc::TFD_TIMER_ABSTIME;
        /// `TFD_TIMER_CANCEL_ON_SET`: with `ABSTIME` on a realtime clock, a read fails with
        /// `ECANCELED` when the clock is set.
        const CANCEL_ON_SET = libc::TFD_TIMER_CANCEL_ON_SET;
    }
}

/// A timer setting: first expiration and period. A zero `value` disarms the timer; a zero
/// `interval` makes it one-shot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimerSpec {
    /// Time to the first expiration (relative) or its time on the clock (absolute).
    pub value: Duration,
    /// Period after the first expiration; zero for a one-shot timer.
    pub interval: Duration,
}

fn to_timespec(op: &'static str, d: Duration) -> Result<libc::timespec> {
    let secs = libc::time_t::try_from(d.as_secs()).map_err(|_| Error::invalid(op))?;
    Ok(libc::timespec {
        tv_sec: secs,
        // Seconds and nanoseconds are separate fields; each gets its own part of `d`.
        // Below 10^9, so it fits a c_long on every target.
        tv_nsec: d.subsec_nanos() as libc::c_long,
    })
}

fn from_timespec(ts: &libc::timespec) -> Duration {
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
    Duration::new(secs, nanos)
}

fn to_itimerspec(op: &'static str, spec: TimerSpec) -> Result<libc::itimerspec> {
    Ok(libc::itimerspec {
        it_interval: to_timespec(op, spec.interval)?,
        it_value: to_timespec(op, spec.value)?,
    })
}

fn from_itimerspec(its: &libc::itimerspec) -> TimerSpec {
    TimerSpec {
        value: from_timespec(&its.it_value),
        interval: from_timespec(&its.it_interval),
    }
}

/// `timerfd_create(2)`. An unknown clock or flag → [`Error::InvalidArgument`]; an alarm clock
/// without `CAP_WAKE_ALARM` → [`Error::PermissionDenied`]; fd limits → [`Error::ResourceLimit`].
pub fn timerfd_create(clock: Clock, flags: TimerFdFlags) -> Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    owned_fd("timerfd_create", unsafe {
        libc::timerfd_create(clock.raw(), flags.bits())
    })
}

/// `timerfd_settime(2)`: arms (or, with a zero value, disarms) the timer; returns the previous
/// setting. A second count beyond `time_t` or an fd that is no timerfd →
/// [`Error::InvalidArgument`].
pub fn timerfd_settime(fd: impl AsFd, flags: SetTimeFlags, spec: TimerSpec) -> Result<TimerSpec> {
    const OP: &str = "timerfd_settime";
    let new = to_itimerspec(OP, spec)?;
    let mut old = to_itimerspec(OP, TimerSpec::default())?;
    // SAFETY: both pointers refer to valid itimerspec values.
    cvt(OP, unsafe {
        libc::timerfd_settime(fd.as_fd().as_raw_fd(), flags.bits(), &new, &mut old)
    })?;
    Ok(from_itimerspec(&old))
}

/// `timerfd_gettime(2)`: the time left to the next expiration and the period.
pub fn timerfd_gettime(fd: impl AsFd) -> Result<TimerSpec> {
    const OP: &str = "timerfd_gettime";
    let mut cur = to_itimerspec(OP, TimerSpec::default())?;
    // SAFETY: `cur` is a valid itimerspec.
    cvt(OP, unsafe {
        libc::timerfd_gettime(fd.as_fd().as_raw_fd(), &mut cur)
    })?;
    Ok(from_itimerspec(&cur))
}

/// Reads a timerfd: the number of expirations since the last read (at least 1). A
/// non-blocking timer that has not expired gives [`Error::WouldBlock`].
pub fn timerfd_read(fd: impl AsFd) -> Result<u64> {
    let mut buf = [0u8; 8];
    let n = read_retry("timerfd_read", fd.as_fd(), &mut buf)?;
    if n != buf.len() {
        return Err(Error::invalid("timerfd_read"));
    }
    Ok(u64::from_ne_bytes(buf))
}

/// `clock_gettime(2)`: the current time on `clock`, for absolute timers.
pub fn clock_now(clock: Clock) -> Result<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec.
    cvt("clock_gettime", unsafe {
        libc::clock_gettime(clock.raw(), &mut ts)
    })?;
    Ok(from_timespec(&ts))
}

/// A timer event object; each event is an expiration count.
///
/// ```
/// use std::time::Duration;
/// use furrow_sysfd::{EventSource, TimerFd, Clock};
/// let mut timer = TimerFd::new()?;
/// assert_eq!(timer.clock(), Clock::Monotonic);
/// timer.set_one_shot(Duration::from_millis(1))?;
/// assert!(timer.wait(Some(Duration::from_secs(5)))?);
/// assert_eq!(timer.read_event()?, 1);
/// # Ok::<(), furrow_sysfd::Error>(())
/// ```
#[derive(Debug)]
pub struct TimerFd {
    fd: Option<OwnedFd>,
    clock: Clock,
    cache: VecDeque<u64>,
}

impl TimerFd {
    /// A disarmed timer on `CLOCK_MONOTONIC` (non-blocking, close-on-exec).
    pub fn new() -> Result<Self> {
        Self::with_clock(Clock::Monotonic)
    }

    /// A disarmed timer on `clock`.
    pub fn with_clock(clock: Clock) -> Result<Self> {
        let fd = timerfd_create(clock, TimerFdFlags::CLOEXEC | TimerFdFlags::NONBLOCK)?;
        Ok(TimerFd {
            fd: Some(fd),
            clock,
            cache: VecDeque::new(),
        })
    }

    /// The clock the timer runs on.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    fn live(&self, op: &'static str) -> Result<BorrowedFd<'_>> {
        live_fd(&self.fd, op)
    }

    /// Arms a one-shot timer firing `after` from now. A zero delay fires at once (it does not
    /// disarm). Returns the previous setting.
    pub fn set_one_shot(&mut self, after: Duration) -> Result<TimerSpec> {
        let value = after.max(Duration::from_nanos(1));
        self.set(
            TimerSpec {
                value,
                interval: Duration::ZERO,
            },
            SetTimeFlags::empty(),
        )
    }

    /// Arms a periodic timer: first expiration after `first` (zero: at once), then every
    /// `interval`. A zero interval → [`Error::InvalidArgument`].
    pub fn set_periodic(&mut self, first: Duration, interval: Duration) -> Result<TimerSpec> {
        if interval.is_zero() {
            return Err(Error::invalid("timerfd_settime (zero interval)"));
        }
        let value = first.max(Duration::from_nanos(1));
        self.set(TimerSpec { value, interval }, SetTimeFlags::empty())
    }

    /// Arms the timer at an absolute time `at` on its clock (see [`clock_now`]), then every
    /// `interval` if given. A time already past fires at once.
    pub fn set_absolute(&mut self, at: Duration, interval: Option<Duration>) -> Result<TimerSpec> {
        let value = at.max(Duration::from_nanos(1));
        let interval = interval.unwrap_or(Duration::ZERO);
        self.set(TimerSpec { value, interval }, SetTimeFlags::ABSTIME)
    }

    /// Arms or disarms with a full setting; see [`timerfd_settime`]. Expirations counted but
    /// not yet read are dropped by the kernel, and so are cached ones here.
    pub fn set(&mut self, spec: TimerSpec, flags: SetTimeFlags) -> Result<TimerSpec> {
        let old = timerfd_settime(self.live("timerfd_settime")?, flags, spec)?;
        self.cache.clear();
        Ok(old)
    }

    /// Disarms the timer. Returns the previous setting.
    pub fn disarm(&mut self) -> Result<TimerSpec> {
        self.set(TimerSpec::default(), SetTimeFlags::empty())
    }

    /// Time left to the next expiration (zero when disarmed) and the period.
    pub fn get(&self) -> Result<TimerSpec> {
        timerfd_gettime(self.live("timerfd_gettime")?)
    }
}

impl EventSource for TimerFd {
    type Event = u64;

    fn fd(&self) -> Result<BorrowedFd<'_>> {
        self.live("timerfd")
    }

    fn fill(&mut self) -> Result<usize> {
        let count = timerfd_read(self.live("timerfd_read")?)?;
        self.cache.push_back(count);
        Ok(1)
    }

    fn cache(&mut self) -> &mut VecDeque<u64> {
        &mut self.cache
    }

    fn close(&mut self) {
        self.cache.clear();
        self.fd = None;
    }
}

/// A [`TimerFd`] as an async queue / `Stream` of expiration counts.
pub type AsyncTimerFd = AsyncSource<TimerFd>;

impl AsyncSource<TimerFd> {
    /// A monotonic one-shot timer firing `after` from now, e.g. a task time limit.
    pub fn one_shot(after: Duration) -> Result<Self> {
        let mut timer = TimerFd::new()?;
        timer.set_one_shot(after)?;
        AsyncSource::new(timer)
    }

    /// A monotonic periodic timer firing every `interval`, first after one interval.
    pub fn periodic(interval: Duration) -> Result<Self> {
        let mut timer = TimerFd::new()?;
        timer.set_periodic(interval, interval)?;
        AsyncSource::new(timer)
    }

    /// Waits for the next expiration; returns how many expirations happened since the last
    /// read (more than 1 when a periodic timer was not read in time). Cancel-safe. A one-shot
    /// timer fires once: after its expiration was read, this waits until it is re-armed.
    pub async fn expired(&self) -> Result<u64> {
        self.read_event().await
    }

    /// Re-arms as a one-shot timer; see [`TimerFd::set_one_shot`].
    pub fn set_one_shot(&self, after: Duration) -> Result<TimerSpec> {
        self.with(|timer| timer.set_one_shot(after))
    }

    /// Re-arms as a periodic timer; see [`TimerFd::set_periodic`].
    pub fn set_periodic(&self, first: Duration, interval: Duration) -> Result<TimerSpec> {
        self.with(|timer| timer.set_periodic(first, interval))
    }

    /// Disarms; see [`TimerFd::disarm`].
    pub fn disarm(&self) -> Result<TimerSpec> {
        self.with(TimerFd::disarm)
    }

    /// Time left and period; see [`TimerFd::get`].
    pub fn get(&self) -> Result<TimerSpec> {
        self.with(|timer| timer.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespec_keeps_seconds_and_nanoseconds_apart() -> Result<()> {
        let ts = to_timespec("t", Duration::new(7, 250))?;
        assert_eq!(ts.tv_sec, 7);
        assert_eq!(ts.tv_nsec, 250);
        assert_eq!(from_timespec(&ts), Duration::new(7, 250));
        Ok(())
    }

    #[test]
    fn seconds_beyond_time_t_are_invalid() {
        let err = to_timespec("t", Duration::from_secs(u64::MAX));
        assert!(matches!(err, Err(Error::InvalidArgument { .. })));
    }
}
