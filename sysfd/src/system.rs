//! Process and namespace calls: host name, pids by raw syscall, `unshare`.

use crate::error::{Error, Result, cvt};
use crate::fd::str_cstring;

/// Longest host name the kernel accepts (`HOST_NAME_MAX`).
pub const HOST_NAME_MAX: usize = 64;

/// `gethostname(2)`: the host name of the calling process's UTS namespace. Bytes that are not
/// UTF-8 are replaced.
pub fn gethostname() -> Result<String> {
    let mut buf = [0u8; HOST_NAME_MAX + 1];
    // SAFETY: `buf` is writable for its whole length.
    cvt("gethostname", unsafe {
        libc::gethostname(buf.as_mut_ptr().cast(), buf.len())
    })?;
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// `sethostname(2)`: sets the host name of the calling process's UTS namespace (so call it
/// after `unshare(Namespaces::UTS)` unless the host's name should change).
///
/// Longer than [`HOST_NAME_MAX`] bytes, empty, or with a NUL byte →
/// [`Error::InvalidArgument`]; without `CAP_SYS_ADMIN` → [`Error::PermissionDenied`].
pub fn sethostname(name: &str) -> Result<()> {
    const OP: &str = "sethostname";
    if name.is_empty() || name.len() > HOST_NAME_MAX {
        return Err(Error::invalid(OP));
    }
    str_cstring(OP, name)?;
    // SAFETY: `name` is valid for `name.len()` bytes.
    cvt(OP, unsafe {
        libc::sethostname(name.as_ptr().cast(), name.len())
    })?;
    Ok(())
}

/// The process id, asked from the kernel every time (no libc cache).
pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::syscall(libc::SYS_getpid) };
    pid as i32
}

/// The parent's process id, asked from the kernel every time (no libc cache).
pub fn getppid() -> i32 {
    // SAFETY: getppid cannot fail.
    let pid = unsafe { libc::syscall(libc::SYS_getppid) };
    pid as i32
}

/// The calling thread's id, asked from the kernel.
pub fn gettid() -> i32 {
    // SAFETY: gettid cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    tid as i32
}

bitflags::bitflags! {
    /// What [`unshare`] makes private to the calling process (`CLONE_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Namespaces: i32 {
        /// `CLONE_NEWNS`: mount namespace.
        const MOUNT = libc::CLONE_NEWNS;
        /// `CLONE_NEWUTS`: host and domain name.
        const UTS = libc::CLONE_NEWUTS;
        /// `CLONE_NEWIPC`: System V IPC and POSIX message queues.
        const IPC = libc::CLONE_NEWIPC;
        /// `CLONE_NEWNET`: network stack.
        const NET = libc::CLONE_NEWNET;
        /// `CLONE_NEWPID`: pid namespace (for children created afterwards).
        const PID = libc::CLONE_NEWPID;
        /// `CLONE_NEWUSER`: user namespace (single-threaded callers only).
        const USER = libc::CLONE_NEWUSER;
        /// `CLONE_NEWCGROUP`: cgroup namespace.
        const CGROUP = libc::CLONE_NEWCGROUP;
        /// `CLONE_NEWTIME`: time namespace (for children created afterwards).
        const TIME = libc::CLONE_NEWTIME;
        /// `CLONE_FILES`: stop sharing the fd table.
        const FILES = libc::CLONE_FILES;
        /// `CLONE_FS`: stop sharing root, cwd and umask.
        const FS = libc::CLONE_FS;
        /// `CLONE_SYSVSEM`: stop sharing System V semaphore adjustments.
        const SYSVSEM = libc::CLONE_SYSVSEM;
    }
}

/// `unshare(2)`. Unknown flags, or `USER` in a multi-threaded process →
/// [`Error::InvalidArgument`]; without privilege → [`Error::PermissionDenied`]; namespace
/// count limits → [`Error::ResourceLimit`].
///
/// A mount namespace shares mount propagation with its parent until made private; see
/// [`private_mount_namespace`](crate::private_mount_namespace).
pub fn unshare(namespaces: Namespaces) -> Result<()> {
    // SAFETY: plain syscall with integer flags.
    cvt("unshare", unsafe { libc::unshare(namespaces.bits()) })?;
    Ok(())
}
