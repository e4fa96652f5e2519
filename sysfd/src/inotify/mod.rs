//! inotify: file and directory change events, with the bookkeeping the raw API leaves out.
//!
//! Low level: [`inotify_init`], [`inotify_add_watch`], [`inotify_rm_watch`],
//! [`inotify_read`] and the pure parser [`parse_events`]. High level: [`Inotify`], whose events
//! carry the watched path (wd → path map), pair `MOVED_FROM`/`MOVED_TO` by cookie (also across
//! reads) and turn a queue overflow into an explicit [`EventKind::Overflow`] event telling the
//! consumer to rescan. [`RecursiveWatcher`] watches a whole tree and follows new directories.
//! Async: [`AsyncInotify`], [`AsyncRecursiveWatcher`].
//!
//! ```
//! use furrow_sysfd::{EventKind, EventSource, Inotify, WatchMask};
//! let dir = tempfile::tempdir().map_err(|_| furrow_sysfd::Error::invalid("tempdir"))?;
//! let mut inotify = Inotify::new()?;
//! inotify.watch(dir.path(), WatchMask::CREATE)?;
//! std::fs::File::create(dir.path().join("a")).map_err(|_| furrow_sysfd::Error::invalid("create"))?;
//! let event = inotify.read_event()?;
//! assert_eq!(event.kind(), EventKind::Create);
//! assert_eq!(event.path(), Some(dir.path().join("a")));
//! # Ok::<(), furrow_sysfd::Error>(())
//! ```

mod event;
mod recursive;

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

pub use event::{
    EventKind, EventMask, InotifyEvent, RawInotifyEvent, WatchDescriptor, WatchMask, parse_events,
};
pub use recursive::{AsyncRecursiveWatcher, RecursiveWatcher};

use crate::error::{Error, Result, cvt};
use crate::fd::{live_fd, owned_fd, path_cstring, read_retry};
use crate::source::{AsyncSource, EventSource};

bitflags::bitflags! {
    /// Flags of [`inotify_init`] (`IN_CLOEXEC`, `IN_NONBLOCK`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct InotifyFlags: i32 {
        /// `IN_CLOEXEC`.
        const CLOEXEC = libc::IN_CLOEXEC;
        /// `IN_NONBLOCK`.
        const NONBLOCK = libc::IN_NONBLOCK;
    }
}

/// Size of the read buffer: many events per read, and always more than one record with the
/// longest name (`sizeof(struct inotify_event) + NAME_MAX + 1`).
pub const READ_BUFFER_SIZE: usize = 64 * 1024;

/// `inotify_init1(2)`. Unknown flags → [`Error::InvalidArgument`]; the per-user instance
/// limit or fd limits → [`Error::ResourceLimit`].
pub fn inotify_init(flags: InotifyFlags) -> Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    owned_fd("inotify_init1", unsafe {
        libc::inotify_init1(flags.bits())
    })
}

/// `inotify_add_watch(2)`. A mask without event bits, or an fd that is not an inotify fd →
/// [`Error::InvalidArgument`]; a missing path → [`Error::NotFound`]; no search/read
/// permission → [`Error::PermissionDenied`]; the watch limit → [`Error::ResourceLimit`].
pub fn inotify_add_watch(
    fd: impl AsFd,
    path: impl AsRef<Path>,
    mask: WatchMask,
) -> Result<WatchDescriptor> {
    const OP: &str = "inotify_add_watch";
    let cpath = path_cstring(OP, path.as_ref())?;
    // SAFETY: valid fd and NUL-terminated path.
    let wd = cvt(OP, unsafe {
        libc::inotify_add_watch(fd.as_fd().as_raw_fd(), cpath.as_ptr(), mask.bits())
    })?;
    Ok(WatchDescriptor(wd))
}

/// `inotify_rm_watch(2)`. An unknown watch or a non-inotify fd → [`Error::InvalidArgument`].
pub fn inotify_rm_watch(fd: impl AsFd, wd: WatchDescriptor) -> Result<()> {
    // SAFETY: plain syscall with integer arguments.
    cvt("inotify_rm_watch", unsafe {
        libc::inotify_rm_watch(fd.as_fd().as_raw_fd(), wd.0)
    })?;
    Ok(())
}

/// Reads one batch of records into `buf` and parses it. `buf` must hold at least one record
/// with the longest name, else [`Error::InvalidArgument`]; nothing pending on a non-blocking
/// fd → [`Error::WouldBlock`].
pub fn inotify_read(fd: impl AsFd, buf: &mut [u8]) -> Result<Vec<RawInotifyEvent>> {
    let n = read_retry("inotify_read", fd.as_fd(), buf)?;
    Ok(parse_events(&buf[..n]))
}

/// How many `MOVED_FROM` events wait for their `MOVED_TO` at most; older ones are dropped
/// (their entry left the watched directories).
const PENDING_MOVES: usize = 1024;

