//! The fanotify event type: owned fd, resolved path, info records, permission answers.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use super::flags::{FanMask, PERMISSION_EVENTS};
use super::record::{self, InfoRecord};
use super::{Response, fanotify_respond};
use crate::error::{Error, Result};
use crate::fd::fd_path;

/// One fanotify event. Its fd (if any) is closed when the event is dropped.
pub struct FanotifyEvent {
    /// Event bits.
    pub mask: FanMask,
    /// Pid (or tid with `REPORT_TID`) of the process that caused the event.
    pub pid: i32,
    /// Path of the object: from the event fd, or from the FID / DFID_NAME records.
    pub path: Option<PathBuf>,
    /// Info records (FID modes, pidfd, errors).
    pub info: Vec<InfoRecord>,
    fd: Option<OwnedFd>,
    pub(super) group: Option<Arc<OwnedFd>>,
}

impl std::fmt::Debug for FanotifyEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanotifyEvent")
            .field("mask", &self.mask)
            .field("pid", &self.pid)
            .field("path", &self.path)
            .field("fd", &self.fd.as_ref().map(AsRawFd::as_raw_fd))
            .field("info", &self.info)
            .finish()
    }
}

impl FanotifyEvent {
    pub(super) fn from_parsed(parsed: record::ParsedEvent) -> Self {
        let path = parsed.fd.as_ref().and_then(|fd| fd_path(fd.as_raw_fd()));
        FanotifyEvent {
            mask: FanMask::from_bits_retain(parsed.mask),
            pid: parsed.pid,
            path,
            info: parsed.info,
            fd: parsed.fd,
            group: None,
        }
    }

    /// The event's open fd on the object (fd modes only).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd)
    }

    /// Takes the event fd out of the event, to keep it beyond the event. A permission event
    /// keeps its fd until answered.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        if self.is_permission() {
            return None;
        }
        self.fd.take()
    }

    /// Whether the event asks for a permission decision.
    pub fn is_permission(&self) -> bool {
        self.mask.intersects(PERMISSION_EVENTS)
    }

    /// Whether events were lost.
    pub fn is_overflow(&self) -> bool {
        self.mask.contains(FanMask::Q_OVERFLOW)
    }

    /// The entry name from a DFID_NAME record, if any.
    pub fn name(&self) -> Option<&OsString> {
        self.info.iter().find_map(|record| match record {
            InfoRecord::DirFidName(_, name) => Some(name),
            _ => None,
        })
    }

    /// Answers a permission event. Not a permission event (or read through
    /// [`fanotify_read`](super::fanotify_read)) → [`Error::InvalidArgument`].
    pub fn respond(mut self, response: Response) -> Result<()> {
        let (Some(group), Some(fd)) = (self.group.take(), self.fd.as_ref()) else {
            return Err(Error::invalid("fanotify_respond (not a permission event)"));
        };
        fanotify_respond(group.as_fd(), fd.as_raw_fd(), response)
    }

    /// Allows the access; see [`respond`](Self::respond).
    pub fn allow(self) -> Result<()> {
        self.respond(Response::Allow)
    }

    /// Denies the access (it fails with `EPERM`); see [`respond`](Self::respond).
    pub fn deny(self) -> Result<()> {
        self.respond(Response::Deny)
    }
}

impl Drop for FanotifyEvent {
    fn drop(&mut self) {
        if let (Some(group), Some(fd)) = (self.group.take(), self.fd.as_ref()) {
            // An unanswered permission event would block the accessing process until the
            // group closes; allow it now. Nothing useful can be done if the write fails.
            let _ = fanotify_respond(group.as_fd(), fd.as_raw_fd(), Response::Allow);
        }
    }
}
