//! pidfd: a stable handle on a process, to signal it and to await its exit without races on
//! reused pids.
//!
//! Low level: [`pidfd_open`], [`pidfd_send_signal`], [`pidfd_wait`]. High level: [`PidFd`]
//! (blocking / polling) and [`AsyncPidFd`], whose [`wait`](AsyncPidFd::wait) reaps a child and
//! returns its [`ExitStatus`]:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use furrow_sysfd::{AsyncPidFd, ExitStatus};
//! let child = std::process::Command::new("sh").args(["-c", "exit 3"]).spawn()?;
//! let pidfd = AsyncPidFd::from_child(&child)?;
//! assert_eq!(pidfd.wait().await?, ExitStatus::Exited(3));
//! # Ok(()) }
//! ```
//!
//! The waiter reaps the child, so nothing else may reap it: do not call `wait`/`try_wait` on
//! the `std`/`tokio` `Child` and do not set tokio's `kill_on_drop` (after the reap the pid may
//! belong to another process). Keep a tokio `Child` alive until [`AsyncPidFd::wait`] has
//! returned: tokio reaps the children it considers orphaned (dropped while running). Dropping
//! it afterwards is harmless: tokio's orphan queue discards it at its next pass, when
//! `waitpid` reports it gone.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result, cvt, cvt_long};
use crate::fd::{live_fd, owned_fd, poll_fd, register};
use crate::signalfd::Signal;

bitflags::bitflags! {
    /// Flags of [`pidfd_open`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PidFdFlags: u32 {
        /// `PIDFD_NONBLOCK`: `waitid` on the fd does not block.
        const NONBLOCK = libc::O_NONBLOCK as u32;
    }
}

/// `pidfd_open(2)`: an fd (close-on-exec) referring to process `pid`. No such process →
/// [`Error::NotFound`]; a pid ≤ 0 or unknown flags → [`Error::InvalidArgument`].
pub fn pidfd_open(pid: i32, flags: PidFdFlags) -> Result<OwnedFd> {
    if pid <= 0 {
        return Err(Error::invalid("pidfd_open"));
    }
    // SAFETY: raw syscall with integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags.bits()) };
    let fd = cvt_long("pidfd_open", ret)?;
    owned_fd(
        "pidfd_open",
        libc::c_int::try_from(fd).map_err(|_| Error::invalid("pidfd_open"))?,
    )
}

/// `pidfd_send_signal(2)` without extra info. Process gone → [`Error::NotFound`]; not
/// allowed to signal it → [`Error::PermissionDenied`]; not a pidfd → [`Error::InvalidArgument`].
pub fn pidfd_send_signal(fd: impl AsFd, signal: Signal) -> Result<()> {
    // SAFETY: raw syscall; a null siginfo is allowed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_fd().as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    cvt_long("pidfd_send_signal", ret)?;
    Ok(())
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It called `exit` with this code.
    Exited(i32),
    /// A signal terminated it.
    Signaled {
        /// The terminating signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// The exit code, if it exited normally.
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited(code) => Some(*code),
            ExitStatus::Signaled { .. } => None,
        }
    }

    /// The terminating signal number, if a signal ended it.
    pub fn signal(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited(_) => None,
            ExitStatus::Signaled { signal, .. } => Some(*signal),
        }
    }

    /// Exited with code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }

    /// The same status as a `std::process::ExitStatus`.
    pub fn to_std(&self) -> std::process::ExitStatus {
        let raw = match *self {
            ExitStatus::Exited(code) => (code & 0xff) << 8,
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => (signal & 0x7f) | if core_dumped { 0x80 } else { 0 },
        };
        std::process::ExitStatus::from_raw(raw)
    }
}

/// `waitid(P_PIDFD, fd, WEXITED)`: reaps the child behind `fd`. With `nohang`, returns
/// `Ok(None)` while it still runs. Not our child (or already reaped) → [`Error::NotFound`].
pub fn pidfd_wait(fd: impl AsFd, nohang: bool) -> Result<Option<ExitStatus>> {
    let mut options = libc::WEXITED;
    if nohang {
        options |= libc::WNOHANG;
    }
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter.
        let mut info = unsafe { std::mem::zeroed::<libc::siginfo_t>() };
        // SAFETY: valid pidfd number and out-parameter.
        let ret = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                fd.as_fd().as_raw_fd() as libc::id_t,
                &mut info,
                options,
            )
        };
        match cvt("waitid", ret) {
            Err(err) if err.errno() == Some(libc::EINTR) => continue,
            Err(err) => return Err(err),
            Ok(_) => {}
        }
        // SAFETY: waitid filled in a SIGCHLD siginfo (or left it zeroed with WNOHANG).
        let pid = unsafe { info.si_pid() };
        if pid == 0 {
            return Ok(None);
        }
        // SAFETY: as above.
        let status = unsafe { info.si_status() };
        let status = match info.si_code {
            libc::CLD_EXITED => ExitStatus::Exited(status),
            libc::CLD_DUMPED => ExitStatus::Signaled {
                signal: status,
                core_dumped: true,
            },
            _ => ExitStatus::Signaled {
                signal: status,
                core_dumped: false,
            },
        };
        return Ok(Some(status));
    }
}

