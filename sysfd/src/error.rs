//! The crate's one error type and its fixed errno mapping.
//!
//! Every call in this crate reports failures as an [`Error`]. The variant is chosen from the
//! kernel's `errno` by a fixed table, part of the API and covered by tests:
//!
//! | variant | errno values |
//! |---|---|
//! | [`Error::InvalidArgument`] | `EINVAL`, `EBADF`, `EFAULT`, `ENAMETOOLONG`, `ENOTDIR`, `ELOOP`, `E2BIG`, `ERANGE`, `EOVERFLOW`, `ESPIPE`, `ENOTBLK` |
//! | [`Error::NotFound`] | `ENOENT`, `ESRCH`, `ECHILD`, `ENODEV`, `ENXIO` |
//! | [`Error::PermissionDenied`] | `EPERM`, `EACCES`, `EROFS` |
//! | [`Error::ResourceLimit`] | `EMFILE`, `ENFILE`, `ENOSPC`, `EUSERS`, `EDQUOT`, `EMLINK` |
//! | [`Error::OutOfMemory`] | `ENOMEM`, `ENOBUFS` |
//! | [`Error::WouldBlock`] | `EAGAIN` (= `EWOULDBLOCK`), `EINTR` |
//! | [`Error::Unknown`] | any other errno, e.g. `EBUSY`, `EEXIST`, `EXDEV`, `EIO`, `ENOSYS` |
//! | [`Error::Closed`] | no errno: the object was closed by [`close`](crate::EventSource::close) |
//!
//! Arguments this crate validates itself (an over-long host name, an unknown mask bit, a
//! signal that cannot be caught) are reported as [`Error::InvalidArgument`] with `EINVAL`,
//! exactly as if the kernel had refused them.

use std::io;

/// Result type of every call in this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A failed call. See the [module documentation](self) for the errno mapping.
///
/// Each variant names the operation that failed (`op`, e.g. `"inotify_add_watch"`) and,
/// except for [`Error::Closed`], the raw errno that caused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An argument was refused: bad fd, bad flag or mask, bad path, value out of range.
    #[error("{op}: invalid argument ({})", describe(*errno))]
    InvalidArgument {
        /// The operation that failed.
        op: &'static str,
        /// The errno reported (or `EINVAL` for arguments refused by this crate).
        errno: i32,
    },
    /// The path, process or child does not exist.
    #[error("{op}: not found ({})", describe(*errno))]
    NotFound {
        /// The operation that failed.
        op: &'static str,
        /// The errno reported.
        errno: i32,
    },
    /// The caller lacks the privilege or the file permission for the call.
    #[error("{op}: permission denied ({})", describe(*errno))]
    PermissionDenied {
        /// The operation that failed.
        op: &'static str,
        /// The errno reported.
        errno: i32,
    },
    /// A per-process, per-user or system limit is reached (open files, watches, space).
    #[error("{op}: resource limit reached ({})", describe(*errno))]
    ResourceLimit {
        /// The operation that failed.
        op: &'static str,
        /// The errno reported.
        errno: i32,
    },
    /// The kernel could not allocate memory for the call.
    #[error("{op}: out of memory ({})", describe(*errno))]
    OutOfMemory {
        /// The operation that failed.
        op: &'static str,
        /// The errno reported.
        errno: i32,
    },
    /// Nothing to read or write right now (non-blocking fd) or the call was interrupted:
    /// try again later.
    #[error("{op}: would block, retry later ({})", describe(*errno))]
    WouldBlock {
        /// The operation that failed.
        op: &'static str,
        /// The errno reported.
        errno: i32,
    },
    /// The object was closed; its fd is gone.
    #[error("{op}: the object is closed")]
    Closed {
        /// The operation that was attempted on the closed object.
        op: &'static str,
    },
    /// An errno outside the fixed table; see `errno` for the exact cause.
    #[error("{op}: {}", describe(*errno))]
    Unknown {
        /// The operation that failed.
        op: &'static str,
        /// The errno reported.
        errno: i32,
    },
}

fn describe(errno: i32) -> String {
    io::Error::from_raw_os_error(errno).to_string()
}

