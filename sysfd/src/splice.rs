//! splice, tee, vmsplice: moving data through pipes without copying it through user space,
//! and [`copy`], which moves data fd → fd that way and falls back to read/write for an end
//! that cannot splice.
//!
//! ```
//! use std::io::{Seek, Write, Read};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut src = tempfile::tempfile()?;
//! src.write_all(b"hello splice")?;
//! src.rewind()?;
//! let mut dst = tempfile::tempfile()?;
//! let stats = furrow_sysfd::copy(&src, &dst, None)?;
//! assert_eq!(stats.bytes(), 12);
//! dst.rewind()?;
//! let mut text = String::new();
//! dst.read_to_string(&mut text)?;
//! assert_eq!(text, "hello splice");
//! # Ok(()) }
//! ```

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::error::{Error, Result, cvt, from_nix};
use crate::fd::{poll_fd, read_retry, write_retry};

bitflags::bitflags! {
    /// Flags of [`splice`], [`tee`] and [`vmsplice`] (`SPLICE_F_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SpliceFlags: u32 {
        /// `SPLICE_F_MOVE`: move pages instead of copying, where possible (a hint).
        const MOVE = libc::SPLICE_F_MOVE;
        /// `SPLICE_F_NONBLOCK`: do not block on the pipe.
        const NONBLOCK = libc::SPLICE_F_NONBLOCK;
        /// `SPLICE_F_MORE`: more data follows (a hint for sockets).
        const MORE = libc::SPLICE_F_MORE;
        /// `SPLICE_F_GIFT`: (vmsplice) the pages are given to the kernel.
        const GIFT = libc::SPLICE_F_GIFT;
    }
}

fn nix_flags(flags: SpliceFlags) -> nix::fcntl::SpliceFFlags {
    nix::fcntl::SpliceFFlags::from_bits_retain(flags.bits())
}

/// `splice(2)`: moves up to `len` bytes between two fds, one of which must be a pipe. With an
/// offset, the file position of that end is not used (and not changed).
///
/// Returns the bytes moved, 0 at end of input. Neither end a pipe, an end that cannot
/// splice, an offset on a pipe → [`Error::InvalidArgument`]; nothing to move on a non-blocking
/// end → [`Error::WouldBlock`].
pub fn splice(
    fd_in: impl AsFd,
    off_in: Option<&mut i64>,
    fd_out: impl AsFd,
    off_out: Option<&mut i64>,
    len: usize,
    flags: SpliceFlags,
) -> Result<usize> {
    from_nix(
        "splice",
        nix::fcntl::splice(fd_in, off_in, fd_out, off_out, len, nix_flags(flags)),
    )
}

/// `tee(2)`: duplicates up to `len` bytes from one pipe to another without consuming them.
/// An end that is not a pipe, or both ends the same pipe → [`Error::InvalidArgument`].
pub fn tee(fd_in: impl AsFd, fd_out: impl AsFd, len: usize, flags: SpliceFlags) -> Result<usize> {
    from_nix("tee", nix::fcntl::tee(fd_in, fd_out, len, nix_flags(flags)))
}

/// `vmsplice(2)`: maps user memory into a pipe's write end. Without [`SpliceFlags::GIFT`] the
/// pipe references the pages: the reader sees later changes to the buffer until it has read
/// them. Not a pipe → [`Error::InvalidArgument`].
pub fn vmsplice(fd: impl AsFd, bufs: &[IoSlice<'_>], flags: SpliceFlags) -> Result<usize> {
    from_nix("vmsplice", nix::fcntl::vmsplice(fd, bufs, nix_flags(flags)))
}

/// A pipe (read end, write end), both close-on-exec.
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    from_nix("pipe2", nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC))
}

/// Sets a pipe's capacity (`F_SETPIPE_SZ`); returns the capacity granted. Above the system
/// limit without privilege → [`Error::PermissionDenied`]; not a pipe →
/// [`Error::InvalidArgument`].
pub fn set_pipe_size(fd: impl AsFd, size: usize) -> Result<usize> {
    let size = libc::c_int::try_from(size).map_err(|_| Error::invalid("fcntl(F_SETPIPE_SZ)"))?;
    // SAFETY: fcntl with an integer argument.
    let granted = cvt("fcntl(F_SETPIPE_SZ)", unsafe {
        libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_SETPIPE_SZ, size)
    })?;
    Ok(granted as usize)
}

/// What [`copy`] moved and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyStats {
    /// Bytes moved by `splice`.
    pub spliced: u64,
    /// Bytes moved by `read`/`write` because an end could not splice.
    pub read_written: u64,
}

impl CopyStats {
    /// Total bytes copied.
    pub fn bytes(&self) -> u64 {
        self.spliced + self.read_written
    }
}

/// Chunk moved per `splice` call, and the capacity asked for the intermediate pipe.
const CHUNK: usize = 1 << 20;
/// Buffer of the read/write path.
const RW_BUFFER: usize = 128 * 1024;

fn is_pipe(fd: BorrowedFd<'_>) -> Result<bool> {
    let st = from_nix("fstat", nix::sys::stat::fstat(fd))?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFIFO)
}

/// An end refuses splicing (unsupported file type, `O_APPEND` output...).
fn cannot_splice(err: &Error) -> bool {
    matches!(err.errno(), Some(libc::EINVAL) | Some(libc::ENOSYS))
}