fn child_pid(op: &'static str, id: Option<u32>) -> Result<i32> {
    let id = id.ok_or(Error::from_errno(op, libc::ESRCH))?;
    i32::try_from(id).map_err(|_| Error::invalid(op))
}

/// A process handle (blocking / polling use).
#[derive(Debug)]
pub struct PidFd {
    fd: Option<OwnedFd>,
    pid: i32,
}

impl PidFd {
    /// Opens process `pid`; see [`pidfd_open`].
    pub fn open(pid: i32) -> Result<Self> {
        Ok(PidFd {
            fd: Some(pidfd_open(pid, PidFdFlags::empty())?),
            pid,
        })
    }

    /// Opens a child spawned with `std::process::Command`.
    pub fn from_child(child: &std::process::Child) -> Result<Self> {
        Self::open(child_pid("pidfd_open", Some(child.id()))?)
    }

    /// The pid the handle was opened for.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The fd, or [`Error::Closed`].
    pub fn fd(&self) -> Result<BorrowedFd<'_>> {
        live_fd(&self.fd, "pidfd")
    }

    /// Sends `signal`; see [`pidfd_send_signal`].
    pub fn send_signal(&self, signal: Signal) -> Result<()> {
        pidfd_send_signal(self.fd()?, signal)
    }

    /// Whether the process has ended (for a child: is a zombie or reaped).
    pub fn has_exited(&self) -> Result<bool> {
        poll_fd("poll", self.fd()?, libc::POLLIN, Some(Duration::ZERO))
    }

    /// Reaps the child if it has ended; `Ok(None)` while it runs.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        pidfd_wait(self.fd()?, true)
    }

    /// Blocks until the child ends (or `timeout` passes: `Ok(None)`), then reaps it.
    pub fn wait_timeout(&self, timeout: Option<Duration>) -> Result<Option<ExitStatus>> {
        if !poll_fd("poll", self.fd()?, libc::POLLIN, timeout)? {
            return Ok(None);
        }
        pidfd_wait(self.fd()?, false)
    }

    /// Closes the fd. Later calls return [`Error::Closed`].
    pub fn close(&mut self) {
        self.fd = None;
    }
}

/// An async process handle: await the exit of any process, or reap a child and get its
/// [`ExitStatus`]. Needs a tokio runtime with IO enabled when created.
#[derive(Debug)]
pub struct AsyncPidFd {
    io: AsyncFd<OwnedFd>,
    pid: i32,
    status: Mutex<Option<ExitStatus>>,
}

impl AsyncPidFd {
    /// Opens process `pid`. Outside a tokio runtime → [`Error::InvalidArgument`].
    pub fn open(pid: i32) -> Result<Self> {
        let io = register(pidfd_open(pid, PidFdFlags::NONBLOCK)?)?;
        Ok(AsyncPidFd {
            io,
            pid,
            status: Mutex::new(None),
        })
    }

    /// Opens a child spawned with `std::process::Command`.
    pub fn from_child(child: &std::process::Child) -> Result<Self> {
        Self::open(child_pid("pidfd_open", Some(child.id()))?)
    }

    /// Opens a child spawned with `tokio::process::Command`. A child already awaited through
    /// tokio → [`Error::NotFound`]. See the [module docs](self) about not reaping it twice.
    pub fn from_tokio_child(child: &tokio::process::Child) -> Result<Self> {
        Self::open(child_pid("pidfd_open", child.id())?)
    }

    /// The pid the handle was opened for.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal`, e.g. `Signal::SIGKILL` when a time limit expires.
    pub fn send_signal(&self, signal: Signal) -> Result<()> {
        pidfd_send_signal(self.io.get_ref(), signal)
    }

    /// Waits until the process ends, without reaping it. Works for any process.
    pub async fn exited(&self) -> Result<()> {
        let _guard = self
            .io
            .readable()
            .await
            .map_err(|err| Error::from_io("pidfd readable", &err))?;
        Ok(())
    }

    /// Waits until the child ends, reaps it and returns how it ended. Every caller (also
    /// later ones) gets the same status. A process that is not our child →
    /// [`Error::NotFound`] at once. Cancel-safe: dropping the future and calling again
    /// resumes the wait.
    pub async fn wait(&self) -> Result<ExitStatus> {
        // Fails at once for a process that is not our child, instead of waiting for its end.
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        loop {
            if let Some(status) = *self.status_lock() {
                return Ok(status);
            }
            let mut guard = self
                .io
                .readable()
                .await
                .map_err(|err| Error::from_io("pidfd readable", &err))?;
            let mut cached = self.status_lock();
            if let Some(status) = *cached {
                return Ok(status);
            }
            match pidfd_wait(self.io.get_ref(), true)? {
                Some(status) => {
                    *cached = Some(status);
                    return Ok(status);
                }
                None => guard.clear_ready(),
            }
        }
    }

    /// The status if the child was already reaped by [`wait`](Self::wait), else reaps it if it
    /// has ended; `Ok(None)` while it runs.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        let mut cached = self.status_lock();
        if cached.is_none() {
            *cached = pidfd_wait(self.io.get_ref(), true)?;
        }
        Ok(*cached)
    }

    fn status_lock(&self) -> std::sync::MutexGuard<'_, Option<ExitStatus>> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