/// An inotify instance as an event object. Events carry the watched path; a `MOVED_TO` carries
/// the path of its `MOVED_FROM` when both were seen; an overflow is an explicit event.
#[derive(Debug)]
pub struct Inotify {
    fd: Option<OwnedFd>,
    watches: HashMap<WatchDescriptor, PathBuf>,
    pending_moves: VecDeque<(u32, PathBuf)>,
    buf: Vec<u8>,
    cache: VecDeque<InotifyEvent>,
}

impl Inotify {
    /// A new instance (non-blocking, close-on-exec) with no watches.
    pub fn new() -> Result<Self> {
        let fd = inotify_init(InotifyFlags::CLOEXEC | InotifyFlags::NONBLOCK)?;
        Ok(Inotify {
            fd: Some(fd),
            watches: HashMap::new(),
            pending_moves: VecDeque::new(),
            buf: vec![0; READ_BUFFER_SIZE],
            cache: VecDeque::new(),
        })
    }

    /// Adds (or, for an already watched inode, replaces) a watch. A mask without any event
    /// bit (only options) → [`Error::InvalidArgument`]; other errors as
    /// [`inotify_add_watch`]; [`Error::Closed`] after close.
    pub fn watch(&mut self, path: impl AsRef<Path>, mask: WatchMask) -> Result<WatchDescriptor> {
        let path = path.as_ref();
        if !mask.intersects(WatchMask::ALL_EVENTS) {
            return Err(Error::invalid("inotify_add_watch (no event in mask)"));
        }
        let wd = inotify_add_watch(live_fd(&self.fd, "inotify_add_watch")?, path, mask)?;
        // The kernel may hand out the number of a watch whose removal we have not read yet;
        // the new watch wins.
        self.watches.insert(wd, path.to_path_buf());
        Ok(wd)
    }

    /// Removes a watch. Its path stays known until the kernel's `IGNORED` event for it has
    /// been read, so events still queued for it keep their path. Unknown watch →
    /// [`Error::InvalidArgument`].
    pub fn unwatch(&mut self, wd: WatchDescriptor) -> Result<()> {
        inotify_rm_watch(live_fd(&self.fd, "inotify_rm_watch")?, wd)
    }

    /// The path a watch was added for.
    pub fn watch_path(&self, wd: WatchDescriptor) -> Option<&Path> {
        self.watches.get(&wd).map(PathBuf::as_path)
    }

    /// All live watches and their paths.
    pub fn watches(&self) -> impl Iterator<Item = (WatchDescriptor, &Path)> {
        self.watches.iter().map(|(wd, path)| (*wd, path.as_path()))
    }

    /// Rewrites the paths of `from` and everything below it to live under `to` (a watched
    /// directory was renamed: its watch descriptors stay, its paths change).
    pub(crate) fn rename_watched(&mut self, from: &Path, to: &Path) {
        for path in self.watches.values_mut() {
            if let Ok(rest) = path.strip_prefix(from) {
                *path = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
            }
        }
    }

    fn complete(&mut self, raw: RawInotifyEvent) -> InotifyEvent {
        if raw.mask.contains(EventMask::Q_OVERFLOW) {
            // Lost events may include the other halves of pending renames.
            self.pending_moves.clear();
            return InotifyEvent {
                wd: None,
                mask: raw.mask,
                cookie: 0,
                name: None,
                watch_path: None,
                moved_from: None,
                synthetic: false,
            };
        }
        let wd = WatchDescriptor(raw.wd);
        let watch_path = self.watches.get(&wd).cloned();
        let full_path = match (&watch_path, &raw.name) {
            (Some(base), Some(name)) => Some(base.join(name)),
            (Some(base), None) => Some(base.clone()),
            _ => None,
        };
        let mut moved_from = None;
        if raw.mask.contains(EventMask::MOVED_FROM) {
            if let Some(path) = full_path {
                if self.pending_moves.len() == PENDING_MOVES {
                    self.pending_moves.pop_front();
                }
                self.pending_moves.push_back((raw.cookie, path));
            }
        } else if raw.mask.contains(EventMask::MOVED_TO)
            && let Some(at) = self
                .pending_moves
                .iter()
                .position(|(cookie, _)| *cookie == raw.cookie)
        {
            moved_from = self.pending_moves.remove(at).map(|(_, path)| path);
        }
        if raw.mask.contains(EventMask::IGNORED) {
            self.watches.remove(&wd);
        }
        InotifyEvent {
            wd: Some(wd),
            mask: raw.mask,
            cookie: raw.cookie,
            name: raw.name,
            watch_path,
            moved_from,
            synthetic: false,
        }
    }
}

impl EventSource for Inotify {
    type Event = InotifyEvent;

    fn fd(&self) -> Result<BorrowedFd<'_>> {
        live_fd(&self.fd, "inotify")
    }

    fn fill(&mut self) -> Result<usize> {
        let fd = live_fd(&self.fd, "inotify_read")?;
        let raw = inotify_read(fd, &mut self.buf)?;
        let count = raw.len();
        for event in raw {
            let completed = self.complete(event);
            self.cache.push_back(completed);
        }
        Ok(count)
    }

    fn cache(&mut self) -> &mut VecDeque<InotifyEvent> {
        &mut self.cache
    }

    fn close(&mut self) {
        self.cache.clear();
        self.watches.clear();
        self.pending_moves.clear();
        self.fd = None;
    }
}

