//! inotify masks, events and the parser of the kernel's event records.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

bitflags::bitflags! {
    /// What a watch reports (`IN_*` event bits) and how it is added (option bits).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct WatchMask: u32 {
        /// File was read.
        const ACCESS = libc::IN_ACCESS;
        /// File was written.
        const MODIFY = libc::IN_MODIFY;
        /// Metadata changed (permissions, timestamps, owner, links...).
        const ATTRIB = libc::IN_ATTRIB;
        /// File opened for writing was closed.
        const CLOSE_WRITE = libc::IN_CLOSE_WRITE;
        /// File not opened for writing was closed.
        const CLOSE_NOWRITE = libc::IN_CLOSE_NOWRITE;
        /// File or directory was opened.
        const OPEN = libc::IN_OPEN;
        /// An entry was renamed away from the watched directory.
        const MOVED_FROM = libc::IN_MOVED_FROM;
        /// An entry was renamed into the watched directory.
        const MOVED_TO = libc::IN_MOVED_TO;
        /// An entry was created in the watched directory.
        const CREATE = libc::IN_CREATE;
        /// An entry was deleted from the watched directory.
        const DELETE = libc::IN_DELETE;
        /// The watched file or directory itself was deleted.
        const DELETE_SELF = libc::IN_DELETE_SELF;
        /// The watched file or directory itself was moved.
        const MOVE_SELF = libc::IN_MOVE_SELF;
        /// `CLOSE_WRITE | CLOSE_NOWRITE`.
        const CLOSE = libc::IN_CLOSE;
        /// `MOVED_FROM | MOVED_TO`.
        const MOVE = libc::IN_MOVE;
        /// Every event bit above.
        const ALL_EVENTS = libc::IN_ALL_EVENTS;
        /// Option: fail with `ENOTDIR` unless the path is a directory.
        const ONLYDIR = libc::IN_ONLYDIR;
        /// Option: do not follow a symbolic link at the end of the path.
        const DONT_FOLLOW = libc::IN_DONT_FOLLOW;
        /// Option: stop reporting children once they are unlinked.
        const EXCL_UNLINK = libc::IN_EXCL_UNLINK;
        /// Option: add to the mask of an existing watch instead of replacing it.
        const MASK_ADD = libc::IN_MASK_ADD;
        /// Option: remove the watch after its first event.
        const ONESHOT = libc::IN_ONESHOT;
        /// Option: fail with `EEXIST` if the inode is already watched.
        const MASK_CREATE = 0x1000_0000;
    }

    /// The bits of a delivered event: one event bit plus flags.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct EventMask: u32 {
        /// See [`WatchMask::ACCESS`].
        const ACCESS = libc::IN_ACCESS;
        /// See [`WatchMask::MODIFY`].
        const MODIFY = libc::IN_MODIFY;
        /// See [`WatchMask::ATTRIB`].
        const ATTRIB = libc::IN_ATTRIB;
        /// See [`WatchMask::CLOSE_WRITE`].
        const CLOSE_WRITE = libc::IN_CLOSE_WRITE;
        /// See [`WatchMask::CLOSE_NOWRITE`].
        const CLOSE_NOWRITE = libc::IN_CLOSE_NOWRITE;
        /// See [`WatchMask::OPEN`].
        const OPEN = libc::IN_OPEN;
        /// See [`WatchMask::MOVED_FROM`].
        const MOVED_FROM = libc::IN_MOVED_FROM;
        /// See [`WatchMask::MOVED_TO`].
        const MOVED_TO = libc::IN_MOVED_TO;
        /// See [`WatchMask::CREATE`].
        const CREATE = libc::IN_CREATE;
        /// See [`WatchMask::DELETE`].
        const DELETE = libc::IN_DELETE;
        /// See [`WatchMask::DELETE_SELF`].
        const DELETE_SELF = libc::IN_DELETE_SELF;
        /// See [`WatchMask::MOVE_SELF`].
        const MOVE_SELF = libc::IN_MOVE_SELF;
        /// The filesystem holding the watched object was unmounted.
        const UNMOUNT = libc::IN_UNMOUNT;
        /// The kernel queue overflowed: events were lost, rescan.
        const Q_OVERFLOW = libc::IN_Q_OVERFLOW;
        /// The watch was removed (explicitly, or because its object is gone).
        const IGNORED = libc::IN_IGNORED;
        /// The subject of the event is a directory.
        const ISDIR = libc::IN_ISDIR;
    }
}

