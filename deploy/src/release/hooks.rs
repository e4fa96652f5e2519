//! Running hook commands: in the release directory, with the app's environment only, each
//! in its own process group under a time limit. When the limit passes the whole group is
//! killed, so that a hook's children cannot outlive it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::ReleaseError;
use crate::manifest::HookEvent;

/// How much of a failed hook's output its error carries.
const OUTPUT_TAIL_BYTES: u64 = 2000;

/// One hook command to run.
pub(super) struct HookRun<'a> {
    pub event: HookEvent,
    pub command: &'a [String],
    pub dir: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub timeout: Duration,
    /// Where stdout and stderr go (appended): the event's log file.
    pub log: &'a Path,
}

pub(super) fn run(hook: &HookRun<'_>) -> Result<(), ReleaseError> {
    let shown = hook.command.join(" ");
    let Some((program, arguments)) = hook.command.split_first() else {
        return Ok(());
    };
    let spawn_error = |source: std::io::Error| ReleaseError::HookSpawn {
        event: hook.event,
        command: shown.clone(),
        source,
    };
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(hook.log)
        .map_err(spawn_error)?;
    let start_offset = log.metadata().map(|meta| meta.len()).unwrap_or(0);
    let stderr = log.try_clone().map_err(spawn_error)?;
    let stdout = log.try_clone().map_err(spawn_error)?;
    let mut child = Command::new(program)
        .args(arguments)
        .current_dir(hook.dir)
        .env_clear()
        .envs(hook.env)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(spawn_error)?;
    let process_group = child.id() as libc::pid_t;
    tracing::info!(event = %hook.event, command = %shown, pid = process_group, "hook started");

    // The wait happens on a helper thread so that this one can give up at the time limit.
    let (sender, receiver) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        // The receiver may have gone (it never does before the join below); nothing to do.
        let _ = sender.send(status);
    });
    let outcome = receiver.recv_timeout(hook.timeout);
    let timed_out = matches!(outcome, Err(mpsc::RecvTimeoutError::Timeout));
    if timed_out {
        // SAFETY: kill(2) has no memory effects. A negative pid signals the hook's own
        // process group, made by process_group(0) above. A group id cannot be reused while
        // any member lives, so this reaches the hook's processes or no one.
        unsafe { libc::kill(-process_group, libc::SIGKILL) };
    }
    let status = match outcome {
        Ok(status) => status,
        Err(_) => receiver
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the hook's waiter thread ended"))),
    };
    // The thread has sent its result, so it ends at once.
    let _ = waiter.join();
    let status = status.map_err(spawn_error)?;
    if timed_out {
        tracing::warn!(event = %hook.event, command = %shown, limit = ?hook.timeout, "hook killed at its time limit");
        return Err(ReleaseError::HookTimedOut {
            event: hook.event,
            command: shown,
            limit: hook.timeout,
            output: tail(&log, start_offset),
        });
    }
    if !status.success() {
        return Err(ReleaseError::HookFailed {
            event: hook.event,
            command: shown,
            status: describe(status),
            output: tail(&log, start_offset),
        });
    }
    Ok(())
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// The end of what this run wrote to the log, as text.
fn tail(log: &File, start_offset: u64) -> String {
    let mut file = log;
    let end = file
        .metadata()
        .map(|meta| meta.len())
        .unwrap_or(start_offset);
    let from = end.saturating_sub(OUTPUT_TAIL_BYTES).max(start_offset);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_ok() {
        let _ = file.take(OUTPUT_TAIL_BYTES).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).trim().to_string()
}
