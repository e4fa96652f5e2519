//! Small fd helpers shared by the modules: path conversion, EINTR-safe read/write, poll.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result, cvt};

/// Converts a path for a syscall; a path with an interior NUL byte is an invalid argument.
pub(crate) fn path_cstring(op: &'static str, path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::invalid(op))
}

/// Converts a string for a syscall; an interior NUL byte is an invalid argument.
pub(crate) fn str_cstring(op: &'static str, text: &str) -> Result<CString> {
    CString::new(text.as_bytes()).map_err(|_| Error::invalid(op))
}

/// Takes ownership of a freshly returned fd, after checking the return value.
pub(crate) fn owned_fd(op: &'static str, ret: libc::c_int) -> Result<OwnedFd> {
    let fd = cvt(op, ret)?;
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `read(2)` that retries on `EINTR`.
pub(crate) fn read_retry(op: &'static str, fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` writable bytes.
        let ret = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if ret >= 0 {
            return Ok(ret as usize);
        }
        let err = Error::last(op);
        if err.errno() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// `write(2)` that retries on `EINTR`.
pub(crate) fn write_retry(op: &'static str, fd: BorrowedFd<'_>, buf: &[u8]) -> Result<usize> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` readable bytes.
        let ret = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if ret >= 0 {
            return Ok(ret as usize);
        }
        let err = Error::last(op);
        if err.errno() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Waits until `fd` is ready for `events` (`POLLIN`/`POLLOUT`) or `timeout` passes.
/// `None` waits forever. Returns whether the fd became ready.
pub(crate) fn poll_fd(
    op: &'static str,
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    timeout: Option<Duration>,
) -> Result<bool> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let millis = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up so a sub-millisecond remainder still waits.
                let ms = left.as_micros().div_ceil(1000);
                i32::try_from(ms).unwrap_or(i32::MAX)
            }
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ret = unsafe { libc::poll(&mut pfd, 1, millis) };
        if ret < 0 {
            let err = Error::last(op);
            if err.errno() == Some(libc::EINTR) {
                continue;
            }
            return Err(err);
        }
        if pfd.revents & libc::POLLNVAL != 0 {
            return Err(Error::from_errno(op, libc::EBADF));
        }
        return Ok(ret > 0);
    }
}

/// Sets or clears `O_NONBLOCK` on `fd`.
pub(crate) fn set_nonblocking(op: &'static str, fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    // SAFETY: fcntl on a borrowed, open fd.
    let flags = cvt(op, unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let wanted = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if wanted != flags {
        // SAFETY: as above.
        cvt(op, unsafe {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, wanted)
        })?;
    }
    Ok(())
}

/// The path an fd refers to, read from `/proc/self/fd`; `None` when it cannot be resolved.
pub(crate) fn fd_path(fd: RawFd) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()
}

/// Borrows the fd of an optional owned fd, or reports the object as closed.
pub(crate) fn live_fd<'a>(fd: &'a Option<OwnedFd>, op: &'static str) -> Result<BorrowedFd<'a>> {
    fd.as_ref().map(AsFd::as_fd).ok_or(Error::closed(op))
}

/// Registers an owned fd with the current tokio reactor for readability. Outside a runtime →
/// [`Error::InvalidArgument`] naming the requirement.
pub(crate) fn register(fd: OwnedFd) -> Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    const OP: &str = "register with the tokio reactor (needs a tokio runtime with IO enabled)";
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::invalid(OP));
    }
    // SAFETY: the `OwnedFd` is valid and stays open, unchanged, for as long as the `AsyncFd`
    // owns it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|err| {
            let (_fd, cause) = err.into_parts();
            Error::from_io(OP, &cause)
        })
}
