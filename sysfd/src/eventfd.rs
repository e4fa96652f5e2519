//! eventfd: a kernel counter usable as a wake-up or semaphore between threads and tasks.
//!
//! Low level: [`eventfd`], [`eventfd_read`], [`eventfd_write`]. High level: [`EventFd`] in
//! counter mode (a read returns and resets the whole count) or semaphore mode (a read returns 1
//! and decrements). Async: [`AsyncEventFd`].

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::error::{Error, Result};
use crate::fd::{live_fd, owned_fd, read_retry, write_retry};
use crate::source::{AsyncSource, EventSource};

bitflags::bitflags! {
    /// Flags of [`eventfd`] (`EFD_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct EventFdFlags: i32 {
        /// `EFD_CLOEXEC`: close the fd on `exec`.
        const CLOEXEC = libc::EFD_CLOEXEC;
        /// `EFD_NONBLOCK`: reads and writes fail with `EAGAIN` instead of blocking.
        const NONBLOCK = libc::EFD_NONBLOCK;
        /// `EFD_SEMAPHORE`: a read returns 1 and decrements the counter.
        const SEMAPHORE = libc::EFD_SEMAPHORE;
    }
}

/// `eventfd(2)`: creates an eventfd with counter `initval`.
///
/// Errors: unknown flag bits → [`Error::InvalidArgument`]; fd limits →
/// [`Error::ResourceLimit`]; `ENOMEM` → [`Error::OutOfMemory`].
pub fn eventfd(initval: u32, flags: EventFdFlags) -> Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    owned_fd("eventfd", unsafe { libc::eventfd(initval, flags.bits()) })
}

/// Reads the eventfd counter (8 bytes). A non-blocking fd with a zero counter gives
/// [`Error::WouldBlock`]; an fd that is not an eventfd gives [`Error::InvalidArgument`] (or what
/// `read(2)` says about that kind of fd).
pub fn eventfd_read(fd: impl AsFd) -> Result<u64> {
    let mut buf = [0u8; 8];
    let n = read_retry("eventfd_read", fd.as_fd(), &mut buf)?;
    if n != buf.len() {
        return Err(Error::invalid("eventfd_read"));
    }
    Ok(u64::from_ne_bytes(buf))
}

/// Adds `value` to the eventfd counter. `u64::MAX` is refused by the kernel
/// ([`Error::InvalidArgument`]); a write that would overflow the counter blocks, or gives
/// [`Error::WouldBlock`] on a non-blocking fd.
pub fn eventfd_write(fd: impl AsFd, value: u64) -> Result<()> {
    let n = write_retry("eventfd_write", fd.as_fd(), &value.to_ne_bytes())?;
    if n != 8 {
        return Err(Error::invalid("eventfd_write"));
    }
    Ok(())
}

/// How reads consume the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFdMode {
    /// A read returns the whole counter and resets it to 0.
    Counter,
    /// A read returns 1 and decrements the counter.
    Semaphore,
}

/// An eventfd event object; each event is the value one read returned.
///
/// ```
/// use furrow_sysfd::{EventFd, EventSource};
/// let mut sem = EventFd::semaphore(2)?;
/// assert_eq!(sem.read_event()?, 1);
/// assert_eq!(sem.read_event()?, 1);
/// assert!(sem.read_event().unwrap_err().is_would_block());
/// # Ok::<(), furrow_sysfd::Error>(())
/// ```
#[derive(Debug)]
pub struct EventFd {
    fd: Option<OwnedFd>,
    mode: EventFdMode,
    cache: VecDeque<u64>,
}

impl EventFd {
    /// A counter-mode eventfd starting at `initial` (non-blocking, close-on-exec).
    pub fn new(initial: u32) -> Result<Self> {
        Self::with_mode(initial, EventFdMode::Counter)
    }

    /// A semaphore-mode eventfd starting at `initial` (non-blocking, close-on-exec).
    pub fn semaphore(initial: u32) -> Result<Self> {
        Self::with_mode(initial, EventFdMode::Semaphore)
    }

    /// An eventfd in the given mode.
    pub fn with_mode(initial: u32, mode: EventFdMode) -> Result<Self> {
        let mut flags = EventFdFlags::CLOEXEC | EventFdFlags::NONBLOCK;
        if mode == EventFdMode::Semaphore {
            flags |= EventFdFlags::SEMAPHORE;
        }
        Ok(EventFd {
            fd: Some(eventfd(initial, flags)?),
            mode,
            cache: VecDeque::new(),
        })
    }

    /// The mode chosen at creation.
    pub fn mode(&self) -> EventFdMode {
        self.mode
    }

    /// Adds `value` to the counter. [`Error::WouldBlock`] if the counter would overflow,
    /// [`Error::InvalidArgument`] for `u64::MAX`, [`Error::Closed`] after close.
    pub fn write(&self, value: u64) -> Result<()> {
        eventfd_write(live_fd(&self.fd, "eventfd_write")?, value)
    }
}

impl EventSource for EventFd {
    type Event = u64;

    fn fd(&self) -> Result<BorrowedFd<'_>> {
        live_fd(&self.fd, "eventfd")
    }

    fn fill(&mut self) -> Result<usize> {
        let value = eventfd_read(live_fd(&self.fd, "eventfd_read")?)?;
        self.cache.push_back(value);
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

/// An [`EventFd`] as an async queue / `Stream` of read values.
pub type AsyncEventFd = AsyncSource<EventFd>;

impl AsyncSource<EventFd> {
    /// Adds `value` to the counter; see [`EventFd::write`].
    pub fn write(&self, value: u64) -> Result<()> {
        self.with(|efd| efd.write(value))
    }
}
