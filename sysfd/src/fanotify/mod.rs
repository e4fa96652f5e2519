//! fanotify: filesystem-wide access notification and permission decisions.
//!
//! Low level: [`fanotify_init`], [`fanotify_mark`], [`fanotify_read`], [`fanotify_respond`].
//! High level: [`Fanotify`], whose events carry the pid, the event fd (always closed: when
//! the event is dropped, also unread in the cache, and on every error path) and the resolved
//! path, from the fd or from the FID / DFID_NAME info records, which are parsed here.
//! Permission events are answered with [`FanotifyEvent::allow`] / [`FanotifyEvent::deny`]; one
//! dropped unanswered is allowed, as the kernel does when a group closes. Async:
//! [`AsyncFanotify`]. Needs `CAP_SYS_ADMIN`.

mod event;
mod flags;
mod record;

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use event::FanotifyEvent;
pub use flags::{FanInitFlags, FanMarkFlags, FanMask};
pub use record::{FileHandle, InfoRecord};

use crate::error::{Error, Result, cvt};
use crate::fd::{fd_path, owned_fd, path_cstring, read_retry, write_retry};
use crate::source::{AsyncSource, EventSource};

/// Flags for the fds opened for events: read-only, large files, close-on-exec.
const EVENT_FD_FLAGS: i32 = libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC;

/// `fanotify_init(2)`. Unknown or conflicting flags → [`Error::InvalidArgument`]; without
/// `CAP_SYS_ADMIN` → [`Error::PermissionDenied`]; group or fd limits →
/// [`Error::ResourceLimit`].
pub fn fanotify_init(flags: FanInitFlags, event_f_flags: i32) -> Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; the flags fit in c_uint.
    owned_fd("fanotify_init", unsafe {
        libc::fanotify_init(flags.bits(), event_f_flags as libc::c_uint)
    })
}

/// `fanotify_mark(2)` on `path` (relative to `dirfd`, or to the working directory). A bad mask
/// or flags, or an fd that is no fanotify group → [`Error::InvalidArgument`]; a missing path →
/// [`Error::NotFound`]; the mark limit → [`Error::ResourceLimit`].
pub fn fanotify_mark(
    fd: impl AsFd,
    flags: FanMarkFlags,
    mask: FanMask,
    dirfd: Option<BorrowedFd<'_>>,
    path: Option<&Path>,
) -> Result<()> {
    const OP: &str = "fanotify_mark";
    let cpath = path.map(|p| path_cstring(OP, p)).transpose()?;
    let path_ptr = cpath.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    let dirfd = dirfd.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: valid fds, and a null or NUL-terminated path.
    cvt(OP, unsafe {
        libc::fanotify_mark(
            fd.as_fd().as_raw_fd(),
            flags.bits(),
            mask.bits(),
            dirfd,
            path_ptr,
        )
    })?;
    Ok(())
}

/// The answer to a permission event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// `FAN_ALLOW`.
    Allow,
    /// `FAN_DENY`: the access fails with `EPERM`.
    Deny,
}

/// Writes a `struct fanotify_response` for the event whose fd is `event_fd`. An fd that no
/// pending permission event has → [`Error::NotFound`] (`ENOENT`).
pub fn fanotify_respond(fd: impl AsFd, event_fd: RawFd, response: Response) -> Result<()> {
    let answer = match response {
        Response::Allow => libc::FAN_ALLOW,
        Response::Deny => libc::FAN_DENY,
    };
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&event_fd.to_ne_bytes());
    buf[4..].copy_from_slice(&answer.to_ne_bytes());
    write_retry("fanotify_respond", fd.as_fd(), &buf)?;
    Ok(())
}