/// A watch descriptor, unique among the live watches of one inotify instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchDescriptor(pub(crate) i32);

impl WatchDescriptor {
    /// The kernel's number for this watch.
    pub fn as_raw(self) -> i32 {
        self.0
    }

    /// A descriptor from a raw number, e.g. one returned by [`inotify_add_watch`] elsewhere.
    ///
    /// [`inotify_add_watch`]: super::inotify_add_watch
    pub fn from_raw(wd: i32) -> Self {
        WatchDescriptor(wd)
    }
}

/// The kind of an event, from its mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `IN_ACCESS`.
    Access,
    /// `IN_MODIFY`.
    Modify,
    /// `IN_ATTRIB`.
    Attrib,
    /// `IN_CLOSE_WRITE`.
    CloseWrite,
    /// `IN_CLOSE_NOWRITE`.
    CloseNoWrite,
    /// `IN_OPEN`.
    Open,
    /// `IN_MOVED_FROM`.
    MovedFrom,
    /// `IN_MOVED_TO`.
    MovedTo,
    /// `IN_CREATE`.
    Create,
    /// `IN_DELETE`.
    Delete,
    /// `IN_DELETE_SELF`.
    DeleteSelf,
    /// `IN_MOVE_SELF`.
    MoveSelf,
    /// `IN_UNMOUNT`.
    Unmount,
    /// `IN_IGNORED`: the watch is gone.
    Ignored,
    /// `IN_Q_OVERFLOW`: events were lost; the consumer must rescan.
    Overflow,
}

/// One raw record as the kernel wrote it (`struct inotify_event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawInotifyEvent {
    /// Watch descriptor (-1 for a queue overflow).
    pub wd: i32,
    /// Event bits.
    pub mask: EventMask,
    /// Cookie tying a `MOVED_FROM` to its `MOVED_TO`; 0 otherwise.
    pub cookie: u32,
    /// Entry name inside a watched directory, without the kernel's NUL padding.
    pub name: Option<OsString>,
}

const HEADER_LEN: usize = std::mem::size_of::<libc::inotify_event>();

/// Parses a buffer returned by `read(2)` on an inotify fd. Truncated trailing bytes (which
/// the kernel never produces) are ignored.
pub fn parse_events(buf: &[u8]) -> Vec<RawInotifyEvent> {
    let mut events = Vec::new();
    let mut offset = 0;
    while offset + HEADER_LEN <= buf.len() {
        let field = |at: usize| {
            let start = offset + at;
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(&buf[start..start + 4]);
            bytes
        };
        let wd = i32::from_ne_bytes(field(0));
        let mask = u32::from_ne_bytes(field(4));
        let cookie = u32::from_ne_bytes(field(8));
        let len = u32::from_ne_bytes(field(12)) as usize;
        let name_start = offset + HEADER_LEN;
        let Some(name_bytes) = buf.get(name_start..name_start + len) else {
            break;
        };
        let trimmed: Vec<u8> = name_bytes.iter().copied().take_while(|b| *b != 0).collect();
        let name = (!trimmed.is_empty()).then(|| OsString::from_vec(trimmed));
        events.push(RawInotifyEvent {
            wd,
            mask: EventMask::from_bits_retain(mask),
            cookie,
            name,
        });
        offset = name_start + len;
    }
    events
}

/// An inotify event with the bookkeeping of [`Inotify`](super::Inotify): the watched path, the
/// rename pairing, and overflow made explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InotifyEvent {
    /// The watch that produced the event; `None` for a queue overflow.
    pub wd: Option<WatchDescriptor>,
    /// Event bits as delivered.
    pub mask: EventMask,
    /// Rename cookie (`MOVED_FROM`/`MOVED_TO`), 0 otherwise.
    pub cookie: u32,
    /// Entry name inside the watched directory, if the event is about an entry.
    pub name: Option<OsString>,
    /// The path given when the watch was added (kept up to date across directory renames by
    /// the recursive watcher); `None` for an overflow or an unknown watch.
    pub watch_path: Option<PathBuf>,
    /// On a `MOVED_TO` whose `MOVED_FROM` was seen (same cookie, possibly in an earlier read):
    /// the old full path. `None` means the entry came from outside the watched directories.
    pub moved_from: Option<PathBuf>,
    /// Made up by the recursive watcher for an entry found when it scanned a new directory
    /// (the entry was created before the watch existed).
    pub synthetic: bool,
}

