//! pidfd: exit status of children spawned with std and tokio, signals, errors.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{TestResult, become_nobody, limit_open_files, run_in_child, runtime};
use furrow_sysfd::{
    AsyncPidFd, Error, ExitStatus, PidFd, PidFdFlags, Signal, getppid, pidfd_open,
    pidfd_send_signal, pidfd_wait,
};

#[test]
fn async_wait_reaps_a_std_child_and_returns_its_code() -> TestResult {
    runtime().block_on(async {
        let child = Command::new("sh").args(["-c", "exit 7"]).spawn()?;
        let pid = child.id() as i32;
        let pidfd = AsyncPidFd::from_child(&child)?;
        assert_eq!(pidfd.pid(), pid);
        let status = tokio::time::timeout(Duration::from_secs(30), pidfd.wait()).await??;
        assert_eq!(status, ExitStatus::Exited(7));
        assert_eq!(status.code(), Some(7));
        assert!(!status.success());
        assert_eq!(status.to_std().code(), Some(7));
        // Reaped: the pid is no longer our child.
        // SAFETY: plain waitpid probe.
        let ret = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(ret, -1);
        // Later callers get the same status.
        assert_eq!(pidfd.wait().await?, status);
        assert_eq!(pidfd.try_wait()?, Some(status));
        Ok(())
    })
}

#[test]
fn killed_child_reports_the_signal() -> TestResult {
    runtime().block_on(async {
        let child = Command::new("sleep").arg("600").spawn()?;
        let pidfd = AsyncPidFd::from_child(&child)?;
        assert_eq!(pidfd.try_wait()?, None);
        pidfd.send_signal(Signal::SIGKILL)?;
        let status = tokio::time::timeout(Duration::from_secs(30), pidfd.wait()).await??;
        assert_eq!(
            status,
            ExitStatus::Signaled {
                signal: libc::SIGKILL,
                core_dumped: false
            }
        );
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert_eq!(status.to_std().signal_number(), Some(libc::SIGKILL));
        // Signalling a reaped process fails cleanly.
        assert_err!(pidfd.send_signal(Signal::SIGTERM), Error::NotFound { .. });
        Ok(())
    })
}

trait SignalNumber {
    fn signal_number(&self) -> Option<i32>;
}

impl SignalNumber for std::process::ExitStatus {
    fn signal_number(&self) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(self)
    }
}

#[test]
fn tokio_child_and_many_waiters() -> TestResult {
    runtime().block_on(async {
        let child = tokio::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()?;
        let pidfd = Arc::new(AsyncPidFd::from_tokio_child(&child)?);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let pidfd = Arc::clone(&pidfd);
                tokio::spawn(async move { pidfd.wait().await })
            })
            .collect();
        for waiter in waiters {
            let status = tokio::time::timeout(Duration::from_secs(30), waiter).await???;
            assert_eq!(status, ExitStatus::Exited(3));
        }
        drop(child);
        Ok(())
    })
}

#[test]
fn processes_that_are_not_our_children() -> TestResult {
    runtime().block_on(async {
        // A grandchild: the shell prints its pid and waits for it.
        let child = Command::new("sh")
            .args(["-c", "sleep 0.2 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let output = child.wait_with_output()?;
        let text = String::from_utf8(output.stdout)?;
        let pid: i32 = text.trim().parse()?;
        // The grandchild is gone by now (the shell waited for it).
        assert_err!(AsyncPidFd::open(pid), Error::NotFound { .. });
        // The parent of this test process is not our child: waiting on it is "not found".
        let parent = AsyncPidFd::open(getppid())?;
        assert_err!(parent.try_wait(), Error::NotFound { .. });
        assert_err!(parent.wait().await, Error::NotFound { .. });
        // `exited` works for any process: the grandchild-free shell has ended.
        let done = Command::new("true").spawn()?;
        let watcher = AsyncPidFd::from_child(&done)?;
        tokio::time::timeout(Duration::from_secs(30), watcher.exited()).await??;
        assert!(watcher.try_wait()?.is_some_and(|s| s.success()));
        Ok(())
    })
}

#[test]
fn blocking_handle() -> TestResult {
    let child = Command::new("sh").args(["-c", "exit 0"]).spawn()?;
    let mut pidfd = PidFd::from_child(&child)?;
    let status = pidfd.wait_timeout(Some(Duration::from_secs(30)))?;
    assert_eq!(status, Some(ExitStatus::Exited(0)));
    assert!(status.is_some_and(|s| s.success()));
    assert!(pidfd.has_exited()?);
    assert_err!(pidfd.try_wait(), Error::NotFound { .. });
    pidfd.close();
    assert_err!(pidfd.fd(), Error::Closed { .. });
    assert_err!(pidfd.send_signal(Signal::SIGTERM), Error::Closed { .. });
    assert_err!(pidfd.try_wait(), Error::Closed { .. });
    assert_err!(pidfd.has_exited(), Error::Closed { .. });

    let sleeper = Command::new("sleep").arg("600").spawn()?;
    let pidfd = PidFd::from_child(&sleeper)?;
    assert_eq!(pidfd.wait_timeout(Some(Duration::from_millis(10)))?, None);
    assert!(!pidfd.has_exited()?);
    pidfd.send_signal(Signal::SIGTERM)?;
    let status = pidfd.wait_timeout(Some(Duration::from_secs(30)))?;
    assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGTERM));
    Ok(())
}

#[test]
fn low_level_errors() -> TestResult {
    assert_err!(
        pidfd_open(0, PidFdFlags::empty()),
        Error::InvalidArgument { .. }
    );
    assert_err!(
        pidfd_open(-5, PidFdFlags::empty()),
        Error::InvalidArgument { .. }
    );
    assert_err!(
        pidfd_open(i32::MAX, PidFdFlags::empty()),
        Error::NotFound { .. }
    );
    assert_err!(
        pidfd_open(std::process::id() as i32, PidFdFlags::from_bits_retain(0x1)),
        Error::InvalidArgument { .. }
    );
    // Not a pidfd.
    let file = tempfile::tempfile()?;
    assert_err!(
        pidfd_send_signal(&file, Signal::SIGTERM),
        Error::InvalidArgument { .. }
    );
    assert_err!(pidfd_wait(&file, true), Error::InvalidArgument { .. });
    Ok(())
}

#[test]
fn privileges_and_limits() {
    run_in_child(|| {
        let parent = pidfd_open(getppid(), PidFdFlags::empty())?;
        become_nobody()?;
        // An unprivileged process may not signal a root process.
        assert_err!(
            pidfd_send_signal(&parent, Signal::SIGUSR1),
            Error::PermissionDenied { .. }
        );
        Ok(())
    });
    run_in_child(|| {
        limit_open_files(3)?;
        assert_err!(PidFd::open(getppid()), Error::ResourceLimit { .. });
        Ok(())
    });
    let outside = AsyncPidFd::open(std::process::id() as i32);
    assert_err!(outside, Error::InvalidArgument { .. });
}