/// Reads and parses one batch of events into `buf` (at least one event's size, else
/// [`Error::InvalidArgument`]). Every fd in the batch is owned by the returned events.
/// Nothing pending on a non-blocking fd → [`Error::WouldBlock`].
pub fn fanotify_read(fd: impl AsFd, buf: &mut [u8]) -> Result<Vec<FanotifyEvent>> {
    let n = read_retry("fanotify_read", fd.as_fd(), buf)?;
    // SAFETY: the kernel just installed every fd in this buffer for us.
    let parsed = unsafe { record::parse_buffer(&buf[..n])? };
    Ok(parsed.into_iter().map(FanotifyEvent::from_parsed).collect())
}

/// How a [`Fanotify`] group reports objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Report {
    /// An open fd per event (the classic mode; needed for permission events).
    #[default]
    Fd,
    /// A file handle of the object (`FAN_REPORT_FID`).
    Fid,
    /// The directory's file handle and the entry name (`FAN_REPORT_DFID_NAME`).
    DirFidName,
    /// Both (`FAN_REPORT_FID | FAN_REPORT_DFID_NAME`).
    FidAndDirFidName,
}

/// The class of a [`Fanotify`] group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Class {
    /// Notification only.
    #[default]
    Notify,
    /// May receive permission events (after content is final).
    Content,
    /// May receive permission events (before content is final).
    PreContent,
}

/// Options of [`Fanotify::with_config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FanotifyConfig {
    /// Group class.
    pub class: Class,
    /// Object reporting mode.
    pub report: Report,
    /// Add a pidfd info record to each event (`FAN_REPORT_PIDFD`, fd mode only).
    pub report_pidfd: bool,
    /// No limit on the queue (`FAN_UNLIMITED_QUEUE`).
    pub unlimited_queue: bool,
}

/// What a mark is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkTarget {
    /// The inode at the path (and, with `EVENT_ON_CHILD`, its children).
    Inode,
    /// The whole mount containing the path.
    Mount,
    /// The whole filesystem containing the path.
    Filesystem,
}

impl MarkTarget {
    fn flags(self) -> FanMarkFlags {
        match self {
            MarkTarget::Inode => FanMarkFlags::empty(),
            MarkTarget::Mount => FanMarkFlags::MOUNT,
            MarkTarget::Filesystem => FanMarkFlags::FILESYSTEM,
        }
    }
}

/// Read buffer size: many events per read.
const READ_BUFFER_SIZE: usize = 64 * 1024;

/// A fanotify group as an event object.
#[derive(Debug)]
pub struct Fanotify {
    group: Option<Arc<OwnedFd>>,
    config: FanotifyConfig,
    /// Directories on each marked filesystem, to open file handles from FID records.
    mount_fds: HashMap<[i32; 2], OwnedFd>,
    buf: Vec<u8>,
    cache: VecDeque<FanotifyEvent>,
}

impl Fanotify {
    /// A notification group reporting open fds (non-blocking, close-on-exec).
    pub fn new() -> Result<Self> {
        Self::with_config(FanotifyConfig::default())
    }

    /// A group with the given class and reporting mode. A mode the kernel does not support
    /// → [`Error::InvalidArgument`].
    pub fn with_config(config: FanotifyConfig) -> Result<Self> {
        let mut flags = FanInitFlags::CLOEXEC | FanInitFlags::NONBLOCK;
        flags |= match config.class {
            Class::Notify => FanInitFlags::empty(),
            Class::Content => FanInitFlags::CLASS_CONTENT,
            Class::PreContent => FanInitFlags::CLASS_PRE_CONTENT,
        };
        flags |= match config.report {
            Report::Fd => FanInitFlags::empty(),
            Report::Fid => FanInitFlags::REPORT_FID,
            Report::DirFidName => FanInitFlags::REPORT_DFID_NAME,
            Report::FidAndDirFidName => FanInitFlags::REPORT_FID | FanInitFlags::REPORT_DFID_NAME,
        };
        if config.report_pidfd {
            flags |= FanInitFlags::REPORT_PIDFD;
        }
        if config.unlimited_queue {
            flags |= FanInitFlags::UNLIMITED_QUEUE;
        }
        let fd = fanotify_init(flags, EVENT_FD_FLAGS)?;
        Ok(Fanotify {
            group: Some(Arc::new(fd)),
            config,
            mount_fds: HashMap::new(),
            buf: vec![0; READ_BUFFER_SIZE],
            cache: VecDeque::new(),
        })
    }

