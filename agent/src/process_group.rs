//! Process groups of tasks: how a whole group is signalled. Each task leads its own
//! group (see [`crate::spawner`]).

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

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
    use crate::spawner::{TaskCommand, output_of};

    #[test]
    fn a_task_starts_with_no_signal_blocked() {
        // Started from a thread that blocks the agent's signals, as the agent's own
        // thread does.
        let (text, status) = std::thread::spawn(|| {
            crate::signals::block().unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut command = TaskCommand::new("sh");
            command.args(["-c", "grep '^SigBlk:' /proc/self/status"]);
            runtime.block_on(output_of(command))
        })
        .join()
        .unwrap();
        let blocked = text
            .lines()
            .find_map(|line| line.strip_prefix("SigBlk:"))
            .unwrap();
        assert_eq!(u64::from_str_radix(blocked.trim(), 16), Ok(0), "{text}");
        assert!(status.success());
    }
}