/// An [`Inotify`] as an async queue / `Stream` of [`InotifyEvent`]s.
pub type AsyncInotify = AsyncSource<Inotify>;

impl AsyncSource<Inotify> {
    /// A new async instance with no watches.
    pub fn open() -> Result<Self> {
        AsyncSource::new(Inotify::new()?)
    }

    /// Adds a watch; see [`Inotify::watch`].
    pub fn watch(&self, path: impl AsRef<Path>, mask: WatchMask) -> Result<WatchDescriptor> {
        self.with(|inotify| inotify.watch(path, mask))
    }

    /// Removes a watch; see [`Inotify::unwatch`].
    pub fn unwatch(&self, wd: WatchDescriptor) -> Result<()> {
        self.with(|inotify| inotify.unwatch(wd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(wd: i32, mask: EventMask, cookie: u32, name: &str) -> RawInotifyEvent {
        RawInotifyEvent {
            wd,
            mask,
            cookie,
            name: Some(name.into()),
        }
    }

    #[test]
    fn rename_halves_pair_across_separate_reads() -> Result<()> {
        let mut inotify = Inotify::new()?;
        inotify
            .watches
            .insert(WatchDescriptor(1), PathBuf::from("/src"));
        inotify
            .watches
            .insert(WatchDescriptor(2), PathBuf::from("/dst"));
        // First read ends with the MOVED_FROM; an unrelated event comes first in the next.
        let from = inotify.complete(raw(1, EventMask::MOVED_FROM, 77, "a"));
        assert_eq!(from.moved_from, None);
        let other = inotify.complete(raw(2, EventMask::CREATE, 0, "z"));
        assert_eq!(other.moved_from, None);
        let to = inotify.complete(raw(2, EventMask::MOVED_TO, 77, "b"));
        assert_eq!(
            to.rename(),
            Some((PathBuf::from("/src/a"), PathBuf::from("/dst/b")))
        );
        // The pair is used up.
        let again = inotify.complete(raw(2, EventMask::MOVED_TO, 77, "c"));
        assert_eq!(again.moved_from, None);
        Ok(())
    }

    #[test]
    fn overflow_forgets_pending_renames() -> Result<()> {
        let mut inotify = Inotify::new()?;
        inotify
            .watches
            .insert(WatchDescriptor(1), PathBuf::from("/w"));
        inotify.complete(raw(1, EventMask::MOVED_FROM, 5, "a"));
        let overflow = inotify.complete(RawInotifyEvent {
            wd: -1,
            mask: EventMask::Q_OVERFLOW,
            cookie: 0,
            name: None,
        });
        assert!(overflow.needs_rescan());
        assert_eq!(overflow.wd, None);
        let to = inotify.complete(raw(1, EventMask::MOVED_TO, 5, "b"));
        assert_eq!(to.moved_from, None);
        Ok(())
    }

    #[test]
    fn pending_renames_are_bounded() -> Result<()> {
        let mut inotify = Inotify::new()?;
        inotify
            .watches
            .insert(WatchDescriptor(1), PathBuf::from("/w"));
        for cookie in 0..(PENDING_MOVES as u32 + 10) {
            inotify.complete(raw(1, EventMask::MOVED_FROM, cookie, "x"));
        }
        assert_eq!(inotify.pending_moves.len(), PENDING_MOVES);
        let oldest = inotify.complete(raw(1, EventMask::MOVED_TO, 0, "y"));
        assert_eq!(oldest.moved_from, None);
        let newest = inotify.complete(raw(1, EventMask::MOVED_TO, PENDING_MOVES as u32 + 9, "y"));
        assert_eq!(newest.moved_from, Some(PathBuf::from("/w/x")));
        Ok(())
    }

    #[test]
    fn renamed_directories_keep_their_watches_with_new_paths() -> Result<()> {
        let mut inotify = Inotify::new()?;
        inotify
            .watches
            .insert(WatchDescriptor(1), PathBuf::from("/r/a"));
        inotify
            .watches
            .insert(WatchDescriptor(2), PathBuf::from("/r/a/b"));
        inotify
            .watches
            .insert(WatchDescriptor(3), PathBuf::from("/r/ab"));
        inotify.rename_watched(Path::new("/r/a"), Path::new("/r/z"));
        assert_eq!(
            inotify.watch_path(WatchDescriptor(1)),
            Some(Path::new("/r/z"))
        );
        assert_eq!(
            inotify.watch_path(WatchDescriptor(2)),
            Some(Path::new("/r/z/b"))
        );
        assert_eq!(
            inotify.watch_path(WatchDescriptor(3)),
            Some(Path::new("/r/ab"))
        );
        Ok(())
    }
}
