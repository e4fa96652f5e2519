//! Mount table calls: `mount`, `umount2`, `pivot_root`, and a private mount namespace helper.

use std::path::Path;

use crate::error::{Error, Result, cvt, cvt_long};
use crate::fd::{path_cstring, str_cstring};
use crate::system::{Namespaces, unshare};

bitflags::bitflags! {
    /// Flags of [`mount`] (`MS_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct MountFlags: u64 {
        /// `MS_RDONLY`.
        const RDONLY = libc::MS_RDONLY;
        /// `MS_NOSUID`.
        const NOSUID = libc::MS_NOSUID;
        /// `MS_NODEV`.
        const NODEV = libc::MS_NODEV;
        /// `MS_NOEXEC`.
        const NOEXEC = libc::MS_NOEXEC;
        /// `MS_SYNCHRONOUS`.
        const SYNCHRONOUS = libc::MS_SYNCHRONOUS;
        /// `MS_REMOUNT`.
        const REMOUNT = libc::MS_REMOUNT;
        /// `MS_MANDLOCK`.
        const MANDLOCK = libc::MS_MANDLOCK;
        /// `MS_DIRSYNC`.
        const DIRSYNC = libc::MS_DIRSYNC;
        /// `MS_NOATIME`.
        const NOATIME = libc::MS_NOATIME;
        /// `MS_NODIRATIME`.
        const NODIRATIME = libc::MS_NODIRATIME;
        /// `MS_BIND`.
        const BIND = libc::MS_BIND;
        /// `MS_MOVE`.
        const MOVE = libc::MS_MOVE;
        /// `MS_REC`.
        const REC = libc::MS_REC;
        /// `MS_SILENT`.
        const SILENT = libc::MS_SILENT;
        /// `MS_UNBINDABLE`.
        const UNBINDABLE = libc::MS_UNBINDABLE;
        /// `MS_PRIVATE`.
        const PRIVATE = libc::MS_PRIVATE;
        /// `MS_SLAVE`.
        const SLAVE = libc::MS_SLAVE;
        /// `MS_SHARED`.
        const SHARED = libc::MS_SHARED;
        /// `MS_RELATIME`.
        const RELATIME = libc::MS_RELATIME;
        /// `MS_STRICTATIME`.
        const STRICTATIME = libc::MS_STRICTATIME;
        /// `MS_LAZYTIME`.
        const LAZYTIME = libc::MS_LAZYTIME;
    }

    /// Flags of [`umount`] (`MNT_*`, `UMOUNT_NOFOLLOW`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct UmountFlags: i32 {
        /// `MNT_FORCE`.
        const FORCE = libc::MNT_FORCE;
        /// `MNT_DETACH`: lazy unmount, done once the mount is no longer busy.
        const DETACH = libc::MNT_DETACH;
        /// `MNT_EXPIRE`.
        const EXPIRE = libc::MNT_EXPIRE;
        /// `UMOUNT_NOFOLLOW`: do not follow a symbolic link at the target.
        const NOFOLLOW = libc::UMOUNT_NOFOLLOW;
    }
}

/// `mount(2)`. A missing target or source → [`Error::NotFound`]; an unknown filesystem type →
/// [`Error::NotFound`] (`ENODEV`); bad flags or data → [`Error::InvalidArgument`]; without
/// `CAP_SYS_ADMIN` → [`Error::PermissionDenied`]; `EBUSY` → [`Error::Unknown`].
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MountFlags,
    data: Option<&str>,
) -> Result<()> {
    const OP: &str = "mount";
    let source = source.map(|s| path_cstring(OP, s)).transpose()?;
    let target = path_cstring(OP, target)?;
    let fstype = fstype.map(|t| str_cstring(OP, t)).transpose()?;
    let data = data.map(|d| str_cstring(OP, d)).transpose()?;
    // SAFETY: every pointer is null or a NUL-terminated string living across the call.
    cvt(OP, unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            flags.bits() as libc::c_ulong,
            data.as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>()),
        )
    })?;
    Ok(())
}

/// `umount2(2)`. Not a mount point or bad flags → [`Error::InvalidArgument`]; missing path →
/// [`Error::NotFound`]; busy → [`Error::Unknown`] (`EBUSY`, retry with
/// [`UmountFlags::DETACH`]); without privilege → [`Error::PermissionDenied`].
pub fn umount(target: &Path, flags: UmountFlags) -> Result<()> {
    let target = path_cstring("umount2", target)?;
    // SAFETY: NUL-terminated path and integer flags.
    cvt("umount2", unsafe {
        libc::umount2(target.as_ptr(), flags.bits())
    })?;
    Ok(())
}

/// `pivot_root(2)`: makes `new_root` the root of the mount namespace and moves the old root to
/// `put_old` (which must be under `new_root`). `new_root` not a mount point, `put_old` not
/// under it, or a shared mount → [`Error::InvalidArgument`] (this call reports `EBUSY` there
/// too, with the errno kept, as it only means misplaced paths); a missing path →
/// [`Error::NotFound`]; without privilege → [`Error::PermissionDenied`].
pub fn pivot_root(new_root: &Path, put_old: &Path) -> Result<()> {
    const OP: &str = "pivot_root";
    let new_root = path_cstring(OP, new_root)?;
    let put_old = path_cstring(OP, put_old)?;
    // SAFETY: two NUL-terminated paths.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    match cvt_long(OP, ret) {
        // For pivot_root, EBUSY always means the paths are wrong (on the current root mount,
        // or the same mount), never a transient state: report it as a bad argument.
        Err(Error::Unknown { errno, .. }) if errno == libc::EBUSY => {
            Err(Error::InvalidArgument { op: OP, errno })
        }
        other => other.map(|_| ()),
    }
}

/// Moves the calling process into a new mount namespace whose mounts do not propagate back
/// to the parent's (`unshare(CLONE_NEWNS)` then `/` made recursively private). Mounts made
/// afterwards are invisible to the host.
pub fn private_mount_namespace() -> Result<()> {
    unshare(Namespaces::MOUNT)?;
    mount(
        None,
        Path::new("/"),
        None,
        MountFlags::REC | MountFlags::PRIVATE,
        None,
    )
}
