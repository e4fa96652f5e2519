//! Starting a task's process and waiting for it to exit.
//!
//! The one place that knows how the agent learns of a child's exit: a pidfd from
//! furrow-sysfd. The process is spawned with `std::process::Command`, so tokio's SIGCHLD
//! reaper never knows of it; the pidfd is opened right after the spawn, while nobody can
//! have reaped the child yet (at worst it is a zombie), and the pidfd alone reaps it.
//!
//! The spawn itself runs on the blocking pool. Starting a task blocks the caller until
//! the task's program runs: `posix_spawn` returns once the sentinel's exec is done, and
//! the sentinel reports once the task's exec is; on a busy machine that is about a
//! millisecond. On the agent's one async thread, every other slot (its output, its end,
//! the next start) would wait for it: a profile of a farm of short tasks had that thread
//! blocked there four fifths of the time.

use std::io;
use std::sync::Arc;

use furrow_sysfd::{AsyncPidFd, ExitStatus};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use tokio::process::{ChildStderr, ChildStdout};
use tokio::sync::oneshot;
use tracing::warn;

use crate::process_group::signal_group;
use crate::sentinel::IsolatedCommand;

/// A started task process and the read ends of its output pipes.
pub(crate) struct Spawned {
    pub process: TaskProcess,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// A running task process: the leader of its process group (for a task, its sentinel,
/// which exits as the task does).
pub(crate) struct TaskProcess {
    /// Shared with the background reaper of an abandoned run (see `Drop`).
    pidfd: Arc<AsyncPidFd>,
    pid: u32,
    reaped: bool,
}

impl TaskProcess {
    /// Starts `command` under its sentinel; its stdout and stderr must be piped. Needs a
    /// tokio runtime with IO enabled. Dropped before it returns, the start is undone: a
    /// task started meanwhile is killed with its group and reaped.
    pub async fn spawn(command: IsolatedCommand) -> io::Result<Spawned> {
        let (sender, receiver) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            if let Err(Ok(child)) = sender.send(command.spawn()) {
                // Nobody waits for this task any more.
                abandon_now(child.id());
            }
        });
        let mut child = receiver
            .await
            .map_err(|_| io::Error::other("the task's start was interrupted"))??;
        let pid = child.id();
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            abandon(pid);
            return Err(io::Error::other("the output pipes were not set up"));
        };
        let piped = ChildStdout::from_std(stdout).and_then(|stdout| {
            let stderr = ChildStderr::from_std(stderr)?;
            Ok((stdout, stderr))
        });
        let opened = AsyncPidFd::from_child(&child).map_err(io::Error::other);
        // From here on only the pidfd waits for the child: dropping the `Child` neither
        // waits nor kills.
        drop(child);
        match (piped, opened) {
            (Ok((stdout, stderr)), Ok(pidfd)) => Ok(Spawned {
                process: Self {
                    pidfd: Arc::new(pidfd),
                    pid,
                    reaped: false,
                },
                stdout,
                stderr,
            }),
            (Err(e), _) | (_, Err(e)) => {
                abandon(pid);
                Err(e)
            }
        }
    }

    /// Process id (and process group id) of the process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to exit, reaps it and returns how it ended. Cancel-safe:
    /// dropping the future and calling again resumes the wait; once reaped, every call
    /// returns the same status.
    pub async fn wait(&mut self) -> Result<ExitStatus, furrow_sysfd::Error> {
        let status = self.pidfd.wait().await?;
        self.reaped = true;
        Ok(status)
    }
}

impl Drop for TaskProcess {
    /// A run abandoned midway (the agent going down) drops the process unreaped; its
    /// group is killed by the runner's guard, and a background wait reaps it so no zombie
    /// stays behind while the agent lives on.
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pid = self.pid;
        let pidfd = Arc::clone(&self.pidfd);
        runtime.spawn(async move {
            if let Err(e) = pidfd.wait().await {
                warn!(pid, error = %e, "cannot reap an abandoned task process");
            }
        });
    }
}

