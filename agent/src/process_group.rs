//! Process groups of tasks: how a task's process is detached into its own group, and how
//! a whole group is signalled.

use std::os::unix::process::CommandExt;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::unistd::Pid;

/// Makes `command` start in a new process group (its pid becomes the group id), die with
/// SIGKILL if the agent's thread that started it dies, and run with no signal blocked.
pub(crate) fn isolate(command: &mut std::process::Command) {
    command.process_group(0);
    let agent_pid = std::process::id();
    // Built before the fork: the hook below must not allocate.
    let nothing_blocked = SigSet::empty();
    // SAFETY: the closure runs between fork and exec; it only makes async-signal-safe
    // system calls (prctl, getppid, pthread_sigmask) and builds errors without allocating.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                .map_err(|errno| std::io::Error::from_raw_os_error(errno as i32))?;
            // The agent may have died between fork and prctl; then no signal will come.
            if nix::unistd::getppid().as_raw() as u32 != agent_pid {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            // The agent blocks SIGTERM, SIGINT and SIGHUP to read them from a signalfd, and
            // a blocked mask survives exec: without this a task would never see the
            // SIGTERM of a cancel or of an operator. The standard library resets the mask
            // too, but does not promise to; the task's behaviour must not hang on that.
            nothing_blocked
                .thread_set_mask()
                .map_err(|errno| std::io::Error::from_raw_os_error(errno as i32))?;
            Ok(())
        });
    }
}

/// Sends `signal` to every process of group `pgid`. Returns `false` when the group no
/// longer exists.
pub(crate) fn signal_group(pgid: u32, signal: Signal) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    if raw <= 1 {
        // Group 0 would be the agent's own and 1 is init's: never a task's.
        tracing::error!(
            pgid,
            "refusing to signal a process group that is not a task's"
        );
        return false;
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(errno) => {
            tracing::warn!(pgid, %signal, %errno, "cannot signal task process group");
            false
        }
    }
}

/// A signal's name for humans (`SIGKILL`), or its number when unknown.
pub(crate) fn signal_name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    #[test]
    fn an_isolated_task_starts_with_no_signal_blocked() {
        // Spawned from a thread that blocks the agent's signals, as the agent's own thread
        // does; the thread outlives the child, which PR_SET_PDEATHSIG ties to it.
        let output = std::thread::spawn(|| {
            crate::signals::block().unwrap();
            let mut command = Command::new("sh");
            command
                .args(["-c", "grep '^SigBlk:' /proc/self/status"])
                .stdin(Stdio::null())
                .stderr(Stdio::inherit());
            isolate(&mut command);
            command.output().unwrap()
        })
        .join()
        .unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        let blocked = text
            .lines()
            .find_map(|line| line.strip_prefix("SigBlk:"))
            .unwrap();
        assert_eq!(u64::from_str_radix(blocked.trim(), 16), Ok(0), "{text}");
        assert!(output.status.success());
    }
}