impl Error {
    /// Maps `errno` to its variant by the fixed table in the [module documentation](self).
    pub fn from_errno(op: &'static str, errno: i32) -> Self {
        match errno {
            libc::EINVAL
            | libc::EBADF
            | libc::EFAULT
            | libc::ENAMETOOLONG
            | libc::ENOTDIR
            | libc::ELOOP
            | libc::E2BIG
            | libc::ERANGE
            | libc::EOVERFLOW
            | libc::ESPIPE
            | libc::ENOTBLK => Error::InvalidArgument { op, errno },
            libc::ENOENT | libc::ESRCH | libc::ECHILD | libc::ENODEV | libc::ENXIO => {
                Error::NotFound { op, errno }
            }
            libc::EPERM | libc::EACCES | libc::EROFS => Error::PermissionDenied { op, errno },
            libc::EMFILE
            | libc::ENFILE
            | libc::ENOSPC
            | libc::EUSERS
            | libc::EDQUOT
            | libc::EMLINK => Error::ResourceLimit { op, errno },
            libc::ENOMEM | libc::ENOBUFS => Error::OutOfMemory { op, errno },
            libc::EAGAIN | libc::EINTR => Error::WouldBlock { op, errno },
            _ => Error::Unknown { op, errno },
        }
    }

    /// The error of the current thread's `errno`, as left by a failed libc call.
    pub fn last(op: &'static str) -> Self {
        Self::from_errno(op, io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    /// An argument refused by this crate's own validation (reported with `EINVAL`).
    pub fn invalid(op: &'static str) -> Self {
        Error::InvalidArgument {
            op,
            errno: libc::EINVAL,
        }
    }

    /// The error for a call on a closed object.
    pub fn closed(op: &'static str) -> Self {
        Error::Closed { op }
    }

    /// Converts a `std::io::Error` (for instance from tokio) by its raw errno. An I/O error
    /// without an errno becomes [`Error::Unknown`] with errno 0.
    pub fn from_io(op: &'static str, err: &io::Error) -> Self {
        match err.raw_os_error() {
            Some(errno) => Self::from_errno(op, errno),
            None if err.kind() == io::ErrorKind::WouldBlock => Error::WouldBlock {
                op,
                errno: libc::EAGAIN,
            },
            None => Error::Unknown { op, errno: 0 },
        }
    }

    /// The raw errno behind this error; `None` for [`Error::Closed`].
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::InvalidArgument { errno, .. }
            | Error::NotFound { errno, .. }
            | Error::PermissionDenied { errno, .. }
            | Error::ResourceLimit { errno, .. }
            | Error::OutOfMemory { errno, .. }
            | Error::WouldBlock { errno, .. }
            | Error::Unknown { errno, .. } => Some(*errno),
            Error::Closed { .. } => None,
        }
    }

    /// The operation that failed.
    pub fn op(&self) -> &'static str {
        match self {
            Error::InvalidArgument { op, .. }
            | Error::NotFound { op, .. }
            | Error::PermissionDenied { op, .. }
            | Error::ResourceLimit { op, .. }
            | Error::OutOfMemory { op, .. }
            | Error::WouldBlock { op, .. }
            | Error::Closed { op }
            | Error::Unknown { op, .. } => op,
        }
    }

    /// True for [`Error::WouldBlock`]: nothing is ready, try again later.
    pub fn is_would_block(&self) -> bool {
        matches!(self, Error::WouldBlock { .. })
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Closed { .. } => io::Error::new(io::ErrorKind::NotConnected, err),
            other => match other.errno() {
                Some(errno) if errno != 0 => io::Error::from_raw_os_error(errno),
                _ => io::Error::other(other),
            },
        }
    }
}

/// Converts a libc return value: `-1` becomes the mapped error of `errno`.
pub(crate) fn cvt(op: &'static str, ret: libc::c_int) -> Result<libc::c_int> {
    if ret == -1 {
        Err(Error::last(op))
    } else {
        Ok(ret)
    }
}

/// Like [`cvt`] for calls returning `ssize_t` / `long`.
pub(crate) fn cvt_long(op: &'static str, ret: libc::c_long) -> Result<libc::c_long> {
    if ret == -1 {
        Err(Error::last(op))
    } else {
        Ok(ret)
    }
}

