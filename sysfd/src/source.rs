//! The event-object interface shared by every fd source, and its async form.
//!
//! An event object reads a batch of events from the kernel in one `read(2)`, caches it and hands
//! the events out one at a time ([`EventSource::read_event`]) or all at once
//! ([`EventSource::read_events`]). [`AsyncSource`] wraps any event object in a tokio
//! [`AsyncFd`] and behaves like a read-only queue: each event goes to exactly one reader,
//! whether read through the [`Stream`] or through [`AsyncSource::read_event`] from many tasks.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};
use crate::fd::{poll_fd, register, set_nonblocking};

/// A kernel event source read through an fd, with a cache of events already read.
///
/// Implementors provide the fd, one non-blocking batch read ([`fill`](Self::fill)) and the
/// cache; the reading methods are provided. Every implementor's fd is opened non-blocking and
/// close-on-exec, so [`read_event`](Self::read_event) returns [`Error::WouldBlock`] when
/// nothing is pending; use [`wait`](Self::wait) to block, or [`AsyncSource`] to await.
///
/// ```
/// use furrow_sysfd::{EventFd, EventSource};
/// let mut efd = EventFd::new(0)?;
/// efd.write(3)?;
/// assert_eq!(efd.read_event()?, 3);
/// assert!(efd.read_event().unwrap_err().is_would_block());
/// # Ok::<(), furrow_sysfd::Error>(())
/// ```
pub trait EventSource {
    /// One event as handed to the reader.
    type Event;

    /// The open fd, or [`Error::Closed`].
    fn fd(&self) -> Result<BorrowedFd<'_>>;

    /// Reads one batch from the kernel without blocking and appends it to the cache.
    /// Returns how many events were cached; [`Error::WouldBlock`] when the kernel had none.
    fn fill(&mut self) -> Result<usize>;

    /// The events read from the kernel and not yet handed out.
    fn cache(&mut self) -> &mut VecDeque<Self::Event>;

    /// Closes the fd and drops the cached events. Later calls return [`Error::Closed`].
    /// Closing twice is not an error.
    fn close(&mut self);

    /// Whether [`close`](Self::close) was called. An fd numbered 0 is open, not closed.
    fn is_closed(&self) -> bool {
        self.fd().is_err()
    }

    /// Returns one event: the oldest cached one, or the first of a new batch from the kernel.
    /// [`Error::WouldBlock`] when nothing is pending.
    fn read_event(&mut self) -> Result<Self::Event> {
        self.fd()?;
        if let Some(event) = self.cache().pop_front() {
            return Ok(event);
        }
        self.fill()?;
        self.cache().pop_front().ok_or(Error::WouldBlock {
            op: "read_event",
            errno: libc::EAGAIN,
        })
    }

    /// Returns all cached events or, if none are cached, one new batch from the kernel.
    /// [`Error::WouldBlock`] when nothing is pending.
    fn read_events(&mut self) -> Result<Vec<Self::Event>> {
        self.fd()?;
        if self.cache().is_empty() {
            self.fill()?;
        }
        Ok(self.cache().drain(..).collect())
    }

    /// Blocks until an event is cached or the fd is readable, or `timeout` passes (`None`:
    /// no limit). Returns whether an event can be read now.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let fd = self.fd()?.as_raw_fd();
        if !self.cache().is_empty() {
            return Ok(true);
        }
        // SAFETY: `fd` is the source's open fd, which lives for the whole call.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        poll_fd("poll", borrowed, libc::POLLIN, timeout)
    }
}

/// An [`EventSource`] driven by the tokio reactor: a `Stream` of events and an async queue.
///
/// It is `Unpin`, `Send`, `Sync` and `'static` (for `'static` sources), so an actix actor can
/// consume it with `ctx.add_stream(source)`, and several tasks can share it behind an `Arc`
/// and call [`read_event`](Self::read_event): every event is handed to exactly one of them.
///
/// Needs a tokio runtime with IO enabled (actix's runtime is one) when created.
///
/// The stream yields `Ok(event)` items; a read error other than "would block" is yielded once
/// as `Err` and then the stream ends. After [`close`](Self::close) the stream ends.
pub struct AsyncSource<S: EventSource> {
    // A duplicate of the source's fd is registered, so the registration stays valid even if
    // the source closes its own fd through `with`.
    io: Option<AsyncFd<OwnedFd>>,
    inner: Mutex<S>,
    finished: bool,
}

