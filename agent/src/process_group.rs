//! Process groups of tasks: how a task's process is detached into its own group, and how
//! a whole group is signalled.

use std::os::unix::process::CommandExt;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Makes `command` start in a new process group (its pid becomes the group id) and die
/// with SIGKILL if the agent's thread that started it dies.
pub(crate) fn isolate(command: &mut std::process::Command) {
    command.process_group(0);
    let agent_pid = std::process::id();
    // SAFETY: the closure runs between fork and exec; it only makes async-signal-safe
    // system calls (prctl, getppid) and builds errors without allocating.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                .map_err(|errno| std::io::Error::from_raw_os_error(errno as i32))?;
            // The agent may have died between fork and prctl; then no signal will come.
            if nix::unistd::getppid().as_raw() as u32 != agent_pid {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
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