/// Converts a `nix` result by its errno.
pub(crate) fn from_nix<T>(op: &'static str, res: nix::Result<T>) -> Result<T> {
    res.map_err(|errno| Error::from_errno(op, errno as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Check = fn(&Error) -> bool;

    #[test]
    fn mapping_table_is_fixed() {
        let table: &[(i32, Check)] = &[
            (libc::EINVAL, |e| matches!(e, Error::InvalidArgument { .. })),
            (libc::EBADF, |e| matches!(e, Error::InvalidArgument { .. })),
            (libc::EFAULT, |e| matches!(e, Error::InvalidArgument { .. })),
            (libc::ENAMETOOLONG, |e| {
                matches!(e, Error::InvalidArgument { .. })
            }),
            (libc::ENOTDIR, |e| {
                matches!(e, Error::InvalidArgument { .. })
            }),
            (libc::ELOOP, |e| matches!(e, Error::InvalidArgument { .. })),
            (libc::E2BIG, |e| matches!(e, Error::InvalidArgument { .. })),
            (libc::ERANGE, |e| matches!(e, Error::InvalidArgument { .. })),
            (libc::EOVERFLOW, |e| {
                matches!(e, Error::InvalidArgument { .. })
            }),
            (libc::ESPIPE, |e| matches!(e, Error::InvalidArgument { .. })),
            (libc::ENOTBLK, |e| {
                matches!(e, Error::InvalidArgument { .. })
            }),
            (libc::ENOENT, |e| matches!(e, Error::NotFound { .. })),
            (libc::ESRCH, |e| matches!(e, Error::NotFound { .. })),
            (libc::ECHILD, |e| matches!(e, Error::NotFound { .. })),
            (libc::ENODEV, |e| matches!(e, Error::NotFound { .. })),
            (libc::ENXIO, |e| matches!(e, Error::NotFound { .. })),
            (libc::EPERM, |e| matches!(e, Error::PermissionDenied { .. })),
            (libc::EACCES, |e| {
                matches!(e, Error::PermissionDenied { .. })
            }),
            (libc::EROFS, |e| matches!(e, Error::PermissionDenied { .. })),
            (libc::EMFILE, |e| matches!(e, Error::ResourceLimit { .. })),
            (libc::ENFILE, |e| matches!(e, Error::ResourceLimit { .. })),
            (libc::ENOSPC, |e| matches!(e, Error::ResourceLimit { .. })),
            (libc::EUSERS, |e| matches!(e, Error::ResourceLimit { .. })),
            (libc::EDQUOT, |e| matches!(e, Error::ResourceLimit { .. })),
            (libc::EMLINK, |e| matches!(e, Error::ResourceLimit { .. })),
            (libc::ENOMEM, |e| matches!(e, Error::OutOfMemory { .. })),
            (libc::ENOBUFS, |e| matches!(e, Error::OutOfMemory { .. })),
            (libc::EAGAIN, |e| matches!(e, Error::WouldBlock { .. })),
            (libc::EWOULDBLOCK, |e| matches!(e, Error::WouldBlock { .. })),
            (libc::EINTR, |e| matches!(e, Error::WouldBlock { .. })),
            (libc::EBUSY, |e| matches!(e, Error::Unknown { .. })),
            (libc::EEXIST, |e| matches!(e, Error::Unknown { .. })),
            (libc::EXDEV, |e| matches!(e, Error::Unknown { .. })),
            (libc::EIO, |e| matches!(e, Error::Unknown { .. })),
            (libc::ENOSYS, |e| matches!(e, Error::Unknown { .. })),
        ];
        for (errno, check) in table {
            let err = Error::from_errno("test", *errno);
            assert!(check(&err), "errno {errno} mapped to {err:?}");
            assert_eq!(err.errno(), Some(*errno));
            assert_eq!(err.op(), "test");
        }
    }

    #[test]
    fn closed_has_no_errno_and_a_message() {
        let err = Error::closed("read");
        assert_eq!(err.errno(), None);
        assert_eq!(err.to_string(), "read: the object is closed");
        let io_err: io::Error = err.into();
        assert_eq!(io_err.kind(), io::ErrorKind::NotConnected);
    }

    #[test]
    fn messages_name_the_operation_and_errno() {
        let err = Error::from_errno("inotify_add_watch", libc::ENOENT);
        let text = err.to_string();
        assert!(text.starts_with("inotify_add_watch: not found ("), "{text}");
        assert!(text.contains("No such file"), "{text}");
        let io_err: io::Error = err.into();
        assert_eq!(io_err.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn io_errors_convert_by_errno() {
        let err = Error::from_io("x", &io::Error::from_raw_os_error(libc::EMFILE));
        assert!(matches!(err, Error::ResourceLimit { .. }));
        let err = Error::from_io("x", &io::Error::from(io::ErrorKind::WouldBlock));
        assert!(err.is_would_block());
        let err = Error::from_io("x", &io::Error::other("boom"));
        assert_eq!(err, Error::Unknown { op: "x", errno: 0 });
    }
}
