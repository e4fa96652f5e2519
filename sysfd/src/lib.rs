//! Linux fd-based event sources and system calls for Furrow agents, usable by any Rust
//! program: the features of the Python library butter 0.10, with its known bugs fixed, and an
//! async layer for tokio and actix.
//!
//! # Tour
//!
//! Every module offers the 1:1 system calls, a typed event object and an async form:
//!
//! | module | concept | 1:1 calls | event object | async |
//! |---|---|---|---|---|
//! | [`inotify`](mod@inotify) | file changes | [`inotify_init`], [`inotify_add_watch`], [`inotify_rm_watch`], [`inotify_read`] | [`Inotify`], [`RecursiveWatcher`] | [`AsyncInotify`], [`AsyncRecursiveWatcher`] |
//! | [`fanotify`](mod@fanotify) | filesystem-wide access, permission decisions | [`fanotify_init`], [`fanotify_mark`], [`fanotify_read`], [`fanotify_respond`] | [`Fanotify`] | [`AsyncFanotify`] |
//! | [`eventfd`](mod@eventfd) | counters, wake-ups | [`eventfd()`], [`eventfd_read`], [`eventfd_write`] | [`EventFd`] | [`AsyncEventFd`] |
//! | [`timerfd`](mod@timerfd) | timers | [`timerfd_create`], [`timerfd_settime`], [`timerfd_gettime`], [`timerfd_read`] | [`TimerFd`] | [`AsyncTimerFd`] |
//! | [`signalfd`](mod@signalfd) | signals | [`pthread_sigmask`], [`signalfd_create`], [`signalfd_read`] | [`SignalFd`] | [`AsyncSignalFd`] |
//! | [`pidfd`](mod@pidfd) | processes | [`pidfd_open`], [`pidfd_send_signal`], [`pidfd_wait`] | [`PidFd`] | [`AsyncPidFd`] |
//! | [`splice`](mod@splice) | zero-copy pipes | [`splice()`], [`tee`], [`vmsplice`] | [`copy`] (splice with read/write fallback) | |
//! | [`mount`](mod@mount), [`system`] | containers | [`mount()`], [`umount`], [`pivot_root`], [`unshare`], [`sethostname`], [`gethostname`], [`getpid`], [`getppid`] | [`private_mount_namespace`] | |
//! | [`seccomp`](mod@seccomp) | syscall filters | [`seccomp_set_mode_filter`], [`seccomp_set_mode_strict`] | [`SeccompFilter`] | |
//!
//! Event objects implement [`EventSource`]: a read fetches a batch from the kernel, caches it
//! and hands events out one at a time ([`EventSource::read_event`]) or all at once
//! ([`EventSource::read_events`]). Their fds are non-blocking and close-on-exec; closing is
//! explicit state, so fd 0 is an ordinary fd. [`AsyncSource`] wraps any event object in a
//! tokio `AsyncFd`: it is a `futures::Stream` (`Unpin`, `'static`) that an actix actor can
//! consume with `ctx.add_stream(..)`, and an async queue where each event goes to exactly
//! one waiter.
//!
//! Every failure is an [`Error`], chosen from the errno by a fixed table (see the [`error`]
//! module and `README.md`). The modules below hold each concept's documentation; their items
//! are also re-exported at the crate root.
//!
//! # For an agent
//!
//! ```no_run
//! use std::time::Duration;
//! use furrow_sysfd::{AsyncPidFd, AsyncSignalFd, AsyncTimerFd, SHUTDOWN_SIGNALS, Signal, block_signals};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     block_signals(&SHUTDOWN_SIGNALS)?; // first, before any thread starts
//!     let rt = tokio::runtime::Runtime::new()?;
//!     rt.block_on(async {
//!         let signals = AsyncSignalFd::for_signals(&SHUTDOWN_SIGNALS)?;
//!         let child = std::process::Command::new("sleep").arg("1").spawn()?;
//!         let task = AsyncPidFd::from_child(&child)?;
//!         let limit = AsyncTimerFd::one_shot(Duration::from_secs(3600))?;
//!         tokio::select! {
//!             status = task.wait() => println!("task ended: {:?}", status?),
//!             _ = limit.expired() => task.send_signal(Signal::SIGKILL)?,
//!             info = signals.read_event() => println!("stopping on signal {}", info?.signo),
//!         }
//!         Ok::<(), Box<dyn std::error::Error>>(())
//!     })
//! }
//! ```

#![warn(missing_docs)]

pub mod error;
pub mod eventfd;
pub mod fanotify;
mod fd;
pub mod inotify;
pub mod mount;
pub mod pidfd;
pub mod seccomp;
pub mod signalfd;
mod source;
pub mod splice;
pub mod system;
pub mod timerfd;

pub use error::{Error, Result};
pub use eventfd::*;
pub use fanotify::*;
pub use inotify::*;
pub use mount::*;
pub use pidfd::*;
pub use seccomp::*;
pub use signalfd::*;
pub use source::{AsyncSource, EventSource};
pub use splice::*;
pub use system::*;
pub use timerfd::*;