fn chunk(left: u64) -> usize {
    usize::try_from(left).map_or(CHUNK, |left| left.min(CHUNK))
}

/// Waits for `fd` after a would-block, then lets the caller retry.
fn wait_ready(fd: BorrowedFd<'_>, events: libc::c_short) -> Result<()> {
    poll_fd("poll", fd, events, None).map(|_| ())
}

/// One splice that waits on would-block ends; `Ok(0)` is end of input.
fn splice_waiting(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, len: usize) -> Result<usize> {
    loop {
        match splice(src, None, dst, None, len, SpliceFlags::MOVE) {
            Err(err) if err.is_would_block() => {
                wait_ready(src, libc::POLLIN)?;
                wait_ready(dst, libc::POLLOUT)?;
            }
            other => return other,
        }
    }
}

fn write_all(dst: BorrowedFd<'_>, mut data: &[u8]) -> Result<()> {
    while !data.is_empty() {
        match write_retry("write", dst, data) {
            Ok(0) => return Err(Error::from_errno("write", libc::EIO)),
            Ok(n) => data = &data[n..],
            Err(err) if err.is_would_block() => wait_ready(dst, libc::POLLOUT)?,
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Moves exactly `count` bytes from `src` to `dst` with read/write (`src` must have them).
fn move_read_write(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    count: u64,
    stats: &mut CopyStats,
    buf: &mut [u8],
) -> Result<()> {
    let moved = read_write_loop(src, dst, count, stats, buf)?;
    if moved < count {
        // The bytes were promised (they sat in a pipe): their absence is an I/O error.
        return Err(Error::from_errno("read", libc::EIO));
    }
    Ok(())
}

/// Copies from `src` to `dst` with plain `read`/`write` until end of input or `limit` bytes.
pub fn copy_read_write(src: impl AsFd, dst: impl AsFd, limit: Option<u64>) -> Result<CopyStats> {
    let mut stats = CopyStats::default();
    let mut buf = vec![0u8; RW_BUFFER];
    read_write_loop(
        src.as_fd(),
        dst.as_fd(),
        limit.unwrap_or(u64::MAX),
        &mut stats,
        &mut buf,
    )?;
    Ok(stats)
}

/// Copies up to `limit` bytes with read/write, stopping early at end of input; returns the
/// number of bytes copied.
fn read_write_loop(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    limit: u64,
    stats: &mut CopyStats,
    buf: &mut [u8],
) -> Result<u64> {
    let mut left = limit;
    while left > 0 {
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let n = match read_retry("read", src, &mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.is_would_block() => {
                wait_ready(src, libc::POLLIN)?;
                continue;
            }
            Err(err) => return Err(err),
        };
        write_all(dst, &buf[..n])?;
        stats.read_written += n as u64;
        left -= n as u64;
    }
    Ok(limit - left)
}

/// Copies from `src` to `dst` until end of input, or `limit` bytes, with `splice`: directly
/// when one end is a pipe, else through an internal pipe. An end that cannot splice (for
/// example an `O_APPEND` output) is served with `read`/`write` from that point on, without
/// losing bytes already in the pipe. Non-blocking ends are waited on with `poll`.
///
/// Errors of `splice`, `read` or `write` other than "cannot splice" are returned as mapped;
/// bytes copied before the error are in `dst`.
pub fn copy(src: impl AsFd, dst: impl AsFd, limit: Option<u64>) -> Result<CopyStats> {
    let (src, dst) = (src.as_fd(), dst.as_fd());
    let mut stats = CopyStats::default();
    let mut left = limit.unwrap_or(u64::MAX);
    let mut buf = Vec::new();
    if is_pipe(src)? || is_pipe(dst)? {
        while left > 0 {
            match splice_waiting(src, dst, chunk(left)) {
                Ok(0) => return Ok(stats),
                Ok(n) => {
                    stats.spliced += n as u64;
                    left -= n as u64;
                }
                Err(err) if cannot_splice(&err) => break,
                Err(err) => return Err(err),
            }
        }
    } else {
        let (pipe_r, pipe_w) = pipe()?;
        // A bigger pipe means fewer calls; the default size still works if refused.
        let _ = set_pipe_size(&pipe_w, CHUNK);
        'pump: while left > 0 {
            let n = match splice_waiting(src, pipe_w.as_fd(), chunk(left)) {
                Ok(0) => return Ok(stats),
                Ok(n) => n,
                Err(err) if cannot_splice(&err) => break 'pump,
                Err(err) => return Err(err),
            };
            let mut in_pipe = n;
            while in_pipe > 0 {
                match splice_waiting(pipe_r.as_fd(), dst, in_pipe) {
                    Ok(0) => return Err(Error::from_errno("splice", libc::EIO)),
                    Ok(m) => {
                        in_pipe -= m;
                        stats.spliced += m as u64;
                        left -= m as u64;
                    }
                    Err(err) if cannot_splice(&err) => {
                        buf.resize(RW_BUFFER, 0);
                        move_read_write(pipe_r.as_fd(), dst, in_pipe as u64, &mut stats, &mut buf)?;
                        left -= in_pipe as u64;
                        break 'pump;
                    }
                    Err(err) => return Err(err),
                }
            }
        }
    }
    buf.resize(RW_BUFFER, 0);
    read_write_loop(src, dst, left, &mut stats, &mut buf)?;
    Ok(stats)
}