impl InotifyEvent {
    /// The kind of event.
    pub fn kind(&self) -> EventKind {
        const KINDS: [(EventMask, EventKind); 15] = [
            (EventMask::Q_OVERFLOW, EventKind::Overflow),
            (EventMask::IGNORED, EventKind::Ignored),
            (EventMask::UNMOUNT, EventKind::Unmount),
            (EventMask::CREATE, EventKind::Create),
            (EventMask::DELETE, EventKind::Delete),
            (EventMask::MOVED_FROM, EventKind::MovedFrom),
            (EventMask::MOVED_TO, EventKind::MovedTo),
            (EventMask::MODIFY, EventKind::Modify),
            (EventMask::CLOSE_WRITE, EventKind::CloseWrite),
            (EventMask::CLOSE_NOWRITE, EventKind::CloseNoWrite),
            (EventMask::OPEN, EventKind::Open),
            (EventMask::ACCESS, EventKind::Access),
            (EventMask::ATTRIB, EventKind::Attrib),
            (EventMask::DELETE_SELF, EventKind::DeleteSelf),
            (EventMask::MOVE_SELF, EventKind::MoveSelf),
        ];
        KINDS
            .iter()
            .find(|(bit, _)| self.mask.contains(*bit))
            .map_or(EventKind::Ignored, |(_, kind)| *kind)
    }

    /// Whether the subject is a directory (`IN_ISDIR`).
    pub fn is_dir(&self) -> bool {
        self.mask.contains(EventMask::ISDIR)
    }

    /// Whether events were lost and the consumer must rescan what it watches.
    pub fn needs_rescan(&self) -> bool {
        self.mask.contains(EventMask::Q_OVERFLOW)
    }

    /// Full path of the subject: the watched path joined with the entry name, or the watched
    /// path alone for events about the watched object itself.
    pub fn path(&self) -> Option<PathBuf> {
        let base = self.watch_path.as_ref()?;
        Some(match &self.name {
            Some(name) => base.join(name),
            None => base.clone(),
        })
    }

    /// For a paired rename: `(old path, new path)`.
    pub fn rename(&self) -> Option<(PathBuf, PathBuf)> {
        Some((self.moved_from.clone()?, self.path()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(wd: i32, mask: u32, cookie: u32, name: &[u8], padded: usize) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&wd.to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&cookie.to_ne_bytes());
        out.extend_from_slice(&(padded as u32).to_ne_bytes());
        let mut name_field = name.to_vec();
        name_field.resize(padded, 0);
        out.extend_from_slice(&name_field);
        out
    }

    #[test]
    fn parses_records_with_padding_and_without_names() {
        let mut buf = record(1, libc::IN_CREATE | libc::IN_ISDIR, 0, b"sub", 16);
        buf.extend(record(2, libc::IN_DELETE_SELF, 0, b"", 0));
        buf.extend(record(-1, libc::IN_Q_OVERFLOW, 0, b"", 0));
        let events = parse_events(&buf);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].wd, 1);
        assert_eq!(events[0].name, Some(OsString::from("sub")));
        assert!(events[0].mask.contains(EventMask::ISDIR));
        assert_eq!(events[1].name, None);
        assert_eq!(events[2].wd, -1);
        assert!(events[2].mask.contains(EventMask::Q_OVERFLOW));
    }

    #[test]
    fn truncated_record_is_dropped() {
        let buf = record(1, libc::IN_CREATE, 0, b"abc", 16);
        assert!(parse_events(&buf[..buf.len() - 1]).is_empty());
        assert!(parse_events(&buf[..4]).is_empty());
    }

    #[test]
    fn kind_path_and_rename_helpers() {
        let event = InotifyEvent {
            wd: Some(WatchDescriptor(1)),
            mask: EventMask::MOVED_TO | EventMask::ISDIR,
            cookie: 7,
            name: Some("new".into()),
            watch_path: Some(PathBuf::from("/w")),
            moved_from: Some(PathBuf::from("/w/old")),
            synthetic: false,
        };
        assert_eq!(event.kind(), EventKind::MovedTo);
        assert!(event.is_dir());
        assert!(!event.needs_rescan());
        assert_eq!(event.path(), Some(PathBuf::from("/w/new")));
        assert_eq!(
            event.rename(),
            Some((PathBuf::from("/w/old"), PathBuf::from("/w/new")))
        );
    }
}
