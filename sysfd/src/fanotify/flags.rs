//! Flag and mask types of the fanotify calls.

bitflags::bitflags! {
    /// Flags of [`fanotify_init`] (`FAN_*` init flags).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct FanInitFlags: u32 {
        /// `FAN_CLOEXEC`.
        const CLOEXEC = libc::FAN_CLOEXEC;
        /// `FAN_NONBLOCK`.
        const NONBLOCK = libc::FAN_NONBLOCK;
        /// `FAN_CLASS_CONTENT`: may receive permission events, after the file content is final.
        const CLASS_CONTENT = libc::FAN_CLASS_CONTENT;
        /// `FAN_CLASS_PRE_CONTENT`: may receive permission events, before the content is final.
        const CLASS_PRE_CONTENT = libc::FAN_CLASS_PRE_CONTENT;
        /// `FAN_UNLIMITED_QUEUE`.
        const UNLIMITED_QUEUE = libc::FAN_UNLIMITED_QUEUE;
        /// `FAN_UNLIMITED_MARKS`.
        const UNLIMITED_MARKS = libc::FAN_UNLIMITED_MARKS;
        /// `FAN_ENABLE_AUDIT`.
        const ENABLE_AUDIT = libc::FAN_ENABLE_AUDIT;
        /// `FAN_REPORT_PIDFD`: a pidfd info record with each event.
        const REPORT_PIDFD = libc::FAN_REPORT_PIDFD;
        /// `FAN_REPORT_TID`: report the thread id instead of the process id.
        const REPORT_TID = libc::FAN_REPORT_TID;
        /// `FAN_REPORT_FID`: identify objects by file handle instead of an open fd.
        const REPORT_FID = libc::FAN_REPORT_FID;
        /// `FAN_REPORT_DIR_FID`: report the directory's file handle.
        const REPORT_DIR_FID = libc::FAN_REPORT_DIR_FID;
        /// `FAN_REPORT_NAME`: report the entry name (with `REPORT_DIR_FID`).
        const REPORT_NAME = libc::FAN_REPORT_NAME;
        /// `FAN_REPORT_DFID_NAME` = `REPORT_DIR_FID | REPORT_NAME`.
        const REPORT_DFID_NAME = libc::FAN_REPORT_DFID_NAME;
        /// `FAN_REPORT_TARGET_FID`.
        const REPORT_TARGET_FID = libc::FAN_REPORT_TARGET_FID;
    }

    /// Flags of [`fanotify_mark`] (`FAN_MARK_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct FanMarkFlags: u32 {
        /// `FAN_MARK_ADD`.
        const ADD = libc::FAN_MARK_ADD;
        /// `FAN_MARK_REMOVE`.
        const REMOVE = libc::FAN_MARK_REMOVE;
        /// `FAN_MARK_FLUSH`: remove all marks of the given kind.
        const FLUSH = libc::FAN_MARK_FLUSH;
        /// `FAN_MARK_DONT_FOLLOW`.
        const DONT_FOLLOW = libc::FAN_MARK_DONT_FOLLOW;
        /// `FAN_MARK_ONLYDIR`.
        const ONLYDIR = libc::FAN_MARK_ONLYDIR;
        /// `FAN_MARK_MOUNT`: mark the mount containing the path.
        const MOUNT = libc::FAN_MARK_MOUNT;
        /// `FAN_MARK_FILESYSTEM`: mark the filesystem containing the path.
        const FILESYSTEM = libc::FAN_MARK_FILESYSTEM;
        /// `FAN_MARK_IGNORED_MASK`.
        const IGNORED_MASK = libc::FAN_MARK_IGNORED_MASK;
        /// `FAN_MARK_IGNORED_SURV_MODIFY`.
        const IGNORED_SURV_MODIFY = libc::FAN_MARK_IGNORED_SURV_MODIFY;
        /// `FAN_MARK_EVICTABLE`.
        const EVICTABLE = libc::FAN_MARK_EVICTABLE;
        /// `FAN_MARK_IGNORE`.
        const IGNORE = libc::FAN_MARK_IGNORE;
    }

    /// Event bits of marks and events (`FAN_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct FanMask: u64 {
        /// File was read.
        const ACCESS = libc::FAN_ACCESS;
        /// File was written.
        const MODIFY = libc::FAN_MODIFY;
        /// Metadata changed (FID modes only).
        const ATTRIB = libc::FAN_ATTRIB;
        /// Writable file closed.
        const CLOSE_WRITE = libc::FAN_CLOSE_WRITE;
        /// Read-only file closed.
        const CLOSE_NOWRITE = libc::FAN_CLOSE_NOWRITE;
        /// File opened.
        const OPEN = libc::FAN_OPEN;
        /// Entry moved away (FID modes only).
        const MOVED_FROM = libc::FAN_MOVED_FROM;
        /// Entry moved in (FID modes only).
        const MOVED_TO = libc::FAN_MOVED_TO;
        /// Entry created (FID modes only).
        const CREATE = libc::FAN_CREATE;
        /// Entry deleted (FID modes only).
        const DELETE = libc::FAN_DELETE;
        /// Marked object deleted (FID modes only).
        const DELETE_SELF = libc::FAN_DELETE_SELF;
        /// Marked object moved (FID modes only).
        const MOVE_SELF = libc::FAN_MOVE_SELF;
        /// File opened for execution.
        const OPEN_EXEC = libc::FAN_OPEN_EXEC;
        /// The event queue overflowed: events were lost.
        const Q_OVERFLOW = libc::FAN_Q_OVERFLOW;
        /// A filesystem error was reported.
        const FS_ERROR = libc::FAN_FS_ERROR;
        /// Permission to open is asked.
        const OPEN_PERM = libc::FAN_OPEN_PERM;
        /// Permission to read is asked.
        const ACCESS_PERM = libc::FAN_ACCESS_PERM;
        /// Permission to open for execution is asked.
        const OPEN_EXEC_PERM = libc::FAN_OPEN_EXEC_PERM;
        /// Report events on the children of a marked directory.
        const EVENT_ON_CHILD = libc::FAN_EVENT_ON_CHILD;
        /// Entry renamed (with old and new names).
        const RENAME = libc::FAN_RENAME;
        /// The event is about a directory.
        const ONDIR = libc::FAN_ONDIR;
        /// `CLOSE_WRITE | CLOSE_NOWRITE`.
        const CLOSE = libc::FAN_CLOSE;
        /// `MOVED_FROM | MOVED_TO`.
        const MOVE = libc::FAN_MOVE;
    }
}

/// The permission-request bits.
pub(crate) const PERMISSION_EVENTS: FanMask = FanMask::OPEN_PERM
    .union(FanMask::ACCESS_PERM)
    .union(FanMask::OPEN_EXEC_PERM);