/// Kills and reaps a child the agent cannot watch (opening its pidfd or its pipes failed,
/// e.g. at the open-file limit), with the process group it leads.
fn abandon(pid: u32) {
    // SIGKILL cannot be caught, so the wait is short; it still runs off the async thread.
    tokio::task::spawn_blocking(move || abandon_now(pid));
}

/// [`abandon`], waiting for the child here.
fn abandon_now(pid: u32) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    let process = Pid::from_raw(raw);
    // Not reaped yet, so the pid is still this child's.
    let _ = kill(process, Signal::SIGKILL);
    signal_group(pid, Signal::SIGKILL);
    let _ = waitpid(process, None);
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::*;

    fn sh(script: &str) -> IsolatedCommand {
        let mut command = IsolatedCommand::new("sh").unwrap();
        command
            .args(["-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    async fn status_of(script: &str) -> ExitStatus {
        let Spawned { mut process, .. } = TaskProcess::spawn(sh(script)).await.unwrap();
        process.wait().await.unwrap()
    }

    #[tokio::test]
    async fn exit_codes_and_signals_come_from_the_pidfd() {
        assert_eq!(status_of("exit 0").await, ExitStatus::Exited(0));
        assert_eq!(status_of("exit 7").await, ExitStatus::Exited(7));
        assert_eq!(
            status_of("kill -TERM $$").await,
            ExitStatus::Signaled {
                signal: libc::SIGTERM,
                core_dumped: false
            }
        );
        assert_eq!(
            status_of("kill -KILL $$").await.signal(),
            Some(libc::SIGKILL)
        );
    }

    #[tokio::test]
    async fn the_wait_reaps_the_process_and_repeats_its_status() {
        let Spawned {
            mut process,
            mut stdout,
            ..
        } = TaskProcess::spawn(sh("echo ready; exit 4")).await.unwrap();
        let mut text = String::new();
        stdout.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "ready\n");
        assert_eq!(process.wait().await.unwrap(), ExitStatus::Exited(4));
        assert_eq!(process.wait().await.unwrap(), ExitStatus::Exited(4));
        // Reaped: no zombie is left under the pid.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", process.pid()));
        assert!(stat.is_err(), "still in /proc: {stat:?}");
    }

    #[tokio::test]
    async fn a_process_dropped_unreaped_is_reaped_in_the_background() {
        let Spawned { process, .. } = TaskProcess::spawn(sh("exit 0")).await.unwrap();
        let stat = format!("/proc/{}/stat", process.pid());
        drop(process);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        // Gone from /proc only once reaped: a zombie keeps its entry.
        while std::fs::metadata(&stat).is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "never reaped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The processes whose command line holds `marker`.
    fn processes_with(marker: &str) -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|line| String::from_utf8_lossy(&line).contains(marker))
            })
            .collect()
    }

    #[test]
    fn a_start_dropped_midway_leaves_no_process() {
        let marker = format!("furrow-abandoned-start-{}", std::process::id());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut command = sh("exec sleep 1000");
            command.arg(&marker);
            let mut start = Box::pin(TaskProcess::spawn(command));
            // Polled once (the start is under way on the blocking pool), then dropped.
            assert!(futures::poll!(&mut start).is_pending());
        });
        // Dropping the runtime waits for its blocking work: the start, then the undoing.
        drop(runtime);
        assert_eq!(processes_with(&marker), Vec::<u32>::new());
    }

    #[tokio::test]
    async fn a_cancelled_wait_resumes() {
        let Spawned { mut process, .. } = TaskProcess::spawn(sh("exec sleep 1000")).await.unwrap();
        let raced = tokio::select! {
            status = process.wait() => Some(status),
            () = std::future::ready(()) => None,
        };
        assert!(raced.is_none(), "the process cannot have exited yet");
        kill(Pid::from_raw(process.pid() as i32), Signal::SIGKILL).unwrap();
        assert_eq!(process.wait().await.unwrap().signal(), Some(libc::SIGKILL));
    }
}