impl<S: EventSource> std::fmt::Debug for AsyncSource<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncSource")
            .field("fd", &self.io.as_ref().map(|io| io.get_ref().as_raw_fd()))
            .field("finished", &self.finished)
            .finish()
    }
}

impl<S: EventSource> AsyncSource<S> {
    /// Registers `source` with the current tokio runtime. The fd is switched to non-blocking.
    ///
    /// Returns [`Error::InvalidArgument`] outside a tokio runtime, [`Error::Closed`] for a
    /// closed source.
    ///
    /// # Panics
    ///
    /// Tokio panics if the current runtime was built without IO enabled.
    pub fn new(source: S) -> Result<Self> {
        let fd = source.fd()?;
        set_nonblocking("fcntl(O_NONBLOCK)", fd, true)?;
        let registered = fd
            .try_clone_to_owned()
            .map_err(|err| Error::from_io("fcntl(F_DUPFD_CLOEXEC)", &err))?;
        let io = register(registered)?;
        Ok(AsyncSource {
            io: Some(io),
            inner: Mutex::new(source),
            finished: false,
        })
    }

    fn lock(&self) -> MutexGuard<'_, S> {
        // A panic while holding the lock cannot leave the cache half-updated in a way that
        // matters (pushes and pops are atomic), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn io(&self, op: &'static str) -> Result<&AsyncFd<OwnedFd>> {
        self.io.as_ref().ok_or(Error::closed(op))
    }

    /// Runs `f` on the wrapped event object, e.g. to add a watch or arm a timer. If `f` closes
    /// the object, later reads return [`Error::Closed`].
    pub fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.lock())
    }

    /// Waits for one event. Each event goes to exactly one caller, even when many tasks wait
    /// on the same object at once. Cancel-safe: an event is taken only when the future
    /// completes, so dropping it (e.g. in a losing `select!` branch) loses nothing.
    pub async fn read_event(&self) -> Result<S::Event> {
        loop {
            {
                let mut inner = self.lock();
                if let Some(event) = inner.cache().pop_front() {
                    return Ok(event);
                }
                inner.fd()?;
            }
            let io = self.io("read_event")?;
            let mut guard = io
                .readable()
                .await
                .map_err(|err| Error::from_io("read_event", &err))?;
            let mut inner = self.lock();
            if let Some(event) = inner.cache().pop_front() {
                return Ok(event);
            }
            match inner.fill() {
                Ok(_) => {}
                Err(err) if err.is_would_block() => guard.clear_ready(),
                Err(err) => return Err(err),
            }
        }
    }

    /// Waits until events are available and returns all cached ones (at least one).
    pub async fn read_events(&self) -> Result<Vec<S::Event>> {
        let first = self.read_event().await?;
        let mut events = vec![first];
        events.extend(self.lock().cache().drain(..));
        Ok(events)
    }

    /// Closes the source: deregisters it from the reactor, closes the fd and drops cached
    /// events. Later reads return [`Error::Closed`] and the stream ends.
    pub fn close(&mut self) {
        self.io = None;
        self.lock().close();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.io.is_none()
    }

    /// Deregisters from the reactor and gives back the event object (fd still non-blocking).
    pub fn into_inner(self) -> S {
        let AsyncSource { io, inner, .. } = self;
        drop(io);
        inner.into_inner().unwrap_or_else(PoisonError::into_inner)
    }

    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<Option<Result<S::Event>>> {
        let Some(io) = self.io.as_ref() else {
            return Poll::Ready(None);
        };
        loop {
            {
                let mut inner = self.lock();
                if let Some(event) = inner.cache().pop_front() {
                    return Poll::Ready(Some(Ok(event)));
                }
                if inner.is_closed() {
                    return Poll::Ready(None);
                }
            }
            let mut guard = match io.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(err)) => {
                    return Poll::Ready(Some(Err(Error::from_io("poll_read_ready", &err))));
                }
                Poll::Ready(Ok(guard)) => guard,
            };
            let mut inner = self.lock();
            match inner.fill() {
                Ok(_) => {}
                Err(err) if err.is_would_block() => guard.clear_ready(),
                Err(err) => return Poll::Ready(Some(Err(err))),
            }
        }
    }
}

impl<S: EventSource + Unpin> Stream for AsyncSource<S> {
    type Item = Result<S::Event>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        let polled = this.poll_event(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            this.finished = true;
        }
        polled
    }
}
