//! Starting a task's process and waiting for it to exit.
//!
//! This is the one place that knows how the agent learns of a child's exit. Today that is
//! tokio's SIGCHLD-driven reaper; it is meant to become a pidfd from furrow-sysfd, which
//! only changes this file.

use std::io;
use std::process::ExitStatus;

use tokio::process::{Child, ChildStderr, ChildStdout};

/// A started task process and the read ends of its output pipes.
pub(crate) struct Spawned {
    pub process: TaskProcess,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// A running task process (the leader of its process group).
pub(crate) struct TaskProcess {
    child: Child,
    pid: u32,
}

impl TaskProcess {
    /// Starts `command`, whose stdout and stderr must be piped.
    pub fn spawn(command: std::process::Command) -> io::Result<Spawned> {
        let mut child = tokio::process::Command::from(command).spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the process exited before its pid was read"))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(io::Error::other("the output pipes were not set up"));
        };
        Ok(Spawned {
            process: Self { child, pid },
            stdout,
            stderr,
        })
    }

    /// Process id (and process group id) of the task.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to exit. Cancel-safe: dropping the future and calling again
    /// resumes the wait.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }
}
