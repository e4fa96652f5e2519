//! Helpers shared by the integration tests: running a check in a forked child (for process-wide
//! state: namespaces, signal masks, rlimits, credentials, seccomp, fd 0) and waiting on a
//! condition with a deadline.

#![allow(dead_code)]

use std::io::Read;
use std::os::fd::FromRawFd;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// What a test body returns.
pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Runs `body` in a forked child and returns its outcome: `Ok` when it returned `Ok`, else the
/// error or panic message. The child never returns into the test harness.
pub fn in_child(body: impl FnOnce() -> TestResult) -> Result<(), String> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err("pipe2 failed".into());
    }
    // SAFETY: the child only runs `body` and exits with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err("fork failed".into());
    }
    if pid == 0 {
        // SAFETY: closing the read end in the child.
        unsafe { libc::close(fds[0]) };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(body));
        let message = match outcome {
            Ok(Ok(())) => String::new(),
            Ok(Err(err)) => format!("error: {err}"),
            Err(panic) => {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                format!("panic: {text}")
            }
        };
        let bytes = message.as_bytes();
        // SAFETY: writing a valid buffer, then leaving without running the harness again.
        unsafe {
            libc::write(fds[1], bytes.as_ptr().cast(), bytes.len());
            libc::_exit(if message.is_empty() { 0 } else { 1 });
        }
    }
    // SAFETY: the parent owns the read end; closing the write end so EOF arrives.
    unsafe { libc::close(fds[1]) };
    // SAFETY: we own fds[0].
    let mut reader = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut message = String::new();
    let _ = reader.read_to_string(&mut message);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else if message.is_empty() {
        Err(format!("child ended with wait status {status:#x}"))
    } else {
        Err(message)
    }
}

/// Runs `body` in a forked child and fails the test with the child's message.
pub fn run_in_child(body: impl FnOnce() -> TestResult) {
    if let Err(message) = in_child(body) {
        panic!("{message}");
    }
}

/// A current-thread tokio runtime with IO and time enabled.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Polls `check` until it returns true or `limit` passes; returns whether it became true.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::yield_now();
    }
}

/// Drops root privileges (and with them every capability) for the rest of the process.
pub fn become_nobody() -> TestResult {
    // SAFETY: plain credential syscalls.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(65534) != 0
            || libc::setuid(65534) != 0
        {
            return Err("could not drop privileges".into());
        }
    }
    Ok(())
}

/// Limits open fds to the lowest `n` numbers.
pub fn limit_open_files(n: u64) -> TestResult {
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err("setrlimit failed".into());
    }
    Ok(())
}

/// Number of open fds of this process.
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// The lowest fd number free now (what the next open will get).
pub fn lowest_free_fd() -> i32 {
    // SAFETY: dup of stdin-or-anything just to learn a number; closed right away.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 0) };
    // SAFETY: we own it.
    unsafe { libc::close(fd) };
    fd
}

/// Asserts that a result is an error of the given variant pattern.
#[macro_export]
macro_rules! assert_err {
    ($result:expr, $pattern:pat) => {
        match $result {
            Err($pattern) => {}
            other => panic!(
                "expected {} but got {:?}",
                stringify!($pattern),
                other.map(|_| ())
            ),
        }
    };
}