    fn live(&self, op: &'static str) -> Result<BorrowedFd<'_>> {
        self.group
            .as_ref()
            .map(|fd| fd.as_fd())
            .ok_or(Error::closed(op))
    }

    /// The configuration the group was made with.
    pub fn config(&self) -> FanotifyConfig {
        self.config
    }

    /// Adds `mask` to the mark of `target` at `path`. Errors as [`fanotify_mark`].
    pub fn mark(
        &mut self,
        target: MarkTarget,
        path: impl AsRef<Path>,
        mask: FanMask,
    ) -> Result<()> {
        let path = path.as_ref();
        fanotify_mark(
            self.live("fanotify_mark")?,
            FanMarkFlags::ADD | target.flags(),
            mask,
            None,
            Some(path),
        )?;
        if self.config.report != Report::Fd {
            self.remember_filesystem(path);
        }
        Ok(())
    }

    /// Removes `mask` from the mark of `target` at `path`. No such mark →
    /// [`Error::NotFound`].
    pub fn unmark(
        &mut self,
        target: MarkTarget,
        path: impl AsRef<Path>,
        mask: FanMask,
    ) -> Result<()> {
        fanotify_mark(
            self.live("fanotify_mark")?,
            FanMarkFlags::REMOVE | target.flags(),
            mask,
            None,
            Some(path.as_ref()),
        )
    }

    /// Removes every mark of the kind `target`.
    pub fn flush(&mut self, target: MarkTarget) -> Result<()> {
        fanotify_mark(
            self.live("fanotify_mark")?,
            FanMarkFlags::FLUSH | target.flags(),
            FanMask::empty(),
            None,
            Some(Path::new("/")),
        )
    }

    /// Keeps a directory fd of the filesystem holding `path`, keyed by its fsid, so that file
    /// handles of that filesystem can be opened to resolve paths. Best effort: the path itself
    /// if it is a directory, else its parent when that is on the same filesystem.
    /// (`open_by_handle_at` refuses `O_PATH` fds, and opening a non-directory could block or
    /// have side effects, so only directories are opened.)
    fn remember_filesystem(&mut self, path: &Path) {
        let Some(fsid) = open_path(path).ok().and_then(|fd| fsid_of(fd.as_fd())) else {
            return;
        };
        if self.mount_fds.contains_key(&fsid) {
            return;
        }
        let candidates = [Some(path), path.parent()];
        for dir in candidates.into_iter().flatten() {
            let Ok(fd) = open_directory(dir) else {
                continue;
            };
            if fsid_of(fd.as_fd()) == Some(fsid) {
                self.mount_fds.insert(fsid, fd);
                return;
            }
        }
    }

    fn resolve(&self, handle: &FileHandle) -> Option<PathBuf> {
        let mount_fd = self.mount_fds.get(&handle.fsid)?;
        let opened = open_by_handle(mount_fd.as_fd(), handle).ok()?;
        fd_path(opened.as_raw_fd())
    }

    fn resolve_path(&self, event: &FanotifyEvent) -> Option<PathBuf> {
        for record in &event.info {
            match record {
                InfoRecord::DirFidName(handle, name) | InfoRecord::NewDirFidName(handle, name) => {
                    let dir = self.resolve(handle)?;
                    return Some(if name == "." { dir } else { dir.join(name) });
                }
                InfoRecord::Fid(handle) | InfoRecord::DirFid(handle) => {
                    if let Some(path) = self.resolve(handle) {
                        return Some(path);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

fn open_path(path: &Path) -> Result<OwnedFd> {
    let cpath = path_cstring("open", path)?;
    // SAFETY: NUL-terminated path, integer flags.
    owned_fd("open", unsafe {
        libc::open(cpath.as_ptr(), libc::O_PATH | libc::O_CLOEXEC)
    })
}

fn open_directory(path: &Path) -> Result<OwnedFd> {
    let cpath = path_cstring("open", path)?;
    // SAFETY: NUL-terminated path, integer flags.
    owned_fd("open", unsafe {
        libc::open(
            cpath.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
}

fn fsid_of(fd: BorrowedFd<'_>) -> Option<[i32; 2]> {
    // SAFETY: statfs is plain data; zeroed is a valid out-parameter.
    let mut st = unsafe { std::mem::zeroed::<libc::statfs>() };
    // SAFETY: valid fd and out-parameter.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    // SAFETY: `fsid_t` is two C ints; its fields are private in libc, so read them raw.
    Some(unsafe { std::ptr::read_unaligned((&raw const st.f_fsid).cast::<[i32; 2]>()) })
}

/// `open_by_handle_at(2)` with `O_PATH`: opens the object behind a reported file handle.
/// Needs `CAP_DAC_READ_SEARCH`; a deleted object → [`Error::Unknown`] (`ESTALE`).
pub fn open_by_handle(mount_fd: BorrowedFd<'_>, handle: &FileHandle) -> Result<OwnedFd> {
    const OP: &str = "open_by_handle_at";
    let handle_bytes = u32::try_from(handle.bytes.len()).map_err(|_| Error::invalid(OP))?;
    // `struct file_handle` is two 4-byte fields and the opaque bytes; build it in u32 words
    // so it is suitably aligned.
    let words = 2 + handle.bytes.len().div_ceil(4);
    let mut storage = vec![0u32; words];
    storage[0] = handle_bytes;
    storage[1] = handle.handle_type as u32;
    // SAFETY: `storage` has room for the header and the handle bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            handle.bytes.as_ptr(),
            storage.as_mut_ptr().add(2).cast::<u8>(),
            handle.bytes.len(),
        );
    }
    // SAFETY: `storage` holds a well-formed file_handle.
    owned_fd(OP, unsafe {
        libc::open_by_handle_at(
            mount_fd.as_raw_fd(),
            storage.as_mut_ptr().cast::<libc::file_handle>(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    })
}

impl EventSource for Fanotify {
    type Event = FanotifyEvent;

    fn fd(&self) -> Result<BorrowedFd<'_>> {
        self.live("fanotify")
    }

    fn fill(&mut self) -> Result<usize> {
        let group = self.group.clone().ok_or(Error::closed("fanotify_read"))?;
        let events = fanotify_read(group.as_fd(), &mut self.buf)?;
        let count = events.len();
        for mut event in events {
            if event.is_permission() {
                event.group = Some(Arc::clone(&group));
            }
            if event.path.is_none() && !event.info.is_empty() {
                event.path = self.resolve_path(&event);
            }
            self.cache.push_back(event);
        }
        Ok(count)
    }

    fn cache(&mut self) -> &mut VecDeque<FanotifyEvent> {
        &mut self.cache
    }

    fn close(&mut self) {
        // Dropping cached events closes their fds and allows pending permission requests.
        self.cache.clear();
        self.mount_fds.clear();
        self.group = None;
    }
}

/// A [`Fanotify`] group as an async queue / `Stream` of [`FanotifyEvent`]s.
pub type AsyncFanotify = AsyncSource<Fanotify>;

impl AsyncSource<Fanotify> {
    /// Adds a mark; see [`Fanotify::mark`].
    pub fn mark(&self, target: MarkTarget, path: impl AsRef<Path>, mask: FanMask) -> Result<()> {
        self.with(|group| group.mark(target, path, mask))
    }

    /// Removes a mark; see [`Fanotify::unmark`].
    pub fn unmark(&self, target: MarkTarget, path: impl AsRef<Path>, mask: FanMask) -> Result<()> {
        self.with(|group| group.unmark(target, path, mask))
    }
}
